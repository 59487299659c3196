//! What runs a load plan: the `Executor` contract both executors fulfil (PostgreSQL, the
//! Redshift Data API), with the error every stage of a load reports.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::lake::ObjectStore;
use crate::lambda::ErrorKind;

use super::plan::{LoadPlan, PlanError, Statement, Step};
use super::sql::Dialect;

/// Why a load failed. Nothing was committed: the final table is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("connecting to the warehouse: {0}")]
    Connect(String),
    #[error("load of {table}: statement {statement} failed: {message}")]
    Statement {
        table: String,
        statement: String,
        message: String,
        /// A serialization or write conflict: another transaction won; the load may succeed
        /// when run again.
        conflict: bool,
    },
    #[error("load of {table}: file {key}: {message}")]
    File {
        table: String,
        key: String,
        message: String,
    },
    #[error("load of {table}: manifest {key}: {message}")]
    Manifest {
        table: String,
        key: String,
        message: String,
    },
    #[error("load of {table}: lake object {key}: {message}")]
    Lake {
        table: String,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("load of {table}: {message}")]
    Config { table: String, message: String },
    /// The warehouse did not finish in time (a statement still running, the deadline near).
    #[error("load of {table}: {message}")]
    Timeout { table: String, message: String },
}

impl LoadError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, LoadError::Statement { conflict: true, .. })
    }

    /// What a retry of the same load would do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::Statement { conflict: true, .. }
            | LoadError::Connect(_)
            | LoadError::Lake { .. }
            | LoadError::Timeout { .. } => ErrorKind::Retryable,
            LoadError::Manifest { .. }
            | LoadError::File { .. }
            | LoadError::Plan(_)
            | LoadError::Config { .. } => ErrorKind::BadInput,
            LoadError::Statement { .. } => ErrorKind::Internal,
        }
    }
}

/// Where an executor runs a load: the lake (for state such as a submitted statement's id) and
/// the batch's identity.
pub struct RunContext<'a> {
    pub store: &'a dyn ObjectStore,
    pub table: &'a str,
    /// The batch id: the same manifests give the same id, so a re-invocation finds its state.
    pub batch: &'a str,
}

/// What an executor reports of a committed load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// Rows each step affected (COPY: rows loaded), by step position; None where the database
    /// does not say.
    pub rows: Vec<Option<u64>>,
    /// Milliseconds each step took, by step position, where the executor measures them.
    pub millis: Vec<Option<u64>>,
    /// The Data API statement id, when there is one.
    pub statement_id: Option<String>,
    /// Transactions it took (more than one after conflicts).
    pub attempts: u32,
    /// The rows of each `Step::Query` (by step position) that returned any, every value as
    /// text (NULL as empty).
    pub results: BTreeMap<usize, Vec<Vec<String>>>,
}

/// Runs a load plan's steps in one transaction.
#[async_trait]
pub trait Executor: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// Names of a table's columns, or None when the table does not exist.
    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError>;

    /// Runs `steps` in one transaction (retrying conflicts); all or nothing.
    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError>;

    /// Statements outside a load, in one transaction of their own (creating the tables before
    /// a first load; the optional TRUNCATE of a persistent stage after one).
    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError>;
}

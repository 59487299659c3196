//! The data catalog: Glue (`aws.rs`, aws-sdk-glue) and a local JSON file in the lake
//! (`local.rs`). The transform declares the table it writes; the catalog creates the database
//! and table, applies additive schema evolution, refuses incompatible changes, and registers
//! `year`/`month` partitions.

mod aws;
mod error;
mod local;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use aws::GlueCatalog;
pub use error::CatalogError;
pub use local::LocalCatalog;

/// One column as the catalog sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogColumn {
    /// Lower-case snake_case name.
    pub name: String,
    /// Hive/Glue type: `bigint`, `double`, `decimal(p,s)`, `boolean`, `string`, `binary`,
    /// `date`, `timestamp`.
    pub glue_type: String,
}

/// The table a transform writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub database: String,
    pub table: String,
    /// Where the table's files live: `s3://bucket/curated/<table>/` or a local path.
    pub location: String,
    /// Data columns, in file order.
    pub columns: Vec<CatalogColumn>,
    /// Partition keys, all `string` (Athena compares partition values as text): `year`, `month`.
    pub partition_keys: Vec<String>,
    /// When set, the table carries Athena partition-projection properties and no partitions
    /// are registered: `(first year, last year)` for the `year` range.
    pub projection_years: Option<(i32, i32)>,
}

/// One partition to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Values in the order of `TableDef::partition_keys`, e.g. `["2019", "10"]`.
    pub values: Vec<String>,
    /// The partition's folder, e.g. `s3://bucket/curated/funnel/year=2019/month=10/`.
    pub location: String,
}

/// What `ensure_table` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnsureOutcome {
    /// The database or table did not exist and was created.
    pub created: bool,
    /// Columns added to an existing table (additive evolution).
    pub added_columns: Vec<String>,
}

/// The catalog every writer of curated data registers through.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Creates the database and table when missing. On an existing table, adds new columns
    /// (nullable, appended), keeps columns the definition no longer lists, and returns
    /// `CatalogError::Incompatible` naming the column when a column's type changed. Updates
    /// carry the table's version id so a concurrent update is detected, not overwritten.
    async fn ensure_table(&self, def: &TableDef) -> Result<EnsureOutcome, CatalogError>;

    /// Registers partitions (in chunks of 100 for Glue); existing ones count as success.
    /// A no-op when the table uses partition projection.
    async fn add_partitions(
        &self,
        def: &TableDef,
        parts: &[PartitionSpec],
    ) -> Result<(), CatalogError>;

    /// Reads a table back; `None` when the table (or its database) does not exist.
    async fn get_table(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Option<TableDef>, CatalogError>;

    /// Every registered partition of a table, as values (e.g. `["2019","10"]`), sorted.
    async fn list_partitions(
        &self,
        database: &str,
        table: &str,
    ) -> Result<Vec<Vec<String>>, CatalogError>;
}

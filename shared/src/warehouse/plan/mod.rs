//! A table's load plan: names, columns and the merge statements (see the order of effects in
//! `mod.rs` of the warehouse). Built from the pipeline file alone through the output schema.
//! `tables.rs` holds the statements up to the filled stage, `merge.rs` the merge after it,
//! `unchanged.rs` the resolution of unchanged-TOAST markers inside the merge.

use crate::config::{Staging, TableConfig};
use crate::schema::output_columns;

use super::sql::{qualified, quote_ident, Dialect};

mod merge;
mod tables;
mod unchanged;

/// Name of the loader's side table for a final table: tombstones of deleted keys and the
/// versions of TRUNCATEs, so late, older loads cannot bring rows back.
pub const TOMBSTONE_SUFFIX: &str = "__sluice_deleted";
/// The loader's own columns (the side table's `sluice_truncate` and `sluice_at`, the batch's
/// `sluice_rn`, the resolution's `sluice_missing`), written literally in the statements: no
/// warehouse column may take one of these names (the pipeline file is validated so).
pub const LOADER_COLUMNS: [&str; 4] = [
    "sluice_truncate",
    "sluice_at",
    "sluice_rn",
    "sluice_missing",
];
/// The stage when it is temporary, and the deduplicated batch (always temporary).
const TEMP_STAGE: &str = "sluice_stage";
const TEMP_BATCH: &str = "sluice_batch";
/// The built-in column that marks change rows (`d` delete, `t` truncate).
const OP_COLUMN: &str = "_op";
/// The built-in column that lists the columns a change left out as unchanged TOAST values.
const UNCHANGED_COLUMN: &str = "_unchanged";

/// Why a table cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("table {table} has no [tables.warehouse] section")]
    NoWarehouse { table: String },
    #[error("table {table}: the loader needs a version column (warehouse.version_column or dedup.order_by) to keep older loads from replacing newer rows")]
    NoVersion { table: String },
    #[error("table {table}: {reason}")]
    Schema { table: String, reason: String },
}

/// One column of the final table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanColumn {
    /// Name in the lake (the Parquet files).
    pub lake: String,
    /// Name in the warehouse (`warehouse.columns`, else the lake name).
    pub warehouse: String,
    pub glue_type: String,
}

/// One SQL statement of a load, named so a failure can say which step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub name: String,
    pub sql: String,
}

fn st(name: impl Into<String>, sql: String) -> Statement {
    Statement {
        name: name.into(),
        sql,
    }
}

/// The Data API's limit on the statements of one `BatchExecuteStatement` (one transaction).
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// Parquet files with the same column list, COPYed by one statement. Redshift maps a Parquet
/// file's columns to the target's by position and needs their counts equal, so files written
/// before an additive column change (fewer columns) go through a stage of their own shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyGroup {
    /// Lake names of the files' columns, in file order.
    pub columns: Vec<String>,
    /// Lake keys of the files.
    pub files: Vec<String>,
    /// Where Redshift reads the group's COPY manifest (`s3://bucket/loads/<table>/…`).
    pub manifest_url: String,
}

/// What a load found of the warehouse's tables before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablesFound {
    /// Lake names of output columns the final table lacks: added before the merge.
    pub final_missing: Vec<String>,
    /// Warehouse names of a persistent stage's columns in their physical order (None: the
    /// stage is temporary or new, and has the table's columns in order).
    pub stage_columns: Option<Vec<String>>,
}

/// One COPY of a group of files into a stage table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    pub name: String,
    /// The quoted table the files go into.
    pub target: String,
    /// Warehouse names of the target's columns, in file order.
    pub columns: Vec<String>,
    /// Lake names of the same columns.
    pub lake_columns: Vec<String>,
    pub files: Vec<String>,
    /// The statement Redshift runs (`COPY … FORMAT AS PARQUET MANIFEST`); the PostgreSQL
    /// executor streams `files` instead.
    pub sql: String,
}

/// A step of a load: SQL, a COPY of Parquet files, or a query whose rows the loader reads
/// after the commit (`Executed::results`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Sql(Statement),
    Copy(CopyStep),
    /// A SELECT of text columns; its rows are returned with the load's outcome.
    Query(Statement),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Sql(s) | Step::Query(s) => &s.name,
            Step::Copy(c) => &c.name,
        }
    }

    pub fn sql(&self) -> &str {
        match self {
            Step::Sql(s) | Step::Query(s) => &s.sql,
            Step::Copy(c) => &c.sql,
        }
    }
}

/// Names of the steps whose row counts reconciliation reads (rows affected, per step).
pub mod step_names {
    /// A COPY straight into the stage.
    pub const COPY: &str = "copy";
    /// Rows moved from a group's own stage into the stage.
    pub const STAGE_GROUP: &str = "stage_group";
    pub const DROP_NULL_KEYS: &str = "drop_null_keys";
    /// TRUNCATE change rows, once their version is recorded.
    pub const TRUNCATES: &str = "drop_truncate_markers";
    pub const DEDUP: &str = "dedup_batch";
    pub const DUPLICATES: &str = "drop_duplicates";
    pub const STALE: [&str; 3] = [
        "drop_truncated_from_batch",
        "drop_stale_against_final",
        "drop_stale_against_tombstones",
    ];
    pub const TOMBSTONES: &str = "record_tombstones";
    pub const INSERT: &str = "insert";
    /// The query of change rows whose unchanged-TOAST markers nothing resolved (quarantined
    /// after the commit); its row count is theirs.
    pub const UNRESOLVED: &str = "unresolved_changes";
}

/// Everything the merge of one table needs.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub table: String,
    pub schema: String,
    pub final_name: String,
    pub columns: Vec<PlanColumn>,
    /// Warehouse names of the merge keys.
    pub keys: Vec<String>,
    /// Warehouse name of the version column.
    pub version: String,
    /// Warehouse name of `_op`, when the table carries it.
    pub op: Option<String>,
    /// Warehouse name of `_unchanged`, when the table carries it: a column of the stage and
    /// the batch only. The merge resolves the markers and the final table has no such column
    /// (once resolved, a marker says nothing about the row).
    pub unchanged: Option<String>,
    pub staging: Staging,
    pub lock: bool,
    pub tombstone_retention_days: u32,
    /// TRUNCATE a persistent stage after the load committed.
    pub truncate_stage: bool,
}

impl LoadPlan {
    pub fn new(t: &TableConfig) -> Result<LoadPlan, PlanError> {
        let w = t.warehouse.as_ref().ok_or_else(|| PlanError::NoWarehouse {
            table: t.name.clone(),
        })?;
        let schema_err = |reason: String| PlanError::Schema {
            table: t.name.clone(),
            reason,
        };
        let outs = output_columns(t).map_err(schema_err)?;
        let columns: Vec<PlanColumn> = outs
            .iter()
            .map(|c| PlanColumn {
                lake: c.name.clone(),
                warehouse: w.warehouse_name(&c.name).to_string(),
                glue_type: c.glue_type.clone(),
            })
            .collect();
        let wh = |lake: &str| w.warehouse_name(lake).to_string();
        let version = w
            .version_column_for(t)
            .ok_or_else(|| PlanError::NoVersion {
                table: t.name.clone(),
            })?;
        Ok(LoadPlan {
            table: t.name.clone(),
            schema: w.schema.clone(),
            final_name: w.final_name(t).to_string(),
            keys: w.merge_keys.iter().map(|k| wh(k)).collect(),
            version: wh(&version),
            op: outs
                .iter()
                .any(|c| c.name == OP_COLUMN)
                .then(|| wh(OP_COLUMN)),
            unchanged: outs
                .iter()
                .any(|c| c.name == UNCHANGED_COLUMN)
                .then(|| wh(UNCHANGED_COLUMN)),
            staging: w.staging.clone(),
            lock: w.lock,
            tombstone_retention_days: w.tombstone_retention_days,
            truncate_stage: w.truncate_stage,
            columns,
        })
    }

    /// `"schema"."table"` of the final table.
    pub fn final_table(&self) -> String {
        qualified(&self.schema, &self.final_name)
    }

    /// The loader's side table of tombstones and truncations, beside the final table.
    pub fn tombstone_table(&self) -> String {
        qualified(&self.schema, &self.tombstone_name())
    }

    /// The side table's name (unquoted).
    pub fn tombstone_name(&self) -> String {
        format!("{}{TOMBSTONE_SUFFIX}", self.final_name)
    }

    /// The stage the COPY fills.
    pub fn stage_table(&self) -> String {
        match &self.staging {
            Staging::Temp => quote_ident(TEMP_STAGE),
            Staging::Table(name) => match name.split_once('.') {
                Some((s, t)) => qualified(s, t),
                None => quote_ident(name),
            },
        }
    }

    /// Whether a configured name has upper case, which Redshift folds unless told not to.
    pub fn needs_case_sensitivity(&self) -> bool {
        let names = [&self.schema, &self.final_name]
            .into_iter()
            .chain(self.columns.iter().map(|c| &c.warehouse));
        names.into_iter().any(|n| n.chars().any(char::is_uppercase))
            || matches!(&self.staging, Staging::Table(n) if n.chars().any(char::is_uppercase))
    }

    /// The final table's columns: every output column but `_unchanged`.
    pub fn final_columns(&self) -> impl Iterator<Item = &PlanColumn> {
        self.columns
            .iter()
            .filter(|c| Some(&c.warehouse) != self.unchanged.as_ref())
    }

    /// `"a", "b"` of the stage's (and the batch's) columns.
    fn column_list(&self) -> String {
        list(self.columns.iter())
    }

    /// `"a", "b"` of the final table's columns.
    fn final_column_list(&self) -> String {
        list(self.final_columns())
    }

    /// `"a" TYPE, "b" TYPE` of the stage's (and the batch's) columns.
    fn column_defs(&self, dialect: Dialect) -> String {
        defs(self.columns.iter(), dialect)
    }

    /// `"a" TYPE, "b" TYPE` of the final table's columns.
    fn final_column_defs(&self, dialect: Dialect) -> String {
        defs(self.final_columns(), dialect)
    }

    /// `"name" TYPE` of one column by warehouse name (keys and the version are output columns:
    /// the pipeline file is validated so).
    fn column_def(&self, warehouse: &str, dialect: Dialect) -> String {
        let glue = self
            .columns
            .iter()
            .find(|c| c.warehouse == warehouse)
            .map(|c| c.glue_type.as_str())
            .unwrap_or("string");
        format!("{} {}", quote_ident(warehouse), dialect.column_type(glue))
    }

    /// `"k1", "k2"`.
    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a.k1 = b.k1 AND a.k2 = b.k2`.
    fn keys_equal(&self, a: &str, b: &str) -> String {
        self.keys
            .iter()
            .map(|k| format!("{a}.{q} = {b}.{q}", q = quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// What every session that names the tables runs first: Redshift's case sensitivity when a
    /// configured name has upper case (before any CREATE, or the names are folded).
    pub fn session(&self, dialect: Dialect) -> Vec<Statement> {
        match dialect.case_sensitive_identifiers() {
            Some(sql) if self.needs_case_sensitivity() => {
                vec![st("case_sensitive_identifiers", sql)]
            }
            _ => Vec::new(),
        }
    }

    /// Every step of one load, in order (the order of effects in `mod.rs`), in one transaction.
    pub fn steps(
        &self,
        dialect: Dialect,
        groups: &[CopyGroup],
        found: &TablesFound,
        iam_role: &str,
    ) -> Result<Vec<Step>, PlanError> {
        let mut out: Vec<Step> = self
            .session(dialect)
            .into_iter()
            .chain(self.before_copy(dialect, found))
            .map(Step::Sql)
            .collect();
        out.extend(self.copy_steps(dialect, groups, found, iam_role)?);
        out.extend(self.after_copy(dialect));
        out.push(Step::Sql(self.purge_tombstones(dialect)));
        if dialect == Dialect::Redshift && out.len() > MAX_BATCH_STATEMENTS {
            return Err(PlanError::Schema {
                table: self.table.clone(),
                reason: format!(
                    "the load needs {} statements, more than the {MAX_BATCH_STATEMENTS} one Data API batch takes ({} column lists among the files): load the manifests in smaller batches",
                    out.len(),
                    groups.len()
                ),
            });
        }
        Ok(out)
    }

    /// Tombstones older than the retention removed, as the last statement of a load (in its
    /// session, so case-sensitive names resolve). Truncation records stay (one per TRUNCATE,
    /// and they guard every older row).
    pub fn purge_tombstones(&self, dialect: Dialect) -> Statement {
        let retention_days = self.tombstone_retention_days;
        st(
            "purge_tombstones",
            format!(
                "DELETE FROM {} WHERE NOT sluice_truncate AND sluice_at < {}",
                self.tombstone_table(),
                dialect.days_ago(retention_days)
            ),
        )
    }
}

fn list<'a>(columns: impl Iterator<Item = &'a PlanColumn>) -> String {
    columns
        .map(|c| quote_ident(&c.warehouse))
        .collect::<Vec<_>>()
        .join(", ")
}

fn defs<'a>(columns: impl Iterator<Item = &'a PlanColumn>, dialect: Dialect) -> String {
    columns
        .map(|c| {
            format!(
                "{} {}",
                quote_ident(&c.warehouse),
                dialect.column_type(&c.glue_type)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

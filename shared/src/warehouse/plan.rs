//! A table's load plan: names, columns and the merge statements (see the order of effects in
//! `mod.rs`). Built from the pipeline file alone through the output schema.

use crate::config::{Staging, TableConfig};
use crate::schema::output_columns;

use super::sql::{qualified, quote_ident, Dialect};

/// Name of the loader's side table for a final table: tombstones of deleted keys and the
/// versions of TRUNCATEs, so late, older loads cannot bring rows back.
pub const TOMBSTONE_SUFFIX: &str = "__sluice_deleted";
/// The loader's own columns (the side table's `sluice_truncate` and `sluice_at`, the batch's
/// `sluice_rn`), written literally in the statements below: no warehouse column may take one
/// of these names (the pipeline file is validated so).
pub const LOADER_COLUMNS: [&str; 3] = ["sluice_truncate", "sluice_at", "sluice_rn"];
/// The stage when it is temporary, and the deduplicated batch (always temporary).
const TEMP_STAGE: &str = "sluice_stage";
const TEMP_BATCH: &str = "sluice_batch";
/// The built-in column that marks change rows (`d` delete, `t` truncate).
const OP_COLUMN: &str = "_op";

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

/// A step of a load: SQL, or a COPY of Parquet files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Sql(Statement),
    Copy(CopyStep),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Sql(s) => &s.name,
            Step::Copy(c) => &c.name,
        }
    }

    pub fn sql(&self) -> &str {
        match self {
            Step::Sql(s) => &s.sql,
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

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.warehouse))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn column_defs(&self, dialect: Dialect) -> String {
        self.columns
            .iter()
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

    /// The final table, the side table and (when persistent) the stage, created when missing:
    /// run once before the first load (`sluice warehouse ddl` prints them).
    pub fn create_tables(&self, dialect: Dialect) -> Vec<Statement> {
        let keys = self
            .keys
            .iter()
            .map(|k| self.column_def(k, dialect))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = vec![
            st(
                "create_schema",
                format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.schema)),
            ),
            st(
                "create_final",
                format!(
                    "CREATE TABLE IF NOT EXISTS {} ({})",
                    self.final_table(),
                    self.column_defs(dialect)
                ),
            ),
            st(
                "create_tombstones",
                format!(
                    "CREATE TABLE IF NOT EXISTS {} ({keys}, {}, sluice_truncate BOOLEAN NOT NULL, sluice_at TIMESTAMP)",
                    self.tombstone_table(),
                    self.column_def(&self.version, dialect)
                ),
            ),
        ];
        if let Staging::Table(name) = &self.staging {
            if let Some((schema, _)) = name.split_once('.') {
                if schema != self.schema {
                    out.push(st(
                        "create_stage_schema",
                        format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)),
                    ));
                }
            }
            out.push(st(
                "create_stage",
                format!(
                    "CREATE TABLE IF NOT EXISTS {} ({})",
                    self.stage_table(),
                    self.column_defs(dialect)
                ),
            ));
        }
        out
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

    /// The statements before the COPY: the lock (first: Redshift takes the transaction's
    /// snapshot at its first CREATE, ALTER or DML, and a lock taken after that queues
    /// nothing), new columns (additive evolution, nullable) in the final table and a
    /// persistent stage, the stage.
    pub fn before_copy(&self, dialect: Dialect, found: &TablesFound) -> Vec<Statement> {
        let mut out = Vec::new();
        if self.lock {
            out.push(st("lock", dialect.lock(&self.final_table())));
        }
        for c in self
            .columns
            .iter()
            .filter(|c| found.final_missing.contains(&c.lake))
        {
            out.push(st(
                format!("add_column {}", c.lake),
                format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    self.final_table(),
                    self.column_def(&c.warehouse, dialect)
                ),
            ));
        }
        for w in self.stage_missing(found) {
            out.push(st(
                format!("add_stage_column {w}"),
                format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    self.stage_table(),
                    self.column_def(&w, dialect)
                ),
            ));
        }
        match self.staging {
            Staging::Temp => out.push(st(
                "create_stage",
                dialect.create_temp(
                    &self.stage_table(),
                    &format!("({})", self.column_defs(dialect)),
                ),
            )),
            // A crashed earlier run's rows never reach this load.
            Staging::Table(_) => out.push(st(
                "clear_stage_before",
                format!("DELETE FROM {}", self.stage_table()),
            )),
        }
        out
    }

    /// The merge after the COPY filled the stage (steps 3–8 of `mod.rs`).
    pub fn after_copy(&self, dialect: Dialect) -> Vec<Statement> {
        let fin = self.final_table();
        let tomb = self.tombstone_table();
        let batch = quote_ident(TEMP_BATCH);
        let v = quote_ident(&self.version);
        let cols = self.column_list();
        let partition = self.key_list();
        let no_key = self
            .keys
            .iter()
            .map(|k| format!("{} IS NULL", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let stage = self.stage_table();
        // A TRUNCATE change row carries no key: only its version counts.
        let unusable = match &self.op {
            Some(op) => format!(
                "{v} IS NULL OR (({no_key}) AND ({o} IS NULL OR {o} <> 't'))",
                o = quote_ident(op)
            ),
            None => format!("{v} IS NULL OR {no_key}"),
        };
        let mut out = vec![
            // Counted here; the loader quarantined these rows before the load: a NULL key
            // matches nothing, and a NULL version could never be ordered against another.
            st(
                step_names::DROP_NULL_KEYS,
                format!("DELETE FROM {stage} WHERE {unusable}"),
            ),
        ];
        if let Some(op) = &self.op {
            let op = quote_ident(op);
            out.push(st(
                "record_truncate",
                format!("INSERT INTO {tomb} ({v}, sluice_truncate, sluice_at) SELECT MAX({v}), TRUE, {} FROM {stage} WHERE {op} = 't' HAVING COUNT(*) > 0", dialect.now()),
            ));
            out.push(st(
                step_names::TRUNCATES,
                format!("DELETE FROM {stage} WHERE {op} = 't'"),
            ));
        }
        out.push(st(
            "create_batch",
            dialect.create_temp(
                &batch,
                &format!("({}, sluice_rn BIGINT)", self.column_defs(dialect)),
            ),
        ));
        // INSERT rather than CREATE … AS: both databases report its row count. Every staged
        // row goes in, numbered per key (greatest version first); the older ones are then
        // deleted and counted as duplicates.
        out.push(st(
            step_names::DEDUP,
            format!(
                "INSERT INTO {batch} ({cols}, sluice_rn) SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {v} DESC) FROM {stage}"
            ),
        ));
        out.push(st(
            step_names::DUPLICATES,
            format!("DELETE FROM {batch} WHERE sluice_rn > 1"),
        ));
        let truncated = format!("(SELECT MAX({v}) FROM {tomb} WHERE sluice_truncate)");
        out.push(st(
            "drop_truncated_from_batch",
            format!("DELETE FROM {batch} WHERE {v} <= {truncated}"),
        ));
        out.push(st(
            "drop_truncated_from_final",
            format!("DELETE FROM {fin} WHERE {v} <= {truncated}"),
        ));
        out.push(st(
            "drop_stale_against_final",
            format!(
                "DELETE FROM {batch} USING {fin} f WHERE {} AND f.{v} >= {batch}.{v}",
                self.keys_equal("f", &batch)
            ),
        ));
        out.push(st(
            "drop_stale_against_tombstones",
            format!(
                "DELETE FROM {batch} USING {tomb} t WHERE NOT t.sluice_truncate AND {} AND t.{v} >= {batch}.{v}",
                self.keys_equal("t", &batch)
            ),
        ));
        out.push(st(
            "delete_replaced",
            format!(
                "DELETE FROM {fin} USING {batch} b WHERE {}",
                self.keys_equal(&fin, "b")
            ),
        ));
        let keys = self.key_list();
        if let Some(op) = &self.op {
            let op = quote_ident(op);
            out.push(st(
                "replace_tombstones",
                format!(
                    "DELETE FROM {tomb} USING {batch} b WHERE NOT {tomb}.sluice_truncate AND {} AND b.{op} = 'd'",
                    self.keys_equal(&tomb, "b")
                ),
            ));
            out.push(st(
                step_names::TOMBSTONES,
                format!("INSERT INTO {tomb} ({keys}, {v}, sluice_truncate, sluice_at) SELECT {keys}, {v}, FALSE, {} FROM {batch} WHERE {op} = 'd'", dialect.now()),
            ));
            out.push(st(
                step_names::INSERT,
                format!("INSERT INTO {fin} ({cols}) SELECT {cols} FROM {batch} WHERE {op} IS NULL OR {op} NOT IN ('d', 't')"),
            ));
        } else {
            out.push(st(
                step_names::INSERT,
                format!("INSERT INTO {fin} ({cols}) SELECT {cols} FROM {batch}"),
            ));
        }
        out.push(st("drop_batch", format!("DROP TABLE {batch}")));
        match self.staging {
            Staging::Temp => out.push(st(
                "drop_stage",
                format!("DROP TABLE {}", self.stage_table()),
            )),
            Staging::Table(_) => out.push(st(
                "clear_stage",
                format!("DELETE FROM {}", self.stage_table()),
            )),
        }
        out
    }

    /// Warehouse names of columns a persistent stage lacks (added last by ALTER TABLE).
    fn stage_missing(&self, found: &TablesFound) -> Vec<String> {
        let Some(have) = &found.stage_columns else {
            return Vec::new();
        };
        self.columns
            .iter()
            .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(&c.warehouse)))
            .map(|c| c.warehouse.clone())
            .collect()
    }

    /// The stage's columns in physical order once `before_copy` ran: the table's, in order,
    /// for a new or temporary stage; a persistent one's own order, its added columns last.
    fn stage_order(&self, found: &TablesFound) -> Vec<String> {
        match &found.stage_columns {
            Some(have) => have
                .iter()
                .cloned()
                .chain(self.stage_missing(found))
                .collect(),
            None => self.columns.iter().map(|c| c.warehouse.clone()).collect(),
        }
    }

    /// The COPYs of a batch. Redshift maps a Parquet file's columns to the target's by
    /// position, so a group whose columns are the stage's, in the stage's physical order, goes
    /// straight into the stage; any other group (older files without a new column, or a
    /// persistent stage whose added column is last) into a temporary stage of the files' own
    /// shape, then into the stage by name (missing columns stay NULL).
    pub fn copy_steps(
        &self,
        dialect: Dialect,
        groups: &[CopyGroup],
        found: &TablesFound,
        iam_role: &str,
    ) -> Result<Vec<Step>, PlanError> {
        let stage_order = self.stage_order(found);
        let mut out = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let cols = g
                .columns
                .iter()
                .map(|lake| {
                    self.columns
                        .iter()
                        .find(|c| &c.lake == lake)
                        .ok_or_else(|| PlanError::Schema {
                            table: self.table.clone(),
                            reason: format!(
                                "file {} has column {lake}, which is not an output column of the table (only additive changes load: re-run the transform on its source)",
                                g.files.first().map(String::as_str).unwrap_or("?")
                            ),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let wh: Vec<String> = cols.iter().map(|c| c.warehouse.clone()).collect();
            let copy = |name: String, target: String| {
                Step::Copy(CopyStep {
                    sql: dialect.copy_parquet(&target, &g.manifest_url, iam_role),
                    name,
                    target,
                    columns: wh.clone(),
                    lake_columns: g.columns.clone(),
                    files: g.files.clone(),
                })
            };
            let same = wh.len() == stage_order.len()
                && wh
                    .iter()
                    .zip(&stage_order)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b));
            if same {
                out.push(copy(step_names::COPY.to_string(), self.stage_table()));
                continue;
            }
            let group_stage = quote_ident(&format!("{TEMP_STAGE}_g{i}"));
            let defs = wh
                .iter()
                .map(|w| self.column_def(w, dialect))
                .collect::<Vec<_>>()
                .join(", ");
            let list = wh
                .iter()
                .map(|w| quote_ident(w))
                .collect::<Vec<_>>()
                .join(", ");
            out.push(Step::Sql(st(
                format!("create_group_stage {i}"),
                dialect.create_temp(&group_stage, &format!("({defs})")),
            )));
            out.push(copy(format!("copy_group {i}"), group_stage.clone()));
            out.push(Step::Sql(st(
                step_names::STAGE_GROUP,
                format!(
                    "INSERT INTO {} ({list}) SELECT {list} FROM {group_stage}",
                    self.stage_table()
                ),
            )));
            out.push(Step::Sql(st(
                format!("drop_group_stage {i}"),
                format!("DROP TABLE {group_stage}"),
            )));
        }
        Ok(out)
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
        out.extend(self.after_copy(dialect).into_iter().map(Step::Sql));
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

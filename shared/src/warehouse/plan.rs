//! A table's load plan: names, columns and the merge statements (see the order of effects in
//! `mod.rs`). Built from the pipeline file alone through the output schema.

use crate::config::{Staging, TableConfig};
use crate::schema::output_columns;

use super::sql::{qualified, quote_ident, Dialect};

/// Name of the loader's side table for a final table: tombstones of deleted keys and the
/// versions of TRUNCATEs, so late, older loads cannot bring rows back.
const TOMBSTONE_SUFFIX: &str = "__sluice_deleted";
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
    pub name: &'static str,
    pub sql: String,
}

fn st(name: &'static str, sql: String) -> Statement {
    Statement { name, sql }
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
            final_name: w.table.clone().unwrap_or_else(|| t.name.clone()),
            keys: w.merge_keys.iter().map(|k| wh(k)).collect(),
            version: wh(&version),
            op: outs
                .iter()
                .any(|c| c.name == OP_COLUMN)
                .then(|| wh(OP_COLUMN)),
            staging: w.staging.clone(),
            lock: w.lock,
            columns,
        })
    }

    /// `"schema"."table"` of the final table.
    pub fn final_table(&self) -> String {
        qualified(&self.schema, &self.final_name)
    }

    /// The loader's side table of tombstones and truncations, beside the final table.
    pub fn tombstone_table(&self) -> String {
        qualified(
            &self.schema,
            &format!("{}{TOMBSTONE_SUFFIX}", self.final_name),
        )
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
                    "CREATE TABLE IF NOT EXISTS {} ({keys}, {}, sluice_truncate BOOLEAN NOT NULL)",
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

    /// The statements before the COPY: case sensitivity, the lock, the stage.
    pub fn before_copy(&self, dialect: Dialect) -> Vec<Statement> {
        let mut out = Vec::new();
        if self.needs_case_sensitivity() {
            if let Some(sql) = dialect.case_sensitive_identifiers() {
                out.push(st("case_sensitive_identifiers", sql));
            }
        }
        if self.lock {
            out.push(st("lock", dialect.lock(&self.final_table())));
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
        let mut out = vec![st(
            "dedup_batch",
            dialect.create_temp_as(
                &batch,
                &format!(
                    "SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {v} DESC NULLS LAST) AS sluice_rn FROM {}) d WHERE sluice_rn = 1",
                    self.stage_table()
                ),
            ),
        )];
        if let Some(op) = &self.op {
            let op = quote_ident(op);
            out.push(st(
                "record_truncate",
                format!("INSERT INTO {tomb} ({v}, sluice_truncate) SELECT MAX({v}), TRUE FROM {batch} WHERE {op} = 't' HAVING COUNT(*) > 0"),
            ));
        }
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
                "record_tombstones",
                format!("INSERT INTO {tomb} ({keys}, {v}, sluice_truncate) SELECT {keys}, {v}, FALSE FROM {batch} WHERE {op} = 'd'"),
            ));
            out.push(st(
                "insert",
                format!("INSERT INTO {fin} ({cols}) SELECT {cols} FROM {batch} WHERE {op} IS NULL OR {op} NOT IN ('d', 't')"),
            ));
        } else {
            out.push(st(
                "insert",
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
}

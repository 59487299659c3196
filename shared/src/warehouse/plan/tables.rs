//! The tables a load names and the statements up to the filled stage: the CREATEs before a
//! first load, the lock and added columns, and the COPYs of the batch's files.

use crate::config::Staging;

use super::{
    st, step_names, CopyGroup, CopyStep, LoadPlan, PlanError, Statement, Step, TablesFound,
    TEMP_STAGE,
};
use crate::warehouse::sql::{quote_ident, Dialect};

impl LoadPlan {
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
                    self.final_column_defs(dialect)
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
            .final_columns()
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
}

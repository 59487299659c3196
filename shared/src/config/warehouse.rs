//! `[tables.warehouse]`: the Redshift target of a table (read by the loader), and the top-level
//! `[redshift]` section: where the warehouse is and how the loader reaches it. Column names here
//! are output (lake) names, built-in columns (`_lsn`, …) included.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Invalid;
use super::table::TableConfig;
use crate::warehouse::LOADER_COLUMNS;

fn yes() -> bool {
    true
}

/// The staging table a load COPYs into.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Staging {
    /// A temporary table per load (the default): nothing to create or clean up.
    #[default]
    Temp,
    /// A persistent table (`schema.table`), cleared with `DELETE` inside the transaction.
    Table(String),
}

impl<'de> Deserialize<'de> for Staging {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s == "temp" {
            Staging::Temp
        } else {
            Staging::Table(s)
        })
    }
}

/// Redshift target (for the loader).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Target schema (warehouse name, quoted in SQL).
    pub schema: String,
    /// Target table (default: the table name).
    #[serde(default)]
    pub table: Option<String>,
    /// Columns (output names) the merge matches on.
    pub merge_keys: Vec<String>,
    /// Column (output name) whose greater value is the newer version. Default: the output
    /// name of `dedup.order_by`.
    #[serde(default)]
    pub version_column: Option<String>,
    /// `temp` (default) or a persistent staging table `schema.table`.
    #[serde(default)]
    pub staging: Staging,
    /// Take `LOCK <final>` as the first statement of the load, so loads of one table queue
    /// instead of failing on a serialization conflict. Default on.
    #[serde(default = "yes")]
    pub lock: bool,
    /// Warehouse column names for lake columns whose warehouse names differ (spaces, upper
    /// case, reserved words); lake names stay snake_case.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Days a delete's tombstone is kept, guarding the key against older loads arriving late;
    /// older ones are purged after a load commits. Longer than any load can be delayed (SQS
    /// retention, DLQ replays). Default 30.
    #[serde(default = "default_tombstone_retention_days")]
    pub tombstone_retention_days: u32,
    /// With a persistent `staging` table: `TRUNCATE` it after each load committed (the load
    /// itself empties it with `DELETE`, which leaves space to vacuum). Never inside the load:
    /// TRUNCATE commits in Redshift. Default off.
    #[serde(default)]
    pub truncate_stage: bool,
}

const fn default_tombstone_retention_days() -> u32 {
    30
}

impl WarehouseConfig {
    /// The rules of the section alone, and its column names against the table's output
    /// columns (`outputs`, in file order).
    pub(crate) fn validate(&self, t: &TableConfig, outputs: &[String]) -> Result<(), Invalid> {
        if self.tombstone_retention_days == 0 {
            return Err(Invalid::at(
                "tombstone_retention_days",
                "must be at least 1 (a tombstone purged at once lets a late, older load bring a deleted row back)",
            ));
        }
        if self.merge_keys.is_empty() {
            return Err(Invalid::at(
                "merge_keys",
                "at least one merge key is required",
            ));
        }
        let known = |field: &str, name: &str| -> Result<(), Invalid> {
            if outputs.iter().any(|o| o == name) {
                Ok(())
            } else {
                Err(Invalid::at(
                    field,
                    format!(
                        "`{name}` is not an output column of the table (they are: {})",
                        outputs.join(", ")
                    ),
                ))
            }
        };
        for (j, k) in self.merge_keys.iter().enumerate() {
            known(&format!("merge_keys[{j}]"), k)?;
        }
        if let Some(v) = self.version_column_for(t) {
            known("version_column", &v)?;
            // The version orders rows of one key; as a key column it would order nothing, and
            // the tombstone table would hold the column twice.
            if self.merge_keys.contains(&v) {
                return Err(Invalid::at(
                    "version_column",
                    format!("`{v}` is a merge key: the version must be another column (the newer row of a key has the greater value)"),
                ));
            }
        }
        for (lake, wh) in &self.columns {
            known(&format!("columns.{lake}"), lake)?;
            check_identifier(wh).map_err(|r| Invalid::at(format!("columns.{lake}"), r))?;
        }
        self.check_warehouse_columns(outputs)?;
        check_identifier(&self.schema).map_err(|r| Invalid::at("schema", r))?;
        if let Some(table) = &self.table {
            check_identifier(table).map_err(|r| Invalid::at("table", r))?;
        }
        if let Staging::Table(name) = &self.staging {
            match name.split_once('.') {
                Some((s, t)) => {
                    check_identifier(s).map_err(|r| Invalid::at("staging", r))?;
                    check_identifier(t).map_err(|r| Invalid::at("staging", r))?;
                }
                None => {
                    return Err(Invalid::at(
                        "staging",
                        format!("`{name}`: expected `temp` or `schema.table`"),
                    ))
                }
            }
        }
        self.check_stage_apart(t)?;
        if self.truncate_stage && self.staging == Staging::Temp {
            return Err(Invalid::at(
                "truncate_stage",
                "needs a persistent `staging` table (`schema.table`): a temporary stage is dropped with its session",
            ));
        }
        Ok(())
    }

    /// Every output column's warehouse name is its own, and none is one of the loader's
    /// columns. Compared case-folded: Redshift folds identifiers unless case sensitivity is on
    /// (the loader turns it on only for tables with upper-case names), so `Id` and `id` may be
    /// one column.
    fn check_warehouse_columns(&self, outputs: &[String]) -> Result<(), Invalid> {
        // The field to fix: the mapping when there is one, else the section's `columns`.
        let field = |lake: &str| {
            if self.columns.contains_key(lake) {
                format!("columns.{lake}")
            } else {
                "columns".to_string()
            }
        };
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for lake in outputs {
            let wh = self.warehouse_name(lake);
            let folded = wh.to_lowercase();
            if LOADER_COLUMNS.contains(&folded.as_str()) {
                return Err(Invalid::at(
                    field(lake),
                    format!("`{lake}` would be the warehouse column `{wh}`, a name the loader uses for its own columns ({}): map it to another name in `columns`", LOADER_COLUMNS.join(", ")),
                ));
            }
            if let Some(first) = seen.insert(folded, lake) {
                let at = if self.columns.contains_key(lake.as_str()) {
                    field(lake)
                } else {
                    field(first)
                };
                return Err(Invalid::at(
                    at,
                    format!(
                        "`{first}` (warehouse name `{}`) and `{lake}` (`{wh}`) would be one warehouse column (names compare without case: Redshift folds them)",
                        self.warehouse_name(first)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A persistent stage is neither the final table nor its side table: every load empties
    /// the stage with `DELETE FROM <stage>`.
    fn check_stage_apart(&self, t: &TableConfig) -> Result<(), Invalid> {
        let Some(stage) = self.stage_name() else {
            return Ok(());
        };
        for (role, name) in self.written_tables(t) {
            if role != TableRole::Stage && folded(&name) == folded(&stage) {
                return Err(Invalid::at(
                    "staging",
                    format!(
                        "`{}.{}` is the {role} of this table: each load empties the stage with `DELETE FROM`",
                        stage.0, stage.1
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The final table's name (`table`, else the table's name).
    pub fn final_name<'a>(&'a self, t: &'a TableConfig) -> &'a str {
        self.table.as_deref().unwrap_or(&t.name)
    }

    /// The persistent stage as (schema, table); `None` for a temporary one (or a name without
    /// a schema, which `validate` refuses).
    pub(crate) fn stage_name(&self) -> Option<(String, String)> {
        match &self.staging {
            Staging::Table(name) => name
                .split_once('.')
                .map(|(s, t)| (s.to_string(), t.to_string())),
            Staging::Temp => None,
        }
    }

    /// The warehouse tables a load of this table writes, as (schema, table): the final table,
    /// its side table and a persistent stage. Two tables of a pipeline never share one
    /// (different leases would run two loads on it at once).
    pub(crate) fn written_tables(&self, t: &TableConfig) -> Vec<(TableRole, (String, String))> {
        let final_name = self.final_name(t);
        let mut out = vec![
            (
                TableRole::Final,
                (self.schema.clone(), final_name.to_string()),
            ),
            (
                TableRole::SideTable,
                (
                    self.schema.clone(),
                    format!("{final_name}{}", crate::warehouse::TOMBSTONE_SUFFIX),
                ),
            ),
        ];
        if let Some(stage) = self.stage_name() {
            out.push((TableRole::Stage, stage));
        }
        out
    }

    /// The version column: the configured one, else the output name of `dedup.order_by`.
    pub fn version_column_for(&self, t: &TableConfig) -> Option<String> {
        if let Some(v) = &self.version_column {
            return Some(v.clone());
        }
        let order_by = t.dedup.as_ref()?.order_by.as_deref()?;
        t.columns
            .iter()
            .find(|c| c.name == order_by)
            .map(|c| c.output_name())
    }

    /// The warehouse name of a lake column.
    pub fn warehouse_name<'a>(&'a self, lake: &'a str) -> &'a str {
        self.columns.get(lake).map(String::as_str).unwrap_or(lake)
    }
}

/// What a warehouse table is to the table that loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableRole {
    Final,
    SideTable,
    Stage,
}

impl std::fmt::Display for TableRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TableRole::Final => "final table",
            TableRole::SideTable => "side table (tombstones, `<final>__sluice_deleted`)",
            TableRole::Stage => "persistent staging table",
        })
    }
}

/// A (schema, table) name as Redshift may see it: case-folded, since it folds identifiers
/// unless case sensitivity is on, and the loader turns that on only for some tables.
pub(crate) fn folded((schema, table): &(String, String)) -> (String, String) {
    (schema.to_lowercase(), table.to_lowercase())
}

/// A warehouse identifier: 1–127 bytes (Redshift's limit), no NUL and no control characters.
/// Anything else (spaces, quotes, upper case, reserved words) is fine: SQL quotes it.
pub fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an identifier must not be empty".into());
    }
    if name.len() > 127 {
        return Err(format!("`{name}` is longer than 127 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} holds a control character"));
    }
    Ok(())
}

/// `[redshift]`: the warehouse the loader writes, reached through the Redshift Data API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftConfig {
    /// Redshift Serverless workgroup (exactly one of `workgroup` or `cluster`).
    #[serde(default)]
    pub workgroup: Option<String>,
    /// Provisioned cluster identifier.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Database name.
    pub database: String,
    /// Secrets Manager ARN of the database credentials. Clusters need this or `db_user`;
    /// Serverless may leave both out and take the user from IAM.
    #[serde(default)]
    pub secret: Option<String>,
    /// Database user for temporary IAM credentials (clusters only).
    #[serde(default)]
    pub db_user: Option<String>,
    /// ARN of the role COPY assumes to read `curated/`.
    pub copy_iam_role: String,
}

impl RedshiftConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        match (&self.workgroup, &self.cluster) {
            (Some(_), None) => {
                if self.db_user.is_some() {
                    return Err(Invalid::at(
                        "db_user",
                        "Serverless takes the user from IAM: use `secret` or neither",
                    ));
                }
            }
            (None, Some(_)) => {
                if self.secret.is_some() == self.db_user.is_some() {
                    return Err(Invalid::at(
                        "secret",
                        "a cluster needs exactly one of `secret` or `db_user`",
                    ));
                }
            }
            _ => {
                return Err(Invalid::at(
                    "workgroup",
                    "set exactly one of `workgroup` (Serverless) or `cluster`",
                ))
            }
        }
        if self.database.is_empty() {
            return Err(Invalid::at("database", "must not be empty"));
        }
        if !self.copy_iam_role.starts_with("arn:") {
            return Err(Invalid::at(
                "copy_iam_role",
                format!("`{}` is not an IAM role ARN", self.copy_iam_role),
            ));
        }
        Ok(())
    }
}

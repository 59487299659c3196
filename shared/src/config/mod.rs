//! The pipeline file: one declarative TOML file that describes every table once.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) so a misspelled key is an error with
//! its key path and line, never a silently ignored setting. Validation checks what serde
//! cannot (references between fields, limits) and names the offending key path: each section
//! has its own `validate`, in the file that declares it, with paths relative to the section;
//! the enclosing section adds its own part of the path (`Invalid::within`).

mod builtin;
mod catalog;
mod cdc;
mod column;
mod dedup;
mod error;
mod glue;
mod names;
mod output;
mod pii;
mod source;
mod table;
mod types;
mod warehouse;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use builtin::{builtin_column, is_builtin_column, BuiltinColumn, BUILTIN_COLUMNS};
pub use catalog::CatalogConfig;
pub use cdc::{
    CdcConfig, CdcRelation, CdcSource, CDC_BUILTIN_COLUMNS, CDC_PARTITION_BY, CDC_VERSION_COLUMN,
};
pub use column::{ColumnConfig, JsonField};
pub use dedup::DedupConfig;
pub use error::ConfigError;
pub use glue::GlueConfig;
pub use names::snake_case;
pub use output::OutputConfig;
pub use pii::{PiiAction, PiiRule};
pub use source::{ShardConfig, ShardLocation, SourceConfig, SourceEngine};
pub use table::{CsvOptions, EpochUnit, InputFormat, TableConfig};
pub use types::ColumnType;
pub use warehouse::{check_identifier, RedshiftConfig, Staging, WarehouseConfig};

use error::Invalid;

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Where the key for keyed hashing (PII `hash`) comes from.
    #[serde(default)]
    pub hash_key: Option<HashKeySource>,
    /// The warehouse the loader writes (optional: tables without `warehouse` never load).
    #[serde(default)]
    pub redshift: Option<RedshiftConfig>,
    /// The Glue Spark route for objects too large for the Lambda (optional: without it every
    /// object is transformed in the Lambda).
    #[serde(default)]
    pub glue: Option<GlueConfig>,
    /// Change data capture from PostgreSQL (optional: required exactly when a table has
    /// `format = "cdc"`).
    #[serde(default)]
    pub cdc: Option<CdcConfig>,
    /// One entry per table.
    pub tables: Vec<TableConfig>,
    /// Directory of the pipeline file, to resolve relative paths (key file). Not in TOML.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Source of the HMAC key. Exactly one of `secret` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashKeySource {
    /// Secrets Manager secret ARN or name; its SecretString (or SecretBinary) is the key.
    pub secret: Option<String>,
    /// A local key file (local runs and the demo), relative to the pipeline file.
    pub file: Option<PathBuf>,
}

impl Pipeline {
    /// Parses and validates a pipeline file's text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::from_toml(origin, text, "", e))?;
        let mut pipeline: Pipeline = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::from_toml(origin, text, &path, e.into_inner())
        })?;
        // Before validation, so the rules judge the table every reader will see.
        pipeline.tables.iter_mut().for_each(cdc::complete_table);
        pipeline.validate(origin)?;
        Ok(pipeline)
    }

    /// Reads, parses and validates a pipeline file from disk.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut p = Self::parse(&text, &path.display().to_string())?;
        p.base_dir = path.parent().map(Path::to_path_buf);
        Ok(p)
    }

    /// The table whose `raw_prefix` is the longest prefix of `key`.
    pub fn table_for_key(&self, key: &str) -> Option<&TableConfig> {
        self.tables
            .iter()
            .filter(|t| key.starts_with(&t.raw_prefix))
            .max_by_key(|t| t.raw_prefix.len())
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The cdc table whose source relation is `schema.table` (names compared exactly, as
    /// PostgreSQL compares quoted identifiers).
    pub fn cdc_table(&self, schema: &str, table: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| {
            t.format == InputFormat::Cdc
                && t.cdc
                    .as_ref()
                    .is_some_and(|r| r.schema == schema && r.table == table)
        })
    }

    /// The cdc tables, in file order.
    pub fn cdc_tables(&self) -> impl Iterator<Item = &TableConfig> {
        self.tables.iter().filter(|t| t.format == InputFormat::Cdc)
    }

    /// The key file's path, resolved against the pipeline file's directory.
    pub fn hash_key_file(&self) -> Option<PathBuf> {
        let f = self.hash_key.as_ref()?.file.as_ref()?;
        Some(match &self.base_dir {
            Some(base) if f.is_relative() => base.join(f),
            _ => f.clone(),
        })
    }

    /// Whether any table hashes a column (and so needs the hash key).
    pub fn needs_hash_key(&self) -> bool {
        self.tables.iter().any(|t| {
            t.columns.iter().any(|c| {
                c.pii.as_ref().is_some_and(|p| p.action == PiiAction::Hash)
                    || c.fields
                        .iter()
                        .any(|f| f.pii.as_ref().is_some_and(|p| p.action == PiiAction::Hash))
            })
        })
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate_sections().map_err(|e| e.into_error(origin))
    }

    fn validate_sections(&self) -> Result<(), Invalid> {
        if self.tables.is_empty() {
            return Err(Invalid::at("tables", "at least one table is required"));
        }
        self.validate_hash_key()?;
        if let Some(r) = &self.redshift {
            r.validate().map_err(|e| e.within("redshift"))?;
        }
        if let Some(g) = &self.glue {
            g.validate().map_err(|e| e.within("glue"))?;
        }
        if let Some(c) = &self.cdc {
            c.validate().map_err(|e| e.within("cdc"))?;
        }
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let within = |e: Invalid| e.within(&format!("tables[{i}]"));
            t.validate().map_err(within)?;
            if !names.insert(t.name.as_str()) {
                return Err(within(Invalid::at(
                    "name",
                    format!("table `{}` is defined twice", t.name),
                )));
            }
            if !prefixes.insert(t.raw_prefix.as_str()) {
                return Err(within(Invalid::at(
                    "raw_prefix",
                    format!("`{}` is owned by two tables", t.raw_prefix),
                )));
            }
        }
        self.validate_cdc_tables()?;
        self.validate_warehouse_tables()
    }

    /// `[cdc]` exactly when a table has `format = "cdc"`, and one table per source relation
    /// (cdc-sink files each event under the one table of its relation).
    fn validate_cdc_tables(&self) -> Result<(), Invalid> {
        let mut first: HashMap<(&str, &str), &str> = HashMap::new();
        for (i, t) in self.tables.iter().enumerate() {
            let Some(rel) = t.cdc.as_ref().filter(|_| t.format == InputFormat::Cdc) else {
                continue;
            };
            if self.cdc.is_none() {
                return Err(Invalid::at(
                    format!("tables[{i}].format"),
                    "a cdc table needs the top-level [cdc] section (source, slot, publication, stream)",
                ));
            }
            if let Some(other) =
                first.insert((rel.schema.as_str(), rel.table.as_str()), t.name.as_str())
            {
                return Err(Invalid::at(
                    format!("tables[{i}].cdc"),
                    format!(
                        "`{}.{}` is already the source of table `{other}`: each source relation feeds one table",
                        rel.schema, rel.table
                    ),
                ));
            }
        }
        if self.cdc.is_some() && first.is_empty() {
            return Err(Invalid::at(
                "cdc",
                "no table has format = \"cdc\": the [cdc] section publishes the cdc tables' source relations",
            ));
        }
        Ok(())
    }

    /// No warehouse table is written by two tables' loads (final, side or persistent stage
    /// table): each table's load runs under its own lease, so two loads could run on one
    /// warehouse table at once, and a load empties its stage with `DELETE`. Names compare
    /// case-folded, as Redshift may fold them.
    fn validate_warehouse_tables(&self) -> Result<(), Invalid> {
        let mut owners: HashMap<(String, String), (&str, warehouse::TableRole)> = HashMap::new();
        for (i, t) in self.tables.iter().enumerate() {
            let Some(w) = &t.warehouse else { continue };
            for (role, name) in w.written_tables(t) {
                let Some((other, other_role)) = owners.get(&warehouse::folded(&name)) else {
                    owners.insert(warehouse::folded(&name), (t.name.as_str(), role));
                    continue;
                };
                let field = match role {
                    warehouse::TableRole::Stage => "staging",
                    _ => "table",
                };
                return Err(Invalid::at(
                    field,
                    format!(
                        "`{}.{}`, the {role} of table `{}`, is also the {other_role} of table `{other}`: two loads (under different leases) would write it at once",
                        name.0, name.1, t.name
                    ),
                )
                .within(&format!("tables[{i}].warehouse")));
            }
        }
        Ok(())
    }

    fn validate_hash_key(&self) -> Result<(), Invalid> {
        match &self.hash_key {
            Some(h) if h.secret.is_some() == h.file.is_some() => Err(Invalid::at(
                "hash_key",
                "set exactly one of `secret` or `file`",
            )),
            None if self.needs_hash_key() => Err(Invalid::at(
                "hash_key",
                "a column uses pii action `hash`, so a [hash_key] with `secret` or `file` is required",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;

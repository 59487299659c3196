//! `[tables.source]`: where `extract` reads the table (used by the extractor; parsed and
//! validated here).

use serde::Deserialize;

use super::error::Invalid;

/// The source database's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceEngine {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

/// Source database (for extract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql` or `postgres`.
    pub engine: SourceEngine,
    /// Secrets Manager ids of the shards' connection secrets.
    pub shard_secrets: Vec<String>,
    /// Table or view to read (mutually exclusive with `query`).
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT to read instead of a table.
    #[serde(default)]
    pub query: Option<String>,
    /// Primary-key columns (the keyset tiebreaker).
    pub key_columns: Vec<String>,
    /// The watermark column.
    pub updated_at_column: String,
}

impl SourceConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.table.is_some() == self.query.is_some() {
            return Err(Invalid::at("", "set exactly one of `table` or `query`"));
        }
        Ok(())
    }
}

//! `[tables.dedup]`: deduplication within each source object.

use serde::Deserialize;

use super::error::Invalid;
use super::types::ColumnType;
use super::TableConfig;

/// Deduplication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Columns (input names) that identify a row.
    pub key: Vec<String>,
    /// Optional int/date/timestamp column: the greatest value wins (ties: the later row).
    /// Without it, the first occurrence in the object wins.
    #[serde(default)]
    pub order_by: Option<String>,
}

impl DedupConfig {
    /// Key and ordering columns are plain columns of the table; the ordering one orders.
    pub(crate) fn validate(&self, t: &TableConfig) -> Result<(), Invalid> {
        if self.key.is_empty() {
            return Err(Invalid::at("key", "at least one key column is required"));
        }
        for (k, name) in self.key.iter().enumerate() {
            let at = |reason: String| Invalid::at(format!("key[{k}]"), reason);
            match t.column(name) {
                Some(c) if c.ty != ColumnType::Json => {}
                Some(_) => return Err(at(format!("`{name}` is a json column"))),
                None => return Err(at(format!("`{name}` is not a column of the table"))),
            }
        }
        let Some(o) = &self.order_by else {
            return Ok(());
        };
        match t.column(o) {
            Some(c)
                if matches!(
                    c.ty,
                    ColumnType::Int | ColumnType::Timestamp | ColumnType::Date
                ) =>
            {
                Ok(())
            }
            Some(_) => Err(Invalid::at(
                "order_by",
                format!("`{o}` must be an int, date or timestamp column"),
            )),
            None => Err(Invalid::at(
                "order_by",
                format!("`{o}` is not a column of the table"),
            )),
        }
    }
}

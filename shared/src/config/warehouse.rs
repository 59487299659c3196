//! `[tables.warehouse]`: the Redshift target (used by the loader; parsed and validated here).
//! Its column names are output names, built-in columns (`_lsn`, …) included.

use serde::Deserialize;

use super::error::Invalid;

/// Redshift target (for the loader).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Target schema.
    pub schema: String,
    /// Target table (default: the table name).
    #[serde(default)]
    pub table: Option<String>,
    /// Columns (output names) the merge matches on.
    pub merge_keys: Vec<String>,
    /// Column (output name) whose greater value is the newer version.
    #[serde(default)]
    pub version_column: Option<String>,
}

impl WarehouseConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.merge_keys.is_empty() {
            return Err(Invalid::at(
                "merge_keys",
                "at least one merge key is required",
            ));
        }
        Ok(())
    }
}

//! `[tables.catalog]`: Glue Data Catalog registration.

use serde::Deserialize;

use super::error::Invalid;
use super::names::is_glue_name;

/// Glue Data Catalog registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Glue database (created when missing).
    pub database: String,
    /// Glue table (default: the table name).
    #[serde(default)]
    pub table: Option<String>,
    /// `[first_year, last_year]`: use Athena partition projection instead of registering
    /// partitions.
    #[serde(default)]
    pub partition_projection_years: Option<[i32; 2]>,
}

impl CatalogConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !is_glue_name(&self.database) {
            return Err(Invalid::at(
                "database",
                format!(
                    "`{}` must be lower-case letters, digits and _",
                    self.database
                ),
            ));
        }
        if let Some(tn) = &self.table {
            if !is_glue_name(tn) {
                return Err(Invalid::at(
                    "table",
                    format!("`{tn}` must be lower-case letters, digits and _"),
                ));
            }
        }
        if let Some([a, b]) = self.partition_projection_years {
            if a > b || a < 1 {
                return Err(Invalid::at(
                    "partition_projection_years",
                    "must be [first, last] with first <= last",
                ));
            }
        }
        Ok(())
    }
}

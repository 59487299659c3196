use thiserror::Error;

/// Errors of the catalog.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The pipeline changed a column's type; the lake's files and the table would disagree.
    #[error("table {database}.{table}: column {column} is {existing} in the catalog but {requested} in the pipeline file; a type change is not additive: create a new column or a new table")]
    Incompatible {
        database: String,
        table: String,
        column: String,
        existing: String,
        requested: String,
    },
    /// Another writer updated the table between our read and our update.
    #[error("table {database}.{table} was updated concurrently; retry")]
    Conflict { database: String, table: String },
    /// The service failed; `retryable` says whether trying again may help.
    #[error("Glue {op} on {target} failed: {message}")]
    Service {
        op: &'static str,
        target: String,
        message: String,
        retryable: bool,
    },
    /// The local catalog file could not be read or written.
    #[error("local catalog {path}: {message}")]
    Local { path: String, message: String },
}

impl CatalogError {
    /// Whether a retry of the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CatalogError::Conflict { .. }
                | CatalogError::Service {
                    retryable: true,
                    ..
                }
        )
    }
}

use thiserror::Error;

use crate::catalog::CatalogError;
use crate::lake::LakeError;
pub use crate::lambda::ErrorKind;

/// Errors of a transform run. `kind()` tells the Lambda edge (and retries) what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransformError {
    /// No table's `raw_prefix` matches the key.
    #[error("no table in the pipeline owns {key}: known raw prefixes are {prefixes}")]
    UnknownTable { key: String, prefixes: String },
    /// The object cannot be read as the table's format at all (e.g. a required column is
    /// missing from the CSV header). Row-level problems go to quarantine instead.
    #[error("object {key}: {message}")]
    Header { key: String, message: String },
    /// The pipeline's schema for the table conflicts with the catalog (a type change).
    #[error("object {key} not written: {source}")]
    Incompatible {
        key: String,
        #[source]
        source: Box<CatalogError>,
    },
    #[error("lake: {0}")]
    Lake(#[from] LakeError),
    #[error("catalog: {0}")]
    Catalog(Box<CatalogError>),
    #[error("reading {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing Parquet: {0}")]
    Parquet(String),
    #[error("the table hashes PII but the hash key is missing or unusable")]
    HashKey,
    #[error("pipeline: {0}")]
    Plan(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CatalogError> for TransformError {
    fn from(e: CatalogError) -> Self {
        TransformError::Catalog(Box::new(e))
    }
}

impl TransformError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransformError::UnknownTable { .. }
            | TransformError::Header { .. }
            | TransformError::Incompatible { .. }
            | TransformError::HashKey
            | TransformError::Plan(_) => ErrorKind::BadInput,
            TransformError::Lake(e) if e.is_retryable() => ErrorKind::Retryable,
            TransformError::Lake(LakeError::NotFound { .. }) => ErrorKind::BadInput,
            TransformError::Catalog(e) if e.is_retryable() => ErrorKind::Retryable,
            _ => ErrorKind::Internal,
        }
    }
}

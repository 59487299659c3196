//! The manifest: written last, one per source object, listing every file the object produced.
//! The loader triggers on it and reconciles its row counts; a re-run uses the previous one to
//! delete files this run no longer writes.

use serde::{Deserialize, Serialize};

use super::engine::Counts;

/// Bump when the shape changes incompatibly.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Lake key of the Parquet file.
    pub key: String,
    pub year: String,
    pub month: String,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub table: String,
    pub source_key: String,
    pub source_etag: Option<String>,
    pub source_bytes: u64,
    pub files: Vec<ManifestFile>,
    #[serde(flatten)]
    pub counts: Counts,
    /// The quarantine object for this source, when any row was quarantined.
    pub quarantine_key: Option<String>,
}

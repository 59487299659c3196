//! The manifest: one JSON object per source object, written last by the transform (and the
//! Glue job), listing every file the object produced with its rows and ETag, the output
//! columns in file order, and the row counts. The loader triggers on it, COPYs exactly these
//! files, builds its DDL from the columns and reconciles its row counts against them; a
//! re-run of the transform uses the previous manifest to delete files it no longer writes.
//!
//! This module depends on nothing but serde: the loader reads a manifest without the
//! transform engine.

use serde::{Deserialize, Serialize};

/// The version this build writes and reads. Bump when the shape changes incompatibly;
/// readers refuse any other version instead of guessing.
pub const MANIFEST_VERSION: u32 = 2;

/// Versions whose file list [`Manifest::file_keys`] can read: version 1 (before the columns
/// and ETags) listed `files[].key` the same way.
const FILE_KEYS_VERSIONS: std::ops::RangeInclusive<u64> = 1..=2;

/// One output column, in the order of the Parquet files' columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    /// Glue / Hive type: `bigint`, `double`, `decimal(p,s)`, `boolean`, `string`, `binary`,
    /// `date`, `timestamp`.
    pub glue_type: String,
    /// False when the pipeline guarantees a value (required columns: a null is quarantined).
    pub nullable: bool,
}

/// One Parquet file the source object produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Lake key of the Parquet file.
    pub key: String,
    pub year: String,
    pub month: String,
    pub rows: u64,
    pub bytes: u64,
    /// ETag of the file as written, quotes stripped (None when the store reports none): an
    /// opaque identity of this write, so the loader can tell the file it loads is the one this
    /// manifest describes (compare with HeadObject). Not a content checksum: S3 multipart
    /// uploads give `<md5 of the parts' md5s>-<parts>`, the local store size and mtime.
    pub etag: Option<String>,
}

/// Rows of one source object. They always balance:
/// `rows_read = rows_written + rows_duplicate + rows_quarantined`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_duplicate: u64,
    pub rows_quarantined: u64,
}

impl RowCounts {
    pub fn balances(&self) -> bool {
        self.rows_read == self.rows_written + self.rows_duplicate + self.rows_quarantined
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub table: String,
    pub source_key: String,
    pub source_etag: Option<String>,
    pub source_bytes: u64,
    pub columns: Vec<ManifestColumn>,
    pub files: Vec<ManifestFile>,
    #[serde(flatten)]
    pub counts: RowCounts,
    /// The quarantine object for this source, when any row was quarantined.
    pub quarantine_key: Option<String>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest {key} is not a Sluice manifest: {reason}")]
    Malformed { key: String, reason: String },
    #[error(
        "manifest {key} has version {found}; this build reads version {MANIFEST_VERSION} \
         (re-run the transform on its source object, or deploy the Sluice version that wrote it)"
    )]
    UnknownVersion { key: String, found: u64 },
}

impl Manifest {
    /// Reads a manifest, checking its version before its shape, so a manifest from another
    /// version is named as such rather than as a missing field.
    pub fn from_json(bytes: &[u8], key: &str) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            version: Option<u64>,
        }
        let malformed = |reason: String| ManifestError::Malformed {
            key: key.to_string(),
            reason,
        };
        let v: Version = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let found = v
            .version
            .ok_or_else(|| malformed("no `version` field".into()))?;
        if found != u64::from(MANIFEST_VERSION) {
            return Err(ManifestError::UnknownVersion {
                key: key.to_string(),
                found,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if !m.counts.balances() {
            return Err(malformed(format!(
                "row counts do not balance: read {} != written {} + duplicate {} + quarantined {}",
                m.counts.rows_read,
                m.counts.rows_written,
                m.counts.rows_duplicate,
                m.counts.rows_quarantined
            )));
        }
        Ok(m)
    }

    /// The JSON the transform writes (pretty, for people reading the lake).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec_pretty(self)
    }

    /// The file keys of a manifest of this or an earlier version: all a re-run of the transform
    /// needs to delete the files the previous run wrote and this one did not. Lenient on
    /// purpose, so files written before an upgrade are still cleaned up.
    pub fn file_keys(bytes: &[u8], key: &str) -> Result<Vec<String>, ManifestError> {
        #[derive(Deserialize)]
        struct File {
            key: String,
        }
        #[derive(Deserialize)]
        struct Files {
            version: Option<u64>,
            files: Vec<File>,
        }
        let f: Files = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        match f.version {
            Some(v) if FILE_KEYS_VERSIONS.contains(&v) => {
                Ok(f.files.into_iter().map(|f| f.key).collect())
            }
            Some(found) => Err(ManifestError::UnknownVersion {
                key: key.to_string(),
                found,
            }),
            None => Err(ManifestError::Malformed {
                key: key.to_string(),
                reason: "no `version` field".into(),
            }),
        }
    }

    /// Rows in the listed files: what the loader must find in the warehouse.
    pub fn file_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            table: "t".into(),
            source_key: "raw/t/a.csv".into(),
            source_etag: Some("e".into()),
            source_bytes: 10,
            columns: vec![ManifestColumn {
                name: "id".into(),
                glue_type: "bigint".into(),
                nullable: false,
            }],
            files: vec![ManifestFile {
                key: "curated/t/year=2024/month=01/a-0-00000.parquet".into(),
                year: "2024".into(),
                month: "01".into(),
                rows: 3,
                bytes: 100,
                etag: Some("abc".into()),
            }],
            counts: RowCounts {
                rows_read: 5,
                rows_written: 3,
                rows_duplicate: 1,
                rows_quarantined: 1,
            },
            quarantine_key: None,
        }
    }

    #[test]
    fn round_trips_with_counts_at_top_level() {
        let m = sample();
        let json = m.to_json().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["rows_written"], 3);
        assert_eq!(v["files"][0]["etag"], "abc");
        assert_eq!(Manifest::from_json(&json, "k").unwrap(), m);
        assert_eq!(m.file_rows(), 3);
    }

    #[test]
    fn unknown_or_missing_version_is_refused_by_name() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_json().unwrap()).unwrap();
        v["version"] = 1.into();
        let e = Manifest::from_json(v.to_string().as_bytes(), "manifests/t/x.json").unwrap_err();
        assert!(matches!(e, ManifestError::UnknownVersion { found: 1, .. }));
        assert!(e.to_string().contains("manifests/t/x.json"), "{e}");
        assert!(e.to_string().contains("version 1"), "{e}");
        v.as_object_mut().unwrap().remove("version");
        let e = Manifest::from_json(v.to_string().as_bytes(), "k").unwrap_err();
        assert!(e.to_string().contains("no `version`"), "{e}");
        let e = Manifest::from_json(b"not json", "k").unwrap_err();
        assert!(matches!(e, ManifestError::Malformed { .. }));
    }

    #[test]
    fn unbalanced_counts_are_refused() {
        let mut m = sample();
        m.counts.rows_read = 9;
        let e = Manifest::from_json(&m.to_json().unwrap(), "k").unwrap_err();
        assert!(e.to_string().contains("do not balance"), "{e}");
    }

    #[test]
    fn file_keys_read_version_1_and_2_only() {
        let v1 = br#"{"version": 1, "table": "t", "source_key": "raw/t/a.csv", "source_etag": null,
            "source_bytes": 1, "files": [{"key": "curated/t/year=2024/month=01/a-0-00000.parquet",
            "year": "2024", "month": "01", "rows": 1, "bytes": 9}],
            "rows_read": 1, "rows_written": 1, "rows_duplicate": 0, "rows_quarantined": 0,
            "quarantine_key": null}"#;
        assert_eq!(
            Manifest::file_keys(v1, "k").unwrap(),
            vec!["curated/t/year=2024/month=01/a-0-00000.parquet".to_string()]
        );
        assert!(
            Manifest::from_json(v1, "k").is_err(),
            "the loader still refuses v1"
        );
        let v2 = sample().to_json().unwrap();
        assert_eq!(Manifest::file_keys(&v2, "k").unwrap().len(), 1);
        let v9 = br#"{"version": 9, "files": []}"#;
        assert!(matches!(
            Manifest::file_keys(v9, "k"),
            Err(ManifestError::UnknownVersion { found: 9, .. })
        ));
    }
}

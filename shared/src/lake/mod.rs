//! The lake: an object store behind one small trait, with an S3 implementation
//! (`aws.rs`, aws-sdk-s3) and a local-filesystem one (`local.rs`, the embedded default).
//!
//! Semantics follow the `object_store` crate: put modes (overwrite, create-if-absent,
//! update-if-match by ETag), error variants callers act on (`NotFound`, `AlreadyExists`,
//! `Precondition`), and local writes staged to a temp file then renamed, so no reader ever
//! sees a half-written object. The conformance suite in the `tests` crate (`sluice_tests::conformance`) holds both
//! implementations to the same behaviour.

mod aws;
mod error;
pub mod layout;
pub mod lease;
mod local;
pub mod manifest;
pub mod quarantine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use aws::S3Store;
pub use error::LakeError;
pub use local::LocalStore;

/// What a listing or a head request tells about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key inside the lake (no leading slash), e.g. `raw/funnel/2019-10.csv`.
    pub key: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Entity tag, quotes stripped. The local store derives one from size and mtime.
    pub etag: Option<String>,
}

/// How a put treats an object that already exists under the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there (deterministic output keys make this the idempotent choice).
    Overwrite,
    /// Fail with `LakeError::AlreadyExists` when the key exists (S3 `If-None-Match: *`).
    Create,
    /// Fail with `LakeError::Precondition` unless the current ETag matches (S3 `If-Match`).
    UpdateIfMatch(String),
}

/// The result of a successful put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// ETag of the new object, quotes stripped, when the store reports one.
    pub etag: Option<String>,
}

/// The object store every stage reads and writes through.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// A URL for `key` that other tools understand: `s3://bucket/key` or an absolute path.
    /// Used for Glue table locations and log lines.
    fn url(&self, key: &str) -> String;

    /// Reads a whole (small) object: manifests, pipeline files, state.
    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError>;

    /// Streams an object to a local file (bounded memory), returning its metadata.
    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, LakeError>;

    /// Metadata of one object; `NotFound` when absent.
    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError>;

    /// Writes `body` under `key` with the given mode.
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError>;

    /// Uploads a finished local file under `key` (overwrite). S3 uses multipart upload above
    /// its part threshold, so a large Parquet file never has to sit in memory.
    async fn put_file(&self, key: &str, path: &Path) -> Result<PutResult, LakeError>;

    /// Like `put_file`, for a file the caller no longer needs: the local store moves it into
    /// place instead of copying it (when on the same filesystem). Default: `put_file`.
    async fn put_file_moving(&self, key: &str, path: &Path) -> Result<PutResult, LakeError> {
        self.put_file(key, path).await
    }

    /// Deletes `key`. Deleting an absent key succeeds (re-delivered events stay harmless).
    async fn delete(&self, key: &str) -> Result<(), LakeError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError>;

    /// For the local store: the file that holds `key`, so readers can skip a copy.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    /// The S3 bucket behind the store; `None` for a local lake.
    fn s3_bucket(&self) -> Option<&str> {
        None
    }
}

/// Opens a lake from a URL: `s3://bucket` (through `s3`, the client built once at start-up)
/// or a local directory (created when missing).
pub fn open_with_client(
    url: &str,
    s3: &aws_sdk_s3::Client,
) -> Result<Arc<dyn ObjectStore>, LakeError> {
    let Some(rest) = url.strip_prefix("s3://") else {
        return Ok(Arc::new(LocalStore::new(url)?));
    };
    let bucket = rest.trim_end_matches('/');
    if bucket.is_empty() || bucket.contains('/') {
        return Err(LakeError::BadUrl {
            url: url.to_string(),
            reason: "expected s3://BUCKET (a lake is a whole bucket)".into(),
        });
    }
    Ok(Arc::new(S3Store::new(s3.clone(), bucket)))
}

/// The stores that buckets named in S3 events lead to. A deployed function takes any bucket
/// its notifications come from through one S3 client; a fixed lake (`SLUICE_LAKE`, or a local
/// directory in tests and `sluice` runs) takes events for its own bucket only.
#[derive(Debug, Clone)]
pub enum Lakes {
    /// Any bucket, through this client.
    S3(aws_sdk_s3::Client),
    /// One store. An S3 store refuses events naming another bucket; a local store takes any
    /// bucket name (it stands in for the bucket).
    Fixed(Arc<dyn ObjectStore>),
}

impl Lakes {
    /// The store for `bucket`.
    pub fn for_bucket(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, LakeError> {
        match self {
            Lakes::S3(client) => Ok(Arc::new(S3Store::new(client.clone(), bucket))),
            Lakes::Fixed(store) => match store.s3_bucket() {
                Some(own) if own != bucket => Err(LakeError::BadUrl {
                    url: format!("s3://{bucket}"),
                    reason: format!(
                        "the event names bucket {bucket}, but this function's lake is s3://{own}"
                    ),
                }),
                _ => Ok(store.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_lake_takes_only_its_own_bucket() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let client = aws_sdk_s3::Client::from_conf(crate::aws::s3_config(&sdk));
        let fixed = Lakes::Fixed(open_with_client("s3://lake-a", &client).unwrap());
        assert_eq!(
            fixed.for_bucket("lake-a").unwrap().s3_bucket(),
            Some("lake-a")
        );
        let e = fixed.for_bucket("lake-b").unwrap_err();
        assert!(e.to_string().contains("lake-b"), "{e}");
        assert!(e.to_string().contains("s3://lake-a"), "{e}");
        let any = Lakes::S3(client.clone());
        assert_eq!(
            any.for_bucket("lake-b").unwrap().s3_bucket(),
            Some("lake-b")
        );
        let dir = tempfile::tempdir().unwrap();
        let local = Lakes::Fixed(open_with_client(dir.path().to_str().unwrap(), &client).unwrap());
        assert_eq!(local.for_bucket("whatever").unwrap().s3_bucket(), None);
        assert!(open_with_client("s3://a/b", &client).is_err());
        assert!(open_with_client("s3://", &client).is_err());
    }
}

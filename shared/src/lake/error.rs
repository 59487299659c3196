use thiserror::Error;

/// Errors of the object store. Variants say what the caller does about them.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LakeError {
    /// The object does not exist.
    #[error("object {key} not found")]
    NotFound { key: String },
    /// `PutMode::Create` found an existing object.
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    /// `PutMode::UpdateIfMatch` found a different ETag (someone else wrote first).
    #[error("object {key} changed since it was read (ETag precondition failed)")]
    Precondition { key: String },
    /// A lake URL or key that cannot be used.
    #[error("bad lake location {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Local filesystem error.
    #[error("local lake I/O on {key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote service failed; `retryable` says whether trying again may help.
    #[error("S3 {op} on {key} failed: {message}")]
    Service {
        op: &'static str,
        key: String,
        message: String,
        retryable: bool,
    },
}

impl LakeError {
    /// Whether a retry of the same call may succeed (throttling, 5xx, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LakeError::Service {
                retryable: true,
                ..
            }
        )
    }
}

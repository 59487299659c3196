//! The Lambda edge every function shares: the error kinds CloudWatch shows, and the start-up
//! helpers (logging, the pipeline from `SLUICE_PIPELINE`, the lake from `SLUICE_LAKE`).
//!
//! A function's `main.rs` calls these once at init and fails the cold start with a clear
//! message on bad configuration, instead of failing every event.

use std::path::Path;
use std::sync::Arc;

use lambda_runtime::Diagnostic;

use crate::aws::Clients;
use crate::config::{ConfigError, Pipeline};
use crate::lake::{LakeError, ObjectStore, S3Store};

/// Where every function finds the pipeline file: a path bundled with the function, or
/// `s3://bucket/key`.
pub const PIPELINE_ENV: &str = "SLUICE_PIPELINE";
/// Where functions whose event names no bucket (schedules, streams) find the lake:
/// `s3://bucket` or a local directory.
pub const LAKE_ENV: &str = "SLUICE_LAKE";

/// What the caller (and the Lambda retry machinery) does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input or config: retrying the same event fails the same way.
    BadInput,
    /// Throttling, a timeout, a concurrent update: a retry may succeed.
    Retryable,
    /// Anything else.
    Internal,
}

impl ErrorKind {
    /// The name CloudWatch shows as the invocation's error type.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "BadInput",
            ErrorKind::Retryable => "Retryable",
            ErrorKind::Internal => "Internal",
        }
    }

    /// The kind of a batch that failed in several ways: one retryable failure makes the whole
    /// invocation worth retrying; otherwise internal beats bad input.
    pub fn worst(self, other: ErrorKind) -> ErrorKind {
        use ErrorKind::*;
        match (self, other) {
            (Retryable, _) | (_, Retryable) => Retryable,
            (Internal, _) | (_, Internal) => Internal,
            _ => BadInput,
        }
    }
}

/// The error a handler returns: its kind becomes the runtime's error type (what CloudWatch
/// shows: `BadInput`, `Retryable`, `Internal`, never a Rust type path), its message names every
/// failed object or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub kind: ErrorKind,
    pub message: String,
}

impl HandlerError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An event this function cannot take (wrong shape, missing fields).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Self {
        Diagnostic {
            error_type: e.kind.as_str().into(),
            error_message: e.message,
        }
    }
}

/// Why a function could not start. Each names the variable or location to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error("{var} is not set: {hint}")]
    MissingEnv {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{var}={value}: {reason}")]
    BadEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reading pipeline {location}: {source}")]
    PipelineRead {
        location: String,
        #[source]
        source: LakeError,
    },
    #[error("lake {location}: {source}")]
    Lake {
        location: String,
        #[source]
        source: LakeError,
    },
}

/// Logging: the runtime's subscriber (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, level from
/// `AWS_LAMBDA_LOG_LEVEL` / `RUST_LOG`).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

fn env_var(var: &'static str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Reads the pipeline file at `location`: `s3://bucket/key` (through the lake's S3 reader:
/// the same error mapping, no raw HTTP response in a message) or a local path.
pub async fn load_pipeline(
    location: &str,
    s3: &aws_sdk_s3::Client,
) -> Result<Pipeline, StartupError> {
    let Some(rest) = location.strip_prefix("s3://") else {
        return Ok(Pipeline::from_path(Path::new(location))?);
    };
    let bad = |reason: &str| StartupError::BadEnv {
        var: PIPELINE_ENV,
        value: location.to_string(),
        reason: reason.to_string(),
    };
    let (bucket, key) = rest
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| bad("expected s3://BUCKET/KEY"))?;
    let store = S3Store::new(s3.clone(), bucket);
    let bytes = store
        .get_bytes(key)
        .await
        .map_err(|source| StartupError::PipelineRead {
            location: location.to_string(),
            source,
        })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("the file is not UTF-8"))?;
    Ok(Pipeline::parse(text, location)?)
}

/// Where `SLUICE_PIPELINE` says the pipeline file is (what the Glue route passes its job).
pub fn pipeline_location() -> Result<String, StartupError> {
    env_var(PIPELINE_ENV).ok_or(StartupError::MissingEnv {
        var: PIPELINE_ENV,
        hint: "an s3://bucket/key URL or a path to the pipeline file",
    })
}

/// The pipeline named by `SLUICE_PIPELINE`, parsed and validated.
pub async fn pipeline_from_env(clients: &Clients) -> Result<Pipeline, StartupError> {
    let location = pipeline_location()?;
    let pipeline = load_pipeline(&location, &clients.s3).await?;
    tracing::info!(pipeline = %location, tables = pipeline.tables.len(), "pipeline loaded");
    Ok(pipeline)
}

/// The lake named by `SLUICE_LAKE`, or `None` when it is not set (functions whose events name
/// a bucket may go without).
pub async fn lake_from_env(
    clients: &Clients,
) -> Result<Option<Arc<dyn ObjectStore>>, StartupError> {
    let Some(location) = env_var(LAKE_ENV) else {
        return Ok(None);
    };
    crate::lake::open_with_client(&location, &clients.s3)
        .map(Some)
        .map_err(|source| StartupError::Lake { location, source })
}

/// The lake named by `SLUICE_LAKE`, for functions that have no other way to find it.
pub async fn required_lake_from_env(
    clients: &Clients,
) -> Result<Arc<dyn ObjectStore>, StartupError> {
    lake_from_env(clients)
        .await?
        .ok_or(StartupError::MissingEnv {
            var: LAKE_ENV,
            hint: "s3://BUCKET (the lake bucket) or a local directory",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_kind_wins() {
        use ErrorKind::*;
        assert_eq!(BadInput.worst(BadInput), BadInput);
        assert_eq!(BadInput.worst(Internal), Internal);
        assert_eq!(Internal.worst(Retryable), Retryable);
        assert_eq!(Retryable.worst(BadInput), Retryable);
    }

    #[test]
    fn diagnostic_type_is_the_kind_name() {
        let d: Diagnostic = HandlerError::bad_input("record 0: no key").into();
        assert_eq!(d.error_type, "BadInput");
        assert_eq!(d.error_message, "record 0: no key");
        let d: Diagnostic = HandlerError::new(ErrorKind::Retryable, "x").into();
        assert_eq!(d.error_type, "Retryable");
    }

    #[tokio::test]
    async fn bad_pipeline_locations_are_named() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let clients = Clients::new(sdk);
        let e = load_pipeline("s3://bucket-only", &clients.s3)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("SLUICE_PIPELINE=s3://bucket-only"),
            "{e}"
        );
        assert!(e.to_string().contains("s3://BUCKET/KEY"), "{e}");
        let e = load_pipeline("/nonexistent/pipeline.toml", &clients.s3)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pipeline.toml"), "{e}");
    }
}

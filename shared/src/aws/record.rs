//! Recording of the AWS operations the code calls, for the least-privilege check of
//! `template.yaml` (`scripts/check-aws-ops`).
//!
//! When `SLUICE_RECORD_AWS_OPS` names a file, every client that [`super`] builds carries an
//! [`OpRecorder`] interceptor, which appends one line per distinct operation the process calls:
//!
//! ```text
//! <owner> <service>:<Operation>
//! ```
//!
//! `service` is the IAM prefix (`s3`, `glue`, `secretsmanager`, `redshift-data`) and
//! `Operation` the SDK's operation name (`ListObjectsV2`, `HeadObject`); the checker maps the
//! operations whose IAM action has another name (`ListObjectsV2` → `s3:ListBucket`).
//! A call is recorded when it starts, whatever its outcome: a call that gets a 404 or an
//! `AccessDenied` still needs its permission.
//!
//! The owner is the process: `AWS_LAMBDA_FUNCTION_NAME` when set (the Lambda runtime and the
//! tests' `cargo lambda` harness set it to the function's name, which is its binary's name),
//! else the executable's name without cargo's `-<hash>` suffix (`sluice` for the CLI,
//! `warehouse_dataapi` for a test binary). Only the functions' own processes are attributed
//! to a function by default: an in-process test does not say which function's path it runs,
//! and a guess would let a permission through that the function does not need, or blame one
//! it does. So the check rests on the tests that run the built bootstraps
//! (`tests/src/lambda.rs`), and on in-process tests that say so by giving a handler clients
//! built with `Clients::recorded_as(sdk, "transform")`; what no test reaches is listed with
//! its reason in `infra/aws-operations.toml`.
//!
//! Clients the test harness builds for fixtures (`sluice::aws::s3_config` used directly) carry
//! no recorder: their calls are the tests', not the code's.
//!
//! Nextest runs every test in a process of its own, so many processes append to one file:
//! each line goes out in a single `write` to a file opened with `O_APPEND`, which keeps lines
//! whole. Each process writes a line once.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The variable naming the file the operations are appended to; unset (the default, and
/// always in AWS), no recorder is attached and nothing is recorded.
pub const RECORD_ENV: &str = "SLUICE_RECORD_AWS_OPS";

/// An SDK interceptor that appends `<owner> <service>:<Operation>` to a file, once per distinct
/// operation.
#[derive(Debug, Clone)]
pub struct OpRecorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    owner: String,
    /// The IAM prefix of the client's service.
    service: &'static str,
    /// The operations already written by this recorder.
    seen: Mutex<HashSet<String>>,
}

impl OpRecorder {
    /// A recorder for a client of `service` (its IAM prefix) appending to `path` as `owner`.
    pub fn new(path: impl Into<PathBuf>, owner: impl Into<String>, service: &'static str) -> Self {
        OpRecorder {
            inner: Arc::new(Inner {
                path: path.into(),
                owner: owner.into(),
                service,
                seen: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The recorder `SLUICE_RECORD_AWS_OPS` asks for, owned by this process ([`process_owner`]);
    /// `None` when the variable is unset or empty.
    pub fn from_env(service: &'static str) -> Option<Self> {
        let path = std::env::var_os(RECORD_ENV).filter(|p| !p.is_empty())?;
        Some(OpRecorder::new(path, process_owner(), service))
    }

    /// The same recorder with another owner.
    pub fn owned_by(self, owner: &str) -> Self {
        OpRecorder::new(self.inner.path.clone(), owner, self.inner.service)
    }

    fn record(&self, operation: &str) {
        let inner = &self.inner;
        {
            // A poisoned set only means another thread panicked mid-insert: keep recording.
            let mut seen = inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.insert(operation.to_string()) {
                return;
            }
        }
        let line = format!("{} {}:{operation}\n", inner.owner, inner.service);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inner.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            // Not the call's failure: the check then misses this operation and says so.
            tracing::warn!(
                path = %inner.path.display(),
                error = %e,
                "could not record an AWS operation"
            );
        }
    }
}

impl Intercept for OpRecorder {
    fn name(&self) -> &'static str {
        "SluiceOpRecorder"
    }

    // Once per call, before the retry loop. Not `read_before_execution`: a client's
    // interceptors see that before the operation's metadata is in the bag.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.record(meta.name());
        }
        Ok(())
    }
}

/// Who the calls of this process belong to: `AWS_LAMBDA_FUNCTION_NAME` when set, else the
/// executable's name without cargo's `-<16 hex digits>` test-binary suffix.
pub fn process_owner() -> String {
    if let Some(name) = std::env::var("AWS_LAMBDA_FUNCTION_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        return name;
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| strip_cargo_hash(&n).to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `loader_e2e-0123456789abcdef` → `loader_e2e`; other names unchanged.
fn strip_cargo_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binary_hashes_are_stripped() {
        assert_eq!(
            strip_cargo_hash("loader_e2e-0123456789abcdef"),
            "loader_e2e"
        );
        assert_eq!(strip_cargo_hash("redshift-loader"), "redshift-loader");
        assert_eq!(strip_cargo_hash("sluice"), "sluice");
    }

    /// Every client `Clients` builds records its calls, once per operation, failed calls
    /// included (nothing listens on the endpoint).
    #[tokio::test]
    async fn calls_are_recorded_once_per_operation_whatever_their_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops.txt");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                aws_sdk_s3::config::Credentials::new("k", "s", None, None, "test"),
            ))
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        let clients = super::super::Clients::build(&sdk, &|service| {
            Some(OpRecorder::new(&path, "some_test", service).owned_by("transform"))
        });
        for _ in 0..2 {
            let _ = clients.s3.list_objects_v2().bucket("b").send().await;
        }
        let _ = clients.s3.head_object().bucket("b").key("k").send().await;
        let _ = clients
            .glue
            .get_table()
            .database_name("d")
            .name("t")
            .send()
            .await;
        let _ = clients
            .secrets
            .get_secret_value()
            .secret_id("s")
            .send()
            .await;
        let _ = clients
            .redshift_data
            .describe_statement()
            .id("x")
            .send()
            .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "transform glue:GetTable",
                "transform redshift-data:DescribeStatement",
                "transform s3:HeadObject",
                "transform s3:ListObjectsV2",
                "transform secretsmanager:GetSecretValue",
            ]
        );
    }
}

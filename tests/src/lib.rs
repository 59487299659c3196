//! Support for the end-to-end tests: the moto_server endpoint that `scripts/test` started,
//! SDK configuration pointed at it, and unique names so tests sharing one server never collide.

use std::sync::atomic::{AtomicU32, Ordering};

/// The moto_server endpoint. `scripts/test` starts one and exports `SLUICE_TEST_AWS_ENDPOINT`;
/// a test run without it fails (never skips) with a message saying how to run it.
pub fn moto_endpoint() -> String {
    match std::env::var("SLUICE_TEST_AWS_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "SLUICE_TEST_AWS_ENDPOINT is not set: run the suite with scripts/test, which starts \
             moto_server, or start `moto_server -p PORT` and export SLUICE_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT"
        ),
    }
}

/// SDK configuration for moto: fixed dummy credentials, us-east-1, the moto endpoint.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    let creds = aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "sluice-tests");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(moto_endpoint())
        .load()
        .await
}

/// A name unique to this process and call, safe for S3 buckets and Glue databases
/// (lower-case letters, digits and hyphens; use `.replace('-', "_")` for Glue).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// Creates a bucket in moto and returns an S3 client for it.
pub async fn moto_bucket(sdk: &aws_config::SdkConfig, bucket: &str) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(sdk));
    s3.create_bucket().bucket(bucket).send().await.expect("create bucket in moto");
    s3
}

//! AWS client set-up, built once at start-up by every function and the CLI, and the one
//! classifier of SDK errors (`error`).
//!
//! Endpoints: the SDK honours `AWS_ENDPOINT_URL` (every service) and the service-specific
//! `AWS_ENDPOINT_URL_<SERVICE>` (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_GLUE`, ...), which
//! point clients at moto_server or LocalStack; nothing here overrides them.
//!
//! Every client the code uses is built here ([`Clients`], or [`secrets_client`] for code that
//! needs that one alone), so that `SLUICE_RECORD_AWS_OPS` can record every
//! operation the code calls ([`record`]).

pub mod error;
pub mod record;

pub use error::{classify, error_chain, is_retryable_code, SdkFailure};
pub use record::{OpRecorder, RECORD_ENV};

/// Loads the SDK configuration from the environment: region, credentials, endpoints.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Whether S3 requests go to a custom endpoint (moto_server, LocalStack, MinIO), from the
/// global or the S3-specific endpoint variable.
fn s3_custom_endpoint(sdk: &aws_config::SdkConfig, s3_env: Option<&str>) -> bool {
    sdk.endpoint_url().is_some() || s3_env.is_some_and(|v| !v.trim().is_empty())
}

/// S3 client configuration: path-style addressing when a custom endpoint is set, because
/// servers on loopback cannot serve virtual-hosted bucket names. It records nothing: the
/// tests build their fixture clients from it; the code's own S3 client is [`Clients`]'s.
pub fn s3_config(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Config {
    s3_config_builder(sdk).build()
}

fn s3_config_builder(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::config::Builder {
    let s3_env = std::env::var("AWS_ENDPOINT_URL_S3").ok();
    let mut b = aws_sdk_s3::config::Builder::from(sdk);
    if s3_custom_endpoint(sdk, s3_env.as_deref()) {
        b = b.force_path_style(true);
    }
    b
}

/// Where the recorder of a client comes from: `OpRecorder::from_env` in the code, a fixed one
/// in the tests. Takes the service's IAM prefix.
type RecorderFor<'a> = &'a dyn Fn(&'static str) -> Option<OpRecorder>;

fn s3_with(sdk: &aws_config::SdkConfig, rec: RecorderFor<'_>) -> aws_sdk_s3::Client {
    let mut b = s3_config_builder(sdk);
    if let Some(r) = rec("s3") {
        b = b.interceptor(r);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

fn glue_with(sdk: &aws_config::SdkConfig, rec: RecorderFor<'_>) -> aws_sdk_glue::Client {
    let mut b = aws_sdk_glue::config::Builder::from(sdk);
    if let Some(r) = rec("glue") {
        b = b.interceptor(r);
    }
    aws_sdk_glue::Client::from_conf(b.build())
}

fn secrets_with(
    sdk: &aws_config::SdkConfig,
    rec: RecorderFor<'_>,
) -> aws_sdk_secretsmanager::Client {
    let mut b = aws_sdk_secretsmanager::config::Builder::from(sdk);
    if let Some(r) = rec("secretsmanager") {
        b = b.interceptor(r);
    }
    aws_sdk_secretsmanager::Client::from_conf(b.build())
}

fn kinesis_with(sdk: &aws_config::SdkConfig, rec: RecorderFor<'_>) -> aws_sdk_kinesis::Client {
    let mut b = aws_sdk_kinesis::config::Builder::from(sdk);
    if let Some(r) = rec("kinesis") {
        b = b.interceptor(r);
    }
    aws_sdk_kinesis::Client::from_conf(b.build())
}

fn redshift_data_with(
    sdk: &aws_config::SdkConfig,
    rec: RecorderFor<'_>,
) -> aws_sdk_redshiftdata::Client {
    let mut b = aws_sdk_redshiftdata::config::Builder::from(sdk);
    if let Some(r) = rec("redshift-data") {
        b = b.interceptor(r);
    }
    aws_sdk_redshiftdata::Client::from_conf(b.build())
}

/// The code's Secrets Manager client (recording when asked).
pub fn secrets_client(sdk: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    secrets_with(sdk, &OpRecorder::from_env)
}

/// The SDK clients the functions use, built once at start-up (building them makes no network
/// call) and cloned cheaply into handlers.
#[derive(Debug, Clone)]
pub struct Clients {
    pub sdk: aws_config::SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub glue: aws_sdk_glue::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The Redshift Data API (the loader); `AWS_ENDPOINT_URL_REDSHIFT_DATA` points it elsewhere.
    pub redshift_data: aws_sdk_redshiftdata::Client,
    /// Kinesis Data Streams (the wal-decoder puts change events); `AWS_ENDPOINT_URL_KINESIS`
    /// points it elsewhere.
    pub kinesis: aws_sdk_kinesis::Client,
}

impl Clients {
    pub fn new(sdk: aws_config::SdkConfig) -> Self {
        Self::build(&sdk, &OpRecorder::from_env)
    }

    /// The clients for a test that runs `function`'s handler in its own process: what they
    /// call is recorded as `function`'s (the binary name), as if its bootstrap had called it.
    /// Give them to the handler only; fixtures go through clients of their own.
    pub fn recorded_as(sdk: aws_config::SdkConfig, function: &str) -> Self {
        Self::build(&sdk, &|service| {
            OpRecorder::from_env(service).map(|r| r.owned_by(function))
        })
    }

    fn build(sdk: &aws_config::SdkConfig, rec: RecorderFor<'_>) -> Self {
        Self {
            s3: s3_with(sdk, rec),
            glue: glue_with(sdk, rec),
            secrets: secrets_with(sdk, rec),
            redshift_data: redshift_data_with(sdk, rec),
            kinesis: kinesis_with(sdk, rec),
            sdk: sdk.clone(),
        }
    }

    /// The clients for the environment's configuration.
    pub async fn from_env() -> Self {
        Self::new(sdk_config().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_follows_either_endpoint_variable() {
        let plain = aws_config::SdkConfig::builder().build();
        assert!(!s3_custom_endpoint(&plain, None));
        assert!(!s3_custom_endpoint(&plain, Some(" ")));
        assert!(s3_custom_endpoint(&plain, Some("http://127.0.0.1:5000")));
        let global = aws_config::SdkConfig::builder()
            .endpoint_url("http://127.0.0.1:5000")
            .build();
        assert!(s3_custom_endpoint(&global, None));
    }

    /// The Kinesis client records its calls under the IAM prefix `kinesis` (nothing listens
    /// on the endpoint: a failed call is recorded too).
    #[tokio::test]
    async fn kinesis_calls_are_recorded() {
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
        let clients = Clients::build(&sdk, &|service| {
            Some(OpRecorder::new(&path, "wal-decoder", service))
        });
        let entry = aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
            .data(aws_sdk_kinesis::primitives::Blob::new(b"{}".to_vec()))
            .partition_key("k")
            .build()
            .unwrap();
        let put = clients
            .kinesis
            .put_records()
            .stream_name("s")
            .records(entry);
        assert!(put.send().await.is_err(), "nothing listens on port 1");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "wal-decoder kinesis:PutRecords\n");
    }
}

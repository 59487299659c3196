//! AWS client set-up shared by every function and the CLI.

/// Loads the SDK configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL`, which points every client at moto_server or LocalStack).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// S3 client configuration: path-style addressing when a custom endpoint is set, because
/// moto_server and LocalStack on loopback cannot serve virtual-hosted bucket names.
pub fn s3_config(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Config {
    let mut b = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        b = b.force_path_style(true);
    }
    b.build()
}

//! Start-up for the `transform` Lambda: logging, AWS clients, the pipeline file and the hash
//! key, built once; a bad configuration fails the cold start with a clear message instead of
//! failing every event.

use std::path::Path;
use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::catalog::GlueCatalog;
use sluice::config::Pipeline;
use sluice::lake::ObjectStore as _;
use sluice::transform::Transformer;
use sluice_transform::{handle, Deps};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = sluice::aws::sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(&sdk));

    let location = std::env::var("SLUICE_PIPELINE")
        .map_err(|_| "SLUICE_PIPELINE is not set: an s3:// URL or a path to the pipeline file")?;
    let pipeline = load_pipeline(&s3, &location).await?;
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, Some(&sdk)).await?;
    let transformer = Transformer::new(pipeline, hash_key)?;
    let catalog = Arc::new(GlueCatalog::new(aws_sdk_glue::Client::new(&sdk)));
    tracing::info!(pipeline = %location, tables = transformer.pipeline().tables.len(), "transform ready");

    let deps = Deps {
        transformer,
        s3,
        catalog,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event.payload).await
    }))
    .await
}

async fn load_pipeline(s3: &aws_sdk_s3::Client, location: &str) -> Result<Pipeline, Error> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("SLUICE_PIPELINE {location}: expected s3://BUCKET/KEY"))?;
        // The lake's own S3 reader: same error mapping, no raw HTTP response in the message.
        let store = sluice::lake::S3Store::new(s3.clone(), bucket);
        let bytes = store
            .get_bytes(key)
            .await
            .map_err(|e| format!("reading pipeline {location}: {e}"))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("pipeline {location} is not UTF-8"))?;
        Ok(Pipeline::parse(&text, location)?)
    } else {
        Ok(Pipeline::from_path(Path::new(location))?)
    }
}

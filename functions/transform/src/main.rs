//! Start-up for the `transform` Lambda: logging, AWS clients, the pipeline file and the hash
//! key, built once; a bad configuration fails the cold start with a clear message instead of
//! failing every event.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::aws::Clients;
use sluice::catalog::GlueCatalog;
use sluice::glue_job::{GlueRoute, GlueStarter};
use sluice::lake::Lakes;
use sluice::lambda::{init_tracing, lake_from_env, pipeline_from_env, pipeline_location};
use sluice::transform::Transformer;
use sluice_transform::{handle, Deps};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let clients = Clients::from_env().await;
    let pipeline = pipeline_from_env(&clients).await?;
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, Some(&clients.secrets)).await?;
    // With [glue], large objects go to the Glue job, which reads the same pipeline file: the
    // route refuses to start unless SLUICE_PIPELINE is on S3.
    let glue = match &pipeline.glue {
        Some(config) => Some(GlueRoute::new(
            config.clone(),
            &pipeline_location()?,
            Arc::new(GlueStarter::new(clients.glue.clone())),
        )?),
        None => None,
    };
    let transformer = Transformer::new(pipeline, hash_key)?;
    // S3 events name their bucket; SLUICE_LAKE, when set, pins the function to one lake.
    let lakes = match lake_from_env(&clients).await? {
        Some(store) => Lakes::Fixed(store),
        None => Lakes::S3(clients.s3.clone()),
    };
    let catalog = Arc::new(GlueCatalog::new(clients.glue.clone()));
    tracing::info!(
        tables = transformer.pipeline().tables.len(),
        glue_job = glue.as_ref().map(|g| g.config().job_name.as_str()),
        glue_threshold_bytes = glue.as_ref().map(|g| g.config().threshold_bytes),
        "transform ready"
    );

    let deps = Deps {
        transformer,
        lakes,
        catalog,
        glue,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event.payload).await
    }))
    .await
}

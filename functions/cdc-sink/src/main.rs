//! Start-up for the `cdc-sink` Lambda: logging, AWS clients, the pipeline file (its change
//! tables make the routes) and the lake, built once; a bad configuration fails the cold start
//! with a clear message instead of failing every batch.
//!
//! Environment: `SLUICE_PIPELINE` (the pipeline file: a path or `s3://bucket/key`) and
//! `SLUICE_LAKE` (`s3://bucket` or a local directory): a stream names no bucket.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::aws::Clients;
use sluice::lambda::{init_tracing, pipeline_from_env, required_lake_from_env};
use sluice_cdc_sink::{check_routes, handle, routes_from_pipeline, Deps};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let clients = Clients::from_env().await;
    let pipeline = pipeline_from_env(&clients).await?;
    let store = required_lake_from_env(&clients).await?;
    let routes = routes_from_pipeline(&pipeline);
    check_routes(&pipeline, &routes)?;
    tracing::info!(tables = routes.len(), lake = %store.url(""), "cdc-sink ready");

    let deps = Deps {
        store,
        routes,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event.payload).await
    }))
    .await
}

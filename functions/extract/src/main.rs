//! Start-up for the `extract` Lambda: logging, AWS clients, the pipeline file and the lake,
//! built once; a pipeline without any `[tables.source]` fails the cold start with a clear
//! message instead of every scheduled run doing nothing.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::aws::Clients;
use sluice::extract::Extractor;
use sluice::lambda::{init_tracing, pipeline_from_env, required_lake_from_env};
use sluice_extract::{handle, Deps, Invocation};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let clients = Clients::from_env().await;
    let pipeline = Arc::new(pipeline_from_env(&clients).await?);
    let lake = required_lake_from_env(&clients).await?;
    // Building the client makes no call: shards with a `secret` read it at each run.
    let extractor = Extractor::new(pipeline.clone(), lake).with_secrets(clients.secrets.clone());
    let tables: Vec<String> = extractor.tables().map(|t| t.name.clone()).collect();
    if tables.is_empty() {
        return Err("extract: no table of the pipeline (SLUICE_PIPELINE) has a [tables.source] section: nothing to extract".into());
    }
    tracing::info!(tables = tables.join(","), "extract ready");
    let deps = Deps {
        pipeline,
        extractor,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let inv = Invocation::from_context(&event.context);
        handle(deps, &inv, event.payload).await
    }))
    .await
}

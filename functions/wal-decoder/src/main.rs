//! Start-up for the `wal-decoder` Lambda: logging, AWS clients, the pipeline file, the lake,
//! the source's connection options and the Kinesis stream, built once; a bad configuration
//! fails the cold start with a clear message instead of failing every run.
//!
//! The stream: `SLUICE_CDC_STREAM` (set by the template to the stack's stream) overrides the
//! pipeline's `[cdc] stream`.

use std::sync::Arc;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::aws::Clients;
use sluice::cdc::wal::{self, KinesisSink};
use sluice::lambda::{init_tracing, pipeline_from_env, required_lake_from_env};
use sluice_wal_decoder::{handle, Deps};

/// Overrides the pipeline's `[cdc] stream`.
const STREAM_ENV: &str = "SLUICE_CDC_STREAM";

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let clients = Clients::from_env().await;
    let pipeline = pipeline_from_env(&clients).await?;
    let lake = required_lake_from_env(&clients).await?;
    let settings = wal::settings_from_pipeline(&pipeline)?;
    let stream = std::env::var(STREAM_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| settings.stream.clone());
    let source = wal::connect_options(&settings.source, Some(&clients)).await?;
    tracing::info!(
        slot = settings.run.slot,
        tables = settings.run.tables.len(),
        stream,
        source = ?settings.source,
        "wal-decoder ready"
    );
    let deps = Deps {
        source,
        lake,
        sink: Arc::new(KinesisSink::new(clients.kinesis.clone(), stream)),
        run: settings.run,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(deps, event.context.deadline, event.payload).await
    }))
    .await
}

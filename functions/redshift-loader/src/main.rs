//! Start-up for the `redshift-loader` Lambda: logging, AWS clients, the pipeline file and the
//! warehouse target, built once; a bad configuration fails the cold start with a clear message
//! instead of failing every event.
//!
//! The target: `SLUICE_WAREHOUSE_URL` = a `postgres://` URL gives PostgreSQL (local runs and
//! tests); otherwise the pipeline's `[redshift]` section gives the Data API executor
//! (`sluice::warehouse::open_target`, the one place that builds either).

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

use sluice::aws::Clients;
use sluice::lake::Lakes;
use sluice::lambda::{init_tracing, lake_from_env, pipeline_from_env};
use sluice::warehouse::{open_target, WAREHOUSE_URL_ENV};
use sluice_redshift_loader::{handle, Deps, Invocation};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let clients = Clients::from_env().await;
    let pipeline = pipeline_from_env(&clients).await?;
    let url = std::env::var(WAREHOUSE_URL_ENV).ok();
    let target = open_target(url.as_deref(), &pipeline, Some(&clients)).await?;
    // S3 events name their bucket; SLUICE_LAKE, when set, pins the function to one lake.
    let lakes = match lake_from_env(&clients).await? {
        Some(store) => Lakes::Fixed(store),
        None => Lakes::S3(clients.s3.clone()),
    };
    let iam_role = pipeline
        .redshift
        .as_ref()
        .map(|r| r.copy_iam_role.clone())
        .unwrap_or_default();
    tracing::info!(
        tables = pipeline
            .tables
            .iter()
            .filter(|t| t.warehouse.is_some())
            .count(),
        target = target.name(),
        "redshift-loader ready"
    );

    let deps = Deps {
        pipeline,
        lakes,
        target,
        iam_role,
        emit_metrics: true,
    };
    let deps = &deps;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let inv = Invocation::from_context(&event.context);
        handle(deps, &inv, event.payload).await
    }))
    .await
}

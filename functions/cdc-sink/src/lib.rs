//! The `cdc-sink` Lambda: a Kinesis event source mapping's batch of change events → JSON-lines
//! objects in `raw/cdc/<table>/` (`sluice::cdc::sink`, whose note gives the order of effects).
//!
//! The handler reads the event record by record (`event.rs`), runs the sink and answers with
//! `batchItemFailures`: empty when every record was written or quarantined, else the one lowest
//! sequence number not durably written, from which Lambda resumes the shard (the mapping must
//! have `ReportBatchItemFailures` on). A bad record never fails the invocation; an event that
//! is not a Kinesis batch does (`BadInput`).

pub mod event;

use std::sync::Arc;

use aws_lambda_events::event::streams::KinesisEventResponse;
use serde_json::Value;

use sluice::cdc::sink::{CdcSink, Routes, SinkReport};
use sluice::config::Pipeline;
use sluice::lake::{layout, ObjectStore};
pub use sluice::lambda::HandlerError;

/// The function name in metrics.
pub const FUNCTION: &str = "cdc-sink";

/// Everything built once at init and borrowed by every invocation.
#[derive(Debug)]
pub struct Deps {
    /// The lake (`SLUICE_LAKE`): change objects, spilled changes, quarantine.
    pub store: Arc<dyn ObjectStore>,
    /// Source relation → pipeline table.
    pub routes: Routes,
    /// Print the EMF metrics lines to stdout (CloudWatch turns them into metrics).
    pub emit_metrics: bool,
}

/// Handles one Kinesis batch.
pub async fn handle(deps: &Deps, event: Value) -> Result<KinesisEventResponse, HandlerError> {
    let records = event::records(&event).map_err(|e| HandlerError::bad_input(e.to_string()))?;
    let sink = CdcSink {
        store: deps.store.as_ref(),
        routes: &deps.routes,
    };
    let report = sink.run(records).await;
    if deps.emit_metrics {
        for line in report.emf_lines(FUNCTION) {
            println!("{line}");
        }
    }
    tracing::info!(
        records = report.records,
        objects = report.written.len(),
        quarantined = report.quarantined(),
        spills_resolved = report.spills_resolved,
        retry_from = report.retry_from.as_ref().map(|s| s.as_str()),
        retried = report.retried,
        "batch done"
    );
    Ok(response(&report))
}

/// The answer Lambda reads: the lowest sequence number not durably written, if any.
pub fn response(report: &SinkReport) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    if let Some(sequence) = &report.retry_from {
        response.add_failure(sequence.as_str());
    }
    response
}

/// Source relation → pipeline table: each cdc table's `cdc = { schema, table }` (the
/// pipeline file allows one table per relation).
pub fn routes_from_pipeline(pipeline: &Pipeline) -> Routes {
    pipeline
        .cdc_tables()
        .filter_map(|t| {
            let rel = t.cdc.as_ref()?;
            Some(((rel.schema.clone(), rel.table.clone()), t.name.clone()))
        })
        .collect()
}

/// Why the routes cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoutesError {
    #[error("the pipeline has no cdc table (format = \"cdc\" with cdc = {{ schema, table }}): cdc-sink would quarantine every record")]
    NoTables,
    #[error("table {table}: its change objects go under {expected}, but the transform would give them to {found} (raw_prefix must be {expected})")]
    WrongPrefix {
        table: String,
        expected: String,
        found: String,
    },
}

/// Checks at start-up that the routes lead somewhere and that the transform gives every
/// object the sink writes for a table back to that table.
pub fn check_routes(pipeline: &Pipeline, routes: &Routes) -> Result<(), RoutesError> {
    if routes.is_empty() {
        return Err(RoutesError::NoTables);
    }
    for table in routes.values() {
        let key = layout::cdc_object_key(table, "shardId-000000000000", "0", "0");
        let found = pipeline.table_for_key(&key).map(|t| t.name.as_str());
        if found != Some(table.as_str()) {
            return Err(RoutesError::WrongPrefix {
                table: table.clone(),
                expected: layout::raw_cdc_prefix(table),
                found: found.unwrap_or("no table").to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

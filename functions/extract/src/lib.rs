//! The `extract` Lambda: on a schedule, `sluice::extract` for the pipeline's tables with a
//! `[tables.source]` — each shard's rows changed since its watermark into
//! `<raw_prefix>shard=<id>/…` as gzip JSON lines (the order of effects, and why a crash loses
//! and repeats nothing, is in `shared/src/extract/mod.rs`; docs/EXTRACT.md is the reference).
//!
//! Payload (`request.rs`): the EventBridge scheduled event (every table with a source, the
//! next incremental range), or a manual `{"tables": ["orders"], "shards": ["eu1"],
//! "historical": true}`, each field optional; a table or shard the pipeline does not have is
//! `BadInput` before anything runs. Tables run one after the other, the shards of a table
//! several at once. Each run stops after a whole page before the invocation's deadline less
//! `FINISH_MARGIN`; the next invocation continues the range.
//!
//! Response (`report.rs`): per table and shard the outcome (`extracted`, `busy`, `failed`),
//! rows, bytes, parts, lag; one EMF line per shard (`ShardReport::emf`: namespace `Sluice`,
//! dimensions `Function` = `extract`, `Table`, `Shard`). A failed shard fails the invocation
//! once every shard has run, so the others' work stands: `Retryable` when any failure may pass
//! by itself, else `BadInput` or `Internal`. A shard whose lease another run holds is `busy`:
//! reported, not a failure.

mod report;
mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use sluice::config::Pipeline;
use sluice::extract::{Extractor, Limits, ShardReport, Shards};
pub use sluice::lambda::HandlerError;

pub use report::{error_kind, failure, mode_name, response, shard_json};
pub use request::Request;

/// The function name in metrics.
pub const FUNCTION: &str = "extract";
/// Taken off the invocation's deadline: the library already keeps time for its last upload
/// and state write; this is for the lease release, the metrics and the response.
pub const FINISH_MARGIN: Duration = Duration::from_secs(10);
/// The run's length when the deadline is unknown (`cargo lambda watch` sends the timeout, not
/// a deadline).
const DEFAULT_RUN: Duration = Duration::from_secs(40);

/// Everything built once at init and borrowed by every invocation.
pub struct Deps {
    pub pipeline: Arc<Pipeline>,
    /// The pipeline and the lake, with the Secrets Manager client for `secret` shards.
    pub extractor: Extractor,
    /// Print the EMF metrics lines to stdout (CloudWatch turns them into metrics).
    pub emit_metrics: bool,
}

/// What the runtime tells about this invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Names the lease holder, so a run that backs off says who holds the shard.
    pub request_id: String,
    /// When Lambda stops the invocation (ms since the epoch); 0 or past when unknown.
    pub deadline_ms: u64,
}

impl Invocation {
    pub fn from_context(ctx: &lambda_runtime::Context) -> Self {
        Self {
            request_id: ctx.request_id.clone(),
            deadline_ms: ctx.deadline,
        }
    }
}

/// When the shards must stop paging: the deadline (ms since the epoch; not after `now_ms`
/// when unknown) less the margin.
pub fn run_until(deadline_ms: u64, now_ms: u64) -> Instant {
    if deadline_ms <= now_ms {
        return Instant::now() + DEFAULT_RUN;
    }
    let left = Duration::from_millis(deadline_ms - now_ms);
    Instant::now() + left.saturating_sub(FINISH_MARGIN)
}

/// One invocation.
pub async fn handle(deps: &Deps, inv: &Invocation, payload: Value) -> Result<Value, HandlerError> {
    let request = Request::from_payload(&payload)?;
    let tables = request
        .plan(&deps.pipeline)
        .map_err(|e| HandlerError::new(error_kind(&e), e.to_string()))?;
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let limits = Limits::until(run_until(inv.deadline_ms, now_ms));
    let extractor = deps
        .extractor
        .clone()
        .with_owner(format!("extract:{}", inv.request_id));
    let shards = if request.shards.is_empty() {
        Shards::All
    } else {
        Shards::Only(&request.shards)
    };
    let mut reports: Vec<ShardReport> = Vec::new();
    for table in &tables {
        let done = extractor
            .run_table(table, shards, request.mode(), limits)
            .await
            // Only a table or shard the pipeline lacks, which `plan` has ruled out.
            .map_err(|e| HandlerError::new(error_kind(&e), e.to_string()))?;
        if deps.emit_metrics {
            for r in &done {
                println!("{}", r.emf(FUNCTION).line());
            }
        }
        reports.extend(done);
    }
    tracing::info!(
        mode = mode_name(request.mode()),
        tables = tables.len(),
        shards = reports.len(),
        "extract invocation done"
    );
    match failure(&reports) {
        Some(e) => Err(e),
        None => Ok(response(request.mode(), &tables, &reports)),
    }
}

#[cfg(test)]
mod tests;

//! The `wal-decoder` Lambda: on a schedule, one run of `sluice::cdc::wal::run` — the slot's
//! changes since the last run → change events on Kinesis → the slot advanced (the order of
//! effects is in `shared/src/cdc/wal/mod.rs`).
//!
//! Payload: the EventBridge scheduled event (its content is not read), or a manual
//! `{"max_changes": N}` that caps this run (backfills, tests). The run stops taking changes
//! `FINISH_MARGIN` before the invocation's deadline, so the flush, the state write and the
//! advance fit; a run that cannot finish fails with `Retryable` and the next one re-sends.
//!
//! Metrics (EMF, namespace `Sluice`, dimension `Function = wal-decoder`): `ChangesSent`,
//! `Transactions`, `SkippedChanges`, `SlotLagBytes` (the alarm's), `PartialTransactionChanges`
//! (how far into a transaction too large for one run the stream is), `RecordsSpilled`,
//! `PutRetries`; per table `UndeclaredColumns` (source columns the pipeline does not declare,
//! also logged as a warning with their names).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;

use sluice::cdc::wal::{self, Publisher, RecordSink, RunLimits, RunReport, WalError, WalRun};
use sluice::lake::ObjectStore;
use sluice::lambda::{ErrorKind, HandlerError};
use sluice::metrics::{Emf, Unit};

/// The function name in metrics.
pub const FUNCTION: &str = "wal-decoder";
/// Taken off the invocation's deadline: time for the last PutRecords, the state write and the
/// slot advance after the run stops taking changes.
pub const FINISH_MARGIN: Duration = Duration::from_secs(20);
/// The run's length when the deadline is unknown (`cargo lambda watch` sends the timeout, not
/// a deadline): a Lambda's default timeout less the margin.
const DEFAULT_RUN: Duration = Duration::from_secs(40);

/// Everything built once at init and borrowed by every invocation.
pub struct Deps {
    pub source: PgConnectOptions,
    pub lake: Arc<dyn ObjectStore>,
    pub sink: Arc<dyn RecordSink>,
    /// The run's settings from the pipeline; `limits` are set per invocation.
    pub run: WalRun,
    /// Print the EMF metrics line to stdout (CloudWatch turns it into metrics).
    pub emit_metrics: bool,
}

/// A manual payload's knobs; a scheduled event has none of them.
#[derive(Debug, Default, Deserialize)]
struct Manual {
    #[serde(default)]
    max_changes: Option<u64>,
}

/// When the run must stop taking changes: the deadline (ms since the epoch; 0 or past when
/// unknown) less the margin.
pub fn run_until(deadline_ms: u64, now_ms: u64) -> Instant {
    if deadline_ms <= now_ms {
        return Instant::now() + DEFAULT_RUN;
    }
    let left = Duration::from_millis(deadline_ms - now_ms);
    Instant::now() + left.saturating_sub(FINISH_MARGIN)
}

/// One invocation.
pub async fn handle(deps: &Deps, deadline_ms: u64, payload: Value) -> Result<Value, HandlerError> {
    // A scheduled event is an object with other fields: ignore what is not ours.
    let manual: Manual = match &payload {
        Value::Object(m) if m.contains_key("max_changes") => {
            serde_json::from_value(payload.clone())
                .map_err(|e| HandlerError::bad_input(format!("payload: {e}")))?
        }
        _ => Manual::default(),
    };
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut cfg = deps.run.clone();
    cfg.limits = RunLimits {
        deadline: run_until(deadline_ms, now_ms),
        max_changes: manual.max_changes,
    };
    let mut publisher = Publisher::new(deps.sink.clone(), deps.lake.clone())
        .with_deadline(cfg.limits.deadline + FINISH_MARGIN / 2);
    let started = Instant::now();
    let result = wal::run(&deps.source, deps.lake.as_ref(), &mut publisher, &cfg).await;
    let counters = publisher.counters();
    match result {
        Ok(report) => {
            log_report(&cfg, &report, started.elapsed());
            if deps.emit_metrics {
                for line in metric_lines(&report, counters.spilled, counters.retries) {
                    println!("{line}");
                }
            }
            Ok(response(&report))
        }
        Err(e) => {
            tracing::error!(slot = cfg.slot, error = %e, "wal-decoder run failed");
            Err(HandlerError::new(kind(&e), e.to_string()))
        }
    }
}

fn kind(e: &WalError) -> ErrorKind {
    if e.is_retryable() {
        ErrorKind::Retryable
    } else if matches!(e, WalError::Config { .. }) {
        ErrorKind::BadInput
    } else {
        ErrorKind::Internal
    }
}

fn log_report(cfg: &WalRun, r: &RunReport, took: Duration) {
    tracing::info!(
        slot = cfg.slot,
        stop = ?r.stop,
        changes = r.changes,
        transactions = r.transactions,
        skipped = r.skipped,
        confirmed = wal::source::lsn_text(r.confirmed_lsn),
        lag_bytes = r.lag_bytes,
        partial_changes = r.partial.as_ref().map(|p| p.acked_changes),
        heartbeat = r.heartbeat_lsn.is_some(),
        unrouted = r.unrouted,
        took_ms = took.as_millis() as u64,
        "wal-decoder run"
    );
    for (table, columns) in &r.undeclared {
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        tracing::warn!(
            table,
            columns = names.join(","),
            "source columns the pipeline does not declare: the events carry them, the lake does not (add them to the table's columns to keep them)"
        );
    }
}

/// The run's EMF lines: one for the function, one per table with undeclared columns.
pub fn metric_lines(r: &RunReport, spilled: u64, retries: u64) -> Vec<String> {
    let mut lines = vec![Emf::new(FUNCTION)
        .count("ChangesSent", r.changes)
        .count("Transactions", r.transactions)
        .count("SkippedChanges", r.skipped)
        .bytes("SlotLagBytes", r.lag_bytes)
        .count(
            "PartialTransactionChanges",
            r.partial.as_ref().map_or(0, |p| p.acked_changes),
        )
        .count("RecordsSpilled", spilled)
        .count("PutRetries", retries)
        .metric("UnroutedChanges", Unit::Count, r.unrouted)
        .line()];
    for (table, columns) in &r.undeclared {
        lines.push(
            Emf::new(FUNCTION)
                .dimension("Table", table)
                .count("UndeclaredColumns", columns.len() as u64)
                .line(),
        );
    }
    lines
}

fn response(r: &RunReport) -> Value {
    json!({
        "stop": format!("{:?}", r.stop),
        "changes": r.changes,
        "transactions": r.transactions,
        "skipped": r.skipped,
        "confirmed_lsn": wal::source::lsn_text(r.confirmed_lsn),
        "lag_bytes": r.lag_bytes,
        "partial": r.partial.as_ref().map(|p| json!({
            "commit_lsn": wal::source::lsn_text(p.commit_lsn),
            "acked_changes": p.acked_changes,
        })),
        "heartbeat_lsn": r.heartbeat_lsn.map(wal::source::lsn_text),
        "undeclared": r.undeclared,
        "unrouted": r.unrouted,
    })
}

//! The shards' reports as the invocation's response, and as its failure: a failed shard fails
//! the invocation once every shard has run (the others' parts and watermarks stand), typed by
//! the worst of the failures; a shard another run holds (`Busy`) is reported, not failed.

use serde_json::{json, Value};

use sluice::extract::{ExtractError, Mode, RunKind, ShardError, ShardOutcome, ShardReport};
use sluice::lambda::{ErrorKind, HandlerError};

/// What the caller does about a failed table or shard: `Retryable` when the next run may
/// succeed as things are (network, throttling, a lost race), `BadInput` when the request or
/// the configuration must change (a name, a secret, a column, a login, a statement the
/// database refuses), `Internal` otherwise (the lake refusing us, a part that is not ours).
pub fn error_kind(e: &ExtractError) -> ErrorKind {
    if e.is_retryable() {
        return ErrorKind::Retryable;
    }
    match e {
        ExtractError::UnknownTable { .. }
        | ExtractError::NoSource { .. }
        | ExtractError::UnknownShard { .. } => ErrorKind::BadInput,
        ExtractError::Shard { error, .. } => match error.as_ref() {
            ShardError::Config { .. }
            | ShardError::Secret { .. }
            | ShardError::Connect { .. }
            | ShardError::Query { .. }
            | ShardError::Column { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    }
}

/// The invocation's error when any shard failed: the worst kind among them, the message
/// naming every failed table and shard (the errors name no secret or row value).
pub fn failure(reports: &[ShardReport]) -> Option<HandlerError> {
    let failed: Vec<&ExtractError> = reports
        .iter()
        .filter_map(|r| match &r.outcome {
            ShardOutcome::Failed(e) => Some(e),
            _ => None,
        })
        .collect();
    let kind = failed
        .iter()
        .map(|e| error_kind(e))
        .reduce(ErrorKind::worst)?;
    let errors: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
    Some(HandlerError::new(
        kind,
        format!(
            "{} of {} shards failed: {}",
            failed.len(),
            reports.len(),
            errors.join("; ")
        ),
    ))
}

/// The response: the mode, totals, and one entry per table and shard.
pub fn response(mode: Mode, tables: &[String], reports: &[ShardReport]) -> Value {
    let mut rows = 0;
    let mut bytes = 0;
    let mut parts = 0;
    for r in reports {
        if let ShardOutcome::Extracted(s) = &r.outcome {
            rows += s.rows;
            bytes += s.bytes;
            parts += s.parts.len();
        }
    }
    json!({
        "mode": mode_name(mode),
        "tables": tables,
        "rows": rows,
        "bytes": bytes,
        "parts": parts,
        "shards": reports.iter().map(shard_json).collect::<Vec<_>>(),
    })
}

/// `incremental` or `historical`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Incremental => "incremental",
        Mode::Historical => "historical",
    }
}

/// One shard's entry: its outcome and what it did.
pub fn shard_json(r: &ShardReport) -> Value {
    let mut v = match &r.outcome {
        ShardOutcome::Extracted(s) => json!({
            "outcome": "extracted",
            "rows": s.rows,
            "bytes": s.bytes,
            "parts": s.parts,
            "pages": s.pages,
            "complete": s.complete,
            "resumed": s.resumed,
            "run": s.run.as_ref().map(|run| run.id.clone()),
            "historical": s.run.as_ref().is_some_and(|run| run.kind == RunKind::Historical),
            "upper": s.run.as_ref().map(|run| run.upper.clone()),
            "newest_updated_at": s.newest_updated_at,
            "lag_secs": s.lag_secs,
            "source_now": s.source_now,
            "replica_delay_secs": s.replica_delay.as_secs_f64(),
        }),
        ShardOutcome::Busy { owner, until_ms } => json!({
            "outcome": "busy",
            "holder": owner,
            "until_ms": until_ms,
        }),
        ShardOutcome::Failed(e) => json!({
            "outcome": "failed",
            "error": e.to_string(),
            "kind": error_kind(e).as_str(),
        }),
    };
    if let Value::Object(m) = &mut v {
        m.insert("table".into(), Value::from(r.table.clone()));
        m.insert("shard".into(), Value::from(r.shard.clone()));
    }
    v
}

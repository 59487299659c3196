//! One shard's run, in the order the note in `mod.rs` gives: lease, state, connection, clock
//! and columns, the range recorded, the pages, the watermark.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::columns::{self, Described};
use super::error::ShardError;
use super::historical;
use super::pages::{Limits, Pager};
use super::query::Select;
use super::source::{self, Clock, Conn};
use super::state::{self, Acquired, Cursor, RunKind, RunRecord, ShardState};
use super::writer::{last_row, PartSink, RowEncoder};
use super::zone;
use super::{Mode, ShardOutcome, ShardStats};
use crate::config::{PiiAction, ShardConfig, SourceConfig, TableConfig};
use crate::lake::layout::{
    extract_lease_key, extract_part_index, extract_part_key, extract_run_prefix, extract_state_key,
};
use crate::lake::ObjectStore;

/// The lease outlives the run's deadline by this much: a crashed run blocks the next one for
/// at most the rest of its own time and this margin.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// A run stops writing this long before its lease expires by its own clock: another run's
/// clock, which decides when it may take over, may be ahead.
const LEASE_SKEW: Duration = Duration::from_secs(30);

/// What one shard's run needs.
pub(crate) struct ShardJob<'a> {
    pub table: &'a TableConfig,
    pub source: &'a SourceConfig,
    pub shard: &'a ShardConfig,
    pub store: &'a dyn ObjectStore,
    pub secrets: Option<&'a aws_sdk_secretsmanager::Client>,
    pub owner: &'a str,
    pub mode: Mode,
    pub limits: Limits,
}

/// Runs one shard under its lease. A held lease is a `Busy` outcome before anything is read.
pub(crate) async fn run_shard(job: &ShardJob<'_>) -> Result<ShardOutcome, ShardError> {
    let key = extract_lease_key(&job.table.name, &job.shard.id);
    let taken = Instant::now();
    let ttl = job
        .limits
        .deadline
        .saturating_duration_since(Instant::now())
        + LEASE_MARGIN;
    let lease = match state::acquire_lease(job.store, &key, job.owner, ttl, now_ms()).await {
        Ok(Acquired::Held(l)) => l,
        Ok(Acquired::Busy { owner, until_ms }) => {
            tracing::info!(table = %job.table.name, shard = %job.shard.id, holder = %owner, until_ms, "another extract run holds the shard's lease: backing off");
            return Ok(ShardOutcome::Busy { owner, until_ms });
        }
        Err(e) => return Err(ShardError::lake(&key, e)),
    };
    let lease_until = (taken + ttl).checked_sub(LEASE_SKEW).unwrap_or(taken);
    let result = locked(job, (&key, lease_until)).await;
    if let Err(e) = state::release_lease(job.store, &lease).await {
        // It expires by itself; the run's result stands.
        tracing::warn!(key = %key, error = %e, "extract lease not released");
    }
    result.map(ShardOutcome::Extracted)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The lease's key and the instant it is held until, less the skew allowed for.
type LeaseUntil<'a> = (&'a str, Instant);

async fn locked(job: &ShardJob<'_>, lease: LeaseUntil<'_>) -> Result<ShardStats, ShardError> {
    let key = extract_state_key(&job.table.name, &job.shard.id);
    let (state, etag) = state::read_state(job.store, &key).await?;
    let mut conn = source::connect(job.source.engine, job.shard, job.secrets).await?;
    let result = extract(&mut conn, job, &key, state, etag, lease).await;
    conn.close().await;
    result
}

/// `2024-01-31T09:05:00.000000Z`: the one timestamp text of state, parts and bounds.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The newest `updated_at` a run may read: the source's clock, less the replica's delay and
/// the safety lag for transactions that commit late.
fn upper_bound(clock: &Clock, safety_lag_secs: u32) -> String {
    let lag = clock.replica_delay + Duration::from_secs(u64::from(safety_lag_secs));
    iso(clock.now - chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::MAX))
}

async fn extract(
    conn: &mut Conn,
    job: &ShardJob<'_>,
    key: &str,
    mut st: ShardState,
    mut etag: Option<String>,
    lease: LeaseUntil<'_>,
) -> Result<ShardStats, ShardError> {
    let src = job.source;
    let clock = source::clock(conn).await?;
    // A column whose PII rule drops it never reaches the lake, so it is never selected.
    let declared: Vec<&str> = job
        .table
        .source_columns()
        .filter(|c| !c.pii.as_ref().is_some_and(|p| p.action == PiiAction::Drop))
        .map(|c| c.name.as_str())
        .collect();
    let select = Select::new(conn.engine(), src, &declared);
    let described = columns::describe(
        conn,
        &select.describe_sql(),
        &src.updated_at_column,
        &src.key_columns,
        src.soft_delete_column.as_deref(),
    )
    .await?;
    zone::check_updated_at(conn, &described).await?;
    let upper = upper_bound(&clock, src.safety_lag_secs);
    let now = iso(clock.now);
    let mut stats = ShardStats::new(&now, clock.replica_delay);
    let watermark = st.watermark.clone();
    let chosen = historical::choose(st.run.clone(), job.mode == Mode::Historical, || {
        match job.mode {
            Mode::Historical => Some(historical::start(upper.clone(), now.clone())),
            Mode::Incremental => {
                let from = watermark.clone().unwrap_or(Cursor::Start);
                // Nothing can be newer than the watermark yet (an idle replica's bound stands still).
                let empty = from.updated_at().is_some_and(|ts| ts >= upper.as_str());
                (!empty)
                    .then(|| RunRecord::new(RunKind::Incremental, from, upper.clone(), now.clone()))
            }
        }
    });
    let Some((run, resumed)) = chosen else {
        stats.complete = true;
        stats.finish(None, st.watermark.as_ref(), &clock);
        return Ok(stats);
    };
    if !resumed {
        // The range is recorded before any part of it is written.
        st.run = Some(run.clone());
        etag = Some(state::write_state(job.store, key, &st, etag).await?);
    }
    let historical = run.kind == RunKind::Historical;
    let prefix = extract_run_prefix(&job.table.raw_prefix, &job.shard.id, historical, &run.id);
    let (next_index, cursor) = resume_point(job.store, &prefix, &run, &described).await?;
    tracing::info!(table = %job.table.name, shard = %job.shard.id, run = %run.id, historical, resumed, next_index, "extract range");
    let mut enc = RowEncoder::new(&described, &job.shard.id);
    let mut sink = PartSink::new(job.store, prefix, src.part_rows, next_index);
    let pager = Pager {
        select: &select,
        described: &described,
        upper: &run.upper,
        page_rows: src.page_rows,
        lease,
    };
    let ended = pager
        .run(conn, &mut enc, &mut sink, cursor, &job.limits)
        .await;
    // Rows read before a failure are a prefix of the range in order: keep them as a part, so
    // the next run continues after them (a lake failure here fails the same way again).
    let flushed = sink.flush().await;
    let ended = ended?;
    flushed?;
    stats.record_run(&run, resumed, &sink, ended.pages);
    if ended.complete {
        st.watermark = match run.kind {
            RunKind::Historical => Some(historical::watermark_after(&run)),
            RunKind::Incremental if ended.cursor == Cursor::Start => st.watermark.take(),
            RunKind::Incremental => Some(ended.cursor),
        };
        st.run = None;
        state::write_state(job.store, key, &st, etag).await?;
        stats.complete = true;
    }
    stats.finish(enc.newest(), st.watermark.as_ref(), &clock);
    Ok(stats)
}

/// Where a run continues: after the last row of the last part it wrote (parts are written in
/// index order, one at a time, each whole), else from the range's start. Parts already
/// written are never rewritten, so a row is in one part only, and one a transform may
/// already have read stays as it was read.
async fn resume_point(
    store: &dyn ObjectStore,
    prefix: &str,
    run: &RunRecord,
    d: &Described,
) -> Result<(u32, Cursor), ShardError> {
    let listed = store
        .list(prefix)
        .await
        .map_err(|e| ShardError::lake(prefix, e))?;
    let Some(last) = listed
        .iter()
        .filter_map(|o| extract_part_index(prefix, &o.key))
        .max()
    else {
        return Ok((0, run.from.clone()));
    };
    let key = extract_part_key(prefix, last);
    let corrupt = |reason: String| ShardError::Corrupt {
        key: key.clone(),
        reason,
    };
    let body = store
        .get_bytes(&key)
        .await
        .map_err(|e| ShardError::lake(&key, e))?;
    let row = last_row(&body)
        .map_err(&corrupt)?
        .ok_or_else(|| corrupt("an empty part".into()))?;
    let field = |name: &str| {
        row.get(name)
            .cloned()
            .ok_or_else(|| corrupt(format!("its last row has no `{name}`")))
    };
    let keys = d
        .key_columns()
        .map(|c| field(&c.name))
        .collect::<Result<Vec<Value>, _>>()?;
    let cursor = match run.kind {
        RunKind::Historical => Cursor::AfterKeys(keys),
        RunKind::Incremental => match field(&d.columns[d.updated_at].name)? {
            Value::String(updated_at) => Cursor::After {
                updated_at,
                key: Some(keys),
            },
            _ => {
                return Err(corrupt(
                    "its last row's updated_at is not a timestamp string".into(),
                ))
            }
        },
    };
    Ok((last + 1, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_clock_less_lag_and_delay() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T01:00:00.250000Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock {
            now,
            replica_delay: Duration::from_millis(1_500),
        };
        assert_eq!(upper_bound(&clock, 300), "2024-01-01T00:54:58.750000Z");
        assert_eq!(iso(now), "2024-01-01T01:00:00.250000Z");
    }
}

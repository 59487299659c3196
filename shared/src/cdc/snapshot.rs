//! `sluice cdc snapshot`: the initial load. Copies the current rows of each published table to
//! `raw/cdc/<table>/snapshot/<consistent lsn>/<page>.jsonl` as change events with `op = "r"`
//! and `source.lsn` = 0 ([`SNAPSHOT_LSN`]), so every change the slot delivers wins over the
//! copied row.
//!
//! Why 0 and not the slot's consistent point: a change's LSN is where it was WRITTEN, and its
//! transaction may commit later. A transaction open when the slot was created (or when the
//! copy ran) can write a change below the consistent point and commit after the copy read the
//! row's older value; with the consistent point as the copy's version, that later change would
//! look older than the copied row and lose to it, in the transform's dedup and in the loader's
//! version guard, for good. Every change the slot delivers was committed after the consistent
//! point and is at least as new as anything the copy saw, so it must win: version 0 makes it.
//! (A second snapshot of the same keys, after a new slot, cannot replace rows loaded at version
//! 0: a new slot starts with a new final table, see docs/CDC.md.)
//!
//! Why reading outside the slot's snapshot is still correct: a row the copy reads after a
//! later change is that change's result, which the slot also delivers, with the higher LSN; a
//! row deleted before the copy reaches it is deleted by the slot's event; a key moved behind
//! the pager's position is delivered as an insert. Only rows unchanged since the consistent
//! point depend on the copy, and keyset pagination on the primary key reads every one of them.
//!
//! Order of effects per page: the page object is written (overwrite, deterministic key), then
//! the progress object `state/cdc/snapshot/<table>.json`. A crash between the two rewrites the
//! same page on the next run. A progress object for another consistent point belongs to an
//! earlier slot and is ignored: the copy starts over.
//!
//! Values are read as their types' text output (`format('%s', v)`) in a session with the
//! settings the decoder uses, so a copied value has the same text as the slot's, and are typed
//! by the decoder's own conversion (`cdc::value::text_to_json`); each row is written as a
//! `cdc::event::ChangeEvent`, so a snapshot event and a streamed one have one shape.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use thiserror::Error;

use super::event::Source;

/// The version (`source.lsn`, `_lsn`) of every copied row: below any change the slot delivers
/// (see the module note).
pub const SNAPSHOT_LSN: u64 = 0;
use super::value::ValueError;
use crate::lake::{layout, LakeError, ObjectStore, PutMode};

/// What to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSpec {
    /// The source database name (`source.db` of every event).
    pub db_name: String,
    pub tables: Vec<SnapshotTable>,
    /// The slot's consistent point (`SetupOutcome::slot_lsn`).
    pub consistent_lsn: u64,
    /// Rows per page (one object per page).
    pub page_rows: u64,
}

/// One table to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTable {
    pub schema: String,
    pub table: String,
    /// The pipeline's table name: the lake folder under `raw/cdc/`.
    pub lake_table: String,
    /// The pipeline's key; must be the table's primary key (any order). Empty: the primary key.
    pub key_columns: Vec<String>,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// One entry per spec table, in spec order.
    pub tables: Vec<TableReport>,
}

impl SnapshotReport {
    /// Every table is copied completely (now or by an earlier run).
    pub fn is_complete(&self) -> bool {
        self.tables
            .iter()
            .all(|t| matches!(t.status, TableStatus::Done | TableStatus::AlreadyDone))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub lake_table: String,
    pub status: TableStatus,
    /// Pages and rows written by this run.
    pub pages_written: u64,
    pub rows_written: u64,
    /// The next page index (the number of pages the table has when done).
    pub next_page: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableStatus {
    /// Finished by this run.
    Done,
    /// Finished by an earlier run for this consistent point; nothing read.
    AlreadyDone,
    /// The deadline came first; the next run resumes it.
    Stopped,
}

/// Errors of the snapshot, naming the table (lake name) or object.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("snapshot spec: {reason}")]
    BadSpec { reason: String },
    #[error("snapshot: setting the session's output styles failed: {message}")]
    Session { message: String },
    #[error("snapshot of {table}: source table {schema}.{name} not found")]
    TableMissing {
        table: String,
        schema: String,
        name: String,
    },
    #[error("snapshot of {table}: the source table has no primary key to page by")]
    NoPrimaryKey { table: String },
    #[error("snapshot of {table}: key columns {given:?} are not the primary key {primary:?}")]
    KeyNotPrimary {
        table: String,
        given: Vec<String>,
        primary: Vec<String>,
    },
    #[error("snapshot of {table}: {step} failed: {message}")]
    Query {
        table: String,
        step: &'static str,
        message: String,
    },
    /// A value the typing rules refuse (the value itself is left out: it may be personal).
    #[error("snapshot of {table}: column {column} (type oid {type_oid}): {source}")]
    Value {
        table: String,
        column: String,
        type_oid: u32,
        #[source]
        source: ValueError,
    },
    /// An event could not be serialised (a JSON writer into memory does not fail in practice).
    #[error("snapshot of {table}: writing an event failed: {reason}")]
    Encode { table: String, reason: String },
    #[error("snapshot of {table}: {source}")]
    Lake {
        table: String,
        #[source]
        source: LakeError,
    },
    #[error("snapshot progress {key} is unreadable: {reason}")]
    Progress { key: String, reason: String },
}

impl SnapshotError {
    /// Whether running again may succeed as is (a lake service hiccup).
    pub fn is_retryable(&self) -> bool {
        matches!(self, SnapshotError::Lake { source, .. } if source.is_retryable())
    }
}

/// How far a table's copy got: `state/cdc/snapshot/<table>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    consistent_lsn: u64,
    next_page: u64,
    /// The key of the last row written (text form, key-column order); `None` before page 0.
    last_key: Option<Vec<String>>,
    done: bool,
    /// When the copy started (ISO UTC): `source.commit_ts` of every copied row.
    started_at: String,
}

/// Copies every table of `spec`, page by page, resuming each where an earlier run for the same
/// consistent point stopped. Stops (status `Stopped`) when another page would likely end after
/// `deadline`; at least one page is written per run, so runs always progress. Sets the session's
/// TimeZone, DateStyle, IntervalStyle, extra_float_digits and bytea_output on `conn`.
pub async fn snapshot(
    conn: &mut PgConnection,
    lake: &dyn ObjectStore,
    spec: &SnapshotSpec,
    deadline: Option<Instant>,
) -> Result<SnapshotReport, SnapshotError> {
    validate(spec)?;
    sqlx::query(
        "SELECT set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO, MDY', false), \
                set_config('IntervalStyle', 'postgres', false), set_config('extra_float_digits', '3', false), \
                set_config('bytea_output', 'hex', false)",
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| SnapshotError::Session {
        message: e.to_string(),
    })?;
    let mut clock = Clock {
        deadline,
        slowest_page: Duration::ZERO,
        written_any: false,
    };
    let mut tables = Vec::with_capacity(spec.tables.len());
    for t in &spec.tables {
        tables.push(copy_table(conn, lake, spec, t, &mut clock).await?);
    }
    Ok(SnapshotReport { tables })
}

/// When to stop: before a page that would likely end after the deadline.
struct Clock {
    deadline: Option<Instant>,
    slowest_page: Duration,
    written_any: bool,
}

impl Clock {
    fn out_of_time(&self) -> bool {
        match self.deadline {
            Some(d) => self.written_any && Instant::now() + self.slowest_page >= d,
            None => false,
        }
    }
}

fn validate(spec: &SnapshotSpec) -> Result<(), SnapshotError> {
    let bad = |reason: String| Err(SnapshotError::BadSpec { reason });
    if spec.page_rows == 0 || spec.page_rows > i64::MAX as u64 {
        return bad(format!("page_rows {} must be at least 1", spec.page_rows));
    }
    for t in &spec.tables {
        let lake_ok = !t.lake_table.is_empty()
            && t.lake_table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !lake_ok {
            return bad(format!(
                "lake table {:?}: want [A-Za-z0-9_-]+",
                t.lake_table
            ));
        }
        for (what, name) in [("schema", &t.schema), ("table", &t.table)]
            .into_iter()
            .chain(t.key_columns.iter().map(|k| ("key column", k)))
        {
            super::setup::check_ident(what, name)
                .or_else(|e| bad(format!("{}: {e}", t.lake_table)))?;
        }
    }
    Ok(())
}

async fn copy_table(
    conn: &mut PgConnection,
    lake: &dyn ObjectStore,
    spec: &SnapshotSpec,
    t: &SnapshotTable,
    clock: &mut Clock,
) -> Result<TableReport, SnapshotError> {
    let lake_table = &t.lake_table;
    let mut report = TableReport {
        lake_table: lake_table.clone(),
        status: TableStatus::Stopped,
        pages_written: 0,
        rows_written: 0,
        next_page: 0,
    };
    let mut progress = match read_progress(lake, lake_table, spec.consistent_lsn).await? {
        Some(p) if p.done => {
            report.status = TableStatus::AlreadyDone;
            report.next_page = p.next_page;
            return Ok(report);
        }
        Some(p) => p,
        None => Progress {
            consistent_lsn: spec.consistent_lsn,
            next_page: 0,
            last_key: None,
            done: false,
            started_at: now_utc(conn, lake_table).await?,
        },
    };
    let pager = pager(conn, t).await?;
    let source = Source {
        db: spec.db_name.clone(),
        schema: t.schema.clone(),
        table: t.table.clone(),
        lsn: SNAPSHOT_LSN,
        // A copied row belongs to no transaction.
        txid: 0,
        commit_ts: progress.started_at.clone(),
    };
    while !progress.done {
        report.next_page = progress.next_page;
        if clock.out_of_time() {
            return Ok(report);
        }
        let started = Instant::now();
        let page = read_page(conn, &pager, lake_table, &source, &progress, spec.page_rows).await?;
        if page.rows > 0 {
            let key = layout::cdc_snapshot_key(lake_table, spec.consistent_lsn, progress.next_page);
            lake.put(&key, Bytes::from(page.body), PutMode::Overwrite)
                .await
                .map_err(|source| SnapshotError::Lake {
                    table: lake_table.clone(),
                    source,
                })?;
            tracing::info!(table = %lake_table, key = %key, rows = page.rows, "snapshot page written");
            progress.next_page += 1;
            progress.last_key = page.last_key;
            report.pages_written += 1;
            report.rows_written += page.rows;
        }
        progress.done = page.exhausted;
        write_progress(lake, lake_table, &progress).await?;
        clock.slowest_page = clock.slowest_page.max(started.elapsed());
        clock.written_any = true;
    }
    report.status = TableStatus::Done;
    report.next_page = progress.next_page;
    Ok(report)
}

async fn read_progress(
    lake: &dyn ObjectStore,
    lake_table: &str,
    consistent_lsn: u64,
) -> Result<Option<Progress>, SnapshotError> {
    let key = layout::cdc_snapshot_progress_key(lake_table);
    let bytes = match lake.get_bytes(&key).await {
        Ok(b) => b,
        Err(LakeError::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Lake {
                table: lake_table.to_string(),
                source,
            })
        }
    };
    let p: Progress = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Progress {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    if p.consistent_lsn != consistent_lsn {
        tracing::warn!(table = %lake_table, old_lsn = p.consistent_lsn, lsn = consistent_lsn, "snapshot progress is for another slot; starting over");
        return Ok(None);
    }
    Ok(Some(p))
}

async fn write_progress(
    lake: &dyn ObjectStore,
    lake_table: &str,
    p: &Progress,
) -> Result<(), SnapshotError> {
    let key = layout::cdc_snapshot_progress_key(lake_table);
    let body = serde_json::to_vec(p).map_err(|e| SnapshotError::Progress {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    lake.put(&key, Bytes::from(body), PutMode::Overwrite)
        .await
        .map(|_| ())
        .map_err(|source| SnapshotError::Lake {
            table: lake_table.to_string(),
            source,
        })
}

/// The database's clock, ISO UTC with microseconds: the copy's `commit_ts`.
async fn now_utc(conn: &mut PgConnection, lake_table: &str) -> Result<String, SnapshotError> {
    sqlx::query_scalar::<_, String>(
        "SELECT to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| query_error(lake_table, "read the clock", &e))
}

fn query_error(table: &str, step: &'static str, e: &sqlx::Error) -> SnapshotError {
    SnapshotError::Query {
        table: table.to_string(),
        step,
        message: e.to_string(),
    }
}

mod pager;

use pager::{pager, read_page};

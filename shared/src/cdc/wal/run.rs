//! The run loop (the order of effects is in `mod.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgConnection;

use super::publish::{PendingRecord, Publisher};
use super::source::{self, lsn_text};
use super::state::{self, Partial, Stored, WalState};
use super::WalError;
use crate::cdc::copy::{peek_copy_sql, CopyFrames};
use crate::cdc::decode::{ChangeDecoder, Decoded, DecoderOptions};
use crate::cdc::event::ChangeEvent;
use crate::lake::ObjectStore;

/// How long a peek may outlast the run's deadline (which already leaves time to finish): the
/// loop stops taking changes at the deadline; this bounds a peek the server is still
/// computing.
const PEEK_GRACE: Duration = Duration::from_secs(10);

/// A pipeline table fed by the slot.
#[derive(Debug, Clone)]
pub struct CdcTable {
    /// The pipeline (lake) table name.
    pub name: String,
    /// Its primary key: the partition key, and how the decoder tells a key change.
    pub key_columns: Vec<String>,
    /// The source columns the pipeline declares (others are reported, see `RunReport`).
    pub declared: HashSet<String>,
}

/// What a run reads and where it stops.
#[derive(Debug, Clone)]
pub struct WalRun {
    pub slot: String,
    pub publications: Vec<String>,
    /// Rows per peek (`upto_nchanges`); a transaction is never cut by it.
    pub max_changes_per_peek: u64,
    /// The pipeline's change tables by source `(schema, table)`.
    pub tables: HashMap<(String, String), CdcTable>,
    /// Write a heartbeat when the last one is older than this.
    pub heartbeat_interval: Duration,
    pub limits: RunLimits,
}

/// The run's budget.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Stop taking new changes at this instant (the Lambda deadline minus the time a flush,
    /// the state write and the advance need).
    pub deadline: Instant,
    /// Stop after this many changes sent (tests, and a cap on one run's work).
    pub max_changes: Option<u64>,
}

impl RunLimits {
    fn spent(&self, sent: u64) -> bool {
        Instant::now() >= self.deadline || self.max_changes.is_some_and(|m| sent >= m)
    }
}

/// Why the run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The slot had nothing more.
    Drained,
    /// The budget ran out at a commit boundary.
    Budget,
    /// The budget ran out inside a transaction too large for it (`RunReport::partial`).
    InsideTransaction,
}

/// What a run did, for logs and metrics.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub stop: Stop,
    /// Change events put on the stream.
    pub changes: u64,
    /// Changes of a partly sent transaction skipped because an earlier run sent them.
    pub skipped: u64,
    /// Transactions completed (their end is now the slot's position).
    pub transactions: u64,
    /// The slot's confirmed position after the run.
    pub confirmed_lsn: u64,
    /// WAL the slot still holds after the run.
    pub lag_bytes: u64,
    /// A transaction partly on the stream.
    pub partial: Option<Partial>,
    /// The heartbeat written by this run.
    pub heartbeat_lsn: Option<u64>,
    /// Source columns the pipeline does not declare, per pipeline table.
    pub undeclared: BTreeMap<String, BTreeSet<String>>,
    /// Events of relations no pipeline table names (sent; the sink quarantines them).
    pub unrouted: u64,
}

/// One decoder run (see the order of effects in `mod.rs`).
pub async fn run(
    options: &PgConnectOptions,
    lake: &dyn ObjectStore,
    publisher: &mut Publisher,
    cfg: &WalRun,
) -> Result<RunReport, WalError> {
    let mut control = source::connect(options).await?;
    let db = source::database_name(&mut control).await?;
    let mut stored = check_slot(&mut control, lake, &cfg.slot).await?;
    let heartbeat_lsn = heartbeat(&mut control, &mut stored.state, cfg).await?;

    let mut report = RunReport {
        stop: Stop::Drained,
        changes: 0,
        skipped: 0,
        transactions: 0,
        confirmed_lsn: stored.state.confirmed_lsn,
        lag_bytes: 0,
        partial: stored.state.partial.clone(),
        heartbeat_lsn,
        undeclared: BTreeMap::new(),
        unrouted: 0,
    };
    let decoder_options = DecoderOptions {
        db,
        primary_keys: cfg
            .tables
            .iter()
            .map(|(k, t)| (k.clone(), t.key_columns.clone()))
            .collect(),
    };
    loop {
        let peek = peek_once(
            options,
            publisher,
            cfg,
            &decoder_options,
            &stored.state,
            &mut report,
        )
        .await?;
        // Every event added is acknowledged before anything records progress.
        publisher.flush().await?;
        let progressed = peek.commit_end.is_some() || peek.partial != stored.state.partial;
        if progressed {
            stored = commit_progress(&mut control, lake, stored, &peek).await?;
            report.confirmed_lsn = stored.state.confirmed_lsn;
            report.partial = stored.state.partial.clone();
        }
        if let Some(stop) = peek.stop {
            report.stop = stop;
            break;
        }
        if !progressed {
            break;
        }
    }
    let info = source::slot_info(&mut control, &cfg.slot).await?;
    report.lag_bytes = info.lag_bytes();
    Ok(report)
}

/// Reads the state and checks the slot against it (step 1).
async fn check_slot(
    control: &mut PgConnection,
    lake: &dyn ObjectStore,
    slot: &str,
) -> Result<Stored, WalError> {
    let stored = state::load(lake, slot)
        .await?
        .ok_or_else(|| WalError::NotSetUp {
            key: state::state_key(slot),
        })?;
    let info = source::slot_info(control, slot).await?;
    if info.plugin != "pgoutput" {
        return Err(WalError::WrongPlugin {
            slot: slot.to_string(),
            plugin: info.plugin,
        });
    }
    let s = &stored.state;
    if info.confirmed_flush_lsn == s.confirmed_lsn {
        return Ok(stored);
    }
    if info.confirmed_flush_lsn < s.confirmed_lsn {
        // Behind the recorded position: the last run died between writing the state and
        // advancing, or the server lost the advance in a crash (an advanced slot is saved at
        // the next checkpoint). Everything up to the recorded position was acknowledged, so
        // the advance is finished here; nothing is skipped. A slot can never be moved back,
        // and a recreated one starts at the current WAL position, ahead of the state.
        tracing::warn!(
            slot,
            found = lsn_text(info.confirmed_flush_lsn),
            to = lsn_text(s.confirmed_lsn),
            "the slot is behind the decoder's recorded position (a run stopped before its advance, or the server restarted); finishing the advance"
        );
        advance_to(control, slot, s.confirmed_lsn).await?;
        return Ok(stored);
    }
    Err(WalError::SlotMoved {
        slot: slot.to_string(),
        expected: lsn_text(s.confirmed_lsn),
        found: lsn_text(info.confirmed_flush_lsn),
    })
}

/// Advances the slot and checks it reached `lsn` (the server cannot move a slot past the WAL
/// it has flushed; a commit end the peek returned always is).
async fn advance_to(control: &mut PgConnection, slot: &str, lsn: u64) -> Result<(), WalError> {
    let end = source::advance(control, slot, lsn).await?;
    if end < lsn {
        return Err(WalError::Source {
            what: format!("advancing slot {slot}"),
            reason: format!(
                "the slot stopped at {} instead of {}",
                lsn_text(end),
                lsn_text(lsn)
            ),
            retryable: true,
        });
    }
    Ok(())
}

/// Writes a heartbeat when the interval has passed (step 2).
async fn heartbeat(
    control: &mut PgConnection,
    state: &mut WalState,
    cfg: &WalRun,
) -> Result<Option<u64>, WalError> {
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let due = state
        .last_heartbeat_ms
        .is_none_or(|t| now_ms.saturating_sub(t) >= cfg.heartbeat_interval.as_millis() as u64);
    if !due {
        return Ok(None);
    }
    let body = serde_json::json!({ "heartbeat_ms": now_ms }).to_string();
    let lsn = source::emit_heartbeat(control, &body).await?;
    state.last_heartbeat_ms = Some(now_ms);
    Ok(Some(lsn))
}

/// What one peek achieved.
#[derive(Debug, Default)]
struct Peeked {
    /// End of the last transaction every change of which was added to the publisher.
    commit_end: Option<u64>,
    /// The transaction left partly sent, if the budget ran out inside one.
    partial: Option<Partial>,
    /// Set when the run must stop after this peek.
    stop: Option<Stop>,
    /// The heartbeat time carried over (the state keeps it).
    last_heartbeat_ms: Option<u64>,
}

/// The transaction being decoded.
struct Txn {
    xid: u32,
    final_lsn: u64,
    /// Change events seen so far (the next one's index).
    index: u64,
    /// Changes an earlier run already sent.
    skip: u64,
}

/// One peek of the slot (step 3), streamed through the decoder into the publisher.
async fn peek_once(
    options: &PgConnectOptions,
    publisher: &mut Publisher,
    cfg: &WalRun,
    decoder_options: &DecoderOptions,
    state: &WalState,
    report: &mut RunReport,
) -> Result<Peeked, WalError> {
    let mut conn = source::connect(options).await?;
    // The server may decode for a long time before the first row (a backlog, bulk writes to
    // unpublished tables). The statement must end before the invocation does: a backend
    // orphaned by a killed Lambda would hold the slot until it next writes to its dead socket,
    // and the next run would find the slot busy.
    let left = cfg
        .limits
        .deadline
        .saturating_duration_since(Instant::now())
        + PEEK_GRACE;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET statement_timeout = {}",
        left.as_millis().max(1000)
    )))
    .execute(&mut conn)
    .await
    .map_err(|e| WalError::db("setting the peek's statement timeout", e))?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| WalError::db("reading the peek connection's pid", e))?;
    let sql = peek_copy_sql(&cfg.slot, &cfg.publications, Some(cfg.max_changes_per_peek))?;
    let mut peeked = Peeked {
        last_heartbeat_ms: state.last_heartbeat_ms,
        ..Peeked::default()
    };
    let mut decoder = ChangeDecoder::new(decoder_options.clone());
    let mut frames = CopyFrames::new();
    let mut out: Vec<Decoded> = Vec::new();
    let mut txn: Option<Txn> = None;
    let mut checked: HashSet<(String, String)> = HashSet::new();
    let mut stream_done = true;
    {
        let mut stream = conn
            .copy_out_raw(&sql)
            .await
            .map_err(|e| WalError::db(&format!("peeking slot {}", cfg.slot), e))?;
        'read: while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| WalError::db(&format!("peeking slot {}", cfg.slot), e))?;
            frames.push(&chunk);
            while let Some(row) = frames.next_row()? {
                out.clear();
                decoder.decode(&row, &mut out)?;
                for d in out.drain(..) {
                    match d {
                        Decoded::Begin { xid, final_lsn, .. } => {
                            let skip = match &state.partial {
                                Some(p) if p.commit_lsn == final_lsn => p.acked_changes,
                                _ => 0,
                            };
                            txn = Some(Txn {
                                xid,
                                final_lsn,
                                index: 0,
                                skip,
                            });
                        }
                        Decoded::Change(ev) => {
                            let Some(t) = txn.as_mut() else {
                                return Err(WalError::State {
                                    key: cfg.slot.clone(),
                                    reason: "a change outside a transaction".into(),
                                });
                            };
                            let index = t.index;
                            if index < t.skip {
                                t.index += 1;
                                report.skipped += 1;
                                continue;
                            }
                            if cfg.limits.spent(report.changes) {
                                // Inside a transaction only because it alone is over budget.
                                peeked.partial = Some(Partial {
                                    commit_lsn: t.final_lsn,
                                    xid: t.xid,
                                    acked_changes: index,
                                });
                                peeked.stop = Some(Stop::InsideTransaction);
                                stream_done = false;
                                break 'read;
                            }
                            note_columns(&decoder, &ev, cfg, &mut checked, report);
                            add_event(publisher, cfg, &ev, index, report).await?;
                            t.index += 1;
                        }
                        Decoded::Commit { end_lsn, .. } => {
                            txn = None;
                            peeked.commit_end = Some(end_lsn);
                            peeked.partial = None;
                            report.transactions += 1;
                            if cfg.limits.spent(report.changes) {
                                peeked.stop = Some(Stop::Budget);
                                stream_done = false;
                                break 'read;
                            }
                        }
                        Decoded::Message { .. } => {}
                    }
                }
            }
        }
        if stream_done {
            frames.finish()?;
        }
    }
    if !stream_done {
        release_peek(conn, backend, &cfg.slot, options).await?;
    }
    Ok(peeked)
}

/// Counts source columns the pipeline does not declare, once per table and peek.
fn note_columns(
    decoder: &ChangeDecoder,
    ev: &ChangeEvent,
    cfg: &WalRun,
    checked: &mut HashSet<(String, String)>,
    report: &mut RunReport,
) {
    let key = (ev.source.schema.clone(), ev.source.table.clone());
    if checked.contains(&key) {
        return;
    }
    let Some(table) = cfg.tables.get(&key) else {
        checked.insert(key);
        return;
    };
    if let Some(columns) = decoder.relation_columns(&key.0, &key.1) {
        let missing: BTreeSet<String> = columns
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| !table.declared.contains(n))
            .collect();
        if !missing.is_empty() {
            report
                .undeclared
                .entry(table.name.clone())
                .or_default()
                .extend(missing);
        }
    }
    checked.insert(key);
}

/// Hands one event to the publisher.
async fn add_event(
    publisher: &mut Publisher,
    cfg: &WalRun,
    ev: &ChangeEvent,
    index: u64,
    report: &mut RunReport,
) -> Result<(), WalError> {
    let key = (ev.source.schema.clone(), ev.source.table.clone());
    let (table, partition_key) = match cfg.tables.get(&key) {
        Some(t) => (t.name.clone(), ev.partition_key(&t.key_columns)),
        None => {
            report.unrouted += 1;
            (format!("{}.{}", key.0, key.1), ev.partition_key(&[]))
        }
    };
    let data = serde_json::to_vec(ev).map_err(|e| WalError::State {
        key: table.clone(),
        reason: format!("serialising a change event: {e}"),
    })?;
    publisher
        .add(PendingRecord {
            table,
            partition_key,
            data,
            lsn: ev.source.lsn,
            index: index as u32,
            source: ev.source.clone(),
        })
        .await?;
    report.changes += 1;
    Ok(())
}

/// Ends a peek cut short: the peeking backend holds the slot until its query ends, and the
/// advance needs the slot free. Closing the connection ends the query at its next write; a
/// backend still holding the slot after a few seconds is terminated (it is our own peek).
async fn release_peek(
    conn: PgConnection,
    backend: i32,
    slot: &str,
    options: &PgConnectOptions,
) -> Result<(), WalError> {
    drop(conn);
    let mut control = source::connect(options).await?;
    for attempt in 0..50 {
        let active: Option<i32> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&mut control)
                .await
                .map_err(|e| WalError::db("waiting for the peek to end", e))?
                .flatten();
        match active {
            Some(pid) if pid == backend => {
                if attempt == 20 {
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(backend)
                        .execute(&mut control)
                        .await
                        .map_err(|e| WalError::db("ending the peek", e))?;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return Ok(()),
        }
    }
    Err(WalError::Source {
        what: format!("ending the peek of slot {slot}"),
        reason: format!("backend {backend} still holds the slot"),
        retryable: true,
    })
}

/// Records the peek's progress, then moves the slot (step 6).
async fn commit_progress(
    control: &mut PgConnection,
    lake: &dyn ObjectStore,
    stored: Stored,
    peek: &Peeked,
) -> Result<Stored, WalError> {
    let old = stored.state.confirmed_lsn;
    let confirmed = peek.commit_end.unwrap_or(old);
    let next = WalState {
        slot: stored.state.slot.clone(),
        confirmed_lsn: confirmed,
        previous_lsn: old,
        partial: peek.partial.clone(),
        last_heartbeat_ms: peek.last_heartbeat_ms,
        created_lsn: stored.state.created_lsn,
    };
    let slot = next.slot.clone();
    let saved = state::save(lake, Some(&stored), next).await?;
    if confirmed != old {
        advance_to(control, &slot, confirmed).await?;
    }
    tracing::info!(
        slot,
        confirmed = lsn_text(confirmed),
        partial_changes = peek.partial.as_ref().map(|p| p.acked_changes),
        "slot advanced"
    );
    Ok(saved)
}

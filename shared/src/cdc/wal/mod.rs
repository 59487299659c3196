//! One run of the WAL decoder: the slot's changes since the last run → change events on
//! Kinesis → the slot advanced.
//!
//! The order of effects, and why a crash anywhere loses nothing:
//! 1. The state (`state/cdc/<slot>.json`, `state.rs`) is read and the slot checked against it:
//!    the slot must be where this decoder left it. A slot that is missing, was recreated or was
//!    moved by someone else is an error (changes in between may be lost); a slot at the
//!    previous position (a run died between writing the state and advancing) is advanced to the
//!    recorded one, since everything up to it was acknowledged.
//! 2. A heartbeat message is written when the interval has passed (`pg_logical_emit_message`):
//!    on an idle or filtered database it is the only thing the peek returns, and advancing past
//!    it keeps the slot from holding WAL.
//! 3. The slot is PEEKED (never consumed) on a connection of its own, as a COPY stream, decoded
//!    message by message; events go to the publisher, which puts them on Kinesis in batches.
//!    Nothing here moves the slot: a crash re-sends, it never skips. Downstream, events are
//!    idempotent (the transform's dedup and the loader's version guard use `_lsn`).
//! 4. The run stops at a transaction's commit when its time or change budget is spent; inside
//!    a transaction only when that transaction alone is over the budget (a peek cannot resume
//!    inside one), recording how many of its changes are acknowledged so the next run skips
//!    them: each run moves it forward, none blocks the slot.
//! 5. The publisher is flushed: every event added is acknowledged, or the run fails here and
//!    the slot stays where it was.
//! 6. The new state is written (conditional put), then the slot is advanced to the end of the
//!    last transaction whose every change is acknowledged.

pub mod peek;
pub mod publish;
mod run;
mod settings;
pub mod source;
pub mod state;

use crate::lake::LakeError;

pub use publish::{
    KinesisSink, PendingRecord, PublishCounters, PublishError, Publisher, RecordSink,
};
pub use run::{run, CdcTable, RunLimits, RunReport, Stop, WalRun};
pub use settings::{settings_from_pipeline, WalSettings};
pub use source::{connect, connect_options, SlotInfo, SourceLocation};
pub use state::{Partial, WalState};

/// Why a run failed. Every variant names the slot, key or step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Bad or missing configuration (source secret, URL, names).
    #[error("wal-decoder configuration: {reason}")]
    Config { reason: String },
    /// The source database failed a step.
    #[error("source database, {what}: {reason}")]
    Source {
        what: String,
        reason: String,
        retryable: bool,
    },
    /// The slot does not exist (never created, or dropped).
    #[error("replication slot {slot} does not exist: it was dropped, or `sluice cdc setup` never ran; changes since the last run may be lost, so nothing was read (re-run `sluice cdc setup`, then `sluice cdc snapshot`)")]
    SlotMissing { slot: String },
    /// The slot is not where this decoder left it.
    #[error("replication slot {slot} is at {found}, but this decoder left it at {expected}: it was recreated or moved by another consumer, and changes in between may be lost; nothing was read (re-run `sluice cdc setup`, then `sluice cdc snapshot`)")]
    SlotMoved {
        slot: String,
        expected: String,
        found: String,
    },
    /// The slot uses another output plugin.
    #[error("replication slot {slot} uses plugin {plugin}; the decoder reads pgoutput slots (`sluice cdc setup` creates one)")]
    WrongPlugin { slot: String, plugin: String },
    /// No state for the slot in the lake.
    #[error("no decoder state at {key}: run `sluice cdc setup` first")]
    NotSetUp { key: String },
    /// The state object cannot be read.
    #[error("decoder state {key}: {reason}")]
    State { key: String, reason: String },
    /// Another run wrote the state meanwhile.
    #[error("decoder state {key} was written by another run meanwhile: runs of one slot must not overlap (reserved concurrency 1); this run stopped before advancing the slot")]
    Concurrent { key: String },
    /// The lake failed.
    #[error("lake object {key}: {source}")]
    Lake {
        key: String,
        #[source]
        source: LakeError,
    },
    /// The WAL stream could not be decoded.
    #[error("decoding the slot's changes: {0}")]
    Decode(#[from] crate::cdc::pgoutput::CdcDecodeError),
    /// Kinesis did not acknowledge every event.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl WalError {
    pub(crate) fn db(what: &str, e: sqlx::Error) -> Self {
        let retryable = match &e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| transient_sqlstate(&c)),
            _ => false,
        };
        // sqlx's database errors carry the server's message, never bound parameter values.
        WalError::Source {
            what: what.to_string(),
            reason: e.to_string(),
            retryable,
        }
    }

    pub(crate) fn lake(key: &str, source: LakeError) -> Self {
        WalError::Lake {
            key: key.to_string(),
            source,
        }
    }

    /// Whether the next scheduled run may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            WalError::Source { retryable, .. } => *retryable,
            WalError::Concurrent { .. } => true,
            WalError::Lake { source, .. } => matches!(
                source,
                LakeError::Service {
                    retryable: true,
                    ..
                }
            ),
            WalError::Publish(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// SQLSTATEs a later run can get past without anyone changing anything: the slot held by
/// another backend (55006, the aftermath of a timed-out run or a manual peek), the server
/// shutting down or failing over (57P01-57P03), too many connections (53300), serialization
/// and deadlock (40001, 40P01), statement timeout (57014), and every connection exception
/// (class 08).
fn transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "55006" | "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "57014"
    ) || code.starts_with("08")
}

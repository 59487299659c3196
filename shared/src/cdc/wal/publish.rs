//! The wal-decoder's publisher: change events in, Kinesis `PutRecords` calls out, and a count
//! of the events the stream acknowledged, in the order they were added, so that a run
//! advances the replication slot only past changes the stream holds.
//!
//! The order of effects, and why a crash anywhere loses nothing:
//! 1. [`Publisher::add`] takes an event. One too large for a Kinesis record is first written
//!    to the lake (`spill/cdc/<table>/<lsn>-<index>.json`; a re-run writes the same bytes to
//!    the same key), and only then is its pointer record buffered: a pointer on the stream
//!    always finds its event.
//! 2. The buffer goes out as one `PutRecords` call when the next record would break a
//!    per-call limit, or on [`Publisher::flush`]. Records the stream refused with a transient
//!    code are sent again, alone, with backoff; a send succeeds only when every record of it
//!    is on the stream.
//! 3. [`Publisher::acked`] then counts every record added so far. The caller advances the slot
//!    to the last commit whose changes are all counted. A crash before that makes the next run
//!    send them again: duplicates on the stream, never a gap.
//!
//! `PutRecords` does not keep the order of one call's records when some fail and are resent,
//! so nothing downstream relies on stream order: later stages keep the highest `_lsn` per key.
//!
//! Partition keys and event bytes may hold row values: they never appear in logs or errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::aws::{classify, is_retryable_code, SdkFailure};
use crate::cdc::event::{Source, SpillPointer, SpillRef};
use crate::lake::layout::spill_key;
use crate::lake::{LakeError, ObjectStore, PutMode};

/// Records per `PutRecords` call: "Each PutRecords request can support up to 500 records"
/// (Kinesis API reference, PutRecords).
pub const MAX_RECORDS_PER_CALL: usize = 500;

/// Bytes per `PutRecords` call: "up to a limit of 5 MiB for the entire request, including
/// partition keys" (same page). Counted as data plus partition key bytes of every record.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// Bytes per record: "Each record in the request can be as large as 1 MiB … The record size
/// limit applies to the total size of the partition key and data blob" (same page). A larger
/// event is spilled to the lake.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Partition key length: 1 to 256 Unicode characters (PutRecordsRequestEntry).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Attempts per send, the first included. With [`FIRST_BACKOFF`] doubling up to
/// [`MAX_BACKOFF`] they span about 10 s: long enough for a shard's per-second write quota to
/// free several times over, short enough to leave a one-minute run time to stop cleanly.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The wait before the first resend. Shard quotas are per second (1 MiB and 1,000 records),
/// so waits start well under a second and pass it by the fourth attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One change event on its way to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// The pipeline's table name: names the spill key.
    pub table: String,
    /// The Kinesis partition key (docs/CDC.md), already bounded to 256 bytes.
    pub partition_key: String,
    /// The event's JSON.
    pub data: Vec<u8>,
    /// The change's WAL position.
    pub lsn: u64,
    /// The change's index within its transaction.
    pub index: u32,
    /// The change's origin, copied into a spill pointer.
    pub source: Source,
}

/// One record as `PutRecords` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl StreamRecord {
    /// What the record counts against the per-record and per-call limits.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Why the stream refused one record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// `ProvisionedThroughputExceededException`, `InternalFailure`, `KMS…Exception`.
    pub code: String,
    pub message: String,
}

/// One record's outcome: its sequence number, or why it was refused.
pub type RecordResult = Result<String, RecordFailure>;

/// Where records go: Kinesis in the functions, a fake in unit tests.
#[async_trait]
pub trait RecordSink: Send + Sync + std::fmt::Debug {
    /// The stream's name or ARN, for errors and logs.
    fn stream(&self) -> &str;

    /// Puts `records` in one call. `Ok` holds one result per record, in order; `Err` is a
    /// failure of the whole call (nothing known to be written).
    async fn put_batch(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, SdkFailure>;
}

/// The stream through the Kinesis client of `sluice::aws::Clients`.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

impl KinesisSink {
    /// `stream` is a stream name, or an ARN (`arn:…:stream/NAME`), which Kinesis recommends.
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        KinesisSink {
            client,
            stream: stream.into(),
        }
    }
}

#[async_trait]
impl RecordSink for KinesisSink {
    fn stream(&self) -> &str {
        &self.stream
    }

    async fn put_batch(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, SdkFailure> {
        use aws_sdk_kinesis::primitives::Blob;
        use aws_sdk_kinesis::types::PutRecordsRequestEntry;
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(r.data.clone()))
                    .partition_key(&r.partition_key)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SdkFailure {
                status: None,
                code: None,
                message: format!("building the PutRecords request: {e}"),
                retryable: false,
            })?;
        let call = self.client.put_records().set_records(Some(entries));
        let call = if self.stream.starts_with("arn:") {
            call.stream_arn(&self.stream)
        } else {
            call.stream_name(&self.stream)
        };
        let out = call.send().await.map_err(|e| classify(&e))?;
        Ok(out.records().iter().map(record_result).collect())
    }
}

fn record_result(r: &aws_sdk_kinesis::types::PutRecordsResultEntry) -> RecordResult {
    match (r.sequence_number(), r.error_code()) {
        (Some(seq), None) => Ok(seq.to_string()),
        (_, Some(code)) => Err(RecordFailure {
            code: code.to_string(),
            message: r.error_message().unwrap_or("no message").to_string(),
        }),
        // Neither: the record may or may not be on the stream. Sending it again is safe
        // (later stages drop duplicates), so it counts as a transient failure.
        (None, None) => Err(RecordFailure {
            code: "InternalFailure".to_string(),
            message: "the result held neither a sequence number nor an error code".to_string(),
        }),
    }
}

/// Whether a record refused with `code` may be accepted when sent again.
fn record_code_retryable(code: &str) -> bool {
    is_retryable_code(code)
}

/// How failed sends are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per send, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the first resend; doubled for each later one.
    pub first_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (from 1): doubled per attempt up to the
    /// cap, then half of it kept and half drawn at random, so that throttled writers spread
    /// out instead of retrying together.
    fn wait(&self, attempt: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
        let base = doubled.min(self.max_backoff);
        let half = base / 2;
        half + half * jitter_permille(attempt) / 1000
    }
}

/// A number from 0 to 1000, different on every call: std's hasher keys are random per thread
/// and change with each `RandomState`, which is all the randomness a backoff needs.
fn jitter_permille(attempt: u32) -> u32 {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(attempt);
    u32::try_from(r % 1001).unwrap_or(1000)
}

/// What a publisher did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishCounters {
    /// Records the stream acknowledged (spill pointers included).
    pub records_sent: u64,
    /// Their bytes, data plus partition keys.
    pub bytes_sent: u64,
    /// `PutRecords` calls made, resends included.
    pub calls: u64,
    /// Resends after a failed record or call.
    pub retries: u64,
    /// Records sent again (a resend carries only the failed ones).
    pub records_retried: u64,
    /// Events written to the lake with a pointer on the stream.
    pub spilled: u64,
    /// Their bytes.
    pub spilled_bytes: u64,
}

/// Errors of the publisher. [`PublishError::is_retryable`] says whether a later run may pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Transient failures outlasted the attempts.
    #[error(
        "Kinesis stream {stream}: {records_left} records still unacknowledged after {attempts} \
         attempts (last error {last_code}: {last_message})"
    )]
    GaveUp {
        stream: String,
        attempts: u32,
        records_left: usize,
        last_code: String,
        last_message: String,
    },
    /// The next resend would have ended after the run's deadline.
    #[error(
        "Kinesis stream {stream}: the run's deadline came with {records_left} records \
         unacknowledged (last error {last_code}: {last_message})"
    )]
    DeadlineReached {
        stream: String,
        records_left: usize,
        last_code: String,
        last_message: String,
    },
    /// The stream refused a call or a record for good (no such stream, access denied, KMS
    /// key disabled).
    #[error("Kinesis stream {stream} refused {records_left} records: {code}: {message}")]
    Rejected {
        stream: String,
        records_left: usize,
        code: String,
        message: String,
    },
    /// The answer did not hold one result per record.
    #[error("Kinesis stream {stream}: PutRecords answered {got} results for {sent} records")]
    BadResponse {
        stream: String,
        sent: usize,
        got: usize,
    },
    /// A change that cannot become a record.
    #[error("change {lsn}-{index} of table {table}: {reason}")]
    BadRecord {
        table: String,
        lsn: u64,
        index: u32,
        reason: String,
    },
    /// A change too large for a record could not be written to the lake.
    #[error("change {lsn}-{index} of table {table}: writing its spill object {key}: {source}")]
    Spill {
        table: String,
        lsn: u64,
        index: u32,
        key: String,
        #[source]
        source: Box<LakeError>,
    },
}

impl PublishError {
    /// Whether a later attempt (the next run) may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            PublishError::GaveUp { .. } | PublishError::DeadlineReached { .. } => true,
            PublishError::Spill { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

/// The last transient failure of a send, for the error that ends it.
struct LastFailure {
    code: String,
    message: String,
}

/// Buffers change events into `PutRecords` calls and counts what the stream acknowledged.
#[derive(Debug)]
pub struct Publisher {
    sink: Arc<dyn RecordSink>,
    lake: Arc<dyn ObjectStore>,
    retry: RetryPolicy,
    deadline: Option<Instant>,
    /// Records added and not yet acknowledged, in add order.
    buffer: Vec<StreamRecord>,
    /// Their size, as the per-call limit counts it.
    buffer_bytes: usize,
    added: u64,
    acked: u64,
    counters: PublishCounters,
}

impl Publisher {
    /// A publisher to `sink`, spilling oversized events to `lake`.
    pub fn new(sink: Arc<dyn RecordSink>, lake: Arc<dyn ObjectStore>) -> Self {
        Publisher {
            sink,
            lake,
            retry: RetryPolicy::default(),
            deadline: None,
            buffer: Vec::new(),
            buffer_bytes: 0,
            added: 0,
            acked: 0,
            counters: PublishCounters::default(),
        }
    }

    /// No resend is started whose wait would end after `deadline`; the send fails with
    /// [`PublishError::DeadlineReached`] instead.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many added records the stream has acknowledged: every record added before the last
    /// successful send (a send succeeds only when all its records are on the stream).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// How many records were added.
    pub fn added(&self) -> u64 {
        self.added
    }

    pub fn counters(&self) -> PublishCounters {
        self.counters
    }

    /// Adds an event: spilled to the lake first when too large for a record; the buffer is
    /// sent first when this record would take it past a per-call limit. On `Err` the record is
    /// not added (the caller stops the run; the slot is not advanced past it).
    pub async fn add(&mut self, rec: PendingRecord) -> Result<(), PublishError> {
        check_partition_key(&rec)?;
        let record = if rec.partition_key.len() + rec.data.len() > MAX_RECORD_BYTES {
            self.spill(rec).await?
        } else {
            StreamRecord {
                partition_key: rec.partition_key,
                data: rec.data,
            }
        };
        let size = record.size_bytes();
        if self.buffer.len() + 1 > MAX_RECORDS_PER_CALL
            || self.buffer_bytes + size > MAX_BYTES_PER_CALL
        {
            self.flush().await?;
        }
        self.buffer.push(record);
        self.buffer_bytes += size;
        self.added += 1;
        Ok(())
    }

    /// Sends everything buffered; on `Ok` every added record is acknowledged. On `Err` the
    /// records the stream did not acknowledge stay buffered, and a later `flush` sends them.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.buffer);
        self.buffer_bytes = 0;
        let sent = self.send_until_acked(&mut pending).await;
        if sent.is_ok() {
            self.acked = self.added;
        } else {
            self.buffer_bytes = pending.iter().map(StreamRecord::size_bytes).sum();
            self.buffer = pending;
        }
        sent
    }

    /// Writes the event to the lake and returns its pointer record.
    async fn spill(&mut self, rec: PendingRecord) -> Result<StreamRecord, PublishError> {
        let key = spill_key(&rec.table, rec.lsn, u64::from(rec.index));
        let bytes = u64::try_from(rec.data.len()).unwrap_or(u64::MAX);
        if let Err(source) = self
            .lake
            .put(&key, Bytes::from(rec.data), PutMode::Overwrite)
            .await
        {
            return Err(PublishError::Spill {
                table: rec.table,
                lsn: rec.lsn,
                index: rec.index,
                key,
                source: Box::new(source),
            });
        }
        let pointer = SpillPointer {
            spill: SpillRef { key, bytes },
            source: rec.source,
        };
        let bad = |reason: String| PublishError::BadRecord {
            table: rec.table.clone(),
            lsn: rec.lsn,
            index: rec.index,
            reason,
        };
        let data = serde_json::to_vec(&pointer).map_err(|e| bad(format!("spill pointer: {e}")))?;
        let record = StreamRecord {
            partition_key: rec.partition_key,
            data,
        };
        if record.size_bytes() > MAX_RECORD_BYTES {
            return Err(bad(format!(
                "its spill pointer takes {} bytes, over the {MAX_RECORD_BYTES}-byte record limit",
                record.size_bytes()
            )));
        }
        self.counters.spilled += 1;
        self.counters.spilled_bytes += bytes;
        Ok(record)
    }

    /// Sends `pending` until every record is acknowledged, resending only the refused ones.
    /// On `Err`, `pending` holds the records not acknowledged, in add order.
    async fn send_until_acked(
        &mut self,
        pending: &mut Vec<StreamRecord>,
    ) -> Result<(), PublishError> {
        let mut attempt = 1;
        loop {
            let Some(last) = self.send_once(pending).await? else {
                return Ok(());
            };
            let stream = self.sink.stream().to_string();
            if attempt >= self.retry.max_attempts {
                return Err(PublishError::GaveUp {
                    stream,
                    attempts: attempt,
                    records_left: pending.len(),
                    last_code: last.code,
                    last_message: last.message,
                });
            }
            let wait = self.retry.wait(attempt);
            if self.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Err(PublishError::DeadlineReached {
                    stream,
                    records_left: pending.len(),
                    last_code: last.code,
                    last_message: last.message,
                });
            }
            tracing::warn!(
                stream = %stream,
                attempt,
                records_left = pending.len(),
                code = %last.code,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Kinesis refused records; sending them again"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
            self.counters.retries += 1;
            self.counters.records_retried += pending.len() as u64;
        }
    }

    /// One `PutRecords` call. Acknowledged records leave `pending`; `Ok(None)` when none is
    /// left, `Ok(Some(..))` after a transient failure, `Err` after a lasting one.
    async fn send_once(
        &mut self,
        pending: &mut Vec<StreamRecord>,
    ) -> Result<Option<LastFailure>, PublishError> {
        self.counters.calls += 1;
        let stream = || self.sink.stream().to_string();
        let results = match self.sink.put_batch(pending).await {
            Ok(results) => results,
            Err(f) => return call_failure(f, stream(), pending.len()),
        };
        if results.len() != pending.len() {
            return Err(PublishError::BadResponse {
                stream: stream(),
                sent: pending.len(),
                got: results.len(),
            });
        }
        let mut left = Vec::new();
        let mut transient = None;
        let mut lasting = None;
        for (record, result) in std::mem::take(pending).into_iter().zip(results) {
            match result {
                Ok(_sequence_number) => {
                    self.counters.records_sent += 1;
                    self.counters.bytes_sent += record.size_bytes() as u64;
                    continue;
                }
                Err(f) if record_code_retryable(&f.code) => transient = Some(f),
                Err(f) => lasting = Some(f),
            }
            left.push(record);
        }
        *pending = left;
        if let Some(f) = lasting {
            return Err(PublishError::Rejected {
                stream: self.sink.stream().to_string(),
                records_left: pending.len(),
                code: f.code,
                message: f.message,
            });
        }
        Ok(transient.map(|f| LastFailure {
            code: f.code,
            message: f.message,
        }))
    }
}

/// A failed call: transient (throttling, 5xx, network) or lasting (no such stream, access).
fn call_failure(
    f: SdkFailure,
    stream: String,
    records_left: usize,
) -> Result<Option<LastFailure>, PublishError> {
    // A transport failure has no code: name it by its kind.
    let code = f.code.unwrap_or_else(|| match f.status {
        Some(status) => format!("HTTP {status}"),
        None => "NoResponse".to_string(),
    });
    if f.retryable {
        return Ok(Some(LastFailure {
            code,
            message: f.message,
        }));
    }
    Err(PublishError::Rejected {
        stream,
        records_left,
        code,
        message: f.message,
    })
}

/// Kinesis takes partition keys of 1 to 256 characters; the decoder bounds them (docs/CDC.md).
fn check_partition_key(rec: &PendingRecord) -> Result<(), PublishError> {
    let chars = rec.partition_key.chars().count();
    if (1..=MAX_PARTITION_KEY_CHARS).contains(&chars) {
        return Ok(());
    }
    Err(PublishError::BadRecord {
        table: rec.table.clone(),
        lsn: rec.lsn,
        index: rec.index,
        reason: format!(
            "its partition key has {chars} characters; Kinesis takes 1 to {MAX_PARTITION_KEY_CHARS}"
        ),
    })
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;

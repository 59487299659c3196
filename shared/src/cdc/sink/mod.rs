//! The cdc-sink's run: one Kinesis batch of change events → JSON-lines objects in
//! `raw/cdc/<table>/`, refused records → `quarantine/_cdc-sink/`, and the sequence number Lambda
//! resumes the shard from when some records could not be written.
//!
//! The order of effects, and why a crash anywhere leaves the lake consistent:
//! 1. Every record is read, in sequence order: its data must be a change event or a spill
//!    pointer (docs/CDC.md), and its source relation must be a pipeline table's. A pointer is
//!    replaced by the event read from `spill/cdc/`. Only reads so far. A spill read that fails
//!    for any reason but a missing object stops here: that record and every later one are left
//!    for Lambda to send again (writing the later ones now would only duplicate them).
//! 2. The events taken are grouped by (table, shard) and each group is put, overwriting, at
//!    `raw/cdc/<table>/<shard>/<first seq>-<last seq>.jsonl`. The same records always make the
//!    same key, so a batch redelivered after a crash rewrites the same objects.
//! 3. The refused records before the first failure go to one quarantine object per shard, at a
//!    key made the same way; refused records after it come back with the retry.
//! 4. The response names the lowest sequence number not durably written (a failed group's
//!    first record, the stop of step 1, a failed quarantine's first record): Lambda checkpoints
//!    everything before it and resumes there. A retry that starts inside a group another group
//!    of the batch has already written writes some events twice, under another key; those
//!    copies carry the same `source.lsn`, and the transform and the loader keep one version per
//!    key and LSN, so they change nothing downstream.
//!
//! No record's contents reach a log line: they are as sensitive as `raw/`.

pub mod error;
mod position;
mod record;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::StreamExt;

use crate::cdc::event::Source;
use crate::lake::layout;
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{LakeError, ObjectStore, PutMode};
use crate::metrics::Emf;

pub use error::{PositionError, Refusal};
pub use position::{Position, SequenceNumber, ShardId};
pub use record::{parse, parse_spilled, Parsed};

/// Source relation `(schema, table)` → the pipeline table its changes go to.
pub type Routes = HashMap<(String, String), String>;

/// Puts in flight at once: a batch spans few tables, and S3 takes parallel puts well.
const WRITE_CONCURRENCY: usize = 8;

/// One record of a batch, as the function read it from the event.
#[derive(Debug, Clone)]
pub struct SinkRecord {
    /// 0-based place in the event's `Records` (the quarantine record's line is this + 1).
    pub index: usize,
    pub position: Position,
    pub data: RecordData,
}

/// A record's payload.
#[derive(Debug, Clone)]
pub enum RecordData {
    /// The decoded bytes the producer put on the stream.
    Decoded(Bytes),
    /// The Kinesis record could not be decoded; `raw` is its data field as it came.
    Unreadable { raw: String, reason: String },
}

/// An object the run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    /// The pipeline table (None for a quarantine object).
    pub table: Option<String>,
    pub key: String,
    pub records: usize,
    pub bytes: u64,
}

/// What one batch came to.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    /// Records in the batch.
    pub records: usize,
    /// The change objects written, in (table, shard) order.
    pub written: Vec<WrittenObject>,
    /// The quarantine objects written.
    pub quarantine: Vec<WrittenObject>,
    /// Spill pointers replaced by their events.
    pub spills_resolved: usize,
    /// Where Lambda resumes the shard: the lowest sequence number not durably written.
    pub retry_from: Option<SequenceNumber>,
    /// Records at or after `retry_from`, which Lambda sends again.
    pub retried: usize,
    /// What failed, one entry per failure (keys and errors, never record contents).
    pub failures: Vec<String>,
}

impl SinkReport {
    /// Records written to quarantine.
    pub fn quarantined(&self) -> usize {
        self.quarantine.iter().map(|q| q.records).sum()
    }

    /// The EMF lines of the batch: one per change object (per table), one for the batch.
    pub fn emf_lines(&self, function: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .written
            .iter()
            .map(|w| {
                Emf::new(function)
                    .dimension("Table", w.table.as_deref().unwrap_or_default())
                    .count("RecordsWritten", w.records as u64)
                    .bytes("BytesWritten", w.bytes)
                    .property("Key", w.key.as_str())
                    .line()
            })
            .collect();
        lines.push(
            Emf::new(function)
                .count("RecordsIn", self.records as u64)
                .count("RecordsQuarantined", self.quarantined() as u64)
                .count("SpillsResolved", self.spills_resolved as u64)
                .count("RecordsRetried", self.retried as u64)
                .line(),
        );
        lines
    }
}

/// The sink over one lake and one routing map.
#[derive(Debug, Clone, Copy)]
pub struct CdcSink<'a> {
    pub store: &'a dyn ObjectStore,
    pub routes: &'a Routes,
}

/// A change event taken, on its way to its group's object.
struct Line {
    sequence: SequenceNumber,
    line: Bytes,
}

/// A record refused, on its way to quarantine.
struct Refused {
    index: usize,
    position: Position,
    raw: RawData,
    refusal: Refusal,
}

enum RawData {
    Bytes(Bytes),
    Text(String),
}

/// What step 1 makes of one record.
enum Classified {
    Taken {
        table: String,
        line: Bytes,
        spilled: bool,
    },
    Refused(RawData, Refusal),
    /// A read failed in a way a retry may fix: stop here.
    Stop(String),
}

/// What step 1 read: the groups to write, the records refused, where it stopped.
#[derive(Default)]
struct Read {
    groups: BTreeMap<(String, ShardId), Vec<Line>>,
    refused: Vec<Refused>,
    /// The record whose spill could not be read: it and every later one come back.
    stop: Option<(SequenceNumber, String)>,
    spills_resolved: usize,
}

impl CdcSink<'_> {
    /// Runs one batch (see the module note for the order of effects). Never fails as a whole:
    /// a record is written, quarantined, or at or after `retry_from`.
    pub async fn run(&self, mut records: Vec<SinkRecord>) -> SinkReport {
        records.sort_by(|a, b| a.position.sequence.cmp(&b.position.sequence));
        let sequences: Vec<SequenceNumber> = records
            .iter()
            .map(|r| r.position.sequence.clone())
            .collect();
        let mut report = SinkReport {
            records: records.len(),
            ..SinkReport::default()
        };
        let mut read = self.read_all(records).await;
        report.spills_resolved = read.spills_resolved;
        let mut retry_from = None;
        if let Some((sequence, error)) = read.stop {
            report.failures.push(error);
            retry_from = Some(sequence);
        }
        for result in self.write_groups(read.groups).await {
            match result {
                Ok(w) => report.written.push(w),
                Err((first, error)) => {
                    report.failures.push(error);
                    retry_from = lowest(retry_from, first);
                }
            }
        }
        report
            .written
            .sort_by(|a, b| (&a.table, &a.key).cmp(&(&b.table, &b.key)));
        read.refused
            .retain(|r| retry_from.as_ref().is_none_or(|f| r.position.sequence < *f));
        for result in self.quarantine(read.refused).await {
            match result {
                Ok(q) => report.quarantine.push(q),
                Err((first, error)) => {
                    report.failures.push(error);
                    retry_from = lowest(retry_from, first);
                }
            }
        }
        report.retried = retry_from
            .as_ref()
            .map_or(0, |f| sequences.iter().filter(|s| *s >= f).count());
        report.retry_from = retry_from;
        report
    }

    /// Step 1, record by record in sequence order (spill reads are rare: one at a time).
    async fn read_all(&self, records: Vec<SinkRecord>) -> Read {
        let mut read = Read::default();
        for r in records {
            match self.classify(r.data).await {
                Classified::Taken {
                    table,
                    line,
                    spilled,
                } => {
                    read.spills_resolved += usize::from(spilled);
                    read.groups
                        .entry((table, r.position.shard))
                        .or_default()
                        .push(Line {
                            sequence: r.position.sequence,
                            line,
                        });
                }
                Classified::Refused(raw, refusal) => read.refused.push(Refused {
                    index: r.index,
                    position: r.position,
                    raw,
                    refusal,
                }),
                Classified::Stop(error) => {
                    tracing::warn!(sequence = %r.position.sequence, error, "spill read failed; the shard resumes at this record");
                    read.stop = Some((r.position.sequence, error));
                    break;
                }
            }
        }
        read
    }

    async fn classify(&self, data: RecordData) -> Classified {
        let data = match data {
            RecordData::Decoded(b) => b,
            RecordData::Unreadable { raw, reason } => {
                return Classified::Refused(RawData::Text(raw), Refusal::Unreadable { reason })
            }
        };
        let refuse = |refusal| Classified::Refused(RawData::Bytes(data.clone()), refusal);
        match record::parse(data.clone()) {
            Ok(Parsed::Event { relation, line }) => match self.route(&relation) {
                Ok(table) => Classified::Taken {
                    table,
                    line,
                    spilled: false,
                },
                Err(refusal) => refuse(refusal),
            },
            Ok(Parsed::Spill { relation, key }) => match self.route(&relation) {
                Ok(table) => match self.read_spill(&key, &relation).await {
                    Ok(Ok(line)) => Classified::Taken {
                        table,
                        line,
                        spilled: true,
                    },
                    Ok(Err(refusal)) => refuse(refusal),
                    Err(e) => Classified::Stop(e.to_string()),
                },
                Err(refusal) => refuse(refusal),
            },
            Err(refusal) => refuse(refusal),
        }
    }

    /// The pipeline table of a relation.
    fn route(&self, relation: &Source) -> Result<String, Refusal> {
        let at = (relation.schema.clone(), relation.table.clone());
        match self.routes.get(&at) {
            Some(table) => Ok(table.clone()),
            None => Err(Refusal::UnknownRelation {
                schema: at.0,
                table: at.1,
            }),
        }
    }

    /// The event a pointer names: the line, or why it is refused; Err when the read failed in
    /// a way a retry may fix.
    async fn read_spill(
        &self,
        key: &str,
        pointer: &Source,
    ) -> Result<Result<Bytes, Refusal>, LakeError> {
        match self.store.get_bytes(key).await {
            Ok(body) => Ok(record::parse_spilled(key, body, pointer)),
            // The decoder writes the spill object before its pointer: it will never appear.
            Err(LakeError::NotFound { .. }) => Ok(Err(Refusal::SpillMissing {
                key: key.to_string(),
            })),
            Err(e) => Err(e),
        }
    }

    /// Step 2: every group put at once (bounded); each result is the object or the group's
    /// first sequence number with the error.
    async fn write_groups(
        &self,
        groups: BTreeMap<(String, ShardId), Vec<Line>>,
    ) -> Vec<Result<WrittenObject, (SequenceNumber, String)>> {
        futures::stream::iter(groups)
            .map(|((table, shard), lines)| self.write_group(table, shard, lines))
            .buffer_unordered(WRITE_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect()
            .await
    }

    async fn write_group(
        &self,
        table: String,
        shard: ShardId,
        lines: Vec<Line>,
    ) -> Option<Result<WrittenObject, (SequenceNumber, String)>> {
        let (first, last) = (lines.first()?, lines.last()?);
        let key = layout::cdc_object_key(
            &table,
            shard.as_str(),
            first.sequence.as_str(),
            last.sequence.as_str(),
        );
        let size: usize = lines.iter().map(|l| l.line.len() + 1).sum();
        let mut body = Vec::with_capacity(size);
        for l in &lines {
            body.extend_from_slice(&l.line);
            body.push(b'\n');
        }
        let written = self.put(Some(&table), &key, body, lines.len()).await;
        Some(written.map_err(|e| (first.sequence.clone(), e)))
    }

    /// Step 3: one quarantine object per shard (a batch has one; the map keeps keys right if
    /// a caller ever mixes shards).
    async fn quarantine(
        &self,
        refused: Vec<Refused>,
    ) -> Vec<Result<WrittenObject, (SequenceNumber, String)>> {
        let mut by_shard: BTreeMap<ShardId, Vec<Refused>> = BTreeMap::new();
        for r in refused {
            by_shard
                .entry(r.position.shard.clone())
                .or_default()
                .push(r);
        }
        let mut results = Vec::new();
        for (shard, records) in by_shard {
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                continue;
            };
            let first_seq = first.position.sequence.clone();
            let key = layout::cdc_quarantine_key(
                shard.as_str(),
                first_seq.as_str(),
                last.position.sequence.as_str(),
            );
            let result = match quarantine_body(&records) {
                Ok(body) => self.put(None, &key, body, records.len()).await,
                Err(e) => Err(format!("quarantine record for {key}: {e}")),
            };
            results.push(result.map_err(|e| (first_seq, e)));
        }
        results
    }

    async fn put(
        &self,
        table: Option<&str>,
        key: &str,
        body: Vec<u8>,
        records: usize,
    ) -> Result<WrittenObject, String> {
        let bytes = body.len() as u64;
        match self.store.put(key, body.into(), PutMode::Overwrite).await {
            Ok(_) => {
                match table {
                    Some(table) => tracing::info!(table, key, records, bytes, "cdc object written"),
                    None => tracing::warn!(key, records, "records refused; quarantined"),
                }
                Ok(WrittenObject {
                    table: table.map(str::to_string),
                    key: key.to_string(),
                    records,
                    bytes,
                })
            }
            Err(e) => {
                tracing::error!(table, key, records, error = %e, "write failed; the shard resumes at its first record");
                Err(e.to_string())
            }
        }
    }
}

fn lowest(a: Option<SequenceNumber>, b: SequenceNumber) -> Option<SequenceNumber> {
    Some(match a {
        Some(a) if a < b => a,
        _ => b,
    })
}

/// The quarantine object: one shared quarantine record per refused record.
fn quarantine_body(records: &[Refused]) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::new();
    for r in records {
        let (raw, note) = match &r.raw {
            RawData::Text(t) => (t.clone(), ""),
            RawData::Bytes(b) => match std::str::from_utf8(b) {
                Ok(t) => (t.to_string(), ""),
                Err(_) => (
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b),
                    " (raw is the data in base64: it is not UTF-8)",
                ),
            },
        };
        let record = QuarantineRecord {
            object: r.position.describe(),
            line: r.index as u64 + 1,
            column: None,
            reason: format!("{}{note}", r.refusal),
            raw,
            raw_truncated: false,
        };
        body.extend(record.to_json_line()?);
    }
    Ok(body)
}

//! The change event of docs/CDC.md, the spill pointer that stands in for an event too large for
//! one Kinesis record, and [`StreamRecord`], what the cdc-sink reads a record as. The wal-decoder
//! and the snapshot write these; the sink and the transform read them; this file is the one
//! definition of the shape.
//!
//! `before` and `after` are `serde_json::Map`s, which keep their keys sorted (the workspace does
//! not turn on serde_json's `preserve_order`), so a row's columns serialise in name order.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::pgoutput::CdcDecodeError;

/// Kinesis takes partition keys of at most 256 characters; longer keys are hashed.
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "c")]
    Insert,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    #[serde(rename = "t")]
    Truncate,
    /// A row read by the initial snapshot.
    #[serde(rename = "r")]
    Read,
}

impl Op {
    /// The one-letter code of the event (`c`, `u`, `d`, `t`, `r`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Read => "r",
        }
    }
}

/// Where a change comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The source database name.
    pub db: String,
    pub schema: String,
    pub table: String,
    /// The change's own WAL position (the `X/Y` text as one 64-bit number).
    pub lsn: u64,
    /// The source transaction id.
    pub txid: u32,
    /// The transaction's commit time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub commit_ts: String,
}

/// One change of one row (or one table, for a truncate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEvent {
    pub op: Op,
    /// The old row as the source sent it: the key columns, or every column with
    /// `REPLICA IDENTITY FULL`.
    #[serde(deserialize_with = "present")]
    pub before: Option<Map<String, Value>>,
    /// The new row; `None` for `d` and `t`.
    #[serde(deserialize_with = "present")]
    pub after: Option<Map<String, Value>>,
    /// Columns left out of `after` as unchanged TOASTed values that `before` could not fill.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    pub source: Source,
}

/// An `Option` field that must be present (as `null` when empty): serde's derive would read a
/// missing `before` as `None`, and a record without it is not one the decoder wrote.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    Option::deserialize(d)
}

impl ChangeEvent {
    /// The Kinesis partition key: `<schema>.<table>/<key values as JSON, joined by />`, or its
    /// SHA-256 in hex when over 256 bytes; `<schema>.<table>` for a truncate. The values come
    /// from `after`, or from `before` for a delete; a key column absent there counts as null.
    pub fn partition_key(&self, key_columns: &[String]) -> String {
        let mut key = format!("{}.{}", self.source.schema, self.source.table);
        if self.op == Op::Truncate {
            return key;
        }
        let row = match self.op {
            Op::Delete => self.before.as_ref(),
            _ => self.after.as_ref().or(self.before.as_ref()),
        };
        for column in key_columns {
            key.push('/');
            match row.and_then(|r| r.get(column)) {
                Some(v) => key.push_str(&v.to_string()),
                None => key.push_str("null"),
            }
        }
        if key.len() > MAX_PARTITION_KEY_BYTES {
            return hex::encode(Sha256::digest(key.as_bytes()));
        }
        key
    }

    /// Checks what serde cannot: `before` and `after` as the op requires, `unchanged` only
    /// naming columns absent from `after`, and the commit time's form.
    pub fn validate(&self) -> Result<(), CdcDecodeError> {
        let (before_ok, after_ok) = match self.op {
            Op::Insert | Op::Read => (self.before.is_none(), self.after.is_some()),
            Op::Update => (true, self.after.is_some()),
            Op::Delete => (self.before.is_some(), self.after.is_none()),
            Op::Truncate => (self.before.is_none(), self.after.is_none()),
        };
        let op = self.op.as_str();
        if !before_ok || !after_ok {
            return Err(record_error(format!(
                "op {op:?} does not allow before {} and after {}",
                presence(&self.before),
                presence(&self.after)
            )));
        }
        if let Some(after) = &self.after {
            if let Some(c) = self.unchanged.iter().find(|c| after.contains_key(*c)) {
                return Err(record_error(format!(
                    "column {c:?} is listed as unchanged but present in after"
                )));
            }
        } else if !self.unchanged.is_empty() {
            return Err(record_error(format!(
                "op {op:?} cannot list unchanged columns"
            )));
        }
        self.source.validate()
    }
}

impl Source {
    fn validate(&self) -> Result<(), CdcDecodeError> {
        if self.schema.is_empty() || self.table.is_empty() {
            return Err(record_error(
                "source.schema and source.table must not be empty".into(),
            ));
        }
        if !is_iso_utc_micros(&self.commit_ts) {
            return Err(record_error(
                "source.commit_ts is not YYYY-MM-DDTHH:MM:SS.ffffffZ".into(),
            ));
        }
        Ok(())
    }
}

fn presence(m: &Option<Map<String, Value>>) -> &'static str {
    if m.is_some() {
        "set"
    } else {
        "null"
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (a year of four or more digits).
pub fn is_iso_utc_micros(s: &str) -> bool {
    let Some(body) = s.strip_suffix('Z') else {
        return false;
    };
    let Some((date, time)) = body.split_once('T') else {
        return false;
    };
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    let d: Vec<&str> = date.split('-').collect();
    let date_ok = d.len() == 3
        && d[0].len() >= 4
        && d[0].bytes().all(|b| b.is_ascii_digit())
        && digits(d[1], 2)
        && digits(d[2], 2);
    let Some((hms, frac)) = time.split_once('.') else {
        return false;
    };
    let t: Vec<&str> = hms.split(':').collect();
    date_ok && t.len() == 3 && t.iter().all(|p| digits(p, 2)) && digits(frac, 6)
}

/// Where an event too large for a record is kept in the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpillRef {
    /// `spill/cdc/<table>/<lsn>-<index>.json`.
    pub key: String,
    /// The event's size in bytes.
    pub bytes: u64,
}

/// The record put on the stream in place of a spilled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpillPointer {
    pub spill: SpillRef,
    pub source: Source,
}

/// The lake prefix of spilled events; a pointer elsewhere is refused.
pub use crate::lake::layout::SPILL_CDC as SPILL_PREFIX;

impl SpillPointer {
    fn validate(&self) -> Result<(), CdcDecodeError> {
        let key = &self.spill.key;
        let rest = key.strip_prefix(SPILL_PREFIX).unwrap_or("");
        // A record must not make the sink read any other object of the lake.
        if rest.is_empty()
            || rest
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(record_error(format!(
                "spill.key must be a key under {SPILL_PREFIX}"
            )));
        }
        self.source.validate()
    }
}

/// One Kinesis record of the change stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamRecord {
    Event(ChangeEvent),
    Spill(SpillPointer),
}

/// Only the top-level field names that tell the two record kinds apart; values are skipped.
#[derive(Deserialize)]
struct Probe {
    spill: Option<serde::de::IgnoredAny>,
}

impl StreamRecord {
    /// Reads a record: a spill pointer when it has a `spill` field, else a change event; an
    /// unknown field, a wrong type or an inconsistent event is an error naming the field.
    pub fn from_slice(bytes: &[u8]) -> Result<StreamRecord, CdcDecodeError> {
        check_object(bytes)?;
        let probe: Probe = serde_json::from_slice(bytes).map_err(json_error)?;
        let record = if probe.spill.is_some() {
            let p: SpillPointer = typed(bytes)?;
            p.validate()?;
            StreamRecord::Spill(p)
        } else {
            let e: ChangeEvent = typed(bytes)?;
            e.validate()?;
            StreamRecord::Event(e)
        };
        Ok(record)
    }

    pub fn source(&self) -> &Source {
        match self {
            StreamRecord::Event(e) => &e.source,
            StreamRecord::Spill(p) => &p.source,
        }
    }
}

/// serde reads a JSON array into a struct too; a record must be one object.
fn check_object(bytes: &[u8]) -> Result<(), CdcDecodeError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(record_error("the record is empty".into())),
        Some(_) => Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => record_error("JSON, but not an object".into()),
                Err(e) => json_error(e),
            },
        ),
    }
}

fn typed<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CdcDecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = json_error(e.into_inner());
        match inner {
            CdcDecodeError::Record { reason } => record_error(format!("at {path}: {reason}")),
            other => other,
        }
    })?;
    de.end().map_err(json_error)?;
    Ok(value)
}

fn record_error(reason: String) -> CdcDecodeError {
    CdcDecodeError::Record { reason }
}

/// serde_json's message with the contents of quoted strings removed: an "invalid type: string
/// …" message would otherwise carry a value of the record into logs and quarantine reasons.
fn json_error(e: serde_json::Error) -> CdcDecodeError {
    let mut reason = String::new();
    let mut in_quotes = false;
    for ch in e.to_string().chars() {
        if ch == '"' {
            if in_quotes {
                reason.push_str("…\"");
            } else {
                reason.push('"');
            }
            in_quotes = !in_quotes;
        } else if !in_quotes {
            reason.push(ch);
        }
    }
    record_error(reason)
}

#[cfg(test)]
#[path = "tests/event.rs"]
mod tests;

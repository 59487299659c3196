//! Where a record sits in the stream: its shard and its sequence number. Both name objects in
//! the lake (`layout::cdc_object_key`), so both are checked before they are used in a key.

use std::cmp::Ordering;
use std::fmt;

use super::error::PositionError;

/// Longest shard id taken (Kinesis' are `shardId-` and 12 digits).
const SHARD_ID_MAX_BYTES: usize = 128;
/// Longest sequence number taken: Kinesis documents `0|([1-9]\d{0,128})`.
const SEQUENCE_MAX_DIGITS: usize = 129;

/// A Kinesis shard id, e.g. `shardId-000000000000`: letters, digits, `-`, `_` and `.` only,
/// so it can be one segment of a lake key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(String);

impl ShardId {
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let ok = !text.is_empty()
            && text.len() <= SHARD_ID_MAX_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && text != "."
            && text != "..";
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(PositionError::BadShard {
                shard: text.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Kinesis sequence number: a decimal integer of up to 129 digits, without leading zeros.
/// Ordered as the number it is (longer is larger), never as text, because Lambda resumes a
/// shard from the lowest one a batch reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        let digits = !text.is_empty()
            && text.len() <= SEQUENCE_MAX_DIGITS
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        if digits {
            Ok(Self(text.to_string()))
        } else {
            Err(PositionError::BadSequence {
                sequence: text.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Without leading zeros, the longer number is the larger one.
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record's place in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The event source (the stream's ARN), for people reading a quarantine record.
    pub source: String,
    pub shard: ShardId,
    pub sequence: SequenceNumber,
}

impl Position {
    /// `<source>/<shard>/<sequence>`: the `object` of a quarantine record, which says where to
    /// find the record again (e.g. with `GetShardIterator AT_SEQUENCE_NUMBER`).
    pub fn describe(&self) -> String {
        format!("{}/{}/{}", self.source, self.shard, self.sequence)
    }
}

//! The sink's errors: a position that cannot name an object (the event is not a Kinesis batch),
//! and the reasons a record is refused (written to quarantine, never logged with the record).

use thiserror::Error;

use crate::cdc::pgoutput::CdcDecodeError;

/// A record's shard or sequence number that cannot be used in a lake key. Kinesis never sends
/// one: an event with such a record is not a Kinesis batch, and the invocation fails as
/// `BadInput` instead of guessing where the record belongs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PositionError {
    #[error("shard id {shard:?} is not a Kinesis shard id (letters, digits, `-`, `_`, `.`)")]
    BadShard { shard: String },
    #[error("sequence number {sequence:?} is not a decimal number without leading zeros")]
    BadSequence { sequence: String },
}

/// Why a record was refused: the `reason` of its quarantine record. None of these gets better
/// with a retry, so the record goes to quarantine and the shard moves on.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The Kinesis record itself could not be read (its data is not base64).
    #[error("the Kinesis record cannot be read: {reason}")]
    Unreadable { reason: String },
    /// Not a change event or a spill pointer as docs/CDC.md describes them (the message names
    /// the field at fault, never a value of the record).
    #[error(transparent)]
    NotAnEvent(#[from] CdcDecodeError),
    /// No pipeline table takes this source relation.
    #[error("no pipeline table takes the source relation {schema}.{table}")]
    UnknownRelation { schema: String, table: String },
    /// The spill pointer names an object that does not exist. The decoder writes the object
    /// before the pointer goes on the stream, so it will never appear.
    #[error("the spilled change {key} does not exist")]
    SpillMissing { key: String },
    /// The spill object is not the change event the pointer announces.
    #[error("the spilled change {key} is not the change its pointer names: {reason}")]
    SpillInvalid { key: String, reason: String },
}

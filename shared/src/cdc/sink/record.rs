//! What a record holds: a change event or a spill pointer. The shape rules are those of
//! `cdc::event` ([`StreamRecord::from_slice`]: no unknown field, `before` and `after` as the op
//! requires, a pointer only into `spill/cdc/`); this file adds what is the sink's own: the
//! event's bytes are kept as they came (the transform reads them, and a re-encoding could
//! change numbers or key order), and a spill object must hold the event its pointer names.

use bytes::Bytes;

use super::error::Refusal;
use crate::cdc::event::{Source, StreamRecord};

/// One record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A change event, as one line (no line break, none added); `relation` is its `source`.
    Event { relation: Source, line: Bytes },
    /// A pointer to a change written to `spill/cdc/` because it was too large for a record.
    Spill { relation: Source, key: String },
}

/// Reads one record's data: a change event or a spill pointer.
pub fn parse(data: Bytes) -> Result<Parsed, Refusal> {
    // The typed record is dropped once checked: what is written is `data` itself.
    Ok(match StreamRecord::from_slice(&data)? {
        StreamRecord::Event(e) => Parsed::Event {
            relation: e.source,
            line: one_line(data),
        },
        StreamRecord::Spill(p) => Parsed::Spill {
            relation: p.source,
            key: p.spill.key,
        },
    })
}

/// Reads the body of a spill object: it must be the change event its pointer names (the same
/// `source`), not another pointer. Returns the event as one line.
pub fn parse_spilled(key: &str, body: Bytes, pointer: &Source) -> Result<Bytes, Refusal> {
    let invalid = |reason: String| Refusal::SpillInvalid {
        key: key.to_string(),
        reason,
    };
    match parse(body) {
        Ok(Parsed::Event { relation, line }) if relation == *pointer => Ok(line),
        Ok(Parsed::Event { relation, .. }) => Err(invalid(format!(
            "it holds {}, the pointer names {}",
            describe(&relation),
            describe(pointer)
        ))),
        Ok(Parsed::Spill { .. }) => Err(invalid("it is another spill pointer".into())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

/// A source without row values: where and when the change happened.
fn describe(s: &Source) -> String {
    format!(
        "{}.{}.{} at LSN {} (txid {}, {})",
        s.db, s.schema, s.table, s.lsn, s.txid, s.commit_ts
    )
}

/// The record as one line. In valid JSON a raw line break can only be whitespace between
/// tokens (one inside a string must be escaped), so dropping the breaks leaves the same event
/// with its key order and number text as they came; records without one are kept untouched.
fn one_line(data: Bytes) -> Bytes {
    if !data.iter().any(|&b| b == b'\n' || b == b'\r') {
        return data;
    }
    data.iter()
        .copied()
        .filter(|&b| b != b'\n' && b != b'\r')
        .collect::<Vec<u8>>()
        .into()
}

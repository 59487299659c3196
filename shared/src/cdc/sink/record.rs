//! What a record holds: a change event or a spill pointer (docs/CDC.md), checked just enough to
//! route it and to know that the line written is one valid event. The event's bytes are kept as
//! they came: the transform reads them, and a re-encoding could change numbers or key order.

use bytes::Bytes;
use serde::Deserialize;

use super::error::Refusal;
use crate::lake::layout;

/// The operations a change event may carry: insert, update, delete, truncate, snapshot read.
const OPS: [&str; 5] = ["c", "u", "d", "t", "r"];

/// The source relation and position of a change: what the sink routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub db: String,
    pub schema: String,
    pub table: String,
    pub lsn: u64,
}

/// One record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A change event, as one line (no line break, none added).
    Event { relation: Relation, line: Bytes },
    /// A pointer to a change written to `spill/cdc/` because it was too large for a record.
    Spill { relation: Relation, key: String },
}

/// The fields the sink checks; every other field is read (so the whole record must be valid
/// JSON) and skipped.
#[derive(Deserialize)]
struct Shape {
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    spill: Option<SpillShape>,
    source: SourceShape,
}

#[derive(Deserialize)]
struct SpillShape {
    key: String,
}

#[derive(Deserialize)]
struct SourceShape {
    db: String,
    schema: String,
    table: String,
    lsn: u64,
    #[allow(dead_code)] // checked for presence and type only
    txid: u64,
    commit_ts: String,
}

/// Reads one record's data: a change event or a spill pointer.
pub fn parse(data: Bytes) -> Result<Parsed, Refusal> {
    let shape = read_shape(&data)?;
    let relation = relation(shape.source)?;
    match (shape.op, shape.spill) {
        (Some(op), None) if OPS.contains(&op.as_str()) => Ok(Parsed::Event {
            relation,
            line: one_line(data),
        }),
        (Some(op), None) => Err(not_an_event(format!(
            "op {op:?} is not one of c, u, d, t, r"
        ))),
        (None, Some(spill)) => {
            check_spill_key(&spill.key)?;
            Ok(Parsed::Spill {
                relation,
                key: spill.key,
            })
        }
        (Some(_), Some(_)) => Err(not_an_event(
            "both `op` and `spill`: neither an event nor a pointer",
        )),
        (None, None) => Err(not_an_event(
            "no `op` (a change event) and no `spill` (a pointer)",
        )),
    }
}

/// Reads the body of a spill object: it must be the change event its pointer names (same
/// relation and LSN), not another pointer. Returns the event as one line.
pub fn parse_spilled(key: &str, body: Bytes, pointer: &Relation) -> Result<Bytes, Refusal> {
    let invalid = |reason: String| Refusal::SpillInvalid {
        key: key.to_string(),
        reason,
    };
    match parse(body) {
        Ok(Parsed::Event { relation, line }) if relation == *pointer => Ok(line),
        Ok(Parsed::Event { relation, .. }) => Err(invalid(format!(
            "it holds {}.{}.{} at LSN {}, the pointer names {}.{}.{} at LSN {}",
            relation.db,
            relation.schema,
            relation.table,
            relation.lsn,
            pointer.db,
            pointer.schema,
            pointer.table,
            pointer.lsn
        ))),
        Ok(Parsed::Spill { .. }) => Err(invalid("it is another spill pointer".into())),
        Err(e) => Err(invalid(e.to_string())),
    }
}

fn not_an_event(reason: impl Into<String>) -> Refusal {
    Refusal::NotAnEvent {
        reason: reason.into(),
    }
}

fn read_shape(data: &[u8]) -> Result<Shape, Refusal> {
    // serde would take a JSON array for a struct too; a record must be an object.
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(Refusal::NotJson {
            reason: match first {
                None => "the record is empty".into(),
                Some(_) => serde_json::from_slice::<serde::de::IgnoredAny>(data)
                    .err()
                    .map_or_else(|| "JSON, but not an object".into(), |e| e.to_string()),
            },
        });
    }
    serde_json::from_slice(data).map_err(|e| {
        if e.is_data() {
            not_an_event(e.to_string())
        } else {
            Refusal::NotJson {
                reason: e.to_string(),
            }
        }
    })
}

fn relation(s: SourceShape) -> Result<Relation, Refusal> {
    for (field, value) in [("db", &s.db), ("schema", &s.schema), ("table", &s.table)] {
        if value.is_empty() {
            return Err(not_an_event(format!("source.{field} is empty")));
        }
    }
    // The transform partitions change tables by it: a bad one would fail every later stage.
    if chrono::DateTime::parse_from_rfc3339(&s.commit_ts).is_err() || !s.commit_ts.ends_with('Z') {
        return Err(not_an_event(format!(
            "source.commit_ts {:?} is not an ISO-8601 UTC time ending in Z",
            s.commit_ts
        )));
    }
    Ok(Relation {
        db: s.db,
        schema: s.schema,
        table: s.table,
        lsn: s.lsn,
    })
}

/// A pointer may only lead into `spill/cdc/`: the sink's role reads nothing else.
fn check_spill_key(key: &str) -> Result<(), Refusal> {
    let inside = key.strip_prefix(layout::SPILL_CDC).is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..")
    });
    if inside {
        Ok(())
    } else {
        Err(not_an_event(format!(
            "spill.key {key:?} is not an object under {}",
            layout::SPILL_CDC
        )))
    }
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

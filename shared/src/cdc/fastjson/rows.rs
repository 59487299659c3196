//! The rows and events of the fast path: the same rules as `decode.rs` (`old_row`, `new_row`,
//! `update_events`), written as JSON. Each row goes into a scratch buffer first, with the span
//! of every column's value, so that an unchanged TOASTed column can be filled from the old
//! row's bytes and a key change seen before the events are written.

use serde_json::Value;

use super::{write_str, write_u64, write_value, JsonEvent, JsonEvents};
use crate::cdc::decode::{check_shape, value_error, warn_untyped, RelColumn, RelationInfo};
use crate::cdc::event::Op;
use crate::cdc::pgoutput::{CdcDecodeError, Column, Message, OldKind, OldTuple};
use crate::cdc::value::{self, ValueError};

/// The parts of a relation's events that do not change from one event to the next, escaped
/// once when its Relation message arrives.
#[derive(Debug)]
pub(crate) struct RelationJson {
    /// Each column's name as a JSON string, in table order.
    names: Vec<Vec<u8>>,
    /// `{"db":…,"schema":…,"table":…,"lsn":`
    source_head: Vec<u8>,
}

impl RelationJson {
    pub(crate) fn new(db: &str, schema: &str, table: &str, columns: &[RelColumn]) -> Self {
        let names = columns
            .iter()
            .map(|c| {
                let mut n = Vec::with_capacity(c.name.len() + 2);
                write_str(&mut n, c.name.as_bytes());
                n
            })
            .collect();
        let mut head = b"{\"db\":".to_vec();
        write_str(&mut head, db.as_bytes());
        head.extend_from_slice(b",\"schema\":");
        write_str(&mut head, schema.as_bytes());
        head.extend_from_slice(b",\"table\":");
        write_str(&mut head, table.as_bytes());
        head.extend_from_slice(b",\"lsn\":");
        RelationJson {
            names,
            source_head: head,
        }
    }

    fn name(&self, i: usize) -> &[u8] {
        self.names.get(i).map_or(b"\"\"", Vec::as_slice)
    }
}

/// What an event needs besides the tuples.
pub(crate) struct Context<'a> {
    pub rel: &'a RelationInfo,
    pub lsn: u64,
    pub txid: u32,
    pub commit_ts: &'a str,
}

/// The rows of the change being written, reused from one change to the next.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    before: Row,
    after: Row,
    /// Columns of `after` left out as unchanged TOASTed values.
    unchanged: Vec<usize>,
}

/// One row as a JSON object, and where each column's value is in it.
#[derive(Debug, Default)]
struct Row {
    bytes: Vec<u8>,
    /// Per column of the relation: its value's bytes, `None` when the row leaves it out.
    spans: Vec<Option<(usize, usize)>>,
}

impl Row {
    fn begin(&mut self, columns: usize) {
        self.bytes.clear();
        self.bytes.push(b'{');
        self.spans.clear();
        self.spans.resize(columns, None);
    }

    /// Writes the key of column `i`; the value follows.
    fn key(&mut self, rel: &RelationInfo, i: usize) -> usize {
        if self.bytes.len() > 1 {
            self.bytes.push(b',');
        }
        self.bytes.extend_from_slice(rel.json.name(i));
        self.bytes.push(b':');
        self.bytes.len()
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        let (start, end) = self.spans.get(i).copied().flatten()?;
        self.bytes.get(start..end)
    }
}

/// Writes the events of an Insert, Update or Delete (a Truncate is [`write_truncate`]).
pub(crate) fn write_change(
    ctx: &Context<'_>,
    msg: &Message<'_>,
    out: &mut JsonEvents,
) -> Result<(), CdcDecodeError> {
    let s = &mut out.scratch;
    match msg {
        Message::Insert(i) => {
            write_new(&mut s.after, ctx, &i.new, None, &mut s.unchanged)?;
            let (after, unchanged) = (&s.after.bytes, &s.unchanged);
            write_event(
                &mut out.bytes,
                &mut out.events,
                ctx,
                Op::Insert,
                None,
                Some(after),
                unchanged,
            );
        }
        Message::Update(u) => {
            if let Some(old) = &u.old {
                write_old(&mut s.before, ctx, old)?;
            }
            let before = u.old.as_ref().map(|_| &s.before);
            write_new(&mut s.after, ctx, &u.new, before, &mut s.unchanged)?;
            let (b, a, unchanged) = (&s.before.bytes, &s.after.bytes, &s.unchanged);
            let (bytes, events) = (&mut out.bytes, &mut out.events);
            match &u.old {
                Some(old) if key_changed(ctx, (old, &s.before), (&u.new, &s.after)) => {
                    write_event(bytes, events, ctx, Op::Delete, Some(b), None, &[]);
                    write_event(bytes, events, ctx, Op::Insert, None, Some(a), unchanged);
                }
                old => {
                    let b = old.as_ref().map(|_| b.as_slice());
                    write_event(bytes, events, ctx, Op::Update, b, Some(a), unchanged);
                }
            }
        }
        Message::Delete(d) => {
            write_old(&mut s.before, ctx, &d.old)?;
            let before = &s.before.bytes;
            write_event(
                &mut out.bytes,
                &mut out.events,
                ctx,
                Op::Delete,
                Some(before),
                None,
                &[],
            );
        }
        // Not a row change.
        _ => {}
    }
    Ok(())
}

/// One relation's truncate event.
pub(crate) fn write_truncate(ctx: &Context<'_>, out: &mut JsonEvents) {
    write_event(
        &mut out.bytes,
        &mut out.events,
        ctx,
        Op::Truncate,
        None,
        None,
        &[],
    );
}

/// The old row, as `decode::old_row`: with `K` only the replica-identity columns, an
/// unchanged-TOAST marker left out.
fn write_old(row: &mut Row, ctx: &Context<'_>, old: &OldTuple<'_>) -> Result<(), CdcDecodeError> {
    let rel = ctx.rel;
    check_shape(rel, &old.columns, ctx.lsn)?;
    row.begin(rel.columns.len());
    for (i, (col, value)) in rel.columns.iter().zip(&old.columns).enumerate() {
        if old.kind == OldKind::Key && !col.identity {
            continue;
        }
        let text = match value {
            Column::UnchangedToast => continue,
            Column::Null => None,
            Column::Text(t) => Some(*t),
        };
        let start = row.key(rel, i);
        write_column(&mut row.bytes, ctx, col, text)?;
        row.spans[i] = Some((start, row.bytes.len()));
    }
    row.bytes.push(b'}');
    Ok(())
}

/// The new row, as `decode::new_row`: an unchanged TOASTed column filled from `before` when
/// it has the column, else left out and listed in `unchanged`.
fn write_new(
    row: &mut Row,
    ctx: &Context<'_>,
    new: &[Column<'_>],
    before: Option<&Row>,
    unchanged: &mut Vec<usize>,
) -> Result<(), CdcDecodeError> {
    let rel = ctx.rel;
    check_shape(rel, new, ctx.lsn)?;
    row.begin(rel.columns.len());
    unchanged.clear();
    for (i, (col, value)) in rel.columns.iter().zip(new).enumerate() {
        let text = match value {
            Column::Null => None,
            Column::Text(t) => Some(*t),
            Column::UnchangedToast => {
                match before.and_then(|b| b.value(i)) {
                    Some(old) => {
                        let start = row.key(rel, i);
                        row.bytes.extend_from_slice(old);
                        row.spans[i] = Some((start, row.bytes.len()));
                    }
                    None => unchanged.push(i),
                }
                continue;
            }
        };
        let start = row.key(rel, i);
        write_column(&mut row.bytes, ctx, col, text)?;
        row.spans[i] = Some((start, row.bytes.len()));
    }
    row.bytes.push(b'}');
    Ok(())
}

/// One column's value (`None` is NULL), as `decode::typed`: UTF-8 checked, and a value the
/// typing cannot read written as its text.
fn write_column(
    out: &mut Vec<u8>,
    ctx: &Context<'_>,
    col: &RelColumn,
    text: Option<&[u8]>,
) -> Result<(), CdcDecodeError> {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let text = std::str::from_utf8(text)
        .map_err(|_| value_error(ctx.rel, col, ctx.lsn, ValueError::NotUtf8))?;
    let mark = out.len();
    if let Err(e) = write_value(out, col.type_oid, text) {
        out.truncate(mark);
        warn_untyped(ctx.rel, col, ctx.lsn, &e);
        write_str(out, text.as_bytes());
    }
    Ok(())
}

/// As `decode::key_changed`: a key column whose old and new values both are known and
/// differ. Equal bytes are equal values; different bytes are compared as the Map path
/// compares them (two texts of one value exist: `0` and `-0` of a float).
fn key_changed(
    ctx: &Context<'_>,
    (old, before): (&OldTuple<'_>, &Row),
    (new, after): (&[Column<'_>], &Row),
) -> bool {
    ctx.rel.key_index.iter().any(|&i| {
        match (before.value(i), after.value(i)) {
            (Some(b), Some(a)) if a != b => {
                let Some(col) = ctx.rel.columns.get(i) else {
                    return true;
                };
                let typed = |c: Option<&Column<'_>>| c.and_then(|c| map_value(col, c));
                match (typed(old.columns.get(i)), typed(new.get(i))) {
                    (Some(b), Some(a)) => a != b,
                    // Not reached: both values were written from these columns.
                    _ => true,
                }
            }
            _ => false,
        }
    })
}

/// A column's value as the Map path types it.
fn map_value(col: &RelColumn, c: &Column<'_>) -> Option<Value> {
    match c {
        Column::Null => Some(Value::Null),
        Column::UnchangedToast => None,
        Column::Text(t) => {
            let text = std::str::from_utf8(t).ok()?;
            Some(
                value::text_to_json(col.type_oid, text)
                    .unwrap_or_else(|_| Value::String(text.to_string())),
            )
        }
    }
}

/// Writes one event line: the fields of `ChangeEvent`, in its order.
fn write_event(
    b: &mut Vec<u8>,
    events: &mut Vec<JsonEvent>,
    ctx: &Context<'_>,
    op: Op,
    before: Option<&[u8]>,
    after: Option<&[u8]>,
    unchanged: &[usize],
) {
    let start = b.len();
    b.extend_from_slice(b"{\"op\":\"");
    b.extend_from_slice(op.as_str().as_bytes());
    b.extend_from_slice(b"\",\"before\":");
    b.extend_from_slice(before.unwrap_or(b"null"));
    b.extend_from_slice(b",\"after\":");
    b.extend_from_slice(after.unwrap_or(b"null"));
    if !unchanged.is_empty() {
        b.extend_from_slice(b",\"unchanged\":[");
        for (n, &i) in unchanged.iter().enumerate() {
            if n > 0 {
                b.push(b',');
            }
            b.extend_from_slice(ctx.rel.json.name(i));
        }
        b.push(b']');
    }
    b.extend_from_slice(b",\"source\":");
    b.extend_from_slice(&ctx.rel.json.source_head);
    write_u64(b, ctx.lsn);
    b.extend_from_slice(b",\"txid\":");
    write_u64(b, u64::from(ctx.txid));
    b.extend_from_slice(b",\"commit_ts\":");
    write_str(b, ctx.commit_ts.as_bytes());
    b.extend_from_slice(b"}}");
    events.push(JsonEvent {
        op,
        lsn: ctx.lsn,
        start,
        end: b.len(),
    });
    b.push(b'\n');
}

//! pgoutput messages to change events. [`ChangeDecoder`] keeps what the stream declares before
//! it is used (the Relation messages: columns, type OIDs, replica-identity flags) and the
//! transaction in progress (its xid and commit time come with Begin), and turns each Insert,
//! Update, Delete and Truncate into the events of docs/CDC.md.
//!
//! Relation messages are sent again by every new decoding session (every peek), so one decoder
//! serves one read of the slot. The primary keys come from outside the stream (the pipeline's `dedup.key`, or the catalog for `sluice cdc peek --source-url`): with
//! `REPLICA IDENTITY FULL` the Relation message flags every column as key.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::copy::PeekedRow;
use super::event::{ChangeEvent, Op, Source};
use super::fastjson::{self, JsonEvents, RelationJson};
use super::pgoutput::{self, CdcDecodeError, Column, Message, OldKind, OldTuple};
use super::value::{self, ValueError};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// What the decoder needs besides the stream.
#[derive(Debug, Clone, Default)]
pub struct DecoderOptions {
    /// The source database name (`source.db` of every event).
    pub db: String,
    /// Primary-key columns per (schema, table), from the pipeline's `dedup.key` (or the catalog). A table missing here falls
    /// back to the Relation message's key flags, unless its replica identity is FULL (every
    /// column flagged): then it has no key, and a key change stays one update.
    pub primary_keys: HashMap<(String, String), Vec<String>>,
}

/// One column of a relation as its Relation message declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_mod: i32,
    /// Part of the replica identity (every column with FULL).
    pub identity: bool,
}

#[derive(Debug)]
pub(crate) struct RelationInfo {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) columns: Vec<RelColumn>,
    /// The primary-key column names.
    key: Vec<String>,
    /// Their positions in `columns`.
    pub(crate) key_index: Vec<usize>,
    /// The escaped names and source of the fast path's events.
    pub(crate) json: RelationJson,
}

#[derive(Debug)]
struct Txn {
    xid: u32,
    commit_ts: String,
}

/// What one peeked row decodes to. Relation, Type and Origin messages are absorbed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Begin {
        xid: u32,
        /// The LSN of the commit record.
        final_lsn: u64,
        commit_ts: String,
    },
    Change(ChangeEvent),
    Commit {
        commit_lsn: u64,
        /// Where the slot may be advanced once the transaction's changes are safe.
        end_lsn: u64,
        commit_ts: String,
    },
    /// A `pg_logical_emit_message` (the wal-decoder's heartbeat is one).
    Message {
        lsn: u64,
        transactional: bool,
        prefix: String,
        content: Bytes,
    },
}

/// Decodes the rows of one read of a slot, in order.
#[derive(Debug)]
pub struct ChangeDecoder {
    opts: DecoderOptions,
    relations: HashMap<u32, RelationInfo>,
    txn: Option<Txn>,
}

impl ChangeDecoder {
    pub fn new(opts: DecoderOptions) -> Self {
        ChangeDecoder {
            opts,
            relations: HashMap::new(),
            txn: None,
        }
    }

    /// True between a Begin and its Commit.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The columns of a relation the stream has described, in table order.
    pub fn relation_columns(&self, schema: &str, table: &str) -> Option<&[RelColumn]> {
        self.find(schema, table).map(|r| r.columns.as_slice())
    }

    /// The primary-key columns the decoder uses for a relation the stream has described.
    pub fn key_columns(&self, schema: &str, table: &str) -> Option<&[String]> {
        self.find(schema, table).map(|r| r.key.as_slice())
    }

    fn find(&self, schema: &str, table: &str) -> Option<&RelationInfo> {
        self.relations
            .values()
            .find(|r| r.schema == schema && r.table == table)
    }

    /// Decodes one row, appending what it yields to `out` (nothing for Relation, Type and
    /// Origin; two events for an update that changes the primary key).
    pub fn decode(
        &mut self,
        row: &PeekedRow,
        out: &mut Vec<Decoded>,
    ) -> Result<(), CdcDecodeError> {
        match parse_row(row)? {
            change @ (Message::Insert(_)
            | Message::Update(_)
            | Message::Delete(_)
            | Message::Truncate(_)) => self.change(change, row.lsn, out),
            other => self.absorb(other, row, out),
        }
    }

    /// As [`decode`](Self::decode), but the change events are written to `json` as JSON lines
    /// (the fast path, `fastjson.rs`: the same events, no `ChangeEvent` built); the other
    /// messages go to `out` as `decode` puts them.
    pub fn decode_json(
        &mut self,
        row: &PeekedRow,
        out: &mut Vec<Decoded>,
        json: &mut JsonEvents,
    ) -> Result<(), CdcDecodeError> {
        let lsn = row.lsn;
        let msg = parse_row(row)?;
        let change = match &msg {
            Message::Insert(m) => Some((m.relation, "Insert")),
            Message::Update(m) => Some((m.relation, "Update")),
            Message::Delete(m) => Some((m.relation, "Delete")),
            _ => None,
        };
        if let Some((relation, what)) = change {
            let ctx = self.json_context(relation, lsn, what)?;
            return fastjson::write_change(&ctx, &msg, json);
        }
        match msg {
            Message::Truncate(t) => {
                for oid in t.relations {
                    let ctx = self.json_context(oid, lsn, "Truncate")?;
                    fastjson::write_truncate(&ctx, json);
                }
                Ok(())
            }
            other => self.absorb(other, row, out),
        }
    }

    /// The messages other than row changes.
    fn absorb(
        &mut self,
        msg: Message<'_>,
        row: &PeekedRow,
        out: &mut Vec<Decoded>,
    ) -> Result<(), CdcDecodeError> {
        let lsn = row.lsn;
        match msg {
            Message::Begin(b) => out.push(self.begin(&b, lsn)?),
            Message::Commit(c) => out.push(self.commit(&c, lsn)?),
            Message::Origin(_) | Message::Type(_) => {}
            Message::Relation(r) => self.add_relation(r, lsn)?,
            Message::Message(m) => {
                if m.transactional && self.txn.is_none() {
                    return Err(out_of_place(
                        lsn,
                        "transactional Message",
                        "outside a transaction",
                    ));
                }
                out.push(Decoded::Message {
                    lsn: m.lsn,
                    transactional: m.transactional,
                    prefix: m.prefix.to_string(),
                    content: row.data.slice_ref(m.content),
                });
            }
            // Row changes are handled by the callers.
            Message::Insert(_) | Message::Update(_) | Message::Delete(_) | Message::Truncate(_) => {
            }
        }
        Ok(())
    }

    fn begin(&mut self, b: &pgoutput::Begin, lsn: u64) -> Result<Decoded, CdcDecodeError> {
        if self.txn.is_some() {
            return Err(out_of_place(lsn, "Begin", "inside a transaction"));
        }
        let commit_ts = pg_timestamp(b.commit_ts, lsn)?;
        self.txn = Some(Txn {
            xid: b.xid,
            commit_ts: commit_ts.clone(),
        });
        Ok(Decoded::Begin {
            xid: b.xid,
            final_lsn: b.final_lsn,
            commit_ts,
        })
    }

    fn commit(&mut self, c: &pgoutput::Commit, lsn: u64) -> Result<Decoded, CdcDecodeError> {
        if self.txn.take().is_none() {
            return Err(out_of_place(lsn, "Commit", "without a Begin"));
        }
        Ok(Decoded::Commit {
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_ts: pg_timestamp(c.commit_ts, lsn)?,
        })
    }

    /// Insert, Update, Delete and Truncate to events.
    fn change(
        &self,
        msg: Message<'_>,
        lsn: u64,
        out: &mut Vec<Decoded>,
    ) -> Result<(), CdcDecodeError> {
        match msg {
            Message::Insert(i) => {
                let (rel, source) = self.context(i.relation, lsn, "Insert")?;
                let (after, unchanged) = new_row(rel, &i.new, None, lsn)?;
                out.push(event(Op::Insert, None, Some(after), unchanged, source));
            }
            Message::Update(u) => {
                let (rel, source) = self.context(u.relation, lsn, "Update")?;
                let before = u.old.as_ref().map(|o| old_row(rel, o, lsn)).transpose()?;
                let (after, unchanged) = new_row(rel, &u.new, before.as_ref(), lsn)?;
                update_events(rel, before, after, unchanged, source, out);
            }
            Message::Delete(d) => {
                let (rel, source) = self.context(d.relation, lsn, "Delete")?;
                let before = old_row(rel, &d.old, lsn)?;
                out.push(event(Op::Delete, Some(before), None, Vec::new(), source));
            }
            Message::Truncate(t) => {
                for oid in t.relations {
                    let (_, source) = self.context(oid, lsn, "Truncate")?;
                    out.push(event(Op::Truncate, None, None, Vec::new(), source));
                }
            }
            // The other messages are handled by `decode`.
            _ => {}
        }
        Ok(())
    }

    fn add_relation(&mut self, r: pgoutput::Relation<'_>, lsn: u64) -> Result<(), CdcDecodeError> {
        let columns: Vec<RelColumn> = r
            .columns
            .iter()
            .map(|c| RelColumn {
                name: c.name.to_string(),
                type_oid: c.type_oid,
                type_mod: c.type_mod,
                identity: c.key,
            })
            .collect();
        let id = (r.namespace.to_string(), r.name.to_string());
        let key = match self.opts.primary_keys.get(&id) {
            Some(pk) => {
                if let Some(missing) = pk.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
                    return Err(CdcDecodeError::AtLsn {
                        lsn,
                        source: Box::new(CdcDecodeError::Invalid {
                            reading: "Relation message",
                            reason: format!(
                                "primary-key column {missing} of {}.{} is not among its columns",
                                id.0, id.1
                            ),
                        }),
                    });
                }
                pk.clone()
            }
            None if r.replica_identity == b'f' => Vec::new(),
            None => columns
                .iter()
                .filter(|c| c.identity)
                .map(|c| c.name.clone())
                .collect(),
        };
        let (schema, table) = id;
        let key_index = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let json = RelationJson::new(&self.opts.db, &schema, &table, &columns);
        self.relations.insert(
            r.oid,
            RelationInfo {
                schema,
                table,
                columns,
                key,
                key_index,
                json,
            },
        );
        Ok(())
    }

    /// The relation and transaction of a change: a change needs both a Relation message
    /// before it and a transaction around it.
    fn lookup(
        &self,
        oid: u32,
        lsn: u64,
        message: &'static str,
    ) -> Result<(&RelationInfo, &Txn), CdcDecodeError> {
        let txn = self
            .txn
            .as_ref()
            .ok_or_else(|| out_of_place(lsn, message, "outside a transaction"))?;
        let rel = self
            .relations
            .get(&oid)
            .ok_or(CdcDecodeError::UnknownRelation { oid, lsn })?;
        Ok((rel, txn))
    }

    /// The relation of a change and its event source.
    fn context(
        &self,
        oid: u32,
        lsn: u64,
        message: &'static str,
    ) -> Result<(&RelationInfo, Source), CdcDecodeError> {
        let (rel, txn) = self.lookup(oid, lsn, message)?;
        let source = Source {
            db: self.opts.db.clone(),
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            lsn,
            txid: txn.xid,
            commit_ts: txn.commit_ts.clone(),
        };
        Ok((rel, source))
    }

    fn json_context(
        &self,
        oid: u32,
        lsn: u64,
        message: &'static str,
    ) -> Result<fastjson::Context<'_>, CdcDecodeError> {
        let (rel, txn) = self.lookup(oid, lsn, message)?;
        Ok(fastjson::Context {
            rel,
            lsn,
            txid: txn.xid,
            commit_ts: &txn.commit_ts,
        })
    }
}

/// The message of a peeked row; an error carries the row's LSN.
fn parse_row(row: &PeekedRow) -> Result<Message<'_>, CdcDecodeError> {
    pgoutput::parse(&row.data).map_err(|e| CdcDecodeError::AtLsn {
        lsn: row.lsn,
        source: Box::new(e),
    })
}

fn event(
    op: Op,
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    unchanged: Vec<String>,
    source: Source,
) -> Decoded {
    Decoded::Change(ChangeEvent {
        op,
        before,
        after,
        unchanged,
        source,
    })
}

/// An update, or a delete of the old key and an insert of the new row (same LSN) when the
/// primary key changed, so that every later stage sees one key per event.
fn update_events(
    rel: &RelationInfo,
    before: Option<Map<String, Value>>,
    after: Map<String, Value>,
    unchanged: Vec<String>,
    source: Source,
    out: &mut Vec<Decoded>,
) {
    match before {
        Some(old) if key_changed(rel, &old, &after) => {
            out.push(event(
                Op::Delete,
                Some(old),
                None,
                Vec::new(),
                source.clone(),
            ));
            out.push(event(Op::Insert, None, Some(after), unchanged, source));
        }
        before => out.push(event(Op::Update, before, Some(after), unchanged, source)),
    }
}

/// A key column whose old and new values both are known and differ. An old row without a key
/// column (a replica identity on another unique index) cannot tell, and counts as unchanged.
fn key_changed(
    rel: &RelationInfo,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> bool {
    rel.key
        .iter()
        .any(|k| matches!((before.get(k), after.get(k)), (Some(b), Some(a)) if a != b))
}

/// The old row: with `K` only the replica-identity columns (the others are null placeholders),
/// with `O` every column. An unchanged-TOAST marker (not sent by the servers we know in an old
/// row) is left out rather than guessed.
fn old_row(
    rel: &RelationInfo,
    old: &OldTuple<'_>,
    lsn: u64,
) -> Result<Map<String, Value>, CdcDecodeError> {
    check_shape(rel, &old.columns, lsn)?;
    let mut map = Map::new();
    for (col, value) in rel.columns.iter().zip(&old.columns) {
        if old.kind == OldKind::Key && !col.identity {
            continue;
        }
        if let Some(v) = typed(rel, col, value, lsn)? {
            map.insert(col.name.clone(), v);
        }
    }
    Ok(map)
}

/// The new row and its unchanged-TOAST columns: each filled from `before` when it has the
/// column, else left out of the row and listed.
fn new_row(
    rel: &RelationInfo,
    new: &[Column<'_>],
    before: Option<&Map<String, Value>>,
    lsn: u64,
) -> Result<(Map<String, Value>, Vec<String>), CdcDecodeError> {
    check_shape(rel, new, lsn)?;
    let mut map = Map::new();
    let mut unchanged = Vec::new();
    for (col, value) in rel.columns.iter().zip(new) {
        match typed(rel, col, value, lsn)? {
            Some(v) => {
                map.insert(col.name.clone(), v);
            }
            None => match before.and_then(|b| b.get(&col.name)) {
                Some(old) => {
                    map.insert(col.name.clone(), old.clone());
                }
                None => unchanged.push(col.name.clone()),
            },
        }
    }
    Ok((map, unchanged))
}

/// The JSON of one column; `None` for an unchanged TOASTed value.
fn typed(
    rel: &RelationInfo,
    col: &RelColumn,
    value: &Column<'_>,
    lsn: u64,
) -> Result<Option<Value>, CdcDecodeError> {
    let text = match value {
        Column::Null => return Ok(Some(Value::Null)),
        Column::UnchangedToast => return Ok(None),
        Column::Text(bytes) => bytes,
    };
    let text =
        std::str::from_utf8(text).map_err(|_| value_error(rel, col, lsn, ValueError::NotUtf8))?;
    match value::text_to_json(col.type_oid, text) {
        Ok(v) => Ok(Some(v)),
        // A value PostgreSQL accepted but the typing cannot read (a JSON number beyond f64's
        // range, JSON nested deeper than the parser's limit, a BC date): failing here would
        // fail every run at this change and hold the slot (and WAL) forever. It goes on as
        // its PostgreSQL text instead; the transform keeps it for a string column and
        // quarantines it with the reason otherwise.
        Err(e) => {
            warn_untyped(rel, col, lsn, &e);
            Ok(Some(Value::String(text.to_string())))
        }
    }
}

pub(crate) fn value_error(
    rel: &RelationInfo,
    col: &RelColumn,
    lsn: u64,
    source: ValueError,
) -> CdcDecodeError {
    CdcDecodeError::Value {
        lsn,
        schema: rel.schema.clone(),
        table: rel.table.clone(),
        column: col.name.clone(),
        type_oid: col.type_oid,
        source,
    }
}

/// The one log line of a value sent as its text (never the value itself).
pub(crate) fn warn_untyped(rel: &RelationInfo, col: &RelColumn, lsn: u64, e: &ValueError) {
    tracing::warn!(
        lsn,
        schema = rel.schema,
        table = rel.table,
        column = col.name,
        type_oid = col.type_oid,
        error = %e,
        "a value the decoder cannot type is sent as its PostgreSQL text"
    );
}

pub(crate) fn check_shape(
    rel: &RelationInfo,
    columns: &[Column<'_>],
    lsn: u64,
) -> Result<(), CdcDecodeError> {
    if columns.len() != rel.columns.len() {
        return Err(CdcDecodeError::TupleShape {
            lsn,
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            expected: rel.columns.len(),
            got: columns.len(),
        });
    }
    Ok(())
}

fn out_of_place(lsn: u64, message: &'static str, reason: &'static str) -> CdcDecodeError {
    CdcDecodeError::Transaction {
        lsn,
        message,
        reason,
    }
}

/// A pgoutput commit time (microseconds since 2000-01-01 UTC) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn pg_timestamp(pg_micros: i64, lsn: u64) -> Result<String, CdcDecodeError> {
    let t = pg_micros
        .checked_add(PG_EPOCH_UNIX_MICROS)
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(|| CdcDecodeError::AtLsn {
            lsn,
            source: Box::new(CdcDecodeError::Invalid {
                reading: "commit time",
                reason: format!("{pg_micros} microseconds after 2000-01-01 is out of range"),
            }),
        })?;
    Ok(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
#[path = "tests/decode.rs"]
mod tests;

//! The messages of PostgreSQL's built-in `pgoutput` plugin, protocol version 1, as the
//! `data` column of `pg_logical_slot_peek_binary_changes` holds them (one message per row).
//! The format is PostgreSQL's "Logical Replication Message Formats" chapter.
//!
//! `parse` borrows from the row: names, prefixes and column texts are slices of it, so a
//! message costs one small `Vec` per tuple. Every length and count read from the wire is
//! checked against the bytes that remain before anything is sliced or allocated, and no input
//! makes it panic (the property tests feed it arbitrary bytes). This file also holds the error
//! type of the whole decoder ([`CdcDecodeError`]) and the `X/Y` form of an LSN.

use thiserror::Error;

use super::value::ValueError;

/// Why a peeked row, a pgoutput message or a stream record cannot be decoded.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CdcDecodeError {
    /// The input ends inside an item (a COPY header or row, a message field).
    #[error("input ends while reading {reading}: {needed} bytes needed, {available} available")]
    Truncated {
        reading: &'static str,
        needed: usize,
        available: usize,
    },
    /// An item is malformed: a wrong tag, signature, count or encoding.
    #[error("invalid {reading}: {reason}")]
    Invalid {
        reading: &'static str,
        reason: String,
    },
    /// A message that cannot be parsed, with the LSN of its row.
    #[error("message at LSN {}: {source}", format_lsn(*lsn))]
    AtLsn {
        lsn: u64,
        #[source]
        source: Box<CdcDecodeError>,
    },
    /// A change names a relation OID that no Relation message of this read described.
    #[error("change at LSN {} is for relation OID {oid}, which no Relation message described", format_lsn(*lsn))]
    UnknownRelation { oid: u32, lsn: u64 },
    /// A message that is out of place in the Begin … Commit sequence.
    #[error("{message} at LSN {}: {reason}", format_lsn(*lsn))]
    Transaction {
        lsn: u64,
        message: &'static str,
        reason: &'static str,
    },
    /// A tuple whose column count differs from its Relation message.
    #[error("change at LSN {} on {schema}.{table}: the tuple has {got} columns, the Relation message {expected}", format_lsn(*lsn))]
    TupleShape {
        lsn: u64,
        schema: String,
        table: String,
        expected: usize,
        got: usize,
    },
    /// A column value that is not valid text of its type (the value itself is never shown).
    #[error("change at LSN {} on {schema}.{table}, column {column} (type OID {type_oid}): {source}", format_lsn(*lsn))]
    Value {
        lsn: u64,
        schema: String,
        table: String,
        column: String,
        type_oid: u32,
        #[source]
        source: ValueError,
    },
    /// A slot or publication name that is not a plain lower-case identifier.
    #[error("{what} name {name:?} is not usable: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// A Kinesis record that is neither a change event nor a spill pointer.
    #[error("not a change event or spill pointer: {reason}")]
    Record { reason: String },
}

/// An LSN in PostgreSQL's `X/Y` text form (high and low 32 bits in upper-case hex).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reads an LSN in `X/Y` form (what `pg_current_wal_lsn()::text` returns).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// One pgoutput message (protocol version 1; streaming and two-phase messages are version 2+).
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin<'a>),
    Relation(Relation<'a>),
    Type(TypeInfo<'a>),
    Insert(Insert<'a>),
    Update(Update<'a>),
    Delete(Delete<'a>),
    Truncate(Truncate),
    Message(LogicalMessage<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: u64,
    /// Commit time in microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's epoch).
    pub commit_ts: i64,
    pub xid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Commit {
    pub flags: u8,
    pub commit_lsn: u64,
    /// The end of the commit record: where a consumer that has everything may advance to.
    pub end_lsn: u64,
    pub commit_ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Origin<'a> {
    pub commit_lsn: u64,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Relation<'a> {
    pub oid: u32,
    /// Empty for `pg_catalog`.
    pub namespace: &'a str,
    pub name: &'a str,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn<'a> {
    /// Part of the replica identity (every column with `REPLICA IDENTITY FULL`).
    pub key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_mod: i32,
}

/// A Type message: the name of a non-built-in type a Relation message refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeInfo<'a> {
    pub oid: u32,
    pub namespace: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert<'a> {
    pub relation: u32,
    pub new: Vec<Column<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update<'a> {
    pub relation: u32,
    /// Present when the key changed (`K`) or with `REPLICA IDENTITY FULL` (`O`).
    pub old: Option<OldTuple<'a>>,
    pub new: Vec<Column<'a>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete<'a> {
    pub relation: u32,
    pub old: OldTuple<'a>,
}

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct OldTuple<'a> {
    pub kind: OldKind,
    /// Every column of the relation; with [`OldKind::Key`] the non-key ones are null.
    pub columns: Vec<Column<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica-identity columns carry values.
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Truncate {
    /// Bit 1 `CASCADE`, bit 2 `RESTART IDENTITY`.
    pub options: u8,
    pub relations: Vec<u32>,
}

/// A message of `pg_logical_emit_message`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalMessage<'a> {
    pub transactional: bool,
    pub lsn: u64,
    pub prefix: &'a str,
    pub content: &'a [u8],
}

/// One column of a TupleData.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Column<'a> {
    Null,
    /// A TOASTed value the update left alone: the source does not send it.
    UnchangedToast,
    /// The value in the type's text output form (bytes as sent; the decoder checks UTF-8).
    Text(&'a [u8]),
}

/// Parses one pgoutput message.
pub fn parse(data: &[u8]) -> Result<Message<'_>, CdcDecodeError> {
    let mut r = Reader { buf: data, pos: 0 };
    let tag = r.u8("message tag")?;
    let msg = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: r.u64("Begin final LSN")?,
            commit_ts: r.i64("Begin commit time")?,
            xid: r.u32("Begin xid")?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: r.u64("Commit LSN")?,
            end_lsn: r.u64("Commit end LSN")?,
            commit_ts: r.i64("Commit time")?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: r.u64("Origin LSN")?,
            name: r.cstr("Origin name")?,
        }),
        b'R' => Message::Relation(relation(&mut r)?),
        b'Y' => Message::Type(TypeInfo {
            oid: r.u32("Type OID")?,
            namespace: r.cstr("Type namespace")?,
            name: r.cstr("Type name")?,
        }),
        b'I' => {
            let relation = r.u32("Insert relation OID")?;
            r.expect_tag("Insert tuple tag", b'N')?;
            Message::Insert(Insert {
                relation,
                new: tuple(&mut r)?,
            })
        }
        b'U' => Message::Update(update(&mut r)?),
        b'D' => {
            let relation = r.u32("Delete relation OID")?;
            let kind = old_kind(r.u8("Delete tuple tag")?)?;
            let columns = tuple(&mut r)?;
            Message::Delete(Delete {
                relation,
                old: OldTuple { kind, columns },
            })
        }
        b'T' => Message::Truncate(truncate(&mut r)?),
        b'M' => Message::Message(logical_message(&mut r)?),
        other => {
            return Err(CdcDecodeError::Invalid {
                reading: "message tag",
                reason: format!("unknown pgoutput message type {:?}", char::from(other)),
            })
        }
    };
    r.end()?;
    Ok(msg)
}

fn relation<'a>(r: &mut Reader<'a>) -> Result<Relation<'a>, CdcDecodeError> {
    let oid = r.u32("Relation OID")?;
    let namespace = r.cstr("Relation namespace")?;
    let name = r.cstr("Relation name")?;
    let replica_identity = r.u8("Relation replica identity")?;
    let n = r.count("Relation column count", 10)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let flags = r.u8("Relation column flags")?;
        columns.push(RelationColumn {
            key: flags & 1 == 1,
            name: r.cstr("Relation column name")?,
            type_oid: r.u32("Relation column type OID")?,
            type_mod: r.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn update<'a>(r: &mut Reader<'a>) -> Result<Update<'a>, CdcDecodeError> {
    let relation = r.u32("Update relation OID")?;
    let mut tag = r.u8("Update tuple tag")?;
    let mut old = None;
    if tag != b'N' {
        let kind = old_kind(tag)?;
        old = Some(OldTuple {
            kind,
            columns: tuple(r)?,
        });
        tag = r.u8("Update new tuple tag")?;
    }
    if tag != b'N' {
        return Err(bad_tag("Update new tuple tag", b'N', tag));
    }
    Ok(Update {
        relation,
        old,
        new: tuple(r)?,
    })
}

fn old_kind(tag: u8) -> Result<OldKind, CdcDecodeError> {
    match tag {
        b'K' => Ok(OldKind::Key),
        b'O' => Ok(OldKind::Full),
        other => Err(CdcDecodeError::Invalid {
            reading: "old tuple tag",
            reason: format!("expected 'K' or 'O', found {:?}", char::from(other)),
        }),
    }
}

fn truncate(r: &mut Reader<'_>) -> Result<Truncate, CdcDecodeError> {
    let n = r.i32("Truncate relation count")?;
    let options = r.u8("Truncate options")?;
    let n = usize::try_from(n).map_err(|_| CdcDecodeError::Invalid {
        reading: "Truncate relation count",
        reason: format!("negative count {n}"),
    })?;
    r.need("Truncate relation OIDs", n.saturating_mul(4))?;
    let mut relations = Vec::with_capacity(n);
    for _ in 0..n {
        relations.push(r.u32("Truncate relation OID")?);
    }
    Ok(Truncate { options, relations })
}

fn logical_message<'a>(r: &mut Reader<'a>) -> Result<LogicalMessage<'a>, CdcDecodeError> {
    let flags = r.u8("Message flags")?;
    let lsn = r.u64("Message LSN")?;
    let prefix = r.cstr("Message prefix")?;
    let len = r.len("Message content length")?;
    Ok(LogicalMessage {
        transactional: flags & 1 == 1,
        lsn,
        prefix,
        content: r.bytes("Message content", len)?,
    })
}

/// A TupleData: a column count, then per column a kind byte and, for text, a length and bytes.
fn tuple<'a>(r: &mut Reader<'a>) -> Result<Vec<Column<'a>>, CdcDecodeError> {
    // Each column takes at least its kind byte: the count is checked before the Vec exists.
    let n = r.count("TupleData column count", 1)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let column = match r.u8("TupleData column kind")? {
            b'n' => Column::Null,
            b'u' => Column::UnchangedToast,
            b't' => {
                let len = r.len("TupleData text length")?;
                Column::Text(r.bytes("TupleData text", len)?)
            }
            other => {
                return Err(CdcDecodeError::Invalid {
                    reading: "TupleData column kind",
                    reason: format!("expected 'n', 'u' or 't', found {:?}", char::from(other)),
                })
            }
        };
        columns.push(column);
    }
    Ok(columns)
}

fn bad_tag(reading: &'static str, want: u8, got: u8) -> CdcDecodeError {
    CdcDecodeError::Invalid {
        reading,
        reason: format!(
            "expected {:?}, found {:?}",
            char::from(want),
            char::from(got)
        ),
    }
}

/// A cursor over one message: every read checks the bytes left first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, reading: &'static str, needed: usize) -> Result<(), CdcDecodeError> {
        if needed > self.left() {
            return Err(CdcDecodeError::Truncated {
                reading,
                needed,
                available: self.left(),
            });
        }
        Ok(())
    }

    fn bytes(&mut self, reading: &'static str, n: usize) -> Result<&'a [u8], CdcDecodeError> {
        self.need(reading, n)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, reading: &'static str) -> Result<[u8; N], CdcDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(reading, N)?);
        Ok(out)
    }

    fn u8(&mut self, reading: &'static str) -> Result<u8, CdcDecodeError> {
        Ok(self.array::<1>(reading)?[0])
    }

    fn i16(&mut self, reading: &'static str) -> Result<i16, CdcDecodeError> {
        Ok(i16::from_be_bytes(self.array(reading)?))
    }

    fn i32(&mut self, reading: &'static str) -> Result<i32, CdcDecodeError> {
        Ok(i32::from_be_bytes(self.array(reading)?))
    }

    fn u32(&mut self, reading: &'static str) -> Result<u32, CdcDecodeError> {
        Ok(u32::from_be_bytes(self.array(reading)?))
    }

    fn i64(&mut self, reading: &'static str) -> Result<i64, CdcDecodeError> {
        Ok(i64::from_be_bytes(self.array(reading)?))
    }

    fn u64(&mut self, reading: &'static str) -> Result<u64, CdcDecodeError> {
        Ok(u64::from_be_bytes(self.array(reading)?))
    }

    /// An Int32 length that must not be negative.
    fn len(&mut self, reading: &'static str) -> Result<usize, CdcDecodeError> {
        let n = self.i32(reading)?;
        usize::try_from(n).map_err(|_| CdcDecodeError::Invalid {
            reading,
            reason: format!("negative length {n}"),
        })
    }

    /// An Int16 count of items that take at least `min_item_bytes` each, checked against the
    /// bytes left so that a forged count cannot make the caller reserve a large `Vec`.
    fn count(
        &mut self,
        reading: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, CdcDecodeError> {
        let n = self.i16(reading)?;
        let n = usize::try_from(n).map_err(|_| CdcDecodeError::Invalid {
            reading,
            reason: format!("negative count {n}"),
        })?;
        self.need(reading, n * min_item_bytes)?;
        Ok(n)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, reading: &'static str) -> Result<&'a str, CdcDecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(CdcDecodeError::Truncated {
                reading,
                needed: rest.len() + 1,
                available: rest.len(),
            });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|e| CdcDecodeError::Invalid {
            reading,
            reason: format!("not UTF-8 (byte {})", e.valid_up_to()),
        })?;
        self.pos += nul + 1;
        Ok(s)
    }

    fn expect_tag(&mut self, reading: &'static str, want: u8) -> Result<(), CdcDecodeError> {
        let got = self.u8(reading)?;
        if got != want {
            return Err(bad_tag(reading, want, got));
        }
        Ok(())
    }

    /// The message must end where its last field does.
    fn end(&self) -> Result<(), CdcDecodeError> {
        if self.left() > 0 {
            return Err(CdcDecodeError::Invalid {
                reading: "message end",
                reason: format!("{} bytes after the last field", self.left()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests/pgoutput.rs"]
mod tests;

/// The test-side encoder, shared by the decoder's tests.
#[cfg(test)]
#[path = "tests/wire.rs"]
pub(crate) mod test_wire;

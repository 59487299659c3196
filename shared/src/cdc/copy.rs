//! Reading a slot through `COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes(…))
//! TO STDOUT (FORMAT binary)`: the session settings that make the values' text output
//! predictable, the peek statement, and [`CopyFrames`], a push decoder of PostgreSQL's binary
//! COPY format that turns byte chunks of any size into [`PeekedRow`]s.
//!
//! COPY streams the rows: the client never holds the whole result, and `CopyFrames` keeps only
//! the bytes of the row it has not finished.

use bytes::Bytes;

use super::pgoutput::CdcDecodeError;

/// The statements to run on the connection before the peek. pgoutput renders values with the
/// session's output functions, so these fix the forms that `value.rs` parses: UTC ISO
/// timestamps, floats that read back exactly, bytea as hex.
pub const SESSION_SETTINGS: &[&str] = &[
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
];

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// The COPY statement that peeks at most `upto_nchanges` changes (all, with `None`) of `slot`
/// for `publications`, pgoutput protocol 1 with logical messages. Peeking does not consume: the
/// caller advances the slot once the changes are safe elsewhere.
///
/// Names must be lower-case identifiers (`[a-z_][a-z0-9_]*`, at most 63 bytes): pgoutput
/// splits `publication_names` on commas and folds case, so anything else would name another
/// publication than the one configured.
pub fn peek_copy_sql(
    slot: &str,
    publications: &[String],
    upto_nchanges: Option<u64>,
) -> Result<String, CdcDecodeError> {
    check_name("slot", slot)?;
    if publications.is_empty() {
        return Err(CdcDecodeError::InvalidName {
            what: "publication",
            name: String::new(),
            reason: "at least one publication is needed",
        });
    }
    for p in publications {
        check_name("publication", p)?;
    }
    let upto = match upto_nchanges {
        // The function takes an int4; a larger budget means no limit.
        Some(n) if n <= i32::MAX as u64 => n.to_string(),
        _ => "NULL".to_string(),
    };
    // The names are checked identifiers, so quoting them as literals needs no escaping.
    Ok(format!(
        "COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, {upto}, \
         'proto_version', '1', 'publication_names', '{}', 'messages', 'true')) TO STDOUT (FORMAT binary)",
        publications.join(",")
    ))
}

/// Checks that `name` is a lower-case SQL identifier of at most 63 bytes.
pub fn check_name(what: &'static str, name: &str) -> Result<(), CdcDecodeError> {
    let bad = |reason| CdcDecodeError::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad("longer than 63 bytes"));
    }
    let mut bytes = name.bytes();
    if !bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(bad("must start with a lower-case letter or '_'"));
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(bad("only lower-case letters, digits and '_' are allowed"));
    }
    Ok(())
}

/// One row of the peek: the change's LSN, its transaction id (0 outside a transaction, e.g. a
/// non-transactional logical message) and one pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedRow {
    pub lsn: u64,
    pub xid: u32,
    pub data: Bytes,
}

/// The signature that opens every binary COPY stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags field and header-extension length.
const HEADER_BYTES: usize = 11 + 4 + 4;
/// Field count, then lsn (length + 8), xid (length + 4), data length.
const ROW_PREFIX_BYTES: usize = 2 + (4 + 8) + (4 + 4) + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Rows,
    Done,
}

/// A push decoder of the binary COPY output of the peek: `push` byte chunks as they arrive,
/// then call `next_row` until it returns `None` (it needs more bytes); after the last chunk,
/// `finish` says whether the stream was complete.
#[derive(Debug)]
pub struct CopyFrames {
    buf: Vec<u8>,
    /// Start of the bytes not yet consumed.
    pos: usize,
    state: State,
}

impl Default for CopyFrames {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyFrames {
    pub fn new() -> Self {
        CopyFrames {
            buf: Vec::new(),
            pos: 0,
            state: State::Header,
        }
    }

    /// Appends a chunk. The consumed bytes are dropped first, so the buffer holds at most the
    /// unfinished row plus this chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete row, `None` when more bytes are needed (or the trailer was read).
    pub fn next_row(&mut self) -> Result<Option<PeekedRow>, CdcDecodeError> {
        if self.state == State::Header && !self.header()? {
            return Ok(None);
        }
        if self.state == State::Done {
            return Ok(None);
        }
        self.row()
    }

    /// Ok once the trailer was read and nothing follows it; otherwise what is missing.
    pub fn finish(&self) -> Result<(), CdcDecodeError> {
        let left = self.unread();
        match self.state {
            State::Done if left.is_empty() => Ok(()),
            State::Done => Err(CdcDecodeError::Invalid {
                reading: "COPY stream end",
                reason: format!("{} bytes after the trailer", left.len()),
            }),
            State::Header => Err(CdcDecodeError::Truncated {
                reading: "COPY header",
                needed: HEADER_BYTES + header_extension(left).unwrap_or(0),
                available: left.len(),
            }),
            State::Rows => Err(CdcDecodeError::Truncated {
                reading: "COPY row",
                needed: row_need(left),
                available: left.len(),
            }),
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Consumes the header once it is all there; false while it is not.
    fn header(&mut self) -> Result<bool, CdcDecodeError> {
        let left = self.unread();
        let sig = &left[..left.len().min(SIGNATURE.len())];
        if sig != &SIGNATURE[..sig.len()] {
            return Err(CdcDecodeError::Invalid {
                reading: "COPY header",
                reason: "not a binary COPY stream (signature PGCOPY missing)".to_string(),
            });
        }
        if left.len() < HEADER_BYTES {
            return Ok(false);
        }
        let flags = be_u32(&left[11..15]);
        // Bit 16 says the rows carry OIDs (servers before 12); other high bits are critical
        // flags a reader must not ignore.
        if flags & 0xFFFF_0000 != 0 {
            return Err(CdcDecodeError::Invalid {
                reading: "COPY header",
                reason: format!("unsupported flags {flags:#010x}"),
            });
        }
        let Some(ext) = header_extension(left) else {
            return Err(CdcDecodeError::Invalid {
                reading: "COPY header",
                reason: "negative header-extension length".to_string(),
            });
        };
        if left.len() < HEADER_BYTES + ext {
            return Ok(false);
        }
        self.pos += HEADER_BYTES + ext;
        self.state = State::Rows;
        Ok(true)
    }

    /// The next row once all its bytes are buffered. No length read here sizes an allocation:
    /// the data is copied out only when the bytes are present.
    fn row(&mut self) -> Result<Option<PeekedRow>, CdcDecodeError> {
        let left = self.unread();
        if left.len() < 2 {
            return Ok(None);
        }
        let nfields = i16::from_be_bytes([left[0], left[1]]);
        if nfields == -1 {
            self.pos += 2;
            self.state = State::Done;
            return Ok(None);
        }
        if nfields != 3 {
            return Err(CdcDecodeError::Invalid {
                reading: "COPY row",
                reason: format!("{nfields} fields, expected 3 (lsn, xid, data)"),
            });
        }
        if left.len() < ROW_PREFIX_BYTES {
            return Ok(None);
        }
        field_len(left, 2, 8, "lsn")?;
        field_len(left, 14, 4, "xid")?;
        let data_len = field_len(left, 22, -1, "data")?;
        if left.len() - ROW_PREFIX_BYTES < data_len {
            return Ok(None);
        }
        let row = PeekedRow {
            lsn: u64::from_be_bytes(array(&left[6..14])),
            xid: be_u32(&left[18..22]),
            data: Bytes::copy_from_slice(&left[ROW_PREFIX_BYTES..ROW_PREFIX_BYTES + data_len]),
        };
        self.pos += ROW_PREFIX_BYTES + data_len;
        Ok(Some(row))
    }
}

/// The length word of a field at `at`: `want` exactly, or any non-negative length when
/// `want` is -1. NULL (-1) is never valid here: the peek's columns are never NULL.
fn field_len(buf: &[u8], at: usize, want: i32, name: &str) -> Result<usize, CdcDecodeError> {
    let len = i32::from_be_bytes(array(&buf[at..at + 4]));
    let ok = if want < 0 { len >= 0 } else { len == want };
    match usize::try_from(len) {
        Ok(n) if ok => Ok(n),
        _ => Err(CdcDecodeError::Invalid {
            reading: "COPY row",
            reason: format!("field {name} has length {len}"),
        }),
    }
}

/// The header-extension length, once the fixed header part is there; None if negative.
fn header_extension(left: &[u8]) -> Option<usize> {
    if left.len() < HEADER_BYTES {
        return Some(0);
    }
    usize::try_from(i32::from_be_bytes(array(&left[15..19]))).ok()
}

/// The bytes an unfinished row needs, as far as its buffered prefix tells.
fn row_need(left: &[u8]) -> usize {
    if left.len() < 2 {
        return 2; // the field count (or the trailer)
    }
    if left.len() < ROW_PREFIX_BYTES {
        return ROW_PREFIX_BYTES;
    }
    let data_len = i32::from_be_bytes(array(&left[22..26])).max(0) as usize;
    ROW_PREFIX_BYTES + data_len
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(array(b))
}

/// The first N bytes of `b` as an array; callers slice exactly N bytes, checked above.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

#[cfg(test)]
#[path = "tests/copy.rs"]
pub(crate) mod tests;

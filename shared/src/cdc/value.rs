//! Column values from PostgreSQL's text output form to the JSON of the change event
//! (docs/CDC.md, "Values"). The form is the one the session settings of `copy.rs` fix: ISO
//! dates, UTC timestamps, floats that read back exactly, bytea in hex. pgoutput sends values
//! this way, and so does `COPY … TO STDOUT` in text format once its escapes are undone, which is
//! why [`text_to_json`] is a plain function of (type OID, text): the snapshot reuses it.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Number, Value};
use thiserror::Error;

/// Built-in type OIDs (`pg_type.oid`), stable across PostgreSQL versions.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// A value whose text is not what its type's output function writes. The text itself is
/// never part of the message: it may be personal data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    #[error("the value is not valid {type_name} text: {reason}")]
    Invalid {
        type_name: &'static str,
        reason: &'static str,
    },
    #[error("the value is not UTF-8")]
    NotUtf8,
}

fn invalid(type_name: &'static str, reason: &'static str) -> ValueError {
    ValueError::Invalid { type_name, reason }
}

/// PostgreSQL allows at most 6 array dimensions (MAXDIM); deeper input is not an array it wrote.
const MAX_ARRAY_DEPTH: usize = 6;

/// The element type of the array types this module types element by element; other arrays
/// (and every other type) stay strings.
pub fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1002 => oid::CHAR,
        1003 => oid::NAME,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1016 => oid::INT8,
        1009 => oid::TEXT,
        1028 => oid::OID,
        199 => oid::JSON,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1014 => oid::BPCHAR,
        1015 => oid::VARCHAR,
        1182 => oid::DATE,
        1183 => oid::TIME,
        1115 => oid::TIMESTAMP,
        1185 => oid::TIMESTAMPTZ,
        1187 => oid::INTERVAL,
        1270 => oid::TIMETZ,
        1231 => oid::NUMERIC,
        2951 => oid::UUID,
        3807 => oid::JSONB,
        _ => return None,
    })
}

/// The JSON of one non-NULL value given its type OID and text form.
pub fn text_to_json(type_oid: u32, text: &str) -> Result<Value, ValueError> {
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| invalid("integer", "not a whole number in range")),
        oid::OID => text
            .parse::<u32>()
            .map(Value::from)
            .map_err(|_| invalid("oid", "not an unsigned 32-bit number")),
        oid::FLOAT4 | oid::FLOAT8 => float(text),
        oid::BOOL => match text {
            "t" => Ok(Value::Bool(true)),
            "f" => Ok(Value::Bool(false)),
            _ => Err(invalid("boolean", "expected t or f")),
        },
        oid::TIMESTAMPTZ => timestamp(text, true).map(Value::String),
        oid::TIMESTAMP => timestamp(text, false).map(Value::String),
        oid::JSON | oid::JSONB => {
            serde_json::from_str(text).map_err(|_| invalid("json", "not valid JSON"))
        }
        oid::BYTEA => bytea(text).map(Value::String),
        _ => match array_element(type_oid) {
            Some(element) => array(text, element),
            // numeric keeps every digit (and NaN, ±Infinity); dates are already ISO.
            None => Ok(Value::String(text.to_string())),
        },
    }
}

/// float4 and float8: JSON numbers, the non-finite values as PostgreSQL's words. Both are
/// read as f64 so that a float4 written as `1.1` stays 1.1 rather than its binary widening.
fn float(text: &str) -> Result<Value, ValueError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        return Ok(Value::String(text.to_string()));
    }
    let f: f64 = text.parse().map_err(|_| invalid("float", "not a number"))?;
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(invalid("float", "out of range"))
}

/// bytea in hex output (`\x0aff`) to standard padded base64.
fn bytea(text: &str) -> Result<String, ValueError> {
    Ok(base64::engine::general_purpose::STANDARD.encode(bytea_raw(text)?))
}

/// The bytes of a bytea in hex output form.
pub(crate) fn bytea_raw(text: &str) -> Result<Vec<u8>, ValueError> {
    let hex_digits = text.strip_prefix("\\x").ok_or(invalid(
        "bytea",
        "not in hex output form (bytea_output = 'hex')",
    ))?;
    hex::decode(hex_digits).map_err(|_| invalid("bytea", "bad hex digits"))
}

/// A timestamp as ISO-8601 UTC with six fraction digits: `2026-11-26T09:00:00.123456Z`.
/// ISO DateStyle writes `2026-11-26 09:00:00.123456+00` (the offset only `with_tz`); an
/// offset other than zero (a session not in UTC) is applied. `infinity`, `-infinity` and BC
/// dates keep PostgreSQL's text: ISO-8601 has no form for the first two, and the lake reads
/// the third as text anyway.
pub fn timestamp(text: &str, with_tz: bool) -> Result<String, ValueError> {
    Ok(match timestamp_parts(text, with_tz)? {
        Timestamp::Text(t) => t.to_string(),
        Timestamp::Utc { date, hms, frac } => format!("{date}T{hms}.{frac:0<6}Z"),
        Timestamp::Shifted(s) => s,
    })
}

/// A timestamp read for [`timestamp`], in pieces so that the fast writer can copy them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timestamp<'a> {
    /// Kept as PostgreSQL wrote it.
    Text(&'a str),
    /// Already UTC: `{date}T{hms}.{frac padded with zeros to 6}Z`.
    Utc {
        date: &'a str,
        hms: &'a str,
        frac: &'a str,
    },
    /// Moved to UTC from another offset, in its final form.
    Shifted(String),
}

pub(crate) fn timestamp_parts(text: &str, with_tz: bool) -> Result<Timestamp<'_>, ValueError> {
    const WHAT: &str = "timestamp";
    if matches!(text, "infinity" | "-infinity") || text.ends_with(" BC") {
        return Ok(Timestamp::Text(text));
    }
    // Byte searches: a `char` pattern costs more than the rest of the parse (under perf).
    let (date, rest) =
        split_byte(text, |b| b == b' ').ok_or(invalid(WHAT, "no space between date and time"))?;
    let (time, offset) = if with_tz {
        let at = rest
            .bytes()
            .position(|b| b == b'+' || b == b'-')
            .ok_or(invalid(WHAT, "no UTC offset"))?;
        rest.split_at_checked(at)
            .ok_or(invalid(WHAT, "no UTC offset"))?
    } else {
        (rest, "")
    };
    let (hms, frac) = split_byte(time, |b| b == b'.').unwrap_or((time, ""));
    if !is_date(date) || !is_hms(hms) || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(WHAT, "not YYYY-MM-DD HH:MM:SS[.ffffff]"));
    }
    let offset_secs = if with_tz { utc_offset(offset)? } else { 0 };
    if offset_secs == 0 {
        return Ok(Timestamp::Utc { date, hms, frac });
    }
    shift_to_utc(date, hms, frac, offset_secs).map(Timestamp::Shifted)
}

/// `YYYY-MM-DD` with a year of four or more digits.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let n = b.len();
    n >= 10
        && b[n - 3] == b'-'
        && b[n - 6] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == n - 3 || i == n - 6 || c.is_ascii_digit())
}

fn is_hms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS` in seconds east of UTC.
fn utc_offset(s: &str) -> Result<i64, ValueError> {
    let bad = || invalid("timestamp", "bad UTC offset");
    let (sign, body) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    // `HH`, `HH:MM` or `HH:MM:SS`.
    if !matches!(body.len(), 2 | 5 | 8) {
        return Err(bad());
    }
    let mut secs = 0i64;
    for (part, unit) in body.as_bytes().chunks(3).zip([3600, 60, 1]) {
        let (tens, ones) = match part {
            [t, o] | [t, o, b':'] if t.is_ascii_digit() && o.is_ascii_digit() => (t, o),
            _ => return Err(bad()),
        };
        secs += i64::from((tens - b'0') * 10 + (ones - b'0')) * unit;
    }
    Ok(sign * secs)
}

/// `s` split around the first byte that `at` picks (an ASCII byte, so both sides are text).
fn split_byte(s: &str, at: impl Fn(u8) -> bool) -> Option<(&str, &str)> {
    let i = s.bytes().position(at)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// The rare path: a timestamp with a non-zero offset, moved to UTC with chrono.
fn shift_to_utc(date: &str, hms: &str, frac: &str, offset_secs: i64) -> Result<String, ValueError> {
    let bad = || invalid("timestamp", "out of range");
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("{date} {hms}"), "%Y-%m-%d %H:%M:%S")
            .map_err(|_| bad())?;
    let utc = naive
        .checked_sub_signed(chrono::TimeDelta::seconds(offset_secs))
        .ok_or_else(bad)?;
    Ok(format!("{}.{frac:0<6}Z", utc.format("%Y-%m-%dT%H:%M:%S")))
}

/// An array's text form (`{1,2,NULL}`, `{"a,b","say \"hi\""}`, `[0:1]={{1},{2}}`) to a JSON
/// array whose elements are typed as `element`; nested arrays nest. The dimension prefix is
/// dropped: JSON arrays start at 0.
fn array(text: &str, element: u32) -> Result<Value, ValueError> {
    let mut sink = ValueArray::default();
    parse_array(text, element, &mut sink)?;
    sink.done.ok_or(invalid("array", "expected '{'"))
}

/// What [`parse_array`] finds, in order: the JSON array as a `Value` here, or written straight
/// out by the fast writer (`fastjson.rs`). One parser, so both read an array the same way.
pub(crate) trait ArraySink {
    /// `{`: an array (or a nested one) opens.
    fn open(&mut self);
    /// `}`: the innermost open array closes.
    fn close(&mut self);
    /// `,` between two items.
    fn separator(&mut self);
    /// An unquoted `NULL`.
    fn null(&mut self);
    /// An element's text, unescaped, to be typed as `element`.
    fn element(&mut self, element: u32, text: &str) -> Result<(), ValueError>;
}

/// Builds the `Value` of an array.
#[derive(Default)]
struct ValueArray {
    /// The arrays still open, innermost last.
    open: Vec<Vec<Value>>,
    done: Option<Value>,
}

impl ValueArray {
    fn push(&mut self, v: Value) {
        match self.open.last_mut() {
            Some(items) => items.push(v),
            None => self.done = Some(v),
        }
    }
}

impl ArraySink for ValueArray {
    fn open(&mut self) {
        self.open.push(Vec::new());
    }

    fn close(&mut self) {
        let items = self.open.pop().unwrap_or_default();
        self.push(Value::Array(items));
    }

    fn separator(&mut self) {}

    fn null(&mut self) {
        self.push(Value::Null);
    }

    fn element(&mut self, element: u32, text: &str) -> Result<(), ValueError> {
        let v = text_to_json(element, text)?;
        self.push(v);
        Ok(())
    }
}

/// Reads an array's text form into `sink` (see [`array`]). On an error the sink holds part
/// of the array, which the caller drops.
pub(crate) fn parse_array<S: ArraySink>(
    text: &str,
    element: u32,
    sink: &mut S,
) -> Result<(), ValueError> {
    let body = if text.starts_with('[') {
        let (_, after) = text
            .split_once('=')
            .ok_or(invalid("array", "dimension prefix without '='"))?;
        after
    } else {
        text
    };
    let mut p = ArrayParser {
        s: body,
        pos: 0,
        element,
    };
    p.array(1, sink)?;
    p.skip_space();
    if p.pos != p.s.len() {
        return Err(invalid("array", "text after the closing brace"));
    }
    Ok(())
}

struct ArrayParser<'a> {
    s: &'a str,
    pos: usize,
    element: u32,
}

impl<'a> ArrayParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn array<S: ArraySink>(&mut self, depth: usize, sink: &mut S) -> Result<(), ValueError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(invalid("array", "more than 6 dimensions"));
        }
        self.skip_space();
        if self.peek() != Some(b'{') {
            return Err(invalid("array", "expected '{'"));
        }
        self.pos += 1;
        sink.open();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            sink.close();
            return Ok(());
        }
        loop {
            self.skip_space();
            match self.peek() {
                Some(b'{') => self.array(depth + 1, sink)?,
                Some(b'"') => {
                    let text = self.quoted()?;
                    sink.element(self.element, &text)?;
                }
                _ => match self.unquoted()? {
                    None => sink.null(),
                    Some(text) => sink.element(self.element, &text)?,
                },
            }
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    sink.separator();
                }
                Some(b'}') => {
                    self.pos += 1;
                    sink.close();
                    return Ok(());
                }
                _ => return Err(invalid("array", "expected ',' or '}'")),
            }
        }
    }

    /// The text from `start` to the current position: borrowed, since both ends sit next to
    /// ASCII delimiters (checked all the same).
    fn slice(&self, start: usize, end: usize) -> Result<Cow<'a, str>, ValueError> {
        self.s
            .get(start..end)
            .map(Cow::Borrowed)
            .ok_or(ValueError::NotUtf8)
    }

    /// A double-quoted element; a backslash takes the next byte literally. Borrowed when it
    /// has no backslash.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ValueError> {
        self.pos += 1;
        let start = self.pos;
        let mut out: Option<Vec<u8>> = None;
        loop {
            match self.peek() {
                None => return Err(invalid("array", "unterminated quoted element")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self.escaped()?;
                    let buf =
                        out.get_or_insert_with(|| self.s.as_bytes()[start..self.pos].to_vec());
                    buf.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    if let Some(buf) = out.as_mut() {
                        buf.push(b);
                    }
                    self.pos += 1;
                }
            }
        }
        match out {
            None => self.slice(start, self.pos - 1),
            // Only ASCII bytes were dropped from valid UTF-8, so this holds; checked all the same.
            Some(buf) => String::from_utf8(buf)
                .map(Cow::Owned)
                .map_err(|_| ValueError::NotUtf8),
        }
    }

    /// The byte after a backslash.
    fn escaped(&self) -> Result<u8, ValueError> {
        self.s
            .as_bytes()
            .get(self.pos + 1)
            .copied()
            .ok_or(invalid("array", "backslash at the end"))
    }

    /// An unquoted element up to ',' or '}', trailing spaces dropped; `None` for `NULL` in
    /// any case (SQL NULL). Borrowed when it has no backslash.
    fn unquoted(&mut self) -> Result<Option<Cow<'a, str>>, ValueError> {
        let start = self.pos;
        let mut out: Option<Vec<u8>> = None;
        while let Some(b) = self.peek() {
            match b {
                b',' | b'}' => break,
                b'{' | b'"' => {
                    return Err(invalid("array", "unexpected '{' or '\"' in an element"))
                }
                b'\\' => {
                    let escaped = self.escaped()?;
                    let buf =
                        out.get_or_insert_with(|| self.s.as_bytes()[start..self.pos].to_vec());
                    buf.push(escaped);
                    self.pos += 2;
                }
                _ => {
                    if let Some(buf) = out.as_mut() {
                        buf.push(b);
                    }
                    self.pos += 1;
                }
            }
        }
        let text = match out {
            None => {
                let bytes = &self.s.as_bytes()[start..self.pos];
                let kept = bytes.len() - trailing_space(bytes);
                self.slice(start, start + kept)?
            }
            Some(mut buf) => {
                buf.truncate(buf.len() - trailing_space(&buf));
                Cow::Owned(String::from_utf8(buf).map_err(|_| ValueError::NotUtf8)?)
            }
        };
        if text.is_empty() {
            return Err(invalid("array", "empty element"));
        }
        if text.eq_ignore_ascii_case("NULL") {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

/// How many ASCII whitespace bytes end `bytes`.
fn trailing_space(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count()
}

#[cfg(test)]
#[path = "tests/value.rs"]
pub(crate) mod tests;

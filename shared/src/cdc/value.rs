//! Column values from PostgreSQL's text output form to the JSON of the change event
//! (docs/CDC.md, "Values"). The form is the one the session settings of `copy.rs` fix: ISO
//! dates, UTC timestamps, floats that read back exactly, bytea in hex. pgoutput sends values
//! this way, and so does `COPY … TO STDOUT` in text format once its escapes are undone, which is
//! why [`text_to_json`] is a plain function of (type OID, text): the snapshot reuses it.

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
    let hex_digits = text.strip_prefix("\\x").ok_or(invalid(
        "bytea",
        "not in hex output form (bytea_output = 'hex')",
    ))?;
    let raw = hex::decode(hex_digits).map_err(|_| invalid("bytea", "bad hex digits"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

/// A timestamp as ISO-8601 UTC with six fraction digits: `2026-11-26T09:00:00.123456Z`.
/// ISO DateStyle writes `2026-11-26 09:00:00.123456+00` (the offset only `with_tz`); an
/// offset other than zero (a session not in UTC) is applied. `infinity`, `-infinity` and BC
/// dates keep PostgreSQL's text: ISO-8601 has no form for the first two, and the lake reads
/// the third as text anyway.
pub fn timestamp(text: &str, with_tz: bool) -> Result<String, ValueError> {
    const WHAT: &str = "timestamp";
    if matches!(text, "infinity" | "-infinity") || text.ends_with(" BC") {
        return Ok(text.to_string());
    }
    let (date, rest) = text
        .split_once(' ')
        .ok_or(invalid(WHAT, "no space between date and time"))?;
    let split = if with_tz {
        rest.find(['+', '-'])
            .ok_or(invalid(WHAT, "no UTC offset"))?
    } else {
        rest.len()
    };
    let (time, offset) = rest.split_at(split);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    if !is_date(date) || !is_hms(hms) || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid(WHAT, "not YYYY-MM-DD HH:MM:SS[.ffffff]"));
    }
    let offset_secs = if with_tz { utc_offset(offset)? } else { 0 };
    if offset_secs == 0 {
        return Ok(format!("{date}T{hms}.{frac:0<6}Z"));
    }
    shift_to_utc(date, hms, frac, offset_secs)
}

/// `YYYY-MM-DD` with a year of four or more digits.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts[0].len() >= 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
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
    let mut secs = 0i64;
    let mut parts = 0;
    for (i, part) in body.split(':').enumerate() {
        if i > 2 || part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = part.parse().map_err(|_| bad())?;
        secs += n * [3600, 60, 1][i];
        parts += 1;
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok(sign * secs)
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
    let body = if text.starts_with('[') {
        let (_, after) = text
            .split_once('=')
            .ok_or(invalid("array", "dimension prefix without '='"))?;
        after
    } else {
        text
    };
    let mut p = ArrayParser {
        s: body.as_bytes(),
        pos: 0,
        element,
    };
    let v = p.array(1)?;
    p.skip_space();
    if p.pos != p.s.len() {
        return Err(invalid("array", "text after the closing brace"));
    }
    Ok(v)
}

struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    element: u32,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ValueError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(invalid("array", "more than 6 dimensions"));
        }
        self.skip_space();
        if self.peek() != Some(b'{') {
            return Err(invalid("array", "expected '{'"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_space();
            let item = match self.peek() {
                Some(b'{') => self.array(depth + 1)?,
                Some(b'"') => {
                    let text = self.quoted()?;
                    text_to_json(self.element, &text)?
                }
                _ => self.unquoted()?,
            };
            items.push(item);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(invalid("array", "expected ',' or '}'")),
            }
        }
    }

    /// A double-quoted element; a backslash takes the next byte literally.
    fn quoted(&mut self) -> Result<String, ValueError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(invalid("array", "unterminated quoted element")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = self
                        .s
                        .get(self.pos + 1)
                        .ok_or(invalid("array", "backslash at the end"))?;
                    out.push(*escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only ASCII bytes were dropped from valid UTF-8, so this holds; checked all the same.
        String::from_utf8(out).map_err(|_| ValueError::NotUtf8)
    }

    /// An unquoted element up to ',' or '}'; `NULL` in any case is SQL NULL.
    fn unquoted(&mut self) -> Result<Value, ValueError> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            match b {
                b',' | b'}' => break,
                b'{' | b'"' => {
                    return Err(invalid("array", "unexpected '{' or '\"' in an element"))
                }
                b'\\' => {
                    let escaped = self
                        .s
                        .get(self.pos + 1)
                        .ok_or(invalid("array", "backslash at the end"))?;
                    out.push(*escaped);
                    self.pos += 2;
                }
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        while out.last().is_some_and(|b| b.is_ascii_whitespace()) {
            out.pop();
        }
        if out.is_empty() {
            return Err(invalid("array", "empty element"));
        }
        let text = String::from_utf8(out).map_err(|_| ValueError::NotUtf8)?;
        if text.eq_ignore_ascii_case("NULL") {
            return Ok(Value::Null);
        }
        text_to_json(self.element, &text)
    }
}

#[cfg(test)]
#[path = "tests/value.rs"]
mod tests;

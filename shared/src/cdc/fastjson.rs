//! The fast path of the change events: each event's JSON line written straight from the
//! tuple's text into one buffer, with no `serde_json::Map` and no `Value` for a scalar. `sluice
//! cdc peek` uses it ([`ChangeDecoder::decode_json`](super::decode::ChangeDecoder::decode_json));
//! the run still builds [`ChangeEvent`](super::event::ChangeEvent)s.
//!
//! The Map path stays the definition of an event: for every input both give the same JSON
//! object (tests/fastjson.rs parses each line and compares it with the Map path's event, over
//! the captured fixture, the type test data and random tuples). Only the key order differs:
//! the columns come in table order here, in name order there, and JSON objects are unordered.
//!
//! Per type, the text PostgreSQL sends is written as:
//! - int2/int4/int8/oid: copied (their text is a JSON number) when it is in the plain form
//!   `-?[1-9][0-9]*` (or `0`) and short enough to be in range, else read as the Map path does;
//! - float4/float8: copied when it is a JSON number inside ±1e300 (`.0` added to an integral
//!   one, so that it reads back as a float); `NaN` and `±Infinity` as strings; anything else
//!   read as the Map path does. A reader that rounds correctly reads the same double from the
//!   copied text as from the Map path's shortest form of it;
//! - bool: `t`/`f` to `true`/`false`;
//! - timestamp/timestamptz: the pieces of `value::timestamp_parts`, copied;
//! - json/jsonb: checked to be JSON that `serde_json` reads into a `Value` (number range,
//!   nesting limit, escapes), then copied, its line breaks and tabs (whitespace between
//!   tokens, never inside a string) turned into spaces so that an event stays one line;
//! - bytea: base64 straight into the buffer;
//! - the arrays `value.rs` types: the same parser, writing instead of building;
//! - everything else (numeric, text, dates, uuid, ...): a JSON string.
//!
//! A value the typing cannot read goes as its text, as on the Map path.

use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::event::Op;
use super::value::{self, oid, ArraySink, Timestamp, ValueError};

mod rows;

pub(crate) use rows::{write_change, write_truncate, Context, RelationJson};

/// Change events as JSON lines, appended by `decode_json`. Clear it once written out; its
/// buffers are reused.
#[derive(Debug, Default)]
pub struct JsonEvents {
    /// Each event's compact JSON, followed by `\n`.
    pub bytes: Vec<u8>,
    /// One per event, in order.
    pub events: Vec<JsonEvent>,
    /// The rows of the change being written.
    scratch: rows::Scratch,
}

/// Where one event is in [`JsonEvents::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonEvent {
    pub op: Op,
    /// The change's LSN (`source.lsn`).
    pub lsn: u64,
    /// The event's first byte.
    pub start: usize,
    /// One past its last byte, before the `\n`.
    pub end: usize,
}

impl JsonEvents {
    /// The JSON of one event (without the line break).
    pub fn event(&self, e: &JsonEvent) -> &[u8] {
        self.bytes.get(e.start..e.end).unwrap_or_default()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }
}

/// Writes the JSON of one non-NULL value given its type OID and text form: the same value
/// as `value::text_to_json`, which fails exactly where this does. On an error `out` holds a
/// part of the value, which the caller removes.
pub(crate) fn write_value(out: &mut Vec<u8>, type_oid: u32, text: &str) -> Result<(), ValueError> {
    let plain_int = |max_digits| int_digits(text.as_bytes()).is_some_and(|n| n <= max_digits);
    match type_oid {
        // Up to 18 digits always fit an i64 (and 9 a u32): no parse needed.
        oid::INT2 | oid::INT4 | oid::INT8 if plain_int(18) => copied(out, text.as_bytes()),
        oid::OID if !text.starts_with('-') && plain_int(9) => copied(out, text.as_bytes()),
        oid::FLOAT4 | oid::FLOAT8 => float(out, type_oid, text),
        oid::BOOL => match text {
            "t" => copied(out, b"true"),
            "f" => copied(out, b"false"),
            _ => through_value(out, type_oid, text),
        },
        oid::TIMESTAMPTZ => timestamp(out, text, true),
        oid::TIMESTAMP => timestamp(out, text, false),
        oid::JSON | oid::JSONB => json(out, text),
        oid::BYTEA => bytea(out, text),
        // An int out of the plain form or too long: read, and written back, as the Map path.
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => through_value(out, type_oid, text),
        _ => match value::array_element(type_oid) {
            Some(element) => value::parse_array(text, element, &mut WriteArray { out }),
            None => {
                write_str(out, text.as_bytes());
                Ok(())
            }
        },
    }
}

fn copied(out: &mut Vec<u8>, json: &[u8]) -> Result<(), ValueError> {
    out.extend_from_slice(json);
    Ok(())
}

/// The rare forms: the Map path's `Value`, serialised.
fn through_value(out: &mut Vec<u8>, type_oid: u32, text: &str) -> Result<(), ValueError> {
    let v = value::text_to_json(type_oid, text)?;
    write_serde(out, &v)
}

fn write_serde(out: &mut Vec<u8>, v: &Value) -> Result<(), ValueError> {
    // Serialising a `Value` into a `Vec` cannot fail; kept as an error rather than a panic.
    serde_json::to_writer(&mut *out, v).map_err(|_| ValueError::Invalid {
        type_name: "json",
        reason: "could not be written",
    })
}

/// `-?(0|[1-9][0-9]*)` but not `-0`: the number of digits, when `b` is an integer whose text
/// is also its JSON (Rust's parse also takes `+1` and `007`; those go through the parse).
fn int_digits(b: &[u8]) -> Option<usize> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let plain = match digits {
        [] => false,
        [b'0'] => digits.len() == b.len(),
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    };
    plain.then_some(digits.len())
}

fn float(out: &mut Vec<u8>, type_oid: u32, text: &str) -> Result<(), ValueError> {
    if matches!(text, "NaN" | "Infinity" | "-Infinity") {
        write_str(out, text.as_bytes());
        return Ok(());
    }
    match float_form(text.as_bytes()) {
        Some(FloatForm { integral }) => {
            out.extend_from_slice(text.as_bytes());
            if integral {
                out.extend_from_slice(b".0");
            }
            Ok(())
        }
        None => through_value(out, type_oid, text),
    }
}

struct FloatForm {
    /// No fraction and no exponent: JSON would read it as an integer.
    integral: bool,
}

/// A JSON number (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`) whose digits and exponent together
/// stay within 300 places, so that its value is a finite, normal double: the Map path reads
/// the same text as a float. Anything else (`1e400`, `+1`, `.5`) is `None`.
fn float_form(b: &[u8]) -> Option<FloatForm> {
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_len = digits(i);
    if int_len == 0 || (int_len > 1 && b[i] == b'0') {
        return None;
    }
    i += int_len;
    let mut frac_len = 0;
    if b.get(i) == Some(&b'.') {
        frac_len = digits(i + 1);
        if frac_len == 0 {
            return None;
        }
        i += 1 + frac_len;
    }
    let mut exp = 0usize;
    let mut has_exp = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_len = digits(i);
        if exp_len == 0 || exp_len > 3 {
            return None;
        }
        exp = b[i..i + exp_len]
            .iter()
            .fold(0, |n, d| n * 10 + usize::from(d - b'0'));
        has_exp = true;
        i += exp_len;
    }
    (i == b.len() && int_len + frac_len + exp <= 300).then_some(FloatForm {
        integral: frac_len == 0 && !has_exp,
    })
}

fn timestamp(out: &mut Vec<u8>, text: &str, with_tz: bool) -> Result<(), ValueError> {
    match value::timestamp_parts(text, with_tz)? {
        Timestamp::Text(t) => write_str(out, t.as_bytes()),
        // Digits, dashes and colons only (checked by the parts): nothing to escape.
        Timestamp::Utc { date, hms, frac } => {
            out.push(b'"');
            out.extend_from_slice(date.as_bytes());
            out.push(b'T');
            out.extend_from_slice(hms.as_bytes());
            out.push(b'.');
            out.extend_from_slice(frac.as_bytes());
            out.extend_from_slice(&b"000000"[frac.len().min(6)..]);
            out.extend_from_slice(b"Z\"");
        }
        Timestamp::Shifted(s) => write_str(out, s.as_bytes()),
    }
    Ok(())
}

fn json(out: &mut Vec<u8>, text: &str) -> Result<(), ValueError> {
    let mut de = serde_json::Deserializer::from_str(text);
    Checked::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|_| ValueError::Invalid {
            type_name: "json",
            reason: "not valid JSON",
        })?;
    let bytes = text.as_bytes();
    if bytes.iter().any(|&b| b < 0x20) {
        // Valid JSON has raw control bytes only as whitespace between tokens.
        out.extend(bytes.iter().map(|&b| if b < 0x20 { b' ' } else { b }));
    } else {
        out.extend_from_slice(bytes);
    }
    Ok(())
}

/// Reads any JSON value and keeps nothing: through serde_json's own parser, so it accepts
/// exactly what `from_str::<Value>` does (`IgnoredAny` would not: it skips numbers without
/// reading them, so `1e400` would pass).
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

fn bytea(out: &mut Vec<u8>, text: &str) -> Result<(), ValueError> {
    let raw = value::bytea_raw(text)?;
    let too_long = ValueError::Invalid {
        type_name: "bytea",
        reason: "too long to encode",
    };
    let len = base64::encoded_len(raw.len(), true).ok_or(too_long.clone())?;
    out.push(b'"');
    let at = out.len();
    out.resize(at + len, 0);
    base64::engine::general_purpose::STANDARD
        .encode_slice(&raw, &mut out[at..])
        .map_err(|_| too_long)?;
    out.push(b'"');
    Ok(())
}

/// An array written as the parser reads it.
struct WriteArray<'o> {
    out: &'o mut Vec<u8>,
}

impl ArraySink for WriteArray<'_> {
    fn open(&mut self) {
        self.out.push(b'[');
    }

    fn close(&mut self) {
        self.out.push(b']');
    }

    fn separator(&mut self) {
        self.out.push(b',');
    }

    fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    fn element(&mut self, element: u32, text: &str) -> Result<(), ValueError> {
        write_value(self.out, element, text)
    }
}

/// What a byte becomes inside a JSON string: 0 as it is, `u` as `\u00XX`, else `\` and it.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` (UTF-8) as a JSON string. The hot loop of the fast path: it skips eight bytes
/// at a time while none needs escaping and copies the runs between escapes whole.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        if let Some(word) = s.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if !needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = s[i];
        let e = ESCAPE[usize::from(b)];
        if e != 0 {
            out.extend_from_slice(&s[start..i]);
            escape(out, b, e);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

fn escape(out: &mut Vec<u8>, b: u8, e: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if e == b'u' {
        out.extend_from_slice(b"\\u00");
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    } else {
        out.push(b'\\');
        out.push(e);
    }
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\` (the classic "has a byte
/// less than n" and "has a zero byte" bit tricks; exact, bytes ≥ 0x80 never match).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = has_zero(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
    below_space | quote | backslash != 0
}

/// Writes `n` in decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
#[path = "tests/fastjson.rs"]
mod tests;

#[cfg(test)]
#[path = "tests/fastjson_events.rs"]
mod event_tests;

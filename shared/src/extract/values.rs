//! Column values as JSON: what each source type becomes in a part, decoded from the binary
//! protocol's bytes (sqlx is built without its chrono and decimal features, and the bytes are
//! all extract needs). The rules: integers and finite floats are numbers; decimals are strings
//! (exact); timestamps are ISO-8601 UTC with microseconds (`2024-01-31T09:05:00.000000Z`);
//! dates `YYYY-MM-DD`; text is a string; bytes are base64; JSON columns are embedded; NaN and
//! infinities are the strings PostgreSQL prints. NULL is an explicit `null`.

use std::fmt::Write as _;
use std::io::Write;

use base64::Engine as _;
use chrono::{Datelike, Timelike};

/// How a column's bytes are read. MySQL integers are little-endian, PostgreSQL's big-endian;
/// temporal types differ in layout, so each engine has its own variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A column typed NULL (a literal NULL in a query): always null.
    Null,
    /// MySQL integer of `bytes` bytes, little-endian.
    MyInt { bytes: u8, signed: bool },
    /// PostgreSQL integer of `bytes` bytes, big-endian (`oid` is unsigned 4 bytes).
    PgInt { bytes: u8, signed: bool },
    /// IEEE float, little-endian (MySQL) or big-endian (PostgreSQL).
    Float { bytes: u8, big_endian: bool },
    /// Decimal digits as text (MySQL DECIMAL).
    DecimalText,
    /// PostgreSQL NUMERIC's base-10000 binary form.
    PgNumeric,
    /// UTF-8 text.
    Text,
    /// Bytes, written as base64.
    Binary,
    /// MySQL BIT(n): a big-endian unsigned number.
    MyBit,
    /// MySQL DATE, length-prefixed.
    MyDate,
    /// MySQL DATETIME or TIMESTAMP (session time zone UTC), length-prefixed.
    MyDateTime,
    /// MySQL TIME (may exceed 24 hours, may be negative), length-prefixed.
    MyTime,
    /// PostgreSQL `bool`.
    PgBool,
    /// PostgreSQL `date`: days since 2000-01-01.
    PgDate,
    /// PostgreSQL `timestamp` or `timestamptz`: microseconds since 2000-01-01 (UTC).
    PgTimestamp,
    /// PostgreSQL `time`: microseconds since midnight.
    PgTime,
    /// PostgreSQL `timetz`: microseconds since midnight, then seconds west of UTC.
    PgTimeTz,
    /// PostgreSQL `uuid`: 16 bytes.
    PgUuid,
    /// JSON text (MySQL JSON, PostgreSQL json).
    Json,
    /// PostgreSQL jsonb: a version byte (1), then JSON text.
    PgJsonb,
}

impl Kind {
    /// Whether values of this kind are timestamps (the `updated_at` column must be one).
    pub(crate) fn is_timestamp(self) -> bool {
        matches!(self, Kind::MyDateTime | Kind::PgTimestamp)
    }

    /// Whether a key column of this kind can page a keyset: its JSON value binds back to a
    /// value that compares as the column does.
    pub(crate) fn keyable(self) -> bool {
        matches!(
            self,
            Kind::MyInt { .. }
                | Kind::PgInt { .. }
                | Kind::DecimalText
                | Kind::PgNumeric
                | Kind::Text
                | Kind::MyDate
                | Kind::MyDateTime
                | Kind::PgDate
                | Kind::PgTimestamp
                | Kind::PgUuid
        )
    }
}

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Writes the JSON of one non-NULL value of `kind` to `out`; the reason when the bytes are not
/// what the type promises.
pub(crate) fn encode(kind: Kind, b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match kind {
        Kind::Null => out.extend_from_slice(b"null"),
        Kind::MyInt { bytes, signed } => int(b, bytes, signed, false, out)?,
        Kind::PgInt { bytes, signed } => int(b, bytes, signed, true, out)?,
        Kind::Float { bytes, big_endian } => float(b, bytes, big_endian, out)?,
        Kind::DecimalText => string(utf8(b)?, out),
        Kind::PgNumeric => string(&pg_numeric(b)?, out),
        Kind::Text => string(utf8(b)?, out),
        Kind::Binary => string(&base64::engine::general_purpose::STANDARD.encode(b), out),
        Kind::MyBit => {
            if b.len() > 8 {
                return Err(format!("BIT of {} bytes", b.len()));
            }
            let v = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            write_display(out, v);
        }
        Kind::MyDate => my_date(b, out)?,
        Kind::MyDateTime => my_datetime(b, out)?,
        Kind::MyTime => my_time(b, out)?,
        Kind::PgBool => out.extend_from_slice(if fixed::<1>(b)?[0] != 0 {
            b"true"
        } else {
            b"false"
        }),
        Kind::PgDate => pg_date(i32::from_be_bytes(fixed(b)?), out),
        Kind::PgTimestamp => pg_timestamp(i64::from_be_bytes(fixed(b)?), out),
        Kind::PgTime => pg_time(b, false, out)?,
        Kind::PgTimeTz => pg_time(b, true, out)?,
        Kind::PgUuid => pg_uuid(fixed(b)?, out),
        Kind::Json => json(b, out)?,
        Kind::PgJsonb => match b.split_first() {
            Some((1, rest)) => json(rest, out)?,
            _ => return Err("jsonb without its version byte 1".into()),
        },
    }
    Ok(())
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes, found {}", b.len()))
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("not UTF-8 text ({e})"))
}

/// A JSON string literal (escaped by serde_json, which cannot fail on a `str`).
pub(crate) fn string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_display(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

fn int(b: &[u8], bytes: u8, signed: bool, big: bool, out: &mut Vec<u8>) -> Result<(), String> {
    if b.len() != usize::from(bytes) {
        return Err(format!(
            "expected a {bytes}-byte integer, found {} bytes",
            b.len()
        ));
    }
    let mut buf = [0u8; 8];
    if big {
        buf[8 - b.len()..].copy_from_slice(b);
        buf.reverse();
    } else {
        buf[..b.len()].copy_from_slice(b);
    }
    let raw = u64::from_le_bytes(buf);
    if signed {
        // Sign-extend from the value's width.
        let shift = 64 - 8 * u32::from(bytes);
        write_display(out, ((raw << shift) as i64) >> shift);
    } else {
        write_display(out, raw);
    }
    Ok(())
}

fn float(b: &[u8], bytes: u8, big: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let v = match (bytes, big) {
        (4, false) => f64::from(f32::from_le_bytes(fixed(b)?)),
        (4, true) => f64::from(f32::from_be_bytes(fixed(b)?)),
        (_, false) => f64::from_le_bytes(fixed(b)?),
        (_, true) => f64::from_be_bytes(fixed(b)?),
    };
    if v.is_nan() {
        string("NaN", out);
    } else if v.is_infinite() {
        string(if v > 0.0 { "Infinity" } else { "-Infinity" }, out);
    } else if bytes == 4 {
        // The shortest text that reads back as the same f32 (0.1, not 0.10000000149…).
        write_display(out, v as f32);
    } else {
        write_display(out, v);
    }
    Ok(())
}

/// `YYYY-MM-DD` as a JSON string.
fn write_date(out: &mut Vec<u8>, y: i32, m: u32, d: u32) {
    let _ = write!(out, "\"{y:04}-{m:02}-{d:02}\"");
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` as a JSON string: fixed width, so the text orders as the
/// instants do (the watermark compares them as text).
fn write_ts(out: &mut Vec<u8>, date: (i32, u32, u32), h: u32, mi: u32, s: u32, us: u32) {
    let (y, m, d) = date;
    let _ = write!(
        out,
        "\"{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z\""
    );
}

/// MySQL's length-prefixed DATE: length 0 is the zero date, written as null.
fn my_date(b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match b {
        [0, ..] => out.extend_from_slice(b"null"),
        [len, y0, y1, m, d, ..] if *len >= 4 => write_date(
            out,
            i32::from(u16::from_le_bytes([*y0, *y1])),
            u32::from(*m),
            u32::from(*d),
        ),
        _ => return Err(format!("a DATE of {} bytes", b.len())),
    }
    Ok(())
}

/// MySQL's DATETIME/TIMESTAMP: length 0 (zero date), 4 (date), 7 (+ time), 11 (+ micros).
fn my_datetime(b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let len = usize::from(*b.first().ok_or("an empty DATETIME")?);
    if len == 0 {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let v = b
        .get(1..1 + len)
        .filter(|_| matches!(len, 4 | 7 | 11))
        .ok_or_else(|| format!("a DATETIME of {len} bytes"))?;
    let date = (
        i32::from(u16::from_le_bytes([v[0], v[1]])),
        u32::from(v[2]),
        u32::from(v[3]),
    );
    let (h, mi, s) = if len >= 7 {
        (u32::from(v[4]), u32::from(v[5]), u32::from(v[6]))
    } else {
        (0, 0, 0)
    };
    let us = if len == 11 {
        u32::from_le_bytes([v[7], v[8], v[9], v[10]])
    } else {
        0
    };
    write_ts(out, date, h, mi, s, us);
    Ok(())
}

/// MySQL's TIME: length 0, 8 or 12; sign, days, hours, minutes, seconds, micros.
fn my_time(b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let len = usize::from(*b.first().ok_or("an empty TIME")?);
    if len == 0 {
        string("00:00:00.000000", out);
        return Ok(());
    }
    let v = b
        .get(1..1 + len)
        .filter(|_| matches!(len, 8 | 12))
        .ok_or_else(|| format!("a TIME of {len} bytes"))?;
    let sign = if v[0] == 1 { "-" } else { "" };
    let hours = u64::from(u32::from_le_bytes([v[1], v[2], v[3], v[4]])) * 24 + u64::from(v[5]);
    let us = if len == 12 {
        u32::from_le_bytes([v[8], v[9], v[10], v[11]])
    } else {
        0
    };
    let _ = write!(out, "\"{sign}{hours:02}:{:02}:{:02}.{us:06}\"", v[6], v[7]);
    Ok(())
}

fn pg_date(days: i32, out: &mut Vec<u8>) {
    match days {
        i32::MAX => string("infinity", out),
        i32::MIN => string("-infinity", out),
        _ => match chrono::NaiveDate::from_num_days_from_ce_opt(
            // 719_163 days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
            (i64::from(days) + PG_EPOCH_DAYS + 719_163) as i32,
        ) {
            Some(d) => write_date(out, d.year(), d.month(), d.day()),
            None => string("out-of-range date", out),
        },
    }
}

fn pg_timestamp(micros: i64, out: &mut Vec<u8>) {
    if micros == i64::MAX || micros == i64::MIN {
        string(if micros > 0 { "infinity" } else { "-infinity" }, out);
        return;
    }
    match micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(chrono::DateTime::from_timestamp_micros)
    {
        Some(t) => write_ts(
            out,
            (t.year(), t.month(), t.day()),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond() / 1_000,
        ),
        None => string("out-of-range timestamp", out),
    }
}

fn pg_time(b: &[u8], tz: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let (t, zone) = if tz {
        let v: [u8; 12] = fixed(b)?;
        let t = i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]);
        (t, Some(i32::from_be_bytes([v[8], v[9], v[10], v[11]])))
    } else {
        (i64::from_be_bytes(fixed(b)?), None)
    };
    if !(0..=MICROS_PER_DAY).contains(&t) {
        return Err(format!("a time of {t} microseconds"));
    }
    let (secs, us) = (t / 1_000_000, t % 1_000_000);
    let _ = write!(
        out,
        "\"{:02}:{:02}:{:02}.{us:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if let Some(west) = zone {
        // PostgreSQL stores seconds west of UTC; ISO offsets count east.
        let east = -west;
        let sign = if east < 0 { '-' } else { '+' };
        let _ = write!(
            out,
            "{sign}{:02}:{:02}",
            east.abs() / 3600,
            east.abs() / 60 % 60
        );
    }
    out.push(b'"');
    Ok(())
}

fn pg_uuid(b: [u8; 16], out: &mut Vec<u8>) {
    let h = hex::encode(b);
    let _ = write!(
        out,
        "\"{}-{}-{}-{}-{}\"",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
}

/// JSON text re-serialised compactly: a `json` column keeps its input's line breaks, which
/// would split the JSON line.
fn json(b: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(b).map_err(|e| format!("invalid JSON ({e})"))?;
    serde_json::to_writer(&mut *out, &v).map_err(|e| e.to_string())
}

/// PostgreSQL NUMERIC's binary form as decimal text, `dscale` digits after the point:
/// ndigits, weight (of the first base-10000 digit), sign, dscale, then the digits.
pub(crate) fn pg_numeric(b: &[u8]) -> Result<String, String> {
    let head = |i: usize| -> Result<u16, String> {
        b.get(i..i + 2)
            .map(|x| u16::from_be_bytes([x[0], x[1]]))
            .ok_or_else(|| format!("a NUMERIC of {} bytes", b.len()))
    };
    let (ndigits, weight, sign, dscale) = (
        usize::from(head(0)?),
        head(2)? as i16,
        head(4)?,
        usize::from(head(6)?),
    );
    if b.len() != 8 + 2 * ndigits {
        return Err(format!(
            "a NUMERIC of {ndigits} digits in {} bytes",
            b.len()
        ));
    }
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        other => return Err(format!("a NUMERIC with sign word {other:#06x}")),
    }
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < ndigits)
            .map(|i| u16::from_be_bytes([b[8 + 2 * i], b[9 + 2 * i]]))
            .unwrap_or(0)
    };
    let mut s = String::with_capacity(8 + 4 * ndigits);
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        let _ = write!(s, "{}", digit(0));
        for i in 1..=i32::from(weight) {
            let _ = write!(s, "{:04}", digit(i));
        }
    }
    if dscale > 0 {
        s.push('.');
        let start = s.len();
        let mut i = i32::from(weight) + 1;
        while s.len() - start < dscale {
            let _ = write!(s, "{:04}", digit(i));
            i += 1;
        }
        s.truncate(start + dscale);
    }
    Ok(s)
}

#[cfg(test)]
#[path = "tests/values.rs"]
mod tests;

//! Parsing one field into a typed value. Hot path: no allocation for numbers, dates and
//! timestamps in the common shapes; chrono only for the configured fallback formats.

use std::borrow::Cow;

use base64::Engine as _;

use crate::config::{ColumnType, EpochUnit};

/// A parsed value. Strings borrow from the batch buffer where they can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    I64(i64),
    F64(f64),
    Dec(i128),
    Bool(bool),
    Str(Cow<'a, str>),
    Bin(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Ts(i64),
}

/// Parsing options that come from the table config.
#[derive(Debug, Clone)]
pub(crate) struct ParseOptions {
    pub epoch_unit: EpochUnit,
    pub timestamp_formats: Vec<String>,
}

/// Microseconds for 0001-01-01 and 9999-12-31T23:59:59.999999: the range Athena, Spark and
/// Redshift all read back the same.
const MIN_TS_US: i64 = -62_135_596_800_000_000;
const MAX_TS_US: i64 = 253_402_300_799_999_999;

pub(crate) fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Parses text (already trimmed where the type requires; null tokens already handled).
pub(crate) fn parse_text<'a>(
    b: &'a [u8],
    ty: ColumnType,
    opts: &ParseOptions,
) -> Result<Val<'a>, String> {
    match ty {
        ColumnType::String | ColumnType::Json => match std::str::from_utf8(b) {
            Ok(s) => Ok(Val::Str(Cow::Borrowed(s))),
            Err(e) => Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        },
        ColumnType::Int => parse_i64(trim_ascii(b)).map(Val::I64),
        ColumnType::Float => {
            let t = trim_ascii(b);
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .map(Val::F64)
                .ok_or_else(|| format!("`{}` is not a number", preview(t)))
        }
        ColumnType::Decimal { precision, scale } => {
            parse_decimal(trim_ascii(b), precision, scale).map(Val::Dec)
        }
        ColumnType::Bool => parse_bool(trim_ascii(b)).map(Val::Bool),
        ColumnType::Binary => base64::engine::general_purpose::STANDARD
            .decode(trim_ascii(b))
            .map(Val::Bin)
            .map_err(|e| format!("not base64: {e}")),
        ColumnType::Date => parse_date(trim_ascii(b)).map(Val::Date),
        ColumnType::Timestamp => parse_timestamp(trim_ascii(b), opts).map(Val::Ts),
    }
}

/// Parses a JSON value into a column type: strings go through `parse_text`; numbers and
/// booleans convert directly; objects and arrays become JSON text for string columns.
pub(crate) fn parse_json<'a>(
    v: &'a serde_json::Value,
    ty: ColumnType,
    opts: &ParseOptions,
) -> Result<Val<'a>, String> {
    use serde_json::Value as J;
    match (v, ty) {
        (J::Null, _) => Ok(Val::Null),
        (J::String(s), _) => parse_text(s.as_bytes(), ty, opts),
        (J::Number(n), ColumnType::Int) => n
            .as_i64()
            .map(Val::I64)
            .ok_or_else(|| format!("{n} is not a 64-bit integer")),
        (J::Number(n), ColumnType::Float) => n
            .as_f64()
            .map(Val::F64)
            .ok_or_else(|| format!("{n} is not a number")),
        (J::Number(n), ColumnType::Timestamp) => match n.as_i64() {
            Some(i) => epoch_to_us(i, opts.epoch_unit).map(Val::Ts),
            None => Err(format!("{n} is not an epoch timestamp")),
        },
        (J::Number(n), ColumnType::String) => Ok(Val::Str(Cow::Owned(n.to_string()))),
        (J::Number(n), _) => parse_text(n.to_string().as_bytes(), ty, opts).map(into_owned),
        (J::Bool(b), ColumnType::Bool) => Ok(Val::Bool(*b)),
        (J::Bool(b), ColumnType::String) => Ok(Val::Str(Cow::Owned(b.to_string()))),
        (J::Array(_) | J::Object(_), ColumnType::String | ColumnType::Json) => {
            Ok(Val::Str(Cow::Owned(v.to_string())))
        }
        (other, ty) => Err(format!("a JSON {} cannot be a {ty}", json_kind(other))),
    }
}

/// A value that outlives the batch it was read from.
pub(crate) fn into_owned(v: Val<'_>) -> Val<'static> {
    match v {
        Val::Null => Val::Null,
        Val::I64(x) => Val::I64(x),
        Val::F64(x) => Val::F64(x),
        Val::Dec(x) => Val::Dec(x),
        Val::Bool(x) => Val::Bool(x),
        Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
        Val::Bin(b) => Val::Bin(b),
        Val::Date(d) => Val::Date(d),
        Val::Ts(t) => Val::Ts(t),
    }
}

pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// At most 40 characters of a bad value for an error message (the full text is in the
/// quarantine record; error strings may reach logs).
pub(crate) fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned();
    if b.len() > 40 {
        format!("{s}…")
    } else {
        s
    }
}

pub(crate) fn parse_i64(b: &[u8]) -> Result<i64, String> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("`{}` is not an integer", preview(b)));
    }
    let mut v: i128 = 0;
    for &d in digits {
        v = v * 10 + i128::from(d - b'0');
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).map_err(|_| format!("`{}` is out of the 64-bit integer range", preview(b)))
}

fn parse_bool(b: &[u8]) -> Result<bool, String> {
    let mut buf = [0u8; 5];
    if b.len() <= 5 {
        for (i, c) in b.iter().enumerate() {
            buf[i] = c.to_ascii_lowercase();
        }
        match &buf[..b.len()] {
            b"true" | b"t" | b"yes" | b"y" | b"1" => return Ok(true),
            b"false" | b"f" | b"no" | b"n" | b"0" => return Ok(false),
            _ => {}
        }
    }
    Err(format!(
        "`{}` is not a boolean (true/false, t/f, yes/no, 1/0)",
        preview(b)
    ))
}

/// Exact decimal: `-123.45` with at most `scale` fractional digits (more would silently
/// round money) and at most `precision` digits in all.
pub(crate) fn parse_decimal(b: &[u8], precision: u8, scale: i8) -> Result<i128, String> {
    refuse_non_finite(b)?;
    let (neg, int_part, frac_part) = decimal_parts(b)
        .ok_or_else(|| format!("`{}` is not a decimal({precision},{scale})", preview(b)))?;
    let scale_u = scale.max(0) as usize;
    let frac = trim_trailing_zeros(frac_part, scale_u);
    if frac.len() > scale_u {
        return Err(format!(
            "`{}` has more than {scale} decimal places",
            preview(b)
        ));
    }
    let int_sig = trim_leading_zeros(int_part);
    let int_digits = if int_sig == b"0" || int_sig.is_empty() {
        0
    } else {
        int_sig.len()
    };
    if int_digits + scale_u > precision as usize {
        return Err(format!(
            "`{}` does not fit decimal({precision},{scale})",
            preview(b)
        ));
    }
    let mut v: i128 = 0;
    for &d in int_sig {
        v = v * 10 + i128::from(d - b'0');
    }
    for i in 0..scale_u {
        let d = frac.get(i).map_or(0, |d| d - b'0');
        v = v * 10 + i128::from(d);
    }
    Ok(if neg { -v } else { v })
}

/// CDC events carry NUMERIC NaN/Infinity as strings; a decimal column cannot hold them.
fn refuse_non_finite(b: &[u8]) -> Result<(), String> {
    let word = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if [&b"nan"[..], b"inf", b"infinity"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
    {
        return Err(format!(
            "`{}` cannot be stored in a decimal column (type the column string to keep it)",
            preview(b)
        ));
    }
    Ok(())
}

/// Sign, integer digits and fraction digits of `[+-]digits[.digits]` (one side may be empty).
fn decimal_parts(b: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let (neg, rest) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let (int_part, frac_part) = match rest.iter().position(|&c| c == b'.') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.iter().all(u8::is_ascii_digit) || !frac_part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((neg, int_part, frac_part))
}

/// `frac` without the trailing zeros beyond `scale` digits (`1.500` fits a scale of 1).
fn trim_trailing_zeros(frac: &[u8], scale: usize) -> &[u8] {
    let mut f = frac;
    while f.len() > scale && f.last() == Some(&b'0') {
        f = &f[..f.len() - 1];
    }
    f
}

/// `int` without leading zeros (`0` stays).
fn trim_leading_zeros(int: &[u8]) -> &[u8] {
    let mut i = int;
    while i.len() > 1 && i[0] == b'0' {
        i = &i[1..];
    }
    i
}

/// Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD` → days; checks the calendar.
fn ymd(b: &[u8]) -> Option<i64> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i64::from(digits(&b[0..4])?);
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || y == 0 {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

pub(crate) fn parse_date(b: &[u8]) -> Result<i32, String> {
    // A timestamp in a date column keeps its UTC date (exports often write midnight times;
    // one with an offset is converted first, as a timestamp column would be).
    let day = ymd(b).or_else(|| fast_timestamp(b).map(|us| us.div_euclid(86_400_000_000)));
    match day {
        Some(d) => Ok(d as i32),
        None => Err(format!("`{}` is not a date (YYYY-MM-DD)", preview(b))),
    }
}

fn epoch_to_us(v: i64, unit: EpochUnit) -> Result<i64, String> {
    let millis = match unit {
        EpochUnit::Seconds => false,
        EpochUnit::Millis => true,
        EpochUnit::Auto => v.unsigned_abs() >= 100_000_000_000,
    };
    let us = if millis {
        v.checked_mul(1000)
    } else {
        v.checked_mul(1_000_000)
    };
    match us {
        Some(us) if (MIN_TS_US..=MAX_TS_US).contains(&us) => Ok(us),
        _ => Err(format!("epoch {v} is outside years 0001–9999")),
    }
}

/// Timestamps: `2019-10-01 00:00:00 UTC`, ISO-8601 (`T` or space, fractions up to ns, `Z`,
/// `±HH:MM`, `±HHMM`, `±HH`), a bare date (midnight UTC), epoch seconds or millis, then the
/// table's chrono formats. No offset means UTC. Result: UTC microseconds.
pub(crate) fn parse_timestamp(b: &[u8], opts: &ParseOptions) -> Result<i64, String> {
    if let Some(us) = fast_timestamp(b) {
        return if (MIN_TS_US..=MAX_TS_US).contains(&us) {
            Ok(us)
        } else {
            Err(format!("`{}` is outside years 0001–9999", preview(b)))
        };
    }
    let numeric = !b.is_empty()
        && b.iter()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (i == 0 && *c == b'-'))
        && b != b"-";
    if numeric {
        if let Ok(v) = parse_i64(b) {
            return epoch_to_us(v, opts.epoch_unit);
        }
    }
    let in_range = |us: i64| -> Result<i64, String> {
        if (MIN_TS_US..=MAX_TS_US).contains(&us) {
            Ok(us)
        } else {
            Err(format!("`{}` is outside years 0001–9999", preview(b)))
        }
    };
    if let Ok(s) = std::str::from_utf8(b) {
        for f in &opts.timestamp_formats {
            if let Ok(dt) = chrono::DateTime::parse_from_str(s, f) {
                return in_range(dt.timestamp_micros());
            }
            if let Ok(ndt) = chrono::NaiveDateTime::parse_from_str(s, f) {
                return in_range(ndt.and_utc().timestamp_micros());
            }
            if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f) {
                if let Some(ndt) = d.and_hms_opt(0, 0, 0) {
                    return in_range(ndt.and_utc().timestamp_micros());
                }
            }
        }
    }
    Err(format!("`{}` is not a timestamp", preview(b)))
}

/// The common shapes without chrono: a date, then an optional time of day, then an optional
/// offset. On the hot path of every timestamp; the helpers are small and inlined.
fn fast_timestamp(b: &[u8]) -> Option<i64> {
    let day = ymd(b.get(..10)?)?;
    let (secs_of_day, micros, rest) = time_of_day(&b[10..])?;
    let offset_secs = utc_offset(rest)?;
    let secs = day * 86_400 + secs_of_day - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// `THH:MM[:SS[.fraction]]` (`T`, `t` or a space first): seconds of the day, microseconds
/// and the bytes after it. Without a time of day: midnight, and `rest` as it was.
#[inline]
fn time_of_day(rest: &[u8]) -> Option<(i64, i64, &[u8])> {
    let is_time = !rest.is_empty()
        && matches!(rest[0], b'T' | b't' | b' ')
        && rest.len() >= 6
        && rest[3] == b':';
    if !is_time {
        return Some((0, 0, rest));
    }
    let h = digits(&rest[1..3])?;
    let mi = digits(&rest[4..6])?;
    let mut rest = &rest[6..];
    let mut s = 0;
    let mut micros: i64 = 0;
    if rest.first() == Some(&b':') {
        s = digits(rest.get(1..3)?)?;
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            (micros, rest) = fraction_micros(&rest[1..])?;
        }
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some((i64::from(h * 3600 + mi * 60 + s), micros, rest))
}

/// 1 to 9 fraction digits as microseconds (truncated), and the bytes after them.
#[inline]
fn fraction_micros(b: &[u8]) -> Option<(i64, &[u8])> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 9 {
        return None;
    }
    let frac = &b[..n];
    let mut us = 0i64;
    for i in 0..6 {
        us = us * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some((us, &b[n..]))
}

/// The offset east of UTC in seconds: none, `Z`, `UTC`, `GMT`, or `±HH`, `±HHMM`, `±HH:MM`
/// (a space before it allowed).
#[inline]
fn utc_offset(rest: &[u8]) -> Option<i64> {
    if matches!(rest, b"" | b"Z" | b"z" | b" UTC" | b"UTC" | b" Z" | b" GMT") {
        return Some(0);
    }
    let r = rest.strip_prefix(b" ").unwrap_or(rest);
    let sign = match r.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let r = &r[1..];
    let (hh, mm) = match r.len() {
        2 => (digits(r)?, 0),
        4 => (digits(&r[..2])?, digits(&r[2..])?),
        5 if r[2] == b':' => (digits(&r[..2])?, digits(&r[3..])?),
        _ => return None,
    };
    if hh > 18 || mm > 59 {
        return None;
    }
    Some(sign * i64::from(hh * 3600 + mm * 60))
}

/// Year and month (1–12) of a UTC microsecond timestamp.
pub(crate) fn ts_year_month(us: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(us.div_euclid(86_400_000_000));
    (y, m)
}

/// Year, month, day of a day number.
pub(crate) fn date_ymd(days: i64) -> (i64, u32, u32) {
    civil_from_days(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions {
            epoch_unit: EpochUnit::Auto,
            timestamp_formats: vec!["%d/%m/%Y %H:%M".into()],
        }
    }
    fn ts(s: &str) -> Result<i64, String> {
        parse_timestamp(s.as_bytes(), &opts())
    }

    #[test]
    fn timestamps_in_common_shapes() {
        let base = 1_569_888_000_000_000; // 2019-10-01T00:00:00Z
        assert_eq!(ts("2019-10-01 00:00:00 UTC"), Ok(base));
        assert_eq!(ts("2019-10-01T00:00:00Z"), Ok(base));
        assert_eq!(ts("2019-10-01T02:00:00+02:00"), Ok(base));
        assert_eq!(ts("2019-09-30T19:00:00-0500"), Ok(base));
        assert_eq!(ts("2019-10-01T00:00:00.123456789Z"), Ok(base + 123_456));
        assert_eq!(ts("2019-10-01 00:00:00.5"), Ok(base + 500_000));
        assert_eq!(ts("2019-10-01"), Ok(base));
        assert_eq!(ts("1569888000"), Ok(base));
        assert_eq!(ts("1569888000000"), Ok(base));
        assert_eq!(ts("01/10/2019 00:00"), Ok(base));
        assert!(ts("01/10/0000 00:00").is_err());
        assert_eq!(ts("1969-12-31T23:59:59Z"), Ok(-1_000_000));
        for bad in [
            "2019-13-01 00:00:00",
            "2019-02-30",
            "2019-10-01 24:00:00",
            "yesterday",
            "",
            "-",
            "2019-10-01T00:00:00+25:00",
        ] {
            assert!(ts(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn civil_round_trip() {
        for d in [-719_162i64, -1, 0, 1, 18_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(ts_year_month(1_569_888_000_000_000), (2019, 10));
        assert_eq!(ts_year_month(-1), (1969, 12));
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_decimal(b"123.45", 12, 2), Ok(12_345));
        assert_eq!(parse_decimal(b"-0.5", 12, 2), Ok(-50));
        assert_eq!(parse_decimal(b"7", 12, 2), Ok(700));
        assert_eq!(parse_decimal(b"1.230", 12, 2), Ok(123));
        assert!(parse_decimal(b"1.234", 12, 2).is_err());
        assert!(parse_decimal(b"12345678901.00", 12, 2).is_err());
        assert!(parse_decimal(b"NaN", 12, 2)
            .unwrap_err()
            .contains("cannot be stored"));
        assert!(parse_decimal(b"1e5", 12, 2).is_err());
    }

    #[test]
    fn ints_bools_dates() {
        assert_eq!(parse_i64(b"-42"), Ok(-42));
        assert!(parse_i64(b"9223372036854775808").is_err());
        assert_eq!(parse_i64(b"9223372036854775807"), Ok(i64::MAX));
        assert!(parse_i64(b"4.2").is_err());
        assert_eq!(parse_bool(b"YES"), Ok(true));
        assert!(parse_bool(b"maybe").is_err());
        assert_eq!(parse_date(b"1970-01-02"), Ok(1));
        assert!(parse_date(b"1970-1-2").is_err());
        assert_eq!(
            parse_date(b"2024-01-31T23:30:00-05:00"),
            parse_date(b"2024-02-01")
        );
        assert_eq!(
            parse_date(b"2024-01-31 10:00:00"),
            parse_date(b"2024-01-31")
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let o = opts();
            for ty in [ColumnType::Int, ColumnType::Float, ColumnType::Bool, ColumnType::Date, ColumnType::Timestamp,
                       ColumnType::Binary, ColumnType::String, ColumnType::Decimal { precision: 38, scale: 10 }] {
                let _ = parse_text(&b, ty, &o);
            }
        }
    }
}

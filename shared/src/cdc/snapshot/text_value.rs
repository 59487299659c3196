//! A minimal stand-in for `super::super::value` (written in parallel): the scalar rules of
//! CDC.md. Arrays keep their PostgreSQL text form here until the shared conversion replaces
//! this file.

use base64::Engine as _;
use serde_json::Value;

const BOOL: u32 = 16;
const BYTEA: u32 = 17;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const JSONB: u32 = 3802;

pub(super) fn text_to_json(type_oid: u32, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("not a valid {what} text");
    Ok(match type_oid {
        BOOL => Value::Bool(text == "t"),
        INT2 | INT4 | INT8 => text.parse::<i64>().map_err(|_| bad("integer"))?.into(),
        OID => text.parse::<u32>().map_err(|_| bad("oid"))?.into(),
        FLOAT4 | FLOAT8 => {
            let f = text.parse::<f64>().map_err(|_| bad("float"))?;
            // NaN and the infinities have no JSON number: kept as PostgreSQL writes them.
            serde_json::Number::from_f64(f)
                .map_or_else(|| Value::String(text.into()), Value::Number)
        }
        JSON | JSONB => serde_json::from_str(text).map_err(|_| bad("json"))?,
        BYTEA => {
            let hex_digits = text.strip_prefix("\\x").ok_or_else(|| bad("bytea hex"))?;
            let bytes = hex::decode(hex_digits).map_err(|_| bad("bytea hex"))?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        TIMESTAMP | TIMESTAMPTZ => Value::String(iso_utc(text)),
        _ => Value::String(text.into()),
    })
}

/// `2026-11-26 09:00:00.1234+00` (ISO style, UTC session) → `2026-11-26T09:00:00.123400Z`.
/// `infinity`, BC dates and anything unexpected are kept as they are.
pub(super) fn iso_utc(text: &str) -> String {
    let plain = text.strip_suffix("+00").unwrap_or(text);
    let Some((date, time)) = plain.split_once(' ') else {
        return text.into();
    };
    if time.len() < 8
        || !time
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        return text.into();
    }
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    format!("{date}T{whole}.{fraction:0<6}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_are_typed_per_the_contract() {
        assert_eq!(text_to_json(23, "-7").unwrap(), json!(-7));
        assert_eq!(
            text_to_json(20, "9007199254740993").unwrap(),
            json!(9_007_199_254_740_993_i64)
        );
        assert_eq!(text_to_json(16, "t").unwrap(), json!(true));
        assert_eq!(text_to_json(701, "1.5").unwrap(), json!(1.5));
        assert_eq!(text_to_json(701, "NaN").unwrap(), json!("NaN"));
        assert_eq!(text_to_json(700, "-Infinity").unwrap(), json!("-Infinity"));
        assert_eq!(text_to_json(1700, "12.500").unwrap(), json!("12.500"));
        assert_eq!(
            text_to_json(3802, r#"{"a": [1]}"#).unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(text_to_json(17, "\\x00ff10").unwrap(), json!("AP8Q"));
        assert_eq!(
            text_to_json(1082, "2026-11-26").unwrap(),
            json!("2026-11-26")
        );
        assert!(text_to_json(23, "x").is_err());
        assert!(text_to_json(17, "00ff").is_err());
    }

    #[test]
    fn timestamps_become_iso_utc_with_microseconds() {
        assert_eq!(
            iso_utc("2026-11-26 09:00:00.123456+00"),
            "2026-11-26T09:00:00.123456Z"
        );
        assert_eq!(
            iso_utc("2026-11-26 09:00:00.12+00"),
            "2026-11-26T09:00:00.120000Z"
        );
        assert_eq!(
            iso_utc("2026-11-26 09:00:00"),
            "2026-11-26T09:00:00.000000Z"
        );
        assert_eq!(iso_utc("infinity"), "infinity");
        assert_eq!(
            iso_utc("0044-03-15 12:00:00+00 BC"),
            "0044-03-15 12:00:00+00 BC"
        );
    }
}

//! The fast writer's values against the Map path's: for every text of every type, the JSON
//! it writes reads back as the `Value` that `value::text_to_json` builds, or both refuse the
//! text with the same error.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::cdc::value::tests::{
    array_cases, junk_text, scalar_cases, timestamp_cases, BAD_TIMESTAMPS, INVALID, TYPED,
};
use crate::cdc::value::text_to_json;

/// The fast writer's JSON of one value, read back; a panic when it wrote something that is
/// not JSON.
pub(crate) fn fast(type_oid: u32, text: &str) -> Result<Value, ValueError> {
    let mut out = Vec::new();
    write_value(&mut out, type_oid, text)?;
    Ok(serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "type {type_oid} text {text:?} wrote {:?}: {e}",
            String::from_utf8_lossy(&out)
        )
    }))
}

/// The same value as the Map path's (or the same error), compared as `Value`s.
fn assert_same(type_oid: u32, text: &str) {
    assert_eq!(
        fast(type_oid, text),
        text_to_json(type_oid, text),
        "type {type_oid} text {text:?}"
    );
}

/// As [`assert_same`], but the Map path's value goes through its JSON text first: what a
/// reader of the events sees. serde_json reads floats without correct rounding (the
/// `float_roundtrip` feature is off), so for any double both texts can read back one unit
/// in the last place away from the exact value, and the same way for both.
fn assert_same_as_read(type_oid: u32, text: &str) -> Result<(), TestCaseError> {
    let want = text_to_json(type_oid, text)
        .map(|v| serde_json::from_str::<Value>(&v.to_string()).expect("the Map path writes JSON"));
    prop_assert_eq!(
        fast(type_oid, text),
        want,
        "type {} text {:?}",
        type_oid,
        text
    );
    Ok(())
}

/// Every case of value.rs's tests, and the forms the fast writer treats itself.
#[test]
fn type_test_data_gives_the_map_paths_values() {
    for (t, text, _) in scalar_cases().into_iter().chain(array_cases()) {
        assert_same(t, text);
    }
    for (t, text, _) in timestamp_cases() {
        assert_same(t, text);
    }
    for (t, text) in INVALID {
        assert_same(t, text);
    }
    for text in BAD_TIMESTAMPS {
        assert_same(oid::TIMESTAMPTZ, text);
        assert_same(oid::TIMESTAMP, text);
    }
    let ints = [
        "0",
        "-0",
        "+5",
        "007",
        "-007",
        "",
        "-",
        "1 ",
        " 1",
        "12x",
        "-9223372036854775808",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "999999999999999999",
        "99999999999999999999",
    ];
    for text in ints {
        for t in [oid::INT2, oid::INT4, oid::INT8, oid::OID] {
            assert_same(t, text);
        }
    }
    for text in ["4294967295", "4294967296", "-1", "123456789", "1234567890"] {
        assert_same(oid::OID, text);
    }
    let floats = [
        "0",
        "-0",
        "100",
        "-100",
        "1.5",
        "1e+30",
        "1e-07",
        "1E5",
        "1.5e+300",
        "1e300",
        "1e-300",
        "1e301",
        "1e400",
        "-1e400",
        "1e-400",
        "5e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e+308",
        "1.7976931348623159e+308",
        ".5",
        "+1",
        "1.",
        "1e",
        "1e+",
        "01",
        "0x10",
        "inf",
        "-inf",
        "infinity",
        "nan",
        "NaN",
        "Infinity",
        "-Infinity",
        "0.30000000000000004",
        "3.4028235e+38",
        "1.1",
        "123456789012345678901234567890",
        "1e0001",
        "1e999",
        "0.000001",
        "-1.5e-5",
    ];
    for text in floats {
        assert_same(oid::FLOAT4, text);
        assert_same(oid::FLOAT8, text);
    }
    for text in ["t", "f", "true", "", "T"] {
        assert_same(oid::BOOL, text);
    }
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let jsons = [
        "{\n  \"a\": 1,\n\t\"b\": [true, null]\r\n}",
        "[1e400]",
        "[1e308]",
        "\"\\ud800\"",
        "\"\\ud83d\\ude00\"",
        "\"\\u0000\"",
        "{\"a\":1,\"a\":2}",
        " 42 ",
        "\"line\\nbreak\"",
        "{\"k\": \"v\"} x",
        "[1,]",
        "\"raw\ttab\"",
        "123456789012345678901234567890",
        "-0",
        "1.0",
        &deep,
    ];
    for text in jsons {
        assert_same(oid::JSON, text);
        assert_same(oid::JSONB, text);
    }
    for text in [
        "\\x",
        "\\x00ff10",
        "\\xABCDEF",
        "\\xzz",
        "\\x0",
        "x00",
        "\\x00ff10ab",
    ] {
        assert_same(oid::BYTEA, text);
    }
    let texts = [
        "",
        "plain",
        "q\"uote",
        "back\\slash",
        "\u{0}\u{1}\u{1f}\u{7f}",
        "é✓😀",
    ];
    for text in texts {
        assert_same(oid::TEXT, text);
        assert_same(oid::NUMERIC, text);
        assert_same(16391, text);
    }
    let arrays = [
        (1009, "{\"a\\tb\",\"new\nline\",\" pad \",pad ,x\\ y}"),
        (1009, "{\"a\\\\\"}"),
        (1009, "{\"unterminated}"),
        (1009, "{a\\}"),
        (1007, "{{1,2},{3}}"),
        (1007, "{1,-0}"),
        (1007, "{ NULL , null,Null}"),
        (1022, "{0,-0,1e+30,1e400}"),
        (1000, "{t,x}"),
        (1001, "{\"\\\\xzz\"}"),
        (3807, "{\"{\\\"a\\\": [1, 2]}\",\"[1e400]\"}"),
        (1185, "{\"2026-11-26 01:30:00.25-08\",infinity}"),
        (1007, "[1:2]={1,2}x"),
    ];
    for (t, text) in arrays {
        assert_same(t, text);
    }
}

#[test]
fn strings_escape_every_byte_that_needs_it() {
    for b in 0u8..0x80 {
        for len in [1, 7, 8, 9, 17] {
            let mut s = "a".repeat(len);
            s.insert(len / 2, char::from(b));
            let mut out = Vec::new();
            write_str(&mut out, s.as_bytes());
            let back: String = serde_json::from_slice(&out).expect("a JSON string");
            assert_eq!(back, s, "byte {b:#x}");
            // Nothing but the string: no raw control byte left in it.
            assert!(!out.iter().any(|&c| c < 0x20), "byte {b:#x}");
        }
    }
}

/// Strings of the characters that matter to the escaper, around its 8-byte steps.
fn tricky_string() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => proptest::sample::select(vec!['a', ' ', '"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '😀']),
        1 => any::<char>(),
    ];
    proptest::collection::vec(chars, 0..40).prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_string_round_trips(s in tricky_string()) {
        let mut out = Vec::new();
        write_str(&mut out, s.as_bytes());
        let back: String = serde_json::from_slice(&out).expect("a JSON string");
        prop_assert_eq!(back, s);
    }

    /// The word test agrees with a byte-by-byte one.
    #[test]
    fn word_test_is_exact(bytes in any::<[u8; 8]>()) {
        let slow = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        prop_assert_eq!(needs_escape(u64::from_le_bytes(bytes)), slow);
    }

    #[test]
    fn decimal_as_std(n in any::<u64>()) {
        let mut out = Vec::new();
        write_u64(&mut out, n);
        prop_assert_eq!(out, n.to_string().into_bytes());
    }

    /// Any short text of the value forms' characters, for every typed OID.
    #[test]
    fn any_text_same_as_map_path(t in proptest::sample::select(TYPED.to_vec()), text in junk_text()) {
        assert_same_as_read(t, &text)?;
    }

    /// Texts as PostgreSQL writes them, and near misses, for every type.
    #[test]
    fn pg_texts_same_as_map_path((t, text) in any_type_text()) {
        if let Ok(text) = std::str::from_utf8(&text) {
            assert_same_as_read(t, text)?;
        }
    }
}

/// The column types of the random tests: every typed OID, arrays of several element types,
/// and types sent as strings.
pub(crate) const TYPES: [u32; 23] = [
    oid::BOOL,
    oid::BYTEA,
    oid::INT2,
    oid::INT4,
    oid::INT8,
    oid::TEXT,
    oid::OID,
    oid::JSON,
    oid::FLOAT4,
    oid::FLOAT8,
    oid::VARCHAR,
    oid::DATE,
    oid::TIMESTAMP,
    oid::TIMESTAMPTZ,
    oid::NUMERIC,
    oid::UUID,
    oid::JSONB,
    1007,
    1009,
    1185,
    3807,
    1022,
    16391,
];

pub(crate) fn any_type_text() -> impl Strategy<Value = (u32, Vec<u8>)> {
    proptest::sample::select(TYPES.to_vec()).prop_flat_map(|t| (Just(t), pg_text(t)))
}

#[path = "fastjson_gen.rs"]
mod gen;
pub(crate) use gen::pg_text;

//! Random column texts for the fast path's tests: mostly what PostgreSQL's output functions
//! write (under the session settings of `copy.rs`), some near misses that the typing must
//! refuse the same way on both paths, and now and then bytes that are not UTF-8.

use proptest::prelude::*;
use serde_json::Value;

use crate::cdc::value::oid;

/// A text for a column of type `t`.
pub(crate) fn pg_text(t: u32) -> BoxedStrategy<Vec<u8>> {
    let text = match t {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => prop_oneof![
            4 => any::<i64>().prop_map(|n| n.to_string()),
            2 => any::<i16>().prop_map(|n| n.to_string()),
            2 => any::<u32>().prop_map(|n| n.to_string()),
            1 => odd(&["0", "-0", "+5", "007", "9223372036854775808", "", "1 "]),
        ]
        .boxed(),
        oid::FLOAT4 | oid::FLOAT8 => float_text().boxed(),
        oid::BOOL => odd(&["t", "f", "t", "f", "true", ""]).boxed(),
        oid::TIMESTAMPTZ => timestamp_text(true).boxed(),
        oid::TIMESTAMP => timestamp_text(false).boxed(),
        oid::JSON => prop_oneof![
            3 => json_value().prop_map(|v| v.to_string()),
            2 => json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()),
            1 => odd(&["[1e400]", "\"\\ud800\"", " 42 ", "{\"a\":1,\"a\":2}", "[1,]", "nul"]),
        ]
        .boxed(),
        oid::JSONB => prop_oneof![
            4 => json_value().prop_map(|v| v.to_string()),
            1 => odd(&["[1e400]", "{\"a\": [1, 2.5, \"x\"]}", "1.0"]),
        ]
        .boxed(),
        oid::BYTEA => prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..20)
                .prop_map(|b| format!("\\x{}", hex::encode(b))),
            1 => odd(&["\\x0", "\\xzz", "00", ""]),
        ]
        .boxed(),
        1007 => array_of(any::<i32>().prop_map(|n| n.to_string()).boxed(), false),
        1022 => array_of(float_text().boxed(), false),
        1185 => array_of(timestamp_text(true).boxed(), true),
        3807 => array_of(json_value().prop_map(|v| v.to_string()).boxed(), true),
        1009 => array_of(string().boxed(), true),
        _ => string().boxed(),
    };
    prop_oneof![
        30 => text.prop_map(String::into_bytes),
        1 => Just(b"\xff1".to_vec()),
    ]
    .boxed()
}

fn odd(texts: &[&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(texts.to_vec()).prop_map(str::to_string)
}

/// Any characters, the ones that need escaping often.
fn string() -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        3 => proptest::sample::select(vec!['a', 'Z', ' ', '"', '\\', '\n', '\t', '\u{1}', 'é', '😀', ',', '{', '}']),
        1 => any::<char>(),
    ];
    proptest::collection::vec(chars, 0..24).prop_map(|c| c.into_iter().collect())
}

/// A float8 as PostgreSQL 12+ writes it (shortest digits, an exponent below 1e-4 and from
/// 1e15), and the special and odd forms.
fn float_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(pg_float),
        2 => (-1000i32..1000, 0u32..3).prop_map(|(m, e)| pg_float(f64::from(m) / 10f64.powi(e as i32))),
        2 => odd(&["NaN", "Infinity", "-Infinity", "0", "-0", "1e+30", "1e400", "1e-400", ".5", "1."]),
    ]
}

fn pg_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if (-4..15).contains(&exp) {
        return f.to_string();
    }
    let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

fn timestamp_text(with_tz: bool) -> impl Strategy<Value = String> {
    let offsets = if with_tz {
        vec!["+00", "+00", "-08", "+05:30", "+00:20:00", "+0", "x"]
    } else {
        vec![""]
    };
    let micros = prop_oneof![
        Just(String::new()),
        (0u32..1_000_000, 1usize..7)
            .prop_map(|(n, digits)| format!(".{}", &format!("{n:06}")[..digits]))
    ];
    let parts = (
        1u32..10000,
        1u32..13,
        1u32..32,
        0u32..24,
        0u32..60,
        0u32..60,
        micros,
        proptest::sample::select(offsets),
    );
    prop_oneof![
        8 => parts.prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}{off}")
        }),
        1 => odd(&["infinity", "-infinity", "0044-03-15 12:00:00+00 BC", "2026-11-26"]),
    ]
}

/// JSON values of a few levels, numbers of every kind among them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i32..1000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
        string().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((string(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A one-dimensional array's text: NULLs among the elements, each element quoted (with `"`
/// and `\` escaped) when `quote`, or when it must be.
fn array_of(element: BoxedStrategy<String>, quote: bool) -> BoxedStrategy<String> {
    let items = proptest::collection::vec(proptest::option::weighted(0.85, element), 0..5);
    prop_oneof![
        8 => items.prop_map(move |items| {
            let texts: Vec<String> = items
                .into_iter()
                .map(|item| match item {
                    None => "NULL".to_string(),
                    Some(s) if quote || s.is_empty() || s.contains([',', '{', '}', '"', '\\', ' ']) => {
                        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                    Some(s) => s,
                })
                .collect();
            format!("{{{}}}", texts.join(","))
        }),
        1 => crate::cdc::value::tests::junk_text(),
    ]
    .boxed()
}

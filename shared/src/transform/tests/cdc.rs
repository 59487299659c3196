//! Change events (`format = "cdc"`) through the engine: one row per change with its built-in
//! columns, the latest `_lsn` of a key kept, TOAST values merged from the versions dedup drops,
//! the rules of each kind of change, and bad lines quarantined while good ones land.

use serde_json::{json, Value};

use super::*;

const ORDERS: &str = r#"
[cdc]
source_url_env = "SOURCE_URL"
slot = "s1"
publication = "p1"
stream = "changes"

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "cdc"
cdc = { schema = "public", table = "orders" }
dedup = { key = ["id"] }
catalog = { database = "test_db" }
output = { batch_rows = BATCH }
columns = [
  { name = "id", type = "int", required = true },
  { name = "name", type = "string", required = true },
  { name = "amount", type = "decimal(12,2)" },
  { name = "big", type = "string" },
]
"#;

const KEY: &str = "raw/cdc/orders/shard-0/1-9.jsonl";

fn orders(batch: usize) -> Transformer {
    transformer(&ORDERS.replace("BATCH", &batch.to_string()))
}

/// One change event line (docs/CDC.md), committed at second `lsn % 60` of a fixed minute.
fn ev(op: &str, lsn: i64, before: Value, after: Value, unchanged: &[&str]) -> String {
    let mut e = json!({
        "op": op, "before": before, "after": after,
        "source": {"db": "shop", "schema": "public", "table": "orders", "lsn": lsn, "txid": 7,
                   "commit_ts": format!("2026-11-26T09:00:{:02}.000001Z", lsn % 60)}
    });
    if !unchanged.is_empty() {
        e["unchanged"] = json!(unchanged);
    }
    e.to_string()
}

/// A full row image.
fn row(id: i64, name: &str, amount: &str, big: &str) -> Value {
    json!({"id": id, "name": name, "amount": amount, "big": big})
}

/// A rendered output row.
fn out(id: &str, name: &str, amount: &str, big: &str, op: &str, lsn: i64, unch: &str) -> String {
    format!(
        "id={id}|name={name}|amount={amount}|big={big}|_op={op}|_lsn={lsn}|_commit_ts=2026-11-26T09:00:{:02}.000001Z|_unchanged={unch}",
        lsn % 60
    )
}

/// Transforms `lines` as one object; the rows (sorted) and the summary.
async fn run(t: &Transformer, lines: &[String]) -> (Lake, Vec<String>, TransformSummary) {
    let l = lake();
    put(&l, KEY, (lines.join("\n") + "\n").as_bytes()).await;
    let s = t
        .transform_object(&l.store, &l.catalog, KEY, None)
        .await
        .expect("transform");
    balanced(&s.counts);
    let mut got = rows(&l, "orders").await;
    got.sort();
    (l, got, s)
}

#[tokio::test]
async fn every_op_becomes_one_row_with_its_built_in_columns() {
    let lines = [
        ev("c", 10, Value::Null, row(1, "a", "12.50", "x"), &[]),
        ev("u", 11, json!({"id": 2}), row(2, "b", "-0.5", "y"), &[]),
        ev("d", 12, json!({"id": 3, "name": "gone"}), Value::Null, &[]),
        ev("r", 13, Value::Null, row(4, "d", "7", "z"), &[]),
        ev("t", 14, Value::Null, Value::Null, &[]),
    ];
    let (_l, got, s) = run(&orders(8192), &lines).await;
    assert_eq!(s.counts.rows_written, 5);
    assert_eq!(
        got,
        [
            out("1", "a", "12.50", "x", "c", 10, "∅"),
            out("2", "b", "-0.50", "y", "u", 11, "∅"),
            // A delete's values are its `before`: the key, more with REPLICA IDENTITY FULL.
            out("3", "gone", "∅", "∅", "d", 12, "∅"),
            out("4", "d", "7.00", "z", "r", 13, "∅"),
            // A TRUNCATE has no source values at all.
            out("∅", "∅", "∅", "∅", "t", 14, "∅"),
        ]
    );
}

#[tokio::test]
async fn a_key_change_is_a_delete_and_an_insert_at_one_lsn() {
    let lines = [
        ev("c", 10, Value::Null, row(1, "a", "1", "x"), &[]),
        ev("d", 20, json!({"id": 1}), Value::Null, &[]),
        ev("c", 20, Value::Null, row(9, "a", "1", "x"), &[]),
    ];
    let (_l, got, s) = run(&orders(8192), &lines).await;
    assert_eq!((s.counts.rows_written, s.counts.rows_duplicate), (2, 1));
    assert_eq!(
        got,
        [
            out("1", "∅", "∅", "∅", "d", 20, "∅"),
            out("9", "a", "1.00", "x", "c", 20, "∅"),
        ]
    );
}

#[tokio::test]
async fn the_latest_lsn_wins_whatever_the_order_of_the_lines_and_batches() {
    // A Kinesis retry put the first change last; a re-sent record appears twice.
    let lines = [
        ev("u", 30, Value::Null, row(1, "third", "3", "x"), &[]),
        ev("u", 20, Value::Null, row(1, "second", "2", "x"), &[]),
        ev("u", 30, Value::Null, row(1, "third", "3", "x"), &[]),
        ev("c", 10, Value::Null, row(1, "first", "1", "x"), &[]),
        ev("c", 5, Value::Null, row(2, "other", "1", "x"), &[]),
    ];
    for batch in [1, 3, 8192] {
        let (_l, got, s) = run(&orders(batch), &lines).await;
        assert_eq!((s.counts.rows_written, s.counts.rows_duplicate), (2, 3));
        assert_eq!(
            got,
            [
                out("1", "third", "3.00", "x", "u", 30, "∅"),
                out("2", "other", "1.00", "x", "c", 5, "∅"),
            ],
            "batch_rows {batch}"
        );
    }
}

#[tokio::test]
async fn an_unchanged_toast_value_is_taken_from_the_version_dedup_drops() {
    let upd = |id, lsn, name: &str| {
        ev(
            "u",
            lsn,
            Value::Null,
            json!({"id": id, "name": name, "amount": "1"}),
            &["big"],
        )
    };
    let lines = [
        // 1: an insert, then two updates leaving `big` out (the later one listed first).
        upd(1, 30, "v3"),
        ev("c", 10, Value::Null, row(1, "v1", "1", "kept"), &[]),
        upd(1, 20, "v2"),
        // 2: no earlier version in the object: the mark stays for the loader.
        upd(2, 40, "only"),
        // 3: a delete and a new insert between: the value after the re-insert.
        ev("c", 11, Value::Null, row(3, "a", "1", "old"), &[]),
        ev("d", 12, json!({"id": 3}), Value::Null, &[]),
        ev("c", 13, Value::Null, row(3, "b", "1", "new"), &[]),
        upd(3, 14, "c"),
        // 4: a delete with no re-insert: the value before it is void.
        ev("c", 15, Value::Null, row(4, "a", "1", "void"), &[]),
        ev("d", 16, json!({"id": 4}), Value::Null, &[]),
        upd(4, 17, "b"),
    ];
    for batch in [1, 8192] {
        let (_l, got, s) = run(&orders(batch), &lines).await;
        assert_eq!(s.counts.rows_written, 4);
        assert_eq!(
            got,
            [
                out("1", "v3", "1.00", "kept", "u", 30, "∅"),
                out("2", "only", "1.00", "∅", "u", 40, "big"),
                out("3", "c", "1.00", "new", "u", 14, "∅"),
                out("4", "b", "1.00", "∅", "u", 17, "big"),
            ],
            "batch_rows {batch}"
        );
    }
}

#[tokio::test]
async fn a_truncate_voids_older_toast_values_and_is_never_a_duplicate() {
    let lines = [
        ev(
            "c",
            10,
            Value::Null,
            row(1, "a", "1", "before truncate"),
            &[],
        ),
        ev("t", 15, Value::Null, Value::Null, &[]),
        ev("t", 16, Value::Null, Value::Null, &[]),
        ev(
            "u",
            20,
            Value::Null,
            json!({"id": 1, "name": "b"}),
            &["big"],
        ),
    ];
    let (_l, got, s) = run(&orders(8192), &lines).await;
    assert_eq!((s.counts.rows_written, s.counts.rows_duplicate), (3, 1));
    assert_eq!(
        got,
        [
            out("1", "b", "∅", "∅", "u", 20, "big"),
            out("∅", "∅", "∅", "∅", "t", 15, "∅"),
            out("∅", "∅", "∅", "∅", "t", 16, "∅"),
        ]
    );
}

#[tokio::test]
async fn required_columns_bind_inserts_and_updates_and_a_delete_needs_only_its_key() {
    let lines = [
        // Line 1: an insert without its required `name`.
        ev("c", 10, Value::Null, json!({"id": 1, "amount": "1"}), &[]),
        // Line 2: an update leaving the required `name` out as unchanged TOAST: kept, marked.
        ev(
            "u",
            11,
            Value::Null,
            json!({"id": 2, "amount": "1"}),
            &["name"],
        ),
        // Line 3: a delete with the key only.
        ev("d", 12, json!({"id": 3}), Value::Null, &[]),
        // Line 4: a delete without its key.
        ev("d", 13, json!({"name": "x"}), Value::Null, &[]),
        // Line 5: a TRUNCATE: no key, no required value, and it is kept.
        ev("t", 14, Value::Null, Value::Null, &[]),
    ];
    let (l, got, s) = run(&orders(8192), &lines).await;
    assert_eq!((s.counts.rows_written, s.counts.rows_quarantined), (3, 2));
    assert_eq!(
        got,
        [
            out("2", "∅", "1.00", "∅", "u", 11, "name"),
            out("3", "∅", "∅", "∅", "d", 12, "∅"),
            out("∅", "∅", "∅", "∅", "t", 14, "∅"),
        ]
    );
    let q = quarantine(&l, &s).await;
    let shown: Vec<(u64, &str)> = q
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["column"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(shown, [(1, "name"), (4, "id")]);
    assert!(
        q[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("required")),
        "{q:?}"
    );
    assert!(
        q[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("needs its key")),
        "{q:?}"
    );
}

#[tokio::test]
async fn a_nan_numeric_is_quarantined_in_a_decimal_column_and_kept_in_a_string_one() {
    let lines = [
        ev("c", 10, Value::Null, row(1, "a", "NaN", "x"), &[]),
        ev("c", 11, Value::Null, row(2, "b", "-Infinity", "x"), &[]),
        ev("c", 12, Value::Null, row(3, "c", "2.5", "x"), &[]),
    ];
    let (l, got, s) = run(&orders(8192), &lines).await;
    assert_eq!(got, [out("3", "c", "2.50", "x", "c", 12, "∅")]);
    let q = quarantine(&l, &s).await;
    assert_eq!(q.len(), 2);
    for (r, line) in q.iter().zip([1, 2]) {
        assert_eq!(r["object"], KEY);
        assert_eq!(r["line"], line);
        assert_eq!(r["column"], "amount");
        assert!(
            r["reason"]
                .as_str()
                .is_some_and(|x| x.contains("type the column string")),
            "{r}"
        );
    }
    // Typed string, the column keeps them as they are.
    let t = transformer(
        &ORDERS
            .replace("BATCH", "8192")
            .replace("type = \"decimal(12,2)\"", "type = \"string\""),
    );
    let (_l, got, _s) = run(&t, &lines).await;
    assert_eq!(
        got.iter()
            .map(|r| r.split('|').nth(2).unwrap_or(""))
            .collect::<Vec<_>>(),
        ["amount=NaN", "amount=-Infinity", "amount=2.5"]
    );
}

#[tokio::test]
async fn bad_lines_go_to_quarantine_with_the_reason_and_good_ones_land() {
    let good = ev("c", 10, Value::Null, row(1, "a", "1", "x"), &[]);
    let mut wrong_lsn = serde_json::from_str::<Value>(&good).expect("json");
    wrong_lsn["source"]["lsn"] = json!("0/16B3748");
    let mut negative = wrong_lsn.clone();
    negative["source"]["lsn"] = json!(-1);
    let mut other_table = wrong_lsn.clone();
    other_table["source"]["lsn"] = json!(11);
    other_table["source"]["table"] = json!("customers");
    let lines = [
        "{not json".to_string(), // 1
        json!({"before": null, "after": {"id": 2}, "source": {"lsn": 1}}).to_string(), // 2
        json!({"op": "c", "after": {"id": 2, "name": "x"}}).to_string(), // 3
        wrong_lsn.to_string(),   // 4
        ev("x", 12, Value::Null, row(2, "a", "1", "x"), &[]), // 5
        negative.to_string(),    // 6
        ev("u", 13, Value::Null, Value::Null, &[]), // 7
        other_table.to_string(), // 8
        json!({"spill": {"key": "spill/cdc/orders/9-0.json", "bytes": 2000000},
               "source": {"lsn": 9}})
        .to_string(), // 9
        good,                    // 10
    ];
    let (l, got, s) = run(&orders(3), &lines).await;
    assert_eq!(got, [out("1", "a", "1.00", "x", "c", 10, "∅")]);
    assert_eq!((s.counts.rows_read, s.counts.rows_quarantined), (10, 9));
    let q = quarantine(&l, &s).await;
    let shown: Vec<(u64, Option<&str>)> = q
        .iter()
        .map(|r| (r["line"].as_u64().unwrap_or(0), r["column"].as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (1, None),
            (2, None),
            (3, None),
            (4, Some("_lsn")),
            (5, Some("_op")),
            (6, Some("_lsn")),
            (7, None),
            (8, None),
            (9, None),
        ]
    );
    let reasons: Vec<&str> = q
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    for (i, says) in [
        "bad JSON",
        "no `op`",
        "no `source`",
        "found the string `0/16B3748`",
        "unknown op `x`",
        "found -1",
        "needs its `after` row",
        "for `public.customers`, not this table's source `public.orders`",
        "a spill pointer",
    ]
    .iter()
    .enumerate()
    {
        assert!(reasons[i].contains(says), "line {}: {}", i + 1, reasons[i]);
    }
    assert!(q.iter().all(|r| r["object"] == KEY));
}

#[tokio::test]
async fn values_are_typed_exactly() {
    let text = ORDERS.replace("BATCH", "8192").replace(
        "{ name = \"big\", type = \"string\" },",
        r#"{ name = "big", type = "string" },
  { name = "doc", type = "string" },
  { name = "tags", type = "string" },
  { name = "bytes", type = "binary" },
  { name = "flag", type = "bool" },
  { name = "at", type = "timestamp" },
  { name = "day", type = "date" },
  { name = "ratio", type = "float" },
  { name = "delivery", type = "json", fields = [{ path = "geo.city", type = "string" }] },"#,
    );
    let after = json!({
        "id": 1, "name": "  padded  ", "amount": "0012.30", "big": "",
        "doc": {"b": [1, 2], "a": "x"}, "tags": ["x", null, "y"], "bytes": "AAEC/w==",
        "flag": true, "at": "2026-11-26T09:00:00.123456Z", "day": "2026-11-26", "ratio": "NaN",
        "delivery": {"geo": {"city": "Köln"}}
    });
    let (_l, got, _s) = run(&transformer(&text), &[ev("c", 10, Value::Null, after, &[])]).await;
    assert_eq!(
        got,
        [
            "id=1|name=  padded  |amount=12.30|big=|doc={\"a\":\"x\",\"b\":[1,2]}|tags=[\"x\",null,\"y\"]|bytes=000102ff|flag=true|at=2026-11-26T09:00:00.123456Z|day=2026-11-26|ratio=NaN|delivery_geo_city=Köln|_op=c|_lsn=10|_commit_ts=2026-11-26T09:00:10.000001Z|_unchanged=∅"
        ]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Arbitrary lines between real events, arbitrary batch sizes: never a panic, every line
    /// accounted for, and the real events' rows the same whatever the batch size.
    #[test]
    fn any_lines_and_batches_never_panic_and_counts_balance(
        noise in proptest::collection::vec("[0-9a-z,\"{}:\\[\\] .\\-]{0,40}", 0..8),
        ops in proptest::collection::vec((0usize..5, 0i64..4, 1i64..40, proptest::bool::ANY), 0..12),
        batch in 1usize..6,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let mut lines: Vec<String> = ops
                .iter()
                .map(|&(op, id, lsn, toast)| {
                    let op = ["c", "u", "d", "t", "r"][op];
                    let unchanged: &[&str] = if toast { &["big"] } else { &[] };
                    let img = json!({"id": id, "name": format!("n{lsn}"), "amount": "1"});
                    match op {
                        "d" => ev(op, lsn, json!({"id": id}), Value::Null, &[]),
                        "t" => ev(op, lsn, Value::Null, Value::Null, &[]),
                        _ => ev(op, lsn, Value::Null, img, unchanged),
                    }
                })
                .collect();
            let clean = run(&orders(8192), &lines).await.1;
            assert_eq!(run(&orders(batch), &lines).await.1, clean, "batch_rows {batch}");
            lines.extend(noise);
            let l = lake();
            put(&l, KEY, lines.join("\n").as_bytes()).await;
            match orders(batch).transform_object(&l.store, &l.catalog, KEY, None).await {
                Ok(s) => balanced(&s.counts),
                Err(e) => assert_eq!(e.kind(), ErrorKind::BadInput, "{e}"),
            }
        });
    }
}

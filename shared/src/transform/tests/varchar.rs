//! Redshift's VARCHAR limit: a table with a warehouse section quarantines a row whose output
//! string is over 65,535 bytes (after trimming, hashing and JSON flattening); a table without
//! one keeps it.

use super::*;
use crate::warehouse::{REDSHIFT_VARBYTE_MAX_BYTES, REDSHIFT_VARCHAR_MAX_BYTES};

const NOTES: &str = r#"
[hash_key]
file = "unused.key"

[[tables]]
name = "notes"
raw_prefix = "raw/notes/"
format = "jsonl"
partition_by = "ts"
catalog = { database = "test_db" }
WAREHOUSE

[[tables.columns]]
name = "id"
type = "int"
required = true

[[tables.columns]]
name = "ts"
type = "timestamp"
required = true

[[tables.columns]]
name = "body"
type = "string"

[[tables.columns]]
name = "email"
type = "string"
pii = { action = "hash" }

[[tables.columns]]
name = "attrs"
type = "json"
fields = [{ path = "blob", type = "string" }]
"#;

const WAREHOUSE: &str = r#"warehouse = { schema = "lake", merge_keys = ["id"] }"#;

fn notes(warehouse: bool) -> Transformer {
    transformer(&NOTES.replace("WAREHOUSE", if warehouse { WAREHOUSE } else { "" }))
}

/// One JSON line per row: `id`, a fixed `ts`, and the given extra keys.
fn line(id: i64, extra: serde_json::Value) -> String {
    let mut row = serde_json::json!({ "id": id, "ts": "2024-05-01T00:00:00Z" });
    if let (Some(r), serde_json::Value::Object(e)) = (row.as_object_mut(), extra) {
        r.extend(e);
    }
    format!("{row}\n")
}

fn input() -> String {
    let max = REDSHIFT_VARCHAR_MAX_BYTES;
    [
        line(1, serde_json::json!({ "body": "short" })),
        // 70,000 bytes: over.
        line(2, serde_json::json!({ "body": "x".repeat(70_000) })),
        // Exactly the limit: fits.
        line(3, serde_json::json!({ "body": "a".repeat(max) })),
        // 32,768 characters but 65,536 bytes of UTF-8: over (Redshift counts bytes).
        line(4, serde_json::json!({ "body": "é".repeat(32_768) })),
        // Over the limit as it comes, at the limit once trimmed: fits.
        line(
            5,
            serde_json::json!({ "body": format!("  {}  ", "b".repeat(max)) }),
        ),
        // A long value that is hashed: the output is 64 hex digits, so it fits.
        line(6, serde_json::json!({ "email": "e".repeat(70_000) })),
        // A JSON field of type string holding an object: its JSON text is the output, over.
        line(
            7,
            serde_json::json!({ "attrs": { "blob": { "k": "y".repeat(70_000) } } }),
        ),
        // The same field holding a short object: fits.
        line(8, serde_json::json!({ "attrs": { "blob": { "k": "y" } } })),
    ]
    .concat()
}

/// `id=N` of each row written, sorted.
fn ids(rows: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r.split('|').next().unwrap_or("").to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn warehouse_table_quarantines_strings_over_redshift_varchar() {
    let l = lake();
    put(&l, "raw/notes/a.jsonl", input().as_bytes()).await;
    let s = notes(true)
        .transform_object(&l.store, &l.catalog, "raw/notes/a.jsonl", None)
        .await
        .expect("transform");
    balanced(&s.counts);
    assert_eq!(
        s.counts,
        Counts {
            rows_read: 8,
            rows_written: 5,
            rows_duplicate: 0,
            rows_quarantined: 3
        }
    );
    let q: Vec<(String, u64, Option<String>, String)> = quarantine(&l, &s)
        .await
        .iter()
        .map(|r| {
            (
                r["object"].as_str().unwrap_or("").to_string(),
                r["line"].as_u64().unwrap_or(0),
                r["column"].as_str().map(String::from),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let over = |n: usize| format!("value is {n} bytes; Redshift VARCHAR holds at most 65535 bytes");
    let obj = "raw/notes/a.jsonl".to_string();
    assert_eq!(
        q,
        vec![
            (obj.clone(), 2, Some("body".into()), over(70_000)),
            (obj.clone(), 4, Some("body".into()), over(65_536)),
            (
                obj,
                7,
                Some("attrs_blob".into()),
                over(r#"{"k":""}"#.len() + 70_000)
            ),
        ]
    );
    let got = rows(&l, "notes").await;
    assert_eq!(ids(&got), ["id=1", "id=3", "id=5", "id=6", "id=8"]);
    // The values that fit are written whole.
    let row = |id: &str| got.iter().find(|r| r.starts_with(&format!("{id}|")));
    let body_of_3 = format!("|body={}|", "a".repeat(REDSHIFT_VARCHAR_MAX_BYTES));
    assert!(row("id=3").is_some_and(|r| r.contains(&body_of_3)));
    let body_of_5 = format!("|body={}|", "b".repeat(REDSHIFT_VARCHAR_MAX_BYTES));
    assert!(row("id=5").is_some_and(|r| r.contains(&body_of_5)));
    assert!(row("id=8").is_some_and(|r| r.ends_with(r#"|attrs_blob={"k":"y"}"#)));
}

#[tokio::test]
async fn table_without_warehouse_keeps_long_strings() {
    let l = lake();
    put(&l, "raw/notes/a.jsonl", input().as_bytes()).await;
    let s = notes(false)
        .transform_object(&l.store, &l.catalog, "raw/notes/a.jsonl", None)
        .await
        .expect("transform");
    assert_eq!(
        s.counts,
        Counts {
            rows_read: 8,
            rows_written: 8,
            rows_duplicate: 0,
            rows_quarantined: 0
        }
    );
    assert_eq!(s.quarantine_key, None);
    let got = rows(&l, "notes").await;
    assert_eq!(
        ids(&got),
        ["id=1", "id=2", "id=3", "id=4", "id=5", "id=6", "id=7", "id=8"]
    );
    let body_of_2 = format!("|body={}|", "x".repeat(70_000));
    assert!(got
        .iter()
        .any(|r| r.starts_with("id=2|") && r.contains(&body_of_2)));
}

/// Redshift's VARBYTE limit, the same rule for binary outputs: a table with a warehouse section
/// quarantines a decoded value over 16,777,216 bytes (the fields are allowed that large here,
/// far over the default `max_field_bytes`).
const BLOBS: &str = r#"
[[tables]]
name = "blobs"
raw_prefix = "raw/blobs/"
format = "jsonl"
partition_by = "ts"
catalog = { database = "test_db" }
output = { max_field_bytes = 25165824, max_record_bytes = 33554432 }
WAREHOUSE

[[tables.columns]]
name = "id"
type = "int"
required = true

[[tables.columns]]
name = "ts"
type = "timestamp"
required = true

[[tables.columns]]
name = "blob"
type = "binary"
"#;

fn blob_input() -> String {
    use base64::Engine;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
    [
        line(1, serde_json::json!({ "blob": b64(3) })),
        // Exactly the limit: fits.
        line(
            2,
            serde_json::json!({ "blob": b64(REDSHIFT_VARBYTE_MAX_BYTES) }),
        ),
        // One byte over.
        line(
            3,
            serde_json::json!({ "blob": b64(REDSHIFT_VARBYTE_MAX_BYTES + 1) }),
        ),
    ]
    .concat()
}

/// (id, length of `blob`) of each row written, sorted by id.
async fn blob_lengths(l: &Lake) -> Vec<(i64, usize)> {
    use arrow::array::{Array, BinaryArray, Int64Array};
    let mut out = Vec::new();
    for m in l.store.list("curated/blobs/").await.expect("list") {
        let b = l.store.get_bytes(&m.key).await.expect("get");
        let reader = ParquetRecordBatchReaderBuilder::try_new(b)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let ids = batch
                .column_by_name("id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .expect("id column")
                .clone();
            let blobs = batch
                .column_by_name("blob")
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                .expect("blob column")
                .clone();
            for i in 0..batch.num_rows() {
                out.push((ids.value(i), blobs.value(i).len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn warehouse_table_quarantines_binary_values_over_redshift_varbyte() {
    let input = blob_input();
    for warehouse in [true, false] {
        let l = lake();
        put(&l, "raw/blobs/a.jsonl", input.as_bytes()).await;
        let t = transformer(&BLOBS.replace("WAREHOUSE", if warehouse { WAREHOUSE } else { "" }));
        let s = t
            .transform_object(&l.store, &l.catalog, "raw/blobs/a.jsonl", None)
            .await
            .expect("transform");
        balanced(&s.counts);
        let max = REDSHIFT_VARBYTE_MAX_BYTES;
        if warehouse {
            assert_eq!((s.counts.rows_written, s.counts.rows_quarantined), (1, 2));
            let q: Vec<(u64, Option<String>, String)> = quarantine(&l, &s)
                .await
                .iter()
                .map(|r| {
                    (
                        r["line"].as_u64().unwrap_or(0),
                        r["column"].as_str().map(String::from),
                        r["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            // A value at VARBYTE's maximum fits its column but not a COPY row (4 MB).
            assert_eq!(q.len(), 2, "{q:?}");
            assert_eq!((q[0].0, q[0].1.as_deref()), (2, None));
            assert!(
                q[0].2
                    .contains("Redshift's COPY takes rows of at most 4194304 bytes"),
                "{q:?}"
            );
            assert_eq!(
                q[1],
                (
                    3,
                    Some("blob".into()),
                    format!(
                        "value is {} bytes; Redshift VARBYTE holds at most 16777216 bytes",
                        max + 1
                    )
                )
            );
            assert_eq!(blob_lengths(&l).await, [(1, 3)]);
        } else {
            assert_eq!((s.counts.rows_written, s.counts.rows_quarantined), (3, 0));
            assert_eq!(blob_lengths(&l).await, [(1, 3), (2, max), (3, max + 1)]);
        }
    }
}

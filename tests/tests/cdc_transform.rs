//! A cdc-sink object (`raw/cdc/orders/…jsonl`, change events as docs/CDC.md defines them)
//! through the transform Lambda's handler against moto_server, with the table of
//! `examples/cdc.toml`: the curated Parquet files, the manifest, the Glue table and the
//! quarantine object read back independently (aws-sdk-s3, aws-sdk-glue, the parquet crate).

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use serde_json::{json, Value};

use sluice::catalog::GlueCatalog;
use sluice::config::Pipeline;
use sluice::lake::manifest::Manifest;
use sluice::transform::Transformer;
use sluice_tests::{
    get_object, hmac_hex, list_keys, moto_bucket, moto_sdk_config, moto_secret, parquet_batches,
    put_object, render_rows, unique_name, workspace_root, TEST_HASH_KEY,
};
use sluice_transform::{handle, Deps};

const PUT_EVENT: &str = include_str!("../../events/s3-put.json");
const KEY: &str = "raw/cdc/orders/shardId-000000000000/49650-49661.jsonl";

/// The example's pipeline with its Glue database and hash-key secret made unique.
fn pipeline(db: &str, secret: &str) -> Pipeline {
    let path = workspace_root().join("examples/cdc.toml");
    let text = std::fs::read_to_string(&path).expect("examples/cdc.toml");
    let edited = text
        .replace(
            "database = \"sluice_lake\"",
            &format!("database = \"{db}\""),
        )
        .replace(
            "[hash_key]\nsecret = \"sluice/hash-key\"",
            &format!("[hash_key]\nsecret = \"{secret}\""),
        );
    assert!(
        edited.contains(db) && edited.contains(secret),
        "example edited"
    );
    Pipeline::parse(&edited, "examples/cdc.toml (edited copy)").expect("parses")
}

/// One change event of `public.orders`.
fn ev(op: &str, lsn: u64, ts: &str, before: Value, after: Value, unchanged: &[&str]) -> String {
    let mut e = json!({"op": op, "before": before, "after": after,
        "source": {"db": "shop", "schema": "public", "table": "orders", "lsn": lsn, "txid": 9,
                   "commit_ts": ts}});
    if !unchanged.is_empty() {
        e["unchanged"] = json!(unchanged);
    }
    e.to_string()
}

fn order(id: i64, email: &str, amount: &str, status: &str, notes: Option<&str>) -> Value {
    let mut o = json!({"id": id, "customer_email": email, "amount": amount, "status": status,
        "placed_at": "2026-11-01T08:00:00Z", "delivery": {"city": "Lyon", "express": true},
        "tags": ["gift", null]});
    if let Some(n) = notes {
        o["notes"] = json!(n);
    }
    o
}

/// The object: an insert whose large `notes` a later update leaves out (merged back), an
/// update of another key, a key change (7 → 8 at one LSN), a delete, a TRUNCATE in December,
/// a NaN amount (quarantined, line 7) and a line that is not JSON (line 8).
fn object() -> String {
    let nov = "2026-11-26T09:00:00.000001Z";
    let big = "n".repeat(5000);
    [
        ev(
            "c",
            100,
            nov,
            Value::Null,
            order(1, "a@x.org", "10.00", "new", Some(&big)),
            &[],
        ),
        ev(
            "c",
            101,
            nov,
            Value::Null,
            order(7, "b@x.org", "70.00", "new", Some("n7")),
            &[],
        ),
        ev(
            "u",
            102,
            nov,
            Value::Null,
            order(1, "a@x.org", "12.50", "paid", None),
            &["notes"],
        ),
        ev("d", 103, nov, json!({"id": 7}), Value::Null, &[]),
        ev(
            "c",
            103,
            nov,
            Value::Null,
            order(8, "b@x.org", "70.00", "new", Some("n7")),
            &[],
        ),
        ev("d", 104, nov, json!({"id": 3}), Value::Null, &[]),
        ev(
            "c",
            105,
            nov,
            Value::Null,
            order(4, "c@x.org", "NaN", "new", Some("n4")),
            &[],
        ),
        "{\"op\": \"c\", truncated".to_string(),
        ev(
            "t",
            106,
            "2026-12-01T00:00:00Z",
            Value::Null,
            Value::Null,
            &[],
        ),
    ]
    .join("\n")
        + "\n"
}

fn s3_put(bucket: &str, key: &str, size: usize) -> Value {
    let mut e: Value = serde_json::from_str(PUT_EVENT).expect("events/s3-put.json");
    let r = &mut e["Records"][0];
    r["s3"]["bucket"]["name"] = json!(bucket);
    r["s3"]["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
    r["s3"]["object"]["key"] = json!(key);
    r["s3"]["object"]["size"] = json!(size);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdc_object_through_the_handler_into_parquet() {
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("cdc-e2e");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let db = unique_name("cdc_e2e").replace('-', "_");
    let secret = format!("sluice/{}", unique_name("hash-key"));
    moto_secret(&sdk, &secret, TEST_HASH_KEY).await;
    let pipeline = pipeline(&db, &secret);
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, Some(&sm))
        .await
        .expect("hash key");
    let glue = aws_sdk_glue::Client::new(&sdk);
    let deps = Deps {
        transformer: Transformer::new(pipeline, hash_key).expect("transformer"),
        lakes: sluice::lake::Lakes::S3(s3.clone()),
        catalog: Arc::new(GlueCatalog::new(glue.clone())),
        glue: None,
        emit_metrics: false,
    };
    let body = object();
    put_object(&s3, &bucket, KEY, body.clone()).await;

    let resp = handle(&deps, s3_put(&bucket, KEY, body.len()))
        .await
        .unwrap_or_else(|e| panic!("handler: {e}"));
    let p = &resp.processed[0];
    assert_eq!(p.table, "orders");
    assert_eq!(
        (
            p.rows_read,
            p.rows_written,
            p.rows_duplicate,
            p.rows_quarantined
        ),
        (9, 5, 2, 2)
    );

    // The files: one per month of `_commit_ts`.
    let files = list_keys(&s3, &bucket, "curated/orders/").await;
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].starts_with("curated/orders/year=2026/month=11/"),
        "{files:?}"
    );
    assert!(
        files[1].starts_with("curated/orders/year=2026/month=12/"),
        "{files:?}"
    );
    let mut rows = Vec::new();
    for f in &files {
        for b in parquet_batches(get_object(&s3, &bucket, f).await) {
            let types: Vec<(String, DataType)> = b
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            assert_eq!(types, expected_types());
            rows.extend(render_rows(&b));
        }
    }
    rows.sort();
    let hash = |e: &str| hmac_hex(TEST_HASH_KEY, e);
    let nov = "_commit_ts=2026-11-26T09:00:00.000001Z";
    let rest = "placed_at=2026-11-01T08:00:00Z|delivery_city=Lyon|delivery_express=true|tags=[\"gift\",null]";
    let big = "n".repeat(5000);
    assert_eq!(
        rows,
        [
            format!("id=1|customer_email_hash={}|amount=12.50|status=paid|{rest}|notes={big}|_op=u|_lsn=102|{nov}|_unchanged=∅", hash("a@x.org")),
            format!("id=3|customer_email_hash=∅|amount=∅|status=∅|placed_at=∅|delivery_city=∅|delivery_express=∅|tags=∅|notes=∅|_op=d|_lsn=104|{nov}|_unchanged=∅"),
            format!("id=7|customer_email_hash=∅|amount=∅|status=∅|placed_at=∅|delivery_city=∅|delivery_express=∅|tags=∅|notes=∅|_op=d|_lsn=103|{nov}|_unchanged=∅"),
            format!("id=8|customer_email_hash={}|amount=70.00|status=new|{rest}|notes=n7|_op=c|_lsn=103|{nov}|_unchanged=∅", hash("b@x.org")),
            "id=∅|customer_email_hash=∅|amount=∅|status=∅|placed_at=∅|delivery_city=∅|delivery_express=∅|tags=∅|notes=∅|_op=t|_lsn=106|_commit_ts=2026-12-01T00:00:00Z|_unchanged=∅".to_string(),
        ]
    );

    // The manifest, as the loader reads it: the columns in file order with nullability.
    let m = Manifest::from_json(
        &get_object(&s3, &bucket, &p.manifest_key).await,
        &p.manifest_key,
    )
    .expect("manifest");
    let cols: Vec<(String, String, bool)> = m
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.glue_type.clone(), c.nullable))
        .collect();
    let expected: Vec<(String, String, bool)> = expected_glue()
        .into_iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                t.to_string(),
                !["_op", "_lsn", "_commit_ts"].contains(&n),
            )
        })
        .collect();
    assert_eq!(cols, expected);
    assert_eq!(m.counts.rows_written, 5);

    // The Glue table.
    let t = glue
        .get_table()
        .database_name(&db)
        .name("orders")
        .send()
        .await
        .expect("GetTable")
        .table
        .expect("table");
    let glue_cols: Vec<(String, String)> = t
        .storage_descriptor()
        .expect("sd")
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.r#type().unwrap_or("").to_string()))
        .collect();
    let want: Vec<(String, String)> = expected_glue()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(glue_cols, want);

    // The quarantine: the NaN amount (line 7, column amount) and the broken line (8).
    let qkey = m.quarantine_key.clone().expect("quarantine key");
    let q: Vec<Value> = String::from_utf8(get_object(&s3, &bucket, &qkey).await.to_vec())
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(q.len(), 2);
    assert_eq!(
        (q[0]["object"].as_str(), q[0]["line"].as_u64()),
        (Some(KEY), Some(7))
    );
    assert_eq!(q[0]["column"], "amount");
    assert!(
        q[0]["reason"].as_str().is_some_and(|r| r.contains("NaN")),
        "{}",
        q[0]
    );
    assert_eq!(
        (q[1]["line"].as_u64(), q[1]["column"].as_str()),
        (Some(8), None)
    );
}

fn expected_glue() -> Vec<(&'static str, &'static str)> {
    vec![
        ("id", "bigint"),
        ("customer_email_hash", "string"),
        ("amount", "decimal(12,2)"),
        ("status", "string"),
        ("placed_at", "timestamp"),
        ("delivery_city", "string"),
        ("delivery_express", "boolean"),
        ("tags", "string"),
        ("notes", "string"),
        ("_op", "string"),
        ("_lsn", "bigint"),
        ("_commit_ts", "timestamp"),
        ("_unchanged", "string"),
    ]
}

fn expected_types() -> Vec<(String, DataType)> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    [
        ("id", DataType::Int64),
        ("customer_email_hash", DataType::Utf8),
        ("amount", DataType::Decimal128(12, 2)),
        ("status", DataType::Utf8),
        ("placed_at", ts.clone()),
        ("delivery_city", DataType::Utf8),
        ("delivery_express", DataType::Boolean),
        ("tags", DataType::Utf8),
        ("notes", DataType::Utf8),
        ("_op", DataType::Utf8),
        ("_lsn", DataType::Int64),
        ("_commit_ts", ts),
        ("_unchanged", DataType::Utf8),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

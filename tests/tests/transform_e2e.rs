//! The transform Lambda's handler end to end against moto_server: S3 events (built from
//! `events/s3-put.json`) in, curated Parquet, Glue table and partitions, manifest and
//! quarantine out, each read back independently (aws-sdk-s3, aws-sdk-glue, the parquet crate)
//! and compared with what the test computed from its own input.

use std::sync::Arc;

use serde_json::{json, Value};

use sluice::catalog::GlueCatalog;
use sluice::config::Pipeline;
use sluice::transform::{ErrorKind, Layout, Manifest, Transformer};
use sluice_tests::{
    funnel_rows, funnel_sample, get_object, hmac_hex, list_keys, moto_bucket, moto_sdk_config,
    moto_secret, parquet_batches, pipeline_copy, put_object, render_rows, unique_name, FunnelOut,
    FunnelSample, TEST_HASH_KEY,
};
use sluice_transform::{handle, Deps, Response};

const PUT_EVENT: &str = include_str!("../../events/s3-put.json");
const TEST_EVENT: &str = include_str!("../../events/s3-test-event.json");

/// One bucket, one Glue database, one hash-key secret, and the handler's `Deps` built the way
/// `main.rs` builds them (pipeline file → secret → transformer; Glue catalog), on moto.
struct Env {
    s3: aws_sdk_s3::Client,
    glue: aws_sdk_glue::Client,
    bucket: String,
    db: String,
    deps: Deps,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("e2e");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let db = unique_name("e2e").replace('-', "_");
    let secret = format!("sluice/{}", unique_name("hash-key"));
    moto_secret(&sdk, &secret, TEST_HASH_KEY).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = pipeline_copy(dir.path(), &db, &secret);
    let pipeline = Pipeline::from_path(&path).expect("examples/pipeline.toml (edited copy) parses");
    let hash_key = sluice::secrets::load_hash_key(
        &pipeline,
        None,
        Some(&aws_sdk_secretsmanager::Client::new(&sdk)),
    )
    .await
    .expect("hash key from the moto secret the pipeline names");
    let transformer = Transformer::new(pipeline, hash_key).expect("transformer");
    let glue = aws_sdk_glue::Client::new(&sdk);
    let deps = Deps {
        transformer,
        lakes: sluice::lake::Lakes::S3(s3.clone()),
        catalog: Arc::new(GlueCatalog::new(glue.clone())),
        glue: None,
        emit_metrics: false,
    };
    Env {
        s3,
        glue,
        bucket,
        db,
        deps,
        _dir: dir,
    }
}

/// Encodes an object key the way S3 writes it into event notifications: `/` and unreserved
/// characters as they are, a space as `+`, everything else (`+` included) percent-escaped.
fn s3_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An S3 notification with one record per `(bucket, key as S3 sends it, eventName)`, each a
/// copy of the record in `events/s3-put.json` with those three fields replaced.
fn s3_event(records: &[(&str, &str, &str)]) -> Value {
    let template: Value = serde_json::from_str(PUT_EVENT).expect("events/s3-put.json is JSON");
    let record = template["Records"][0].clone();
    let records: Vec<Value> = records
        .iter()
        .map(|(bucket, key, name)| {
            let mut r = record.clone();
            r["eventName"] = json!(name);
            r["s3"]["bucket"]["name"] = json!(bucket);
            r["s3"]["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
            r["s3"]["object"]["key"] = json!(key);
            r
        })
        .collect();
    json!({ "Records": records })
}

fn put(bucket: &str, key: &str) -> Value {
    s3_event(&[(bucket, &s3_encode(key), "ObjectCreated:Put")])
}

async fn invoke(e: &Env, event: Value) -> Response {
    handle(&e.deps, event)
        .await
        .unwrap_or_else(|err| panic!("handler failed ({:?}): {err}", err.kind))
}

/// The curated funnel rows, files in key order.
async fn curated_funnel(e: &Env) -> Vec<FunnelOut> {
    let mut rows = Vec::new();
    for key in list_keys(&e.s3, &e.bucket, "curated/funnel/").await {
        for b in parquet_batches(get_object(&e.s3, &e.bucket, &key).await) {
            rows.extend(funnel_rows(&b));
        }
    }
    rows
}

/// Reads a manifest the way the loader will: with `sluice::lake::manifest` alone.
async fn manifest(e: &Env, key: &str) -> Manifest {
    sluice::lake::manifest::Manifest::from_json(&get_object(&e.s3, &e.bucket, key).await, key)
        .expect("manifest of the current version")
}

/// The Glue table's data columns and partition keys as `(name, type)`, and its location.
async fn glue_table(
    e: &Env,
    table: &str,
) -> (Vec<(String, String)>, Vec<(String, String)>, String) {
    let t = e
        .glue
        .get_table()
        .database_name(&e.db)
        .name(table)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "GetTable {}.{table}: {}",
                e.db,
                aws_sdk_glue::error::DisplayErrorContext(err)
            )
        })
        .table
        .expect("table");
    let cols = |c: &[aws_sdk_glue::types::Column]| -> Vec<(String, String)> {
        c.iter()
            .map(|c| (c.name().to_string(), c.r#type().unwrap_or("").to_string()))
            .collect()
    };
    let sd = t.storage_descriptor().expect("storage descriptor");
    (
        cols(sd.columns()),
        cols(t.partition_keys()),
        sd.location().unwrap_or("").to_string(),
    )
}

/// Registered partitions as `(values, location)`, sorted.
async fn glue_partitions(e: &Env, table: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut pages = e
        .glue
        .get_partitions()
        .database_name(&e.db)
        .table_name(table)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|err| {
            panic!(
                "GetPartitions: {}",
                aws_sdk_glue::error::DisplayErrorContext(err)
            )
        });
        for p in page.partitions() {
            let loc = p
                .storage_descriptor()
                .and_then(|s| s.location())
                .unwrap_or("")
                .to_string();
            out.push((p.values().to_vec(), loc));
        }
    }
    out.sort();
    out
}

/// Object sizes under a prefix, as S3 reports them.
async fn sizes(e: &Env, prefix: &str) -> Vec<(String, u64)> {
    let out =
        e.s3.list_objects_v2()
            .bucket(&e.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("ListObjectsV2");
    let mut v: Vec<(String, u64)> = out
        .contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or("").to_string(),
                o.size().unwrap_or(-1) as u64,
            )
        })
        .collect();
    v.sort();
    v
}

fn strs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const CUSTOMERS_KEY: &str = "raw/customers/2024/crm-export.jsonl";
/// Four CRM export lines: customer 101 twice (the later `updated_at` wins), 102 once, and 103
/// with a signup date that is not a date (quarantined, line 4).
const CUSTOMERS: &str = include_str!("../fixtures/customers.jsonl");

/// (a) A funnel CSV and a customers JSON-lines object in one S3 event: every output checked
/// against values computed here, through S3, Glue and the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_csv_and_customers_jsonl_through_the_handler() {
    let e = env().await;
    let sample: FunnelSample = funnel_sample(1, &[(2019, 10), (2019, 11)], 36);
    assert_eq!(sample.bad.len(), 1);
    assert!(
        sample.rows_duplicate >= 5,
        "the sample has duplicates: {}",
        sample.rows_duplicate
    );
    let funnel_key = "raw/funnel/2019-10-11.csv";
    put_object(&e.s3, &e.bucket, funnel_key, sample.csv.clone()).await;
    put_object(&e.s3, &e.bucket, CUSTOMERS_KEY, CUSTOMERS).await;

    let event = s3_event(&[
        (&e.bucket, &s3_encode(funnel_key), "ObjectCreated:Put"),
        (
            &e.bucket,
            &s3_encode(CUSTOMERS_KEY),
            "ObjectCreated:CompleteMultipartUpload",
        ),
    ]);
    let resp = invoke(&e, event).await;
    assert!(resp.ignored.is_empty(), "{resp:?}");
    assert_eq!(resp.processed.len(), 2, "{resp:?}");

    // --- funnel: the handler's answer.
    let layout = Layout::new("funnel", funnel_key);
    let p = &resp.processed[0];
    assert_eq!(
        (p.bucket.as_str(), p.key.as_str(), p.table.as_str()),
        (e.bucket.as_str(), funnel_key, "funnel")
    );
    assert_eq!(p.rows_read, sample.rows_read);
    assert_eq!(p.rows_written, sample.expected.len() as u64);
    assert_eq!(p.rows_duplicate, sample.rows_duplicate);
    assert_eq!(p.rows_quarantined, 1);
    assert_eq!(p.files, 2);
    assert_eq!(p.manifest_key, layout.manifest_key);
    assert!(
        p.manifest_key.starts_with("manifests/funnel/") && p.manifest_key.ends_with(".json"),
        "{}",
        p.manifest_key
    );

    // --- funnel: the Parquet, row for row.
    let curated = list_keys(&e.s3, &e.bucket, "curated/funnel/").await;
    let want_keys: Vec<String> = sample
        .partitions
        .iter()
        .map(|(y, m)| layout.curated_key(y, m, 0))
        .collect();
    assert_eq!(curated, want_keys);
    for (k, month) in curated.iter().zip(["10", "11"]) {
        let prefix = format!("curated/funnel/year=2019/month={month}/2019-10-11-");
        let hash = k
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix("-00000.parquet"));
        assert!(
            hash.is_some_and(|h| h.len() == 16 && h.bytes().all(|c| c.is_ascii_hexdigit())),
            "curated key {k} is not {prefix}<16 hex>-00000.parquet"
        );
    }
    let got = curated_funnel(&e).await;
    assert_eq!(got.len(), sample.expected.len());
    for (i, (g, w)) in got.iter().zip(&sample.expected).enumerate() {
        assert_eq!(g, w, "curated funnel row {i}");
    }
    // Spot checks the model could share a blind spot with: a real HMAC of a real user id.
    let with_user = got
        .iter()
        .find(|r| r.user_id_hash.is_some())
        .expect("a row with a user");
    let line = sample
        .csv
        .lines()
        .find(|l| {
            l.ends_with(with_user.user_session.as_deref().unwrap_or("?"))
                && l.contains(&with_user.product_id.unwrap_or(0).to_string())
        })
        .expect("its CSV line");
    let user_id = line.rsplit(',').nth(1).expect("user_id field");
    assert_eq!(
        with_user.user_id_hash.as_deref(),
        Some(hmac_hex(TEST_HASH_KEY, user_id).as_str())
    );
    assert!(
        got.iter().any(|r| r.user_id_hash.is_none()),
        "anonymous rows keep a null hash"
    );
    assert!(
        got.iter().any(|r| r.brand.as_deref() == Some("acme, inc")),
        "quoted comma survives"
    );
    assert!(
        got.iter().any(|r| r.category_code.is_none()),
        "empty field → null"
    );
    assert_eq!(
        got.iter()
            .filter(|r| r.brand.as_deref() == Some("other-brand"))
            .count(),
        0,
        "first occurrence wins"
    );

    // --- funnel: Glue.
    let (cols, part_keys, location) = glue_table(&e, "funnel").await;
    assert_eq!(
        cols,
        strs(&[
            ("event_time", "timestamp"),
            ("event_type", "string"),
            ("product_id", "bigint"),
            ("category_id", "bigint"),
            ("category_code", "string"),
            ("brand", "string"),
            ("price", "double"),
            ("user_id_hash", "string"),
            ("user_session", "string"),
        ])
    );
    assert_eq!(part_keys, strs(&[("year", "string"), ("month", "string")]));
    assert_eq!(location, format!("s3://{}/curated/funnel/", e.bucket));
    let parts = glue_partitions(&e, "funnel").await;
    let want_parts: Vec<(Vec<String>, String)> = sample
        .partitions
        .iter()
        .map(|(y, m)| {
            (
                vec![y.clone(), m.clone()],
                format!("s3://{}/curated/funnel/year={y}/month={m}/", e.bucket),
            )
        })
        .collect();
    assert_eq!(parts, want_parts);
    assert_eq!(
        parts[0].0,
        vec!["2019".to_string(), "10".to_string()],
        "zero-padded month"
    );

    // --- funnel: the manifest.
    let m = manifest(&e, &p.manifest_key).await;
    assert_eq!(
        (m.version, m.table.as_str(), m.source_key.as_str()),
        (
            sluice::lake::manifest::MANIFEST_VERSION,
            "funnel",
            funnel_key
        )
    );
    // The output columns in file order, as the catalog has them, with nullability.
    let in_manifest: Vec<(String, String)> = m
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.glue_type.clone()))
        .collect();
    assert_eq!(
        in_manifest, cols,
        "manifest columns = Glue columns, in order"
    );
    let nullable: Vec<(&str, bool)> = m
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.nullable))
        .collect();
    assert_eq!(
        nullable[0],
        ("event_time", false),
        "required → not nullable"
    );
    assert_eq!(nullable[7], ("user_id_hash", true));
    // Every file's ETag is the one S3 reports for it.
    for f in &m.files {
        let h =
            e.s3.head_object()
                .bucket(&e.bucket)
                .key(&f.key)
                .send()
                .await
                .expect("HeadObject");
        assert_eq!(
            f.etag.as_deref(),
            h.e_tag().map(|t| t.trim_matches('"')),
            "{}",
            f.key
        );
        assert!(f.etag.is_some(), "{}", f.key);
    }
    assert_eq!(m.source_bytes, sample.csv.len() as u64);
    let head =
        e.s3.head_object()
            .bucket(&e.bucket)
            .key(funnel_key)
            .send()
            .await
            .expect("HeadObject");
    assert_eq!(
        m.source_etag.as_deref(),
        head.e_tag().map(|t| t.trim_matches('"'))
    );
    let c = m.counts;
    assert_eq!(
        c.rows_read,
        c.rows_written + c.rows_duplicate + c.rows_quarantined,
        "counts balance: {c:?}"
    );
    assert_eq!(
        (c.rows_read, c.rows_written, c.rows_quarantined),
        (p.rows_read, p.rows_written, 1)
    );
    let listed = sizes(&e, "curated/funnel/").await;
    let in_manifest: Vec<(String, u64)> =
        m.files.iter().map(|f| (f.key.clone(), f.bytes)).collect();
    assert_eq!(
        in_manifest, listed,
        "manifest files = objects (keys and sizes)"
    );
    assert_eq!(m.files.iter().map(|f| f.rows).sum::<u64>(), c.rows_written);
    for f in &m.files {
        assert!(
            f.key
                .contains(&format!("/year={}/month={}/", f.year, f.month)),
            "{f:?}"
        );
    }

    // --- funnel: quarantine holds the bad row, with its line and raw text.
    assert_eq!(
        m.quarantine_key.as_deref(),
        Some(layout.quarantine_key.as_str())
    );
    let q = get_object(&e.s3, &e.bucket, &layout.quarantine_key).await;
    let q: Vec<Value> = std::str::from_utf8(&q)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("quarantine line is JSON"))
        .collect();
    let (line, raw, column) = &sample.bad[0];
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["object"], funnel_key);
    assert_eq!(q[0]["line"], *line);
    assert_eq!(q[0]["column"], column.as_str());
    assert_eq!(q[0]["raw"], raw.as_str());
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not a timestamp"),
        "{}",
        q[0]
    );

    // --- customers: latest version wins, PII hashed/banded/dropped, JSON flattened.
    let cl = Layout::new("customers", CUSTOMERS_KEY);
    let p = &resp.processed[1];
    assert_eq!(
        (p.key.as_str(), p.table.as_str()),
        (CUSTOMERS_KEY, "customers")
    );
    assert_eq!(
        (
            p.rows_read,
            p.rows_written,
            p.rows_duplicate,
            p.rows_quarantined,
            p.files
        ),
        (4, 2, 1, 1, 2)
    );
    let ckeys = list_keys(&e.s3, &e.bucket, "curated/customers/").await;
    assert_eq!(
        ckeys,
        vec![
            cl.curated_key("2021", "03", 0),
            cl.curated_key("2021", "04", 0)
        ]
    );
    let mut rows = Vec::new();
    for k in &ckeys {
        for b in parquet_batches(get_object(&e.s3, &e.bucket, k).await) {
            rows.extend(render_rows(&b));
        }
    }
    assert_eq!(
        rows,
        vec![
            format!(
                "customer_id=101|email_hash={}|date_of_birth_age_band=30-39|signup_date=2021-03-05T08:00:00Z|loyalty_tier=platinum|lifetime_spend=1999.99|address_city=London|address_postcode=SW1Y 4JH|address_geo_lat=51.5074|address_geo_lon=-0.1339|address_tags=∅|updated_at=2024-02-01T00:00:00Z",
                hmac_hex(TEST_HASH_KEY, "ada@example.org")
            ),
            format!(
                "customer_id=102|email_hash={}|date_of_birth_age_band=20-29|signup_date=2021-04-20T10:30:00Z|loyalty_tier=silver|lifetime_spend=42.00|address_city=Paris|address_postcode=∅|address_geo_lat=∅|address_geo_lon=∅|address_tags=∅|updated_at=2024-01-02T00:00:00Z",
                hmac_hex(TEST_HASH_KEY, "emile@example.fr")
            ),
        ]
    );
    let (cols, _, location) = glue_table(&e, "customers").await;
    assert_eq!(
        cols,
        strs(&[
            ("customer_id", "bigint"),
            ("email_hash", "string"),
            ("date_of_birth_age_band", "string"),
            ("signup_date", "timestamp"),
            ("loyalty_tier", "string"),
            ("lifetime_spend", "decimal(12,2)"),
            ("address_city", "string"),
            ("address_postcode", "string"),
            ("address_geo_lat", "double"),
            ("address_geo_lon", "double"),
            ("address_tags", "string"),
            ("updated_at", "timestamp"),
        ])
    );
    assert_eq!(location, format!("s3://{}/curated/customers/", e.bucket));
    let cparts: Vec<Vec<String>> = glue_partitions(&e, "customers")
        .await
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(
        cparts,
        vec![
            vec!["2021".to_string(), "03".to_string()],
            vec!["2021".to_string(), "04".to_string()]
        ]
    );
    let cm = manifest(&e, &p.manifest_key).await;
    assert_eq!(
        cm.files.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        ckeys
    );
    let cq = String::from_utf8(
        get_object(&e.s3, &e.bucket, &cl.quarantine_key)
            .await
            .to_vec(),
    )
    .expect("utf8");
    let cq: Vec<Value> = cq
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(cq.len(), 1);
    assert_eq!(
        (cq[0]["line"].as_u64(), cq[0]["column"].as_str()),
        (Some(4), Some("signup_date"))
    );

    // Nothing else was written: no temp objects, no stray prefixes.
    let mut want_all = vec![funnel_key.to_string(), CUSTOMERS_KEY.to_string()];
    want_all.extend(want_keys);
    want_all.extend(ckeys);
    want_all.extend([
        layout.manifest_key,
        layout.quarantine_key,
        cl.manifest_key,
        cl.quarantine_key,
    ]);
    want_all.sort();
    assert_eq!(list_keys(&e.s3, &e.bucket, "").await, want_all);
}

/// (b) A re-delivered event rewrites the same keys; a changed object under the same key
/// leaves only its new rows (and no stale quarantine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_idempotent_and_a_changed_object_replaces_its_rows() {
    let e = env().await;
    let key = "raw/funnel/daily/2019-10-31.csv";
    let first = funnel_sample(2, &[(2019, 10), (2019, 11)], 24);
    put_object(&e.s3, &e.bucket, key, first.csv.clone()).await;

    let r1 = invoke(&e, put(&e.bucket, key)).await;
    let keys1 = list_keys(&e.s3, &e.bucket, "").await;
    let m1 = get_object(&e.s3, &e.bucket, &r1.processed[0].manifest_key).await;
    assert_eq!(curated_funnel(&e).await, first.expected);

    let r2 = invoke(&e, put(&e.bucket, key)).await;
    assert_eq!(r1, r2, "the same answer");
    assert_eq!(
        list_keys(&e.s3, &e.bucket, "").await,
        keys1,
        "the same objects, nothing added"
    );
    assert_eq!(
        curated_funnel(&e).await,
        first.expected,
        "the same rows, once"
    );
    assert_eq!(
        get_object(&e.s3, &e.bucket, &r2.processed[0].manifest_key).await,
        m1,
        "the same manifest"
    );

    // The object is replaced: December only, and without a bad row.
    let changed = funnel_sample(3, &[(2019, 12)], 10).without_bad();
    put_object(&e.s3, &e.bucket, key, changed.csv.clone()).await;
    let r3 = invoke(&e, put(&e.bucket, key)).await;
    let p = &r3.processed[0];
    assert_eq!(
        (p.rows_read, p.rows_written, p.rows_quarantined, p.files),
        (changed.rows_read, changed.expected.len() as u64, 0, 1)
    );
    assert_eq!(
        curated_funnel(&e).await,
        changed.expected,
        "only the new rows"
    );
    let layout = Layout::new("funnel", key);
    let mut want = vec![
        key.to_string(),
        layout.curated_key("2019", "12", 0),
        layout.manifest_key.clone(),
    ];
    want.sort();
    assert_eq!(
        list_keys(&e.s3, &e.bucket, "").await,
        want,
        "old files and the old quarantine are gone"
    );
    let m = manifest(&e, &layout.manifest_key).await;
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.quarantine_key, None);
    assert_eq!(m.counts.rows_written, changed.expected.len() as u64);
}

/// (c) Keys arrive URL-encoded; records outside `raw/`, folder markers and non-create events
/// are ignored; each processed key resolves to the object it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_keys_are_decoded_and_foreign_records_ignored() {
    let e = env().await;
    let sample = funnel_sample(4, &[(2019, 10)], 6);
    // The fixture's key: `raw/funnel/2019-10+sample%2B1.csv` is "2019-10 sample+1.csv".
    let fixture_key = "raw/funnel/2019-10 sample+1.csv";
    let unicode_key = "raw/funnel/café 日本 +1.csv";
    let slash_key = "raw/funnel/nested/slash.csv";
    for k in [fixture_key, unicode_key, slash_key] {
        put_object(&e.s3, &e.bucket, k, sample.csv.clone()).await;
    }
    // Decoys a wrong decoder would pick instead (a `+` taken as `+`, `%2B` as a space).
    put_object(
        &e.s3,
        &e.bucket,
        "raw/funnel/2019-10+sample+1.csv",
        "not,the,object\n",
    )
    .await;

    let mut event: Value = serde_json::from_str(PUT_EVENT).expect("fixture");
    let fixture_record = event["Records"][0].clone();
    assert_eq!(
        fixture_record["s3"]["object"]["key"],
        "raw/funnel/2019-10+sample%2B1.csv"
    );
    let encoded_unicode = s3_encode(unicode_key);
    assert_eq!(
        encoded_unicode,
        "raw/funnel/caf%C3%A9+%E6%97%A5%E6%9C%AC+%2B1.csv"
    );
    let more = s3_event(&[
        (&e.bucket, &encoded_unicode, "ObjectCreated:Put"),
        // `%2F` decodes to `/`: S3 leaves slashes bare, but an escaped one still names the object.
        (
            &e.bucket,
            "raw%2Ffunnel%2Fnested%2Fslash.csv",
            "ObjectCreated:Copy",
        ),
        (
            &e.bucket,
            "curated/funnel/year=2019/month=10/x.parquet",
            "ObjectCreated:Put",
        ),
        (&e.bucket, "raw/funnel/", "ObjectCreated:Put"),
        (
            &e.bucket,
            "manifests/funnel/0123456789abcdef.json",
            "ObjectCreated:Put",
        ),
        (&e.bucket, "raw/funnel/gone.csv", "ObjectRemoved:Delete"),
    ]);
    event["Records"][0]["s3"]["bucket"]["name"] = json!(e.bucket);
    let records = event["Records"].as_array_mut().expect("Records");
    records.extend(more["Records"].as_array().expect("Records").iter().cloned());

    let resp = invoke(&e, event).await;
    let processed: Vec<&str> = resp.processed.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(processed, vec![fixture_key, unicode_key, slash_key]);
    assert_eq!(
        resp.ignored,
        vec![
            "curated/funnel/year=2019/month=10/x.parquet",
            "raw/funnel/",
            "manifests/funnel/0123456789abcdef.json",
            "raw/funnel/gone.csv"
        ]
    );
    for p in &resp.processed {
        assert_eq!(p.rows_written, sample.expected.len() as u64, "{p:?}");
        assert_eq!(p.rows_quarantined, 1, "{p:?}");
    }
    let curated = list_keys(&e.s3, &e.bucket, "curated/funnel/").await;
    assert_eq!(curated.len(), 3, "{curated:?}");
    let stems: Vec<bool> = ["/2019-10_sample_1-", "/caf______1-", "/slash-"]
        .iter()
        .map(|s| curated.iter().any(|k| k.contains(s)))
        .collect();
    assert_eq!(
        stems,
        vec![true, true, true],
        "file stems from the decoded names: {curated:?}"
    );
    for k in [fixture_key, unicode_key, slash_key] {
        let m = manifest(&e, &Layout::new("funnel", k).manifest_key).await;
        assert_eq!(m.source_key, k);
        assert_eq!(
            m.source_bytes,
            sample.csv.len() as u64,
            "{k}: the right object was read"
        );
    }
}

/// (c) The `s3:TestEvent` S3 sends when notifications are set up is accepted and does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_test_event_is_accepted_and_ignored() {
    let e = env().await;
    let event: Value = serde_json::from_str(TEST_EVENT).expect("events/s3-test-event.json is JSON");
    assert_eq!(invoke(&e, event).await, Response::default());
    assert_eq!(
        list_keys(&e.s3, &e.bucket, "").await,
        Vec::<String>::new(),
        "nothing written"
    );
    let db = e.glue.get_database().name(&e.db).send().await;
    assert!(
        db.is_err(),
        "no Glue database created for a test event: {db:?}"
    );
}

/// (c) A key under `raw/` that no table owns is a `BadInput` error naming the key and the
/// known prefixes; the other records of the event are still processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_table_is_bad_input_naming_key_and_prefixes() {
    let e = env().await;
    let sample = funnel_sample(5, &[(2019, 11)], 4);
    let good = "raw/funnel/ok.csv";
    put_object(&e.s3, &e.bucket, good, sample.csv.clone()).await;

    let err = handle(&e.deps, put(&e.bucket, "raw/nope/x.csv"))
        .await
        .expect_err("unknown table");
    assert_eq!(err.kind, ErrorKind::BadInput);
    let msg = err.to_string();
    for part in [
        "raw/nope/x.csv",
        "raw/funnel/",
        "raw/customers/",
        "1 of 1 records failed",
    ] {
        assert!(msg.contains(part), "error message lacks {part:?}: {msg}");
    }
    let diag = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diag.error_type, "BadInput");

    // Mixed: the good record is written, the invocation still fails (so S3 retries).
    let event = s3_event(&[
        (&e.bucket, "raw/nope/x.csv", "ObjectCreated:Put"),
        (&e.bucket, good, "ObjectCreated:Put"),
    ]);
    let err = handle(&e.deps, event).await.expect_err("one record fails");
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(
        err.message.starts_with("1 of 2 records failed"),
        "{}",
        err.message
    );
    let m = manifest(&e, &Layout::new("funnel", good).manifest_key).await;
    assert_eq!(m.counts.rows_written, sample.expected.len() as u64);
}

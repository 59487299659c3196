//! End to end through the deployed path: raw objects in a moto S3 lake → the built `transform`
//! binary under `cargo lambda` (S3 events) → manifests → the built `redshift-loader` binary
//! under `cargo lambda` (an SQS batch of the manifests' S3 notifications), which reaches the
//! warehouse through the pipeline's `[redshift]` section and the real Data API client, pointed
//! (`AWS_ENDPOINT_URL_REDSHIFT_DATA`) at the test Data API endpoint that runs the SQL on the
//! test PostgreSQL. The final tables are compared with rows computed here from the raw input.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use sluice::config::Pipeline;
use sluice::lake::manifest::Manifest;
use sluice::warehouse::LoadPlan;
use sluice_tests::dataapi::{DataApi, Submission};
use sluice_tests::warehouse::table_rows;
use sluice_tests::{
    get_object, hmac_hex, list_keys, moto_bucket, moto_sdk_config, moto_secret, pg_url, put_object,
    unique_name, LambdaFunction, Payload, RunningLambda, TEST_HASH_KEY,
};

const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/sluice-copy";
const WORKGROUP: &str = "sluice-wg";
const DATABASE: &str = "dev";

// ---------------------------------------------------------------------------------------------
// The raw input, as values the expectation is computed from.

/// One change of the `orders` table (CDC: `_op`, `_lsn`, `_commit_ts`).
#[derive(Debug, Clone)]
struct Change {
    id: Option<i64>,
    status: Option<&'static str>,
    amount: Option<&'static str>,
    op: &'static str,
    lsn: i64,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    at: &'static str,
    /// Written with an `_lsn` that is not a number: the transform quarantines the row.
    bad: bool,
}

fn change(
    id: i64,
    status: &'static str,
    amount: &'static str,
    op: &'static str,
    lsn: i64,
    at: &'static str,
) -> Change {
    Change {
        id: Some(id),
        status: Some(status),
        amount: Some(amount),
        op,
        lsn,
        at,
        bad: false,
    }
}

fn delete(id: i64, lsn: i64, at: &'static str) -> Change {
    Change {
        id: Some(id),
        status: None,
        amount: None,
        op: "d",
        lsn,
        at,
        bad: false,
    }
}

impl Change {
    fn line(&self) -> String {
        let mut o = serde_json::Map::new();
        if let Some(id) = self.id {
            o.insert("order_id".into(), id.into());
        }
        if let Some(s) = self.status {
            o.insert("status".into(), s.into());
        }
        if let Some(a) = self.amount {
            o.insert("amount".into(), a.into());
        }
        o.insert("_op".into(), self.op.into());
        o.insert(
            "_lsn".into(),
            if self.bad {
                "not-a-number".into()
            } else {
                self.lsn.into()
            },
        );
        o.insert("_commit_ts".into(), iso(self.at).into());
        Value::Object(o).to_string()
    }
}

/// One version of a `customers` row (no `_op`: the latest `updated_at` wins; never deleted).
#[derive(Debug, Clone)]
struct Customer {
    id: Option<i64>,
    email: &'static str,
    tier: &'static str,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    updated: &'static str,
    /// Written with an `updated_at` that is no timestamp (a required column): quarantined.
    bad: bool,
}

fn customer(id: i64, email: &'static str, tier: &'static str, updated: &'static str) -> Customer {
    Customer {
        id: Some(id),
        email,
        tier,
        updated,
        bad: false,
    }
}

impl Customer {
    fn line(&self) -> String {
        let mut o = serde_json::Map::new();
        if let Some(id) = self.id {
            o.insert("customer_id".into(), id.into());
        }
        o.insert("email".into(), self.email.into());
        o.insert("loyalty_tier".into(), self.tier.into());
        let updated = if self.bad {
            "yesterday".to_string()
        } else {
            iso(self.updated)
        };
        o.insert("updated_at".into(), updated.into());
        Value::Object(o).to_string()
    }
}

/// `2024-03-01 10:00:00` → `2024-03-01T10:00:00Z`.
fn iso(t: &str) -> String {
    format!("{}Z", t.replacen(' ', "T", 1))
}

/// The final `orders` rows, `id|status|amount|lsn|commit_ts`, from every change ever sent: per
/// key the change with the greatest `_lsn`, absent when that change is a delete; quarantined
/// rows and rows without a key never count.
fn expected_orders(all: &[Change]) -> Vec<String> {
    let mut latest: BTreeMap<i64, &Change> = BTreeMap::new();
    for c in all.iter().filter(|c| !c.bad) {
        let Some(id) = c.id else { continue };
        if latest.get(&id).is_none_or(|l| l.lsn < c.lsn) {
            latest.insert(id, c);
        }
    }
    latest
        .values()
        .filter(|c| c.op != "d")
        .map(|c| {
            format!(
                "{}|{}|{}|{}|{}",
                c.id.unwrap_or_default(),
                c.status.unwrap_or("∅"),
                c.amount.unwrap_or("∅"),
                c.lsn,
                c.at
            )
        })
        .collect()
}

/// The final `customers` rows, `id|email hash|tier|updated_at`: per key the latest version.
fn expected_customers(all: &[Customer]) -> Vec<String> {
    let mut latest: BTreeMap<i64, &Customer> = BTreeMap::new();
    for c in all.iter().filter(|c| !c.bad) {
        let Some(id) = c.id else { continue };
        if latest.get(&id).is_none_or(|l| l.updated < c.updated) {
            latest.insert(id, c);
        }
    }
    latest
        .values()
        .map(|c| {
            format!(
                "{}|{}|{}|{}",
                c.id.unwrap_or_default(),
                hmac_hex(TEST_HASH_KEY, c.email),
                c.tier,
                c.updated
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Events

/// An object key as S3 notifications carry it: `+` for a space, percent-escapes for the rest.
fn s3_event_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// One `ObjectCreated:Put` record, shaped like the fixtures in `events/`.
fn s3_record(bucket: &str, key: &str, configuration: &str) -> Value {
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2024-05-14T09:21:09.102Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": { "principalId": "AWS:AROAEXAMPLE:sluice" },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration,
            "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
            "object": { "key": s3_event_key(key), "size": 1, "sequencer": "0065F2A8C1D0E5B1A7" }
        }
    })
}

/// The S3 notification of the raw objects (the transform's trigger).
fn s3_put_event(bucket: &str, keys: &[String]) -> String {
    let records: Vec<Value> = keys
        .iter()
        .map(|k| s3_record(bucket, k, "sluice-raw-objects"))
        .collect();
    json!({ "Records": records }).to_string()
}

/// An SQS batch whose messages are the S3 notifications of `manifests`, one each, as the
/// queue between the lake and the loader delivers them (`events/sqs-manifests.json`).
fn sqs_event(bucket: &str, manifests: &[String], round: u32) -> String {
    let records: Vec<Value> = manifests
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let id = format!("00000000-0000-4000-8000-{round:06}{i:06}");
            let body = json!({ "Records": [s3_record(bucket, key, "sluice-manifests")] });
            json!({
                "messageId": id,
                "receiptHandle": format!("AQEB{round}{i}"),
                "body": body.to_string(),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1715678469102",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1715678469200"
                },
                "messageAttributes": {},
                "md5OfBody": "b438695232f6bc9100cbaf9140198f80",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sluice-manifests",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

// ---------------------------------------------------------------------------------------------
// The pipeline and the warehouse

fn pipeline_text(glue_db: &str, hash_secret: &str, redshift_secret: &str, schema: &str) -> String {
    format!(
        r#"
[hash_key]
secret = "{hash_secret}"

[redshift]
workgroup = "{WORKGROUP}"
database = "{DATABASE}"
secret = "{redshift_secret}"
copy_iam_role = "{COPY_ROLE}"

[[tables]]
name = "customers"
raw_prefix = "raw/customers/"
format = "jsonl"
partition_by = "updated_at"
dedup = {{ key = ["customer_id"], order_by = "updated_at" }}
catalog = {{ database = "{glue_db}" }}
warehouse = {{ schema = "{schema}", merge_keys = ["customer_id"] }}
columns = [
  {{ name = "customer_id", type = "int" }},
  {{ name = "email", type = "string", pii = {{ action = "hash" }} }},
  {{ name = "loyalty_tier", type = "string" }},
  {{ name = "updated_at", type = "timestamp", required = true }},
]

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = {{ key = ["order_id"], order_by = "_lsn" }}
catalog = {{ database = "{glue_db}" }}
warehouse = {{ schema = "{schema}", merge_keys = ["order_id"] }}
columns = [
  {{ name = "order_id", type = "int" }},
  {{ name = "status", type = "string" }},
  {{ name = "amount", type = "decimal(12,2)" }},
  {{ name = "_op", type = "string" }},
  {{ name = "_lsn", type = "int" }},
  {{ name = "_commit_ts", type = "timestamp" }},
]
"#
    )
}

/// A final table's rows as text (`select` over its columns), ordered by `order`.
async fn final_rows(p: &Pipeline, table: &str, select: &str, order: &str) -> Vec<String> {
    let plan = LoadPlan::new(p.table(table).expect("table")).expect("plan");
    table_rows(&plan, select, order).await
}

async fn orders_rows(p: &Pipeline) -> Vec<String> {
    final_rows(
        p,
        "orders",
        r#""order_id"::text || '|' || COALESCE("status", '∅') || '|' || COALESCE("amount"::text, '∅') || '|' || "_lsn"::text || '|' || "_commit_ts"::text"#,
        r#""order_id""#,
    )
    .await
}

async fn customers_rows(p: &Pipeline) -> Vec<String> {
    final_rows(
        p,
        "customers",
        r#""customer_id"::text || '|' || "email_hash" || '|' || "loyalty_tier" || '|' || "updated_at"::text"#,
        r#""customer_id""#,
    )
    .await
}

/// The batch submissions among `subs` that load `table` (their SQL names its final table).
fn batches_of<'a>(p: &Pipeline, table: &str, subs: &'a [Submission]) -> Vec<&'a Submission> {
    let plan = LoadPlan::new(p.table(table).expect("table")).expect("plan");
    let fin = plan.final_table();
    subs.iter()
        .filter(|s| is_load(s) && s.sqls.iter().any(|q| q.contains(&fin)))
        .collect()
}

/// A load's batch (the executor's `run`), not the CREATEs before a first load, which go as a
/// batch of their own (one session with the case-sensitivity SET).
fn is_load(s: &Submission) -> bool {
    s.batch
        && s.request["StatementName"]
            .as_str()
            .is_some_and(|n| n.starts_with("sluice load "))
}

/// `cargo lambda invoke`, blocking, off the runtime's async threads (the Data API endpoint
/// serves the loader from this process meanwhile).
fn invoke(f: &mut RunningLambda, payload: String) -> Value {
    tokio::task::block_in_place(|| f.invoke_ok(&Payload::json(payload)))
}

// ---------------------------------------------------------------------------------------------

/// Shared by both rounds.
struct World {
    bucket: String,
    s3: aws_sdk_s3::Client,
    pipeline: Pipeline,
    api: DataApi,
    redshift_secret: String,
    transform: RunningLambda,
    loader: RunningLambda,
}

/// What one round checks for a table, besides the final rows.
struct Want {
    table: &'static str,
    manifests: usize,
    /// (expected, staged, merged, stale, deleted, duplicates, null_keys)
    counts: (u64, u64, u64, u64, u64, u64, u64),
}

impl World {
    /// Puts the raw objects, runs the transform on their S3 event, checks what it reports
    /// (quarantined rows per object) and returns the manifests' keys.
    async fn transform(&mut self, objects: &[(String, String, u64)]) -> Vec<String> {
        for (key, body, _) in objects {
            put_object(&self.s3, &self.bucket, key, body.clone()).await;
        }
        let keys: Vec<String> = objects.iter().map(|(k, _, _)| k.clone()).collect();
        let out = invoke(&mut self.transform, s3_put_event(&self.bucket, &keys));
        assert_eq!(out["ignored"], json!([]), "{out}");
        let processed = out["processed"].as_array().expect("processed");
        assert_eq!(processed.len(), objects.len(), "{out}");
        let mut manifests = Vec::new();
        for ((key, _, quarantined), p) in objects.iter().zip(processed) {
            assert_eq!(p["key"], key.as_str(), "{out}");
            assert_eq!(p["rows_quarantined"], *quarantined, "{p}");
            let m = p["manifest_key"].as_str().expect("manifest_key");
            assert!(m.starts_with("manifests/"), "{p}");
            manifests.push(m.to_string());
        }
        manifests
    }

    /// Runs the loader on the SQS batch of `manifests` and checks everything but the rows.
    async fn load(&mut self, manifests: &[String], round: u32, want: &[Want]) {
        let subs_before = self.api.submissions().len();
        let calls_before = self.api.batch_calls();
        let out = invoke(&mut self.loader, sqs_event(&self.bucket, manifests, round));
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
        assert_eq!(out["ignored"], json!([]), "{out}");
        let loads = out["loads"].as_array().expect("loads");
        let tables: Vec<&str> = loads.iter().filter_map(|l| l["table"].as_str()).collect();
        let want_tables: Vec<&str> = want.iter().map(|w| w.table).collect();
        assert_eq!(tables, want_tables, "{out}");

        // The endpoint: one load BatchExecuteStatement per table (none refused), to the
        // configured workgroup and database as the configured secret; no TRUNCATE anywhere.
        let subs: Vec<Submission> = self.api.submissions()[subs_before..].to_vec();
        assert_eq!(
            subs.iter().filter(|s| is_load(s)).count(),
            want.len(),
            "load batches this round"
        );
        assert_eq!(
            self.api.batch_calls() - calls_before,
            subs.iter().filter(|s| s.batch).count(),
            "no BatchExecuteStatement refused"
        );
        for s in &subs {
            assert_eq!(s.request["WorkgroupName"], WORKGROUP, "{:?}", s.request);
            assert_eq!(s.request["Database"], DATABASE, "{:?}", s.request);
            assert_eq!(
                s.request["SecretArn"],
                self.redshift_secret.as_str(),
                "{:?}",
                s.request
            );
            for q in &s.sqls {
                assert!(
                    !q.trim_start().to_ascii_uppercase().starts_with("TRUNCATE"),
                    "{q}"
                );
            }
        }

        for (l, w) in loads.iter().zip(want) {
            let table = w.table;
            assert_eq!(l["outcome"], "loaded", "{l}");
            assert_eq!(l["bucket"], self.bucket.as_str(), "{l}");
            assert_eq!(l["mismatch"], Value::Null, "{l}");
            let listed: Vec<&str> = l["manifests"]
                .as_array()
                .expect("manifests")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(listed.len(), w.manifests, "{l}");
            let batch = l["batch"].as_str().expect("batch");
            let record_key = format!("loads/{table}/{batch}.json");
            assert_eq!(l["record_key"], record_key.as_str(), "{l}");

            let table_batches = batches_of(&self.pipeline, table, &subs);
            assert_eq!(
                table_batches.len(),
                1,
                "one BatchExecuteStatement for {table}: {:?}",
                subs.iter().map(|s| &s.sqls).collect::<Vec<_>>()
            );
            let sqls = &table_batches[0].sqls;

            // The load record in the lake: counts reconciled, the statement the endpoint ran.
            let record: Value =
                serde_json::from_slice(&get_object(&self.s3, &self.bucket, &record_key).await)
                    .expect("load record JSON");
            assert_eq!(record["mismatch"], Value::Null, "{record}");
            assert_eq!(record["manifests"], l["manifests"], "{record}");
            assert_eq!(
                record["statement_id"],
                table_batches[0].id.as_str(),
                "{record}"
            );
            let c = &record["counts"];
            let n = |k: &str| {
                c[k].as_u64()
                    .unwrap_or_else(|| panic!("counts.{k}: {record}"))
            };
            let got = (
                n("expected"),
                n("staged"),
                n("merged"),
                n("stale"),
                n("deleted"),
                n("duplicates"),
                n("null_keys"),
            );
            assert_eq!(got, w.counts, "{table} counts: {record}");
            assert_eq!(
                got.1,
                got.2 + got.3 + got.4 + got.5 + got.6,
                "{table}: staged rows all accounted for"
            );
            assert_eq!(l["counts"], record["counts"], "{l}");

            // The COPY manifests under loads/<table>/<batch>/: every curated file of the
            // batch's manifests, by s3:// URL, and each one COPYed by the batch.
            let mut curated = BTreeSet::new();
            let mut rows_written = 0;
            for key in &listed {
                let m = Manifest::from_json(&get_object(&self.s3, &self.bucket, key).await, key)
                    .expect("manifest");
                rows_written += m.counts.rows_written;
                curated.extend(
                    m.files
                        .iter()
                        .map(|f| format!("s3://{}/{}", self.bucket, f.key)),
                );
            }
            assert_eq!(
                got.0, rows_written,
                "expected = the manifests' rows written"
            );
            let copy_keys: Vec<String> =
                list_keys(&self.s3, &self.bucket, &format!("loads/{table}/{batch}/"))
                    .await
                    .into_iter()
                    .filter(|k| k.ends_with(".manifest"))
                    .collect();
            assert!(!copy_keys.is_empty(), "no COPY manifest for {table}");
            let mut listed_urls = BTreeSet::new();
            for k in &copy_keys {
                let url = format!("s3://{}/{k}", self.bucket);
                assert!(
                    sqls.iter()
                        .any(|q| q.starts_with("COPY ") && q.contains(&format!("'{url}'"))),
                    "{url} is COPYed by the batch: {sqls:?}"
                );
                let m: Value = serde_json::from_slice(&get_object(&self.s3, &self.bucket, k).await)
                    .expect("COPY manifest JSON");
                for e in m["entries"].as_array().expect("entries") {
                    assert_eq!(e["mandatory"], true, "{e}");
                    listed_urls.insert(e["url"].as_str().expect("url").to_string());
                }
            }
            assert_eq!(
                listed_urls, curated,
                "{table}: COPY manifests list the curated files"
            );
            let copies = sqls.iter().filter(|q| q.starts_with("COPY ")).count();
            assert_eq!(copies, copy_keys.len(), "{sqls:?}");
            assert!(
                sqls.iter()
                    .all(|q| !q.starts_with("COPY ") || q.contains(COPY_ROLE)),
                "COPY assumes the pipeline's role: {sqls:?}"
            );

            // Rows with a NULL key are quarantined by the loader, not lost.
            let quarantine = l["quarantine_keys"].as_array().expect("quarantine_keys");
            assert_eq!(quarantine.is_empty(), got.6 == 0, "{l}");
            for q in quarantine {
                let q = q.as_str().expect("quarantine key");
                let body = get_object(&self.s3, &self.bucket, q).await;
                assert_eq!(
                    String::from_utf8_lossy(&body).lines().count() as u64,
                    got.6,
                    "{q}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_objects_reach_postgres_through_transform_loader_and_the_data_api() {
    // Both binaries checked first, so a missing build fails before anything starts.
    let transform_fn = LambdaFunction::new("transform");
    let loader_fn = LambdaFunction::new("redshift-loader");

    // moto: the lake bucket, the hash key and the Redshift credentials' secret.
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("loader-e2e");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let hash_secret = format!("sluice/{}", unique_name("hash-key"));
    moto_secret(&sdk, &hash_secret, TEST_HASH_KEY).await;
    let redshift_secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("sluice/{}", unique_name("redshift")))
        .secret_string(r#"{"username":"sluice_loader","password":"not-used-by-the-test"}"#)
        .send()
        .await
        .expect("create the Redshift secret in moto")
        .arn()
        .expect("secret ARN")
        .to_string();
    assert!(
        redshift_secret.starts_with("arn:aws:secretsmanager:"),
        "{redshift_secret}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let schema = unique_name("loader_e2e");
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        pipeline_text(
            &unique_name("loader_e2e"),
            &hash_secret,
            &redshift_secret,
            &schema,
        ),
    )
    .expect("write pipeline");
    let pipeline = Pipeline::from_path(&path).expect("pipeline parses");
    assert!(pipeline.redshift.is_some());

    let api = DataApi::start(&pg_url(), &sdk).await;
    let transform = transform_fn.env("SLUICE_PIPELINE", &path).start();
    let loader = loader_fn
        .env("SLUICE_PIPELINE", &path)
        // Empty: the pipeline's [redshift] section, through the Data API, not PostgreSQL.
        .env("SLUICE_WAREHOUSE_URL", "")
        .env("AWS_ENDPOINT_URL_REDSHIFT_DATA", api.url())
        .start();
    let mut w = World {
        bucket,
        s3,
        pipeline,
        api,
        redshift_secret,
        transform,
        loader,
    };

    // ---- Round 1: two objects per table.
    let orders_a = [
        change(1, "new", "10.00", "c", 10, "2024-03-01 10:00:00"),
        change(2, "new", "20.00", "c", 11, "2024-03-01 10:01:00"),
        change(3, "new", "30.00", "c", 12, "2024-03-01 10:02:00"),
        change(4, "new", "40.00", "c", 13, "2024-03-01 10:03:00"),
        // The same key twice in one object: the transform keeps the later change.
        change(2, "paid", "20.00", "u", 14, "2024-03-01 11:00:00"),
        // No key: reaches the loader, which quarantines it.
        Change {
            id: None,
            ..change(0, "orphan", "1.00", "c", 15, "2024-03-01 11:01:00")
        },
        // Unreadable `_lsn`: the transform quarantines it.
        Change {
            bad: true,
            ..change(9, "bad", "9.00", "c", 16, "2024-03-01 11:02:00")
        },
    ];
    let orders_b = vec![
        delete(3, 20, "2024-04-01 08:00:00"),
        change(1, "paid", "10.00", "u", 21, "2024-04-01 08:01:00"),
        change(5, "new", "50.00", "c", 22, "2024-04-01 08:02:00"),
    ];
    let customers_1 = [
        customer(1, "ann@example.com", "bronze", "2024-01-01 00:00:00"),
        customer(2, "bob@example.com", "bronze", "2024-01-01 00:00:00"),
        customer(2, "bob@example.org", "gold", "2024-01-15 00:00:00"),
        customer(3, "cid@example.com", "silver", "2024-01-02 00:00:00"),
        Customer {
            id: None,
            ..customer(0, "nobody@example.com", "bronze", "2024-01-03 00:00:00")
        },
        Customer {
            bad: true,
            ..customer(4, "dee@example.com", "gold", "2024-01-04 00:00:00")
        },
    ];
    let customers_2 = vec![customer(
        4,
        "dee@example.com",
        "gold",
        "2024-02-20 12:30:00",
    )];
    let jsonl = |lines: Vec<String>| lines.join("\n") + "\n";
    let objects_1 = vec![
        (
            "raw/cdc/orders/round 1 part+a.jsonl".to_string(),
            jsonl(orders_a.iter().map(Change::line).collect()),
            orders_a.iter().filter(|c| c.bad).count() as u64,
        ),
        (
            "raw/cdc/orders/round-1-b.jsonl".to_string(),
            jsonl(orders_b.iter().map(Change::line).collect()),
            0,
        ),
        (
            "raw/customers/crm-1.jsonl".to_string(),
            jsonl(customers_1.iter().map(Customer::line).collect()),
            customers_1.iter().filter(|c| c.bad).count() as u64,
        ),
        (
            "raw/customers/crm-2.jsonl".to_string(),
            jsonl(customers_2.iter().map(Customer::line).collect()),
            0,
        ),
    ];
    let manifests_1 = w.transform(&objects_1).await;
    w.load(
        &manifests_1,
        1,
        &[
            // crm-1: 1, 2 (gold), 3, the keyless one; crm-2: 4.
            Want {
                table: "customers",
                manifests: 2,
                counts: (5, 5, 4, 0, 0, 0, 1),
            },
            // a: 1, 2 (paid), 3, 4, the keyless one; b: delete 3, 1 (paid), 5. Older versions
            // of 1 and 3 in the batch are duplicates; the delete of 3 is applied.
            Want {
                table: "orders",
                manifests: 2,
                counts: (8, 8, 4, 0, 1, 2, 1),
            },
        ],
    )
    .await;
    let mut all_orders: Vec<Change> = orders_a.iter().chain(&orders_b).cloned().collect();
    let mut all_customers: Vec<Customer> =
        customers_1.iter().chain(&customers_2).cloned().collect();
    let want_orders = expected_orders(&all_orders);
    assert_eq!(
        want_orders,
        [
            "1|paid|10.00|21|2024-04-01 08:01:00",
            "2|paid|20.00|14|2024-03-01 11:00:00",
            "4|new|40.00|13|2024-03-01 10:03:00",
            "5|new|50.00|22|2024-04-01 08:02:00",
        ],
        "the model itself"
    );
    assert_eq!(orders_rows(&w.pipeline).await, want_orders);
    assert_eq!(
        customers_rows(&w.pipeline).await,
        expected_customers(&all_customers)
    );
    assert_eq!(expected_customers(&all_customers).len(), 4);

    // ---- Round 2: updates, a delete, and older versions arriving late.
    let orders_c = vec![
        change(2, "shipped", "20.00", "u", 30, "2024-05-01 09:00:00"),
        delete(4, 31, "2024-05-01 09:01:00"),
        // Older than the row loaded (lsn 21): stale.
        change(1, "late", "11.00", "u", 17, "2024-03-01 12:00:00"),
        // Older than the delete of 3 (lsn 20): its tombstone keeps it out.
        change(3, "resurrected", "33.00", "u", 19, "2024-03-01 12:01:00"),
        change(6, "new", "60.00", "c", 32, "2024-05-01 09:02:00"),
    ];
    let customers_3 = vec![
        customer(1, "ann@example.net", "gold", "2024-02-01 00:00:00"),
        // Older than the version loaded (2024-01-15): stale.
        customer(2, "bob@old.example.com", "bronze", "2024-01-10 00:00:00"),
        customer(5, "eve@example.com", "silver", "2024-02-02 00:00:00"),
    ];
    let objects_2 = vec![
        (
            "raw/cdc/orders/round-2.jsonl".to_string(),
            jsonl(orders_c.iter().map(Change::line).collect()),
            0,
        ),
        (
            "raw/customers/crm-3.jsonl".to_string(),
            jsonl(customers_3.iter().map(Customer::line).collect()),
            0,
        ),
    ];
    let manifests_2 = w.transform(&objects_2).await;
    w.load(
        &manifests_2,
        2,
        &[
            Want {
                table: "customers",
                manifests: 1,
                counts: (3, 3, 2, 1, 0, 0, 0),
            },
            Want {
                table: "orders",
                manifests: 1,
                counts: (5, 5, 2, 2, 1, 0, 0),
            },
        ],
    )
    .await;
    all_orders.extend(orders_c);
    all_customers.extend(customers_3);
    let want_orders = expected_orders(&all_orders);
    assert_eq!(
        want_orders,
        [
            "1|paid|10.00|21|2024-04-01 08:01:00",
            "2|shipped|20.00|30|2024-05-01 09:00:00",
            "5|new|50.00|22|2024-04-01 08:02:00",
            "6|new|60.00|32|2024-05-01 09:02:00",
        ],
        "the model itself"
    );
    assert_eq!(orders_rows(&w.pipeline).await, want_orders);
    assert_eq!(
        customers_rows(&w.pipeline).await,
        expected_customers(&all_customers)
    );

    // Two rounds, two tables: four load batches in all (and the CREATEs of each table once),
    // each load's record in the lake.
    let subs = w.api.submissions();
    assert_eq!(subs.iter().filter(|s| is_load(s)).count(), 4);
    assert_eq!(w.api.batch_calls(), 4 + 2);
    for table in ["customers", "orders"] {
        let records: Vec<String> = list_keys(&w.s3, &w.bucket, &format!("loads/{table}/"))
            .await
            .into_iter()
            .filter(|k| k.ends_with(".json"))
            .collect();
        assert_eq!(records.len(), 2, "{table}: {records:?}");
    }
}

//! The built `redshift-loader` binary, run as a Lambda function under `cargo lambda` (the
//! harness in `sluice_tests::lambda`), invoked with each of its samples in `events/` (the SQS
//! batch, the direct S3 notification, the manual payload, the S3 test event), their bucket
//! replaced by a moto bucket holding the manifests the real transform made; loaded into
//! PostgreSQL (`SLUICE_WAREHOUSE_URL`), the rows and the load records read back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::manifest::Manifest;
use sluice::lake::{layout, ObjectStore};
use sluice::transform::Transformer;
use sluice::warehouse::LoadPlan;
use sluice_tests::{
    funnel_sample, get_object, list_keys, moto_bucket, moto_sdk_config, pg_url, pipeline_copy,
    put_object, unique_name, workspace_root, FunnelSample, LambdaFunction, Payload, RunningLambda,
};

/// The raw objects whose manifests the fixture names (see the handler's unit tests).
const FUNNEL_RAW: &str = "raw/funnel/2019-10 sample+1.csv";
const CUSTOMERS_RAW: [&str; 2] = [
    "raw/customers/crm-2024-01.jsonl",
    "raw/customers/crm-2024-02.jsonl",
];
const FUNNEL_MSG: &str = "2e1424d4-f796-459a-8184-9c92662be6da";

fn customer(id: u32, tier: &str, updated: &str) -> String {
    serde_json::json!({
        "customer_id": id, "full_name": "N", "email": format!("c{id}@example.com"),
        "signup_date": "2020-01-01T00:00:00Z", "loyalty_tier": tier,
        "lifetime_spend": "10.00", "updated_at": updated,
    })
    .to_string()
}

/// `select` of a final table's rows as text, ordered.
async fn rows(p: &Pipeline, table: &str, select: &str) -> Vec<String> {
    let plan = LoadPlan::new(p.table(table).expect("table")).expect("plan");
    let mut c = sqlx::PgConnection::connect(&pg_url())
        .await
        .expect("connect");
    let sql = format!(
        "SELECT ({select})::text FROM {} ORDER BY 1",
        plan.final_table()
    );
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut c)
        .await
        .expect("select")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// The load records (`loads/<table>/<batch>.json` and replays) in the bucket, sorted.
async fn load_records(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    list_keys(s3, bucket, layout::LOADS)
        .await
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect()
}

/// A moto bucket holding what the transform made of the raw objects the fixtures' manifests
/// come from, and the pipeline (the example, in a PostgreSQL schema of its own, the funnel
/// given a warehouse section so that the SQS batch spans two loaded tables).
struct Lake {
    dir: tempfile::TempDir,
    pipeline_path: PathBuf,
    pipeline: Pipeline,
    bucket: String,
    s3: aws_sdk_s3::Client,
    store: Arc<dyn ObjectStore>,
    transformer: Transformer,
    catalog: LocalCatalog,
    funnel_sample: FunnelSample,
    /// The funnel object's manifest, once transformed.
    funnel_manifest: Option<Manifest>,
}

async fn lake() -> Lake {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = pipeline_copy(dir.path(), "unused_glue_db", "unused-secret");
    let schema = unique_name("loader_invoke");
    let dedup =
        "dedup = { key = [\"user_session\", \"event_time\", \"event_type\", \"product_id\"] }\n";
    let text = std::fs::read_to_string(&path).expect("pipeline copy");
    assert!(
        text.contains(dedup),
        "the example's funnel dedup line changed"
    );
    let text = text
        .replacen(
            dedup,
            &format!("{dedup}warehouse = {{ schema = \"lake\", merge_keys = [\"user_session\", \"event_type\", \"product_id\"], version_column = \"event_time\" }}\n"),
            1,
        )
        .replace("schema = \"lake\"", &format!("schema = \"{schema}\""));
    std::fs::write(&path, text).expect("write pipeline");
    let pipeline = Pipeline::from_path(&path).expect("pipeline parses");

    let sdk = moto_sdk_config().await;
    let bucket = unique_name("loader-lake");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let store = sluice::lake::open_with_client(&format!("s3://{bucket}"), &s3).expect("lake");
    let sample = funnel_sample(11, &[(2019, 10), (2019, 11)], 40);
    put_object(&s3, &bucket, FUNNEL_RAW, sample.csv.clone()).await;
    let c1 = [
        customer(1, "bronze", "2024-01-01T00:00:00Z"),
        customer(2, "bronze", "2024-01-01T00:00:00Z"),
    ];
    let c2 = [
        customer(2, "gold", "2024-02-01T00:00:00Z"),
        customer(3, "silver", "2024-02-01T00:00:00Z"),
    ];
    put_object(&s3, &bucket, CUSTOMERS_RAW[0], c1.join("\n")).await;
    put_object(&s3, &bucket, CUSTOMERS_RAW[1], c2.join("\n")).await;
    let key_file = dir.path().join("hash.key");
    std::fs::write(&key_file, "k".repeat(32)).expect("key file");
    let hash_key = sluice::secrets::load_hash_key(&pipeline, Some(&key_file), None)
        .await
        .expect("hash key");
    let transformer = Transformer::new(pipeline.clone(), hash_key).expect("transformer");
    let catalog = LocalCatalog::new(dir.path().join("catalog.json"));
    let mut lake = Lake {
        pipeline_path: path,
        pipeline,
        bucket,
        s3,
        store,
        transformer,
        catalog,
        funnel_sample: sample,
        funnel_manifest: None,
        dir,
    };
    for key in [FUNNEL_RAW, CUSTOMERS_RAW[0], CUSTOMERS_RAW[1]] {
        let manifest_key = lake.transform(key).await;
        if key == FUNNEL_RAW {
            let m = Manifest::from_json(
                &lake.store.get_bytes(&manifest_key).await.expect("get"),
                &manifest_key,
            )
            .expect("manifest");
            lake.funnel_manifest = Some(m);
        }
    }
    lake
}

impl Lake {
    /// Runs the transform on one raw object; returns its manifest's key.
    async fn transform(&self, key: &str) -> String {
        self.transformer
            .transform_object(self.store.as_ref(), &self.catalog, key, None)
            .await
            .unwrap_or_else(|e| panic!("transform {key}: {e}"))
            .manifest_key
    }

    /// `events/<name>` naming this lake's bucket, as a file for `--data-file`.
    fn fixture(&self, name: &str) -> Payload {
        let text = std::fs::read_to_string(workspace_root().join("events").join(name))
            .expect("fixture")
            .replace("sluice-lake", &self.bucket);
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write fixture");
        Payload::File(path)
    }

    /// The loader, served under `cargo lambda`, on this lake's pipeline and PostgreSQL.
    fn start(&self, function: LambdaFunction) -> RunningLambda {
        function
            .env("SLUICE_PIPELINE", &self.pipeline_path)
            .env("SLUICE_WAREHOUSE_URL", pg_url())
            .start()
    }

    /// The load record at `key`, read back from moto.
    async fn record(&self, key: &str) -> Value {
        serde_json::from_slice(&get_object(&self.s3, &self.bucket, key).await)
            .unwrap_or_else(|e| panic!("load record {key}: {e}"))
    }

    async fn customers(&self) -> Vec<String> {
        rows(
            &self.pipeline,
            "customers",
            "customer_id::text || '|' || loyalty_tier",
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_binary_loads_an_sqs_batch_of_two_tables() {
    let function = LambdaFunction::new("redshift-loader");
    let lake = lake().await;
    let (bucket, s3, pipeline) = (&lake.bucket, &lake.s3, &lake.pipeline);
    let sample = &lake.funnel_sample;
    let funnel_manifest = lake.funnel_manifest.as_ref().expect("funnel transformed");
    let event = lake.fixture("sqs-manifests.json");
    let mut lambda = lake.start(function);

    // 1. Both tables load; no message goes back.
    let out = lambda.invoke_ok(&event);
    assert_eq!(out["batchItemFailures"], serde_json::json!([]), "{out}");
    let loads = out["loads"].as_array().expect("loads");
    let tables: Vec<&str> = loads.iter().filter_map(|l| l["table"].as_str()).collect();
    assert_eq!(tables, ["customers", "funnel"], "{out}");
    let mut records = Vec::new();
    for l in loads {
        assert_eq!(l["outcome"], "loaded", "{l}");
        assert_eq!(l["bucket"], bucket.as_str());
        assert_eq!(l["mismatch"], Value::Null, "{l}");
        // The load's record, written to the lake: the first load of its batch.
        let table = l["table"].as_str().expect("table");
        let record_key = l["record_key"].as_str().expect("record_key");
        assert_eq!(
            record_key,
            layout::load_record_key(table, l["batch"].as_str().expect("batch")),
            "{l}"
        );
        let record = lake.record(record_key).await;
        assert_eq!(record["counts"], l["counts"], "{record}");
        assert_eq!(record["manifests"], l["manifests"], "{record}");
        records.push(record_key.to_string());
    }
    assert_eq!(load_records(s3, bucket).await, records);
    assert_eq!(loads[0]["manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(loads[0]["counts"]["merged"], 3);
    assert_eq!(loads[0]["counts"]["duplicates"], 1);
    assert_eq!(lake.customers().await, ["1|bronze", "2|gold", "3|silver"]);
    // The funnel: one row per (session, type, product), the latest event of each.
    let keys: BTreeSet<String> = sample
        .expected
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}",
                r.user_session.clone().unwrap_or_default(),
                r.event_type,
                r.product_id.unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(loads[1]["counts"]["staged"], sample.expected.len() as u64);
    assert_eq!(loads[1]["counts"]["merged"], keys.len() as u64);
    let got = rows(
        pipeline,
        "funnel",
        "user_session || '|' || event_type || '|' || product_id::text",
    )
    .await;
    assert_eq!(got, keys.into_iter().collect::<Vec<_>>());
    // One EMF line per load.
    let emf = emf_lines(&lambda.function_stdout());
    let emf_tables: Vec<&str> = emf.iter().filter_map(|v| v["Table"].as_str()).collect();
    assert_eq!(emf_tables, ["customers", "funnel"], "{emf:?}");
    assert_eq!(emf[0]["RowsMerged"], 3);
    assert_eq!(emf[0]["ReconciliationMismatch"], 0);

    // 2. A funnel file gone from the lake: only the funnel's message goes back; the customers'
    //    replay changes nothing.
    let gone = &funnel_manifest.files[0].key;
    s3.delete_object()
        .bucket(bucket)
        .key(gone)
        .send()
        .await
        .expect("delete a curated file");
    let out = lambda.invoke_ok(&event);
    assert_eq!(
        out["batchItemFailures"],
        serde_json::json!([{ "itemIdentifier": FUNNEL_MSG }]),
        "{out}"
    );
    let loads = out["loads"].as_array().expect("loads");
    assert_eq!(loads[0]["outcome"], "loaded");
    assert_eq!(loads[0]["counts"]["merged"], 0);
    assert_eq!(loads[0]["counts"]["stale"], 3);
    assert_eq!(loads[1]["outcome"], "failed");
    assert!(
        loads[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains(gone.as_str())),
        "{out}"
    );
    assert_eq!(lake.customers().await, ["1|bronze", "2|gold", "3|silver"]);

    // 3. Not an event the function knows: BadInput; the function lives on.
    let failed = lambda.invoke(&Payload::json(r#"{"hello": "world"}"#));
    assert!(!failed.status.success(), "{}", failed.stdout);
    assert!(
        failed.error_text().contains("Error:BadInput"),
        "{}",
        failed.stderr
    );
    assert!(
        lambda.function_exit().is_none(),
        "the function is still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_binary_takes_the_direct_manual_and_test_samples() {
    let function = LambdaFunction::new("redshift-loader");
    let lake = lake().await;
    let (bucket, s3) = (&lake.bucket, &lake.s3);
    let test_event = lake.fixture("s3-test-event.json");
    let direct = lake.fixture("s3-manifest.json");
    let manual = lake.fixture("load-manual.json");
    let mut lambda = lake.start(function);

    // 1. The s3:TestEvent S3 sends when the notification is set up: accepted, nothing done.
    let out = lambda.invoke_ok(&test_event);
    assert_eq!(out["loads"], serde_json::json!([]), "{out}");
    assert_eq!(out["ignored"], serde_json::json!([]), "{out}");
    assert_eq!(load_records(s3, bucket).await, Vec::<String>::new());

    // 2. The S3 notification invoking the function directly: the customers' two manifests,
    //    one load. No `batchItemFailures`: a failure would fail the invocation instead.
    let out = lambda.invoke_ok(&direct);
    assert_eq!(out.get("batchItemFailures"), None, "{out}");
    let loads = out["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 1, "{out}");
    let l = &loads[0];
    assert_eq!(
        (&l["table"], &l["outcome"], &l["bucket"]),
        (
            &Value::from("customers"),
            &Value::from("loaded"),
            &Value::from(bucket.as_str())
        ),
        "{l}"
    );
    assert_eq!(l["counts"]["merged"], 3, "{l}");
    assert_eq!(l["counts"]["duplicates"], 1, "{l}");
    assert_eq!(l["mismatch"], Value::Null, "{l}");
    let batch = l["batch"].as_str().expect("batch");
    let record_key = layout::load_record_key("customers", batch);
    assert_eq!(l["record_key"], record_key.as_str());
    let record = lake.record(&record_key).await;
    assert_eq!(record["counts"], l["counts"], "{record}");
    assert_eq!(
        load_records(s3, bucket).await,
        std::slice::from_ref(&record_key)
    );
    assert_eq!(lake.customers().await, ["1|bronze", "2|gold", "3|silver"]);

    // 3. A backfill: February's extract arrives again with a later change, the transform
    //    rewrites that object's manifest in place, and the manual payload loads the table's
    //    manifests again. Same manifests, same batch: the first record stays, a replay record
    //    is written beside it.
    let c2 = [
        customer(2, "gold", "2024-02-01T00:00:00Z"),
        customer(3, "gold", "2024-03-01T00:00:00Z"),
    ];
    put_object(s3, bucket, CUSTOMERS_RAW[1], c2.join("\n")).await;
    let manifest_key = lake.transform(CUSTOMERS_RAW[1]).await;
    assert!(
        l["manifests"]
            .as_array()
            .is_some_and(|m| m.contains(&Value::from(manifest_key.as_str()))),
        "{manifest_key} is one of the sample's manifests: {l}"
    );
    let out = lambda.invoke_ok(&manual);
    let loads = out["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 1, "{out}");
    let m = &loads[0];
    assert_eq!(
        (&m["table"], &m["outcome"]),
        (&l["table"], &l["outcome"]),
        "{m}"
    );
    assert_eq!(m["batch"], batch, "{m}");
    assert_eq!(m["counts"]["merged"], 1, "customer 3 only: {m}");
    assert_eq!(m["mismatch"], Value::Null, "{m}");
    let replay_key = m["record_key"].as_str().expect("record_key");
    assert!(
        replay_key.starts_with(&format!("loads/customers/{batch}/replay-")),
        "{m}"
    );
    assert_eq!(lake.record(replay_key).await["counts"], m["counts"]);
    assert_eq!(
        lake.record(&record_key).await,
        record,
        "the first record is kept"
    );
    let mut want = vec![record_key, replay_key.to_string()];
    want.sort();
    assert_eq!(load_records(s3, bucket).await, want);
    assert_eq!(lake.customers().await, ["1|bronze", "2|gold", "3|gold"]);

    // One EMF line per load, none for the test event.
    let emf = emf_lines(&lambda.function_stdout());
    let merged: Vec<&Value> = emf.iter().map(|v| &v["RowsMerged"]).collect();
    assert_eq!(merged, [&Value::from(3), &Value::from(1)], "{emf:?}");
    assert!(
        lambda.function_exit().is_none(),
        "the function is still serving"
    );
}

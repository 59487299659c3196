//! The built `redshift-loader` binary, run as a Lambda function under `cargo lambda` (the
//! harness in `sluice_tests::lambda`), invoked with `events/sqs-manifests.json`: manifests made
//! by the real transform in a moto bucket, loaded into PostgreSQL (`SLUICE_WAREHOUSE_URL`).

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::manifest::Manifest;
use sluice::transform::Transformer;
use sluice::warehouse::LoadPlan;
use sluice_tests::{
    funnel_sample, moto_bucket, moto_sdk_config, pg_url, pipeline_copy, put_object, unique_name,
    workspace_root, LambdaFunction, Payload,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_binary_loads_an_sqs_batch_of_two_tables() {
    let function = LambdaFunction::new("redshift-loader");

    // The pipeline: the example, in a schema of its own, the funnel given a warehouse section
    // (the example keeps it lake-only) so that the batch spans two loaded tables.
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

    // The transform's output in a moto bucket of its own.
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
    let mut funnel_manifest = None;
    for key in [FUNNEL_RAW, CUSTOMERS_RAW[0], CUSTOMERS_RAW[1]] {
        let s = transformer
            .transform_object(store.as_ref(), &catalog, key, None)
            .await
            .unwrap_or_else(|e| panic!("transform {key}: {e}"));
        if key == FUNNEL_RAW {
            let m = Manifest::from_json(
                &store.get_bytes(&s.manifest_key).await.expect("get"),
                &s.manifest_key,
            )
            .expect("manifest");
            funnel_manifest = Some(m);
        }
    }
    let funnel_manifest = funnel_manifest.expect("funnel transformed");

    // The fixture, naming our bucket.
    let event = std::fs::read_to_string(workspace_root().join("events/sqs-manifests.json"))
        .expect("fixture")
        .replace("sluice-lake", &bucket);
    let mut lambda = function
        .env("SLUICE_PIPELINE", &path)
        .env("SLUICE_WAREHOUSE_URL", pg_url())
        .start();

    // 1. Both tables load; no message goes back.
    let out = lambda.invoke_ok(&Payload::json(event.clone()));
    assert_eq!(out["batchItemFailures"], serde_json::json!([]), "{out}");
    let loads = out["loads"].as_array().expect("loads");
    let tables: Vec<&str> = loads.iter().filter_map(|l| l["table"].as_str()).collect();
    assert_eq!(tables, ["customers", "funnel"], "{out}");
    for l in loads {
        assert_eq!(l["outcome"], "loaded", "{l}");
        assert_eq!(l["bucket"], bucket.as_str());
        assert_eq!(l["mismatch"], Value::Null, "{l}");
        assert!(
            l["record_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("loads/")),
            "{l}"
        );
    }
    assert_eq!(loads[0]["manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(loads[0]["counts"]["merged"], 3);
    assert_eq!(loads[0]["counts"]["duplicates"], 1);
    assert_eq!(
        rows(
            &pipeline,
            "customers",
            "customer_id::text || '|' || loyalty_tier"
        )
        .await,
        ["1|bronze", "2|gold", "3|silver"]
    );
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
        &pipeline,
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
        .bucket(&bucket)
        .key(gone)
        .send()
        .await
        .expect("delete a curated file");
    let out = lambda.invoke_ok(&Payload::json(event));
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
    assert_eq!(
        rows(
            &pipeline,
            "customers",
            "customer_id::text || '|' || loyalty_tier"
        )
        .await,
        ["1|bronze", "2|gold", "3|silver"]
    );

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

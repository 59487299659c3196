//! The built `cdc-sink` binary, run as a Lambda function under `cargo lambda` (the harness in
//! `sluice_tests::lambda`), invoked with its Kinesis samples in `events/` against a moto bucket
//! as its lake (`SLUICE_LAKE`): the objects listed in `raw/cdc/` and `quarantine/_cdc-sink/`,
//! their contents read back, the response's batch item failures and the EMF lines checked.

use aws_lambda_events::event::kinesis::KinesisEvent;
use serde_json::{json, Value};

use sluice::lake::layout;
use sluice::lake::quarantine::QuarantineRecord;
use sluice_tests::{
    get_object, list_keys, moto_bucket, moto_sdk_config, put_object, unique_name, workspace_root,
    LambdaFunction, Payload,
};

const SHARD: &str = "shardId-000000000000";
const SPILL_KEY: &str = "spill/cdc/orders/22817900-0.json";

/// Every record of a sample: its sequence number and decoded data, in order.
fn sample(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = workspace_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let event: KinesisEvent = serde_json::from_str(&text).expect("a Kinesis event");
    event
        .records
        .into_iter()
        .map(|r| (r.kinesis.sequence_number, r.kinesis.data.0))
        .collect()
}

fn jsonl(lines: &[&[u8]]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.iter().chain(b"\n"))
        .copied()
        .collect()
}

fn one_line(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'\n').collect()
}

fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_sink_binary_writes_the_kinesis_samples_to_the_lake() {
    let function = LambdaFunction::new("cdc-sink");
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("cdc-sink");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let pipeline = workspace_root().join("functions/cdc-sink/fixtures/pipeline.toml");
    let mut lambda = function
        .env("SLUICE_PIPELINE", &pipeline)
        .env("SLUICE_LAKE", format!("s3://{bucket}"))
        .start();

    // 1. One batch of two tables: one object per table, each event's bytes as a line, in
    //    sequence order; nothing refused, nothing to retry.
    let clean = sample("kinesis-cdc.json");
    let out = lambda.invoke_ok(&Payload::event("kinesis-cdc.json"));
    assert_eq!(out, json!({"batchItemFailures": []}));
    let orders = layout::cdc_object_key("orders", SHARD, &clean[0].0, &clean[3].0);
    let customers = layout::cdc_object_key("customers", SHARD, &clean[1].0, &clean[4].0);
    let written = vec![customers.clone(), orders.clone()];
    assert_eq!(list_keys(&s3, &bucket, layout::RAW_CDC).await, written);
    assert_eq!(
        get_object(&s3, &bucket, &orders).await.to_vec(),
        jsonl(&[&clean[0].1, &clean[2].1, &clean[3].1])
    );
    assert_eq!(
        get_object(&s3, &bucket, &customers).await.to_vec(),
        jsonl(&[&clean[1].1, &clean[4].1])
    );
    let emf = emf_lines(&lambda.function_stdout());
    let per_table: Vec<(&str, u64)> = emf
        .iter()
        .filter_map(|v| Some((v["Table"].as_str()?, v["RecordsWritten"].as_u64()?)))
        .collect();
    assert_eq!(per_table, [("customers", 2), ("orders", 3)], "{emf:?}");
    assert_eq!(emf.last().map(|v| v["RecordsIn"].clone()), Some(json!(5)));

    // 2. The same batch again (Lambda redelivers after a crash): the same objects, overwritten.
    let out = lambda.invoke_ok(&Payload::event("kinesis-cdc.json"));
    assert_eq!(out, json!({"batchItemFailures": []}));
    assert_eq!(list_keys(&s3, &bucket, layout::RAW_CDC).await, written);
    assert!(list_keys(&s3, &bucket, layout::QUARANTINE).await.is_empty());

    // 3. The next batch: a spill pointer (its object in the lake), a pretty-printed event, and
    //    three records the sink refuses (not JSON, an unknown relation, an unknown op).
    let spilled = serde_json::to_vec_pretty(&json!({
        "op": "c", "before": null, "after": {"id": 9, "name": "x".repeat(4096)},
        "source": {"db": "shop", "schema": "public", "table": "orders", "lsn": 22817900u64,
                   "txid": 7467, "commit_ts": "2026-11-26T09:01:00.000000Z"}
    }))
    .expect("spilled event");
    put_object(&s3, &bucket, SPILL_KEY, spilled.clone()).await;
    let next = sample("kinesis-cdc-spill.json");
    let out = lambda.invoke_ok(&Payload::event("kinesis-cdc-spill.json"));
    assert_eq!(out, json!({"batchItemFailures": []}));
    let orders_next = layout::cdc_object_key("orders", SHARD, &next[0].0, &next[4].0);
    let mut all = written.clone();
    all.push(orders_next.clone());
    all.sort();
    assert_eq!(list_keys(&s3, &bucket, layout::RAW_CDC).await, all);
    assert_eq!(
        get_object(&s3, &bucket, &orders_next).await.to_vec(),
        jsonl(&[&next[0].1, &one_line(&spilled), &one_line(&next[4].1)])
    );
    let qkey = layout::cdc_quarantine_key(SHARD, &next[2].0, &next[5].0);
    assert_eq!(
        list_keys(&s3, &bucket, layout::QUARANTINE).await,
        std::slice::from_ref(&qkey)
    );
    let body = get_object(&s3, &bucket, &qkey).await;
    let q: Vec<QuarantineRecord> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("quarantine record"))
        .collect();
    let got: Vec<(u64, String)> = q.iter().map(|r| (r.line, r.raw.clone())).collect();
    let want: Vec<(u64, String)> = [2usize, 3, 5]
        .iter()
        .map(|&i| {
            (
                i as u64 + 1,
                String::from_utf8(next[i].1.clone()).expect("utf-8"),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(q[1].reason.contains("public.payments"), "{}", q[1].reason);
    assert!(
        q[0].object
            .ends_with(&format!("stream/sluice-cdc/{SHARD}/{}", next[2].0)),
        "{}",
        q[0].object
    );
    let batch = emf_lines(&lambda.function_stdout())
        .into_iter()
        .last()
        .expect("batch EMF line");
    assert_eq!(
        (&batch["SpillsResolved"], &batch["RecordsQuarantined"]),
        (&json!(1), &json!(3))
    );

    // 4. Not a Kinesis event: BadInput; the function lives on. No record's contents in logs.
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
    let logs = lambda.function_stdout() + &lambda.function_stderr();
    for secret in ["c1@example.com", "pretty\\tprinted", "not json at all"] {
        assert!(!logs.contains(secret), "{secret} in the function's logs");
    }
    assert!(
        logs.contains(&orders_next),
        "one log line per object names its key"
    );

    for key in list_keys(&s3, &bucket, "").await {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("delete");
    }
    s3.delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("delete bucket");
}

//! The built `transform` binary, run as a Lambda function under `cargo lambda` (the generic
//! harness in `sluice_tests::lambda`) and invoked with the event fixtures in `events/`, against
//! moto_server.

use serde_json::Value;

use sluice::transform::Manifest;
use sluice_tests::{
    funnel_rows, funnel_sample, get_object, list_keys, moto_sdk_config, moto_secret,
    parquet_batches, pipeline_copy, put_object, unique_name, workspace_root, LambdaFunction,
    Payload, TEST_HASH_KEY,
};

/// The bucket and key `events/s3-put.json` names (its key decoded).
const BUCKET: &str = "sluice-lake";
const KEY: &str = "raw/funnel/2019-10 sample+1.csv";

/// Creates `sluice-lake` in moto (already there from an earlier run on the same server is
/// fine) and empties it: this test is the only one that uses the fixture's bucket.
async fn fixture_bucket(s3: &aws_sdk_s3::Client) {
    if let Err(e) = s3.create_bucket().bucket(BUCKET).send().await {
        let owned = e
            .as_service_error()
            .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
        assert!(
            owned,
            "create bucket {BUCKET}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        );
    }
    for key in list_keys(s3, BUCKET, "").await {
        s3.delete_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("empty the fixture bucket");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_binary_serves_the_event_fixtures() {
    // Checked first, so a missing build fails before anything starts.
    let function = LambdaFunction::new("transform");
    let put_event = Payload::event("s3-put.json");
    let test_event = Payload::event("s3-test-event.json");

    // moto: the bucket and object the fixture names, a hash-key secret, a pipeline copy that
    // names that secret and a Glue database of its own.
    let sdk = moto_sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(&sdk));
    fixture_bucket(&s3).await;
    let sample = funnel_sample(7, &[(2019, 10), (2019, 11)], 20);
    put_object(&s3, BUCKET, KEY, sample.csv.clone()).await;
    let secret = format!("sluice/{}", unique_name("hash-key"));
    moto_secret(&sdk, &secret, TEST_HASH_KEY).await;
    let db = unique_name("invoke");
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline_copy(dir.path(), &db, &secret);

    let mut lambda = function.env("SLUICE_PIPELINE", &pipeline).start();

    // 1. The S3 put fixture, as is.
    let out = lambda.invoke_ok(&put_event);
    assert_eq!(out["ignored"], serde_json::json!([]), "{out}");
    let processed = out["processed"].as_array().expect("processed array");
    assert_eq!(processed.len(), 1, "{out}");
    let p = &processed[0];
    assert_eq!(p["bucket"], BUCKET);
    assert_eq!(p["key"], KEY, "the fixture's key decoded");
    assert_eq!(p["table"], "funnel");
    assert_eq!(p["rows_read"], sample.rows_read);
    assert_eq!(p["rows_written"], sample.expected.len() as u64);
    assert_eq!(p["rows_duplicate"], sample.rows_duplicate);
    assert_eq!(p["rows_quarantined"], 1);
    assert_eq!(p["files"], 2);
    let manifest_key = p["manifest_key"].as_str().expect("manifest_key");

    // What it wrote, read back from moto.
    let m: Manifest = serde_json::from_slice(&get_object(&s3, BUCKET, manifest_key).await)
        .expect("manifest JSON");
    let curated = list_keys(&s3, BUCKET, "curated/").await;
    assert_eq!(
        m.files.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        curated
    );
    for (k, month) in curated.iter().zip(["10", "11"]) {
        assert!(
            k.starts_with(&format!(
                "curated/funnel/year=2019/month={month}/2019-10_sample_1-"
            )) && k.ends_with("-00000.parquet"),
            "{k}"
        );
    }
    let mut rows = Vec::new();
    for k in &curated {
        for b in parquet_batches(get_object(&s3, BUCKET, k).await) {
            rows.extend(funnel_rows(&b));
        }
    }
    assert_eq!(
        rows, sample.expected,
        "curated rows (hashed with the key from the moto secret)"
    );
    assert_eq!(
        (m.counts.rows_read, m.counts.rows_written),
        (sample.rows_read, sample.expected.len() as u64)
    );
    let quarantine = m.quarantine_key.as_deref().expect("quarantine key");
    let mut want_all = vec![
        KEY.to_string(),
        manifest_key.to_string(),
        quarantine.to_string(),
    ];
    want_all.extend(curated.iter().cloned());
    want_all.sort();
    assert_eq!(list_keys(&s3, BUCKET, "").await, want_all);
    let glue = aws_sdk_glue::Client::new(&sdk);
    let parts = glue
        .get_partitions()
        .database_name(&db)
        .table_name("funnel")
        .send()
        .await
        .expect("GetPartitions");
    assert_eq!(parts.partitions().len(), 2);

    // The EMF metrics line on the function's stdout.
    let stdout = lambda.function_stdout();
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 1, "one EMF line per object:\n{stdout}");
    assert_eq!(emf[0]["Table"], "funnel");
    assert_eq!(emf[0]["RowsWritten"], sample.expected.len() as u64);

    // 2. The s3:TestEvent fixture: accepted, nothing done.
    let out = lambda.invoke_ok(&test_event);
    assert_eq!(out, serde_json::json!({ "processed": [], "ignored": [] }));

    // 3. A key no table owns: the invocation fails, naming the key; the function lives on.
    let bad = std::fs::read_to_string(workspace_root().join("events/s3-put.json"))
        .expect("fixture")
        .replace("raw/funnel/2019-10+sample%2B1.csv", "raw/nope/x.csv");
    let failed = lambda.invoke(&Payload::json(bad));
    assert!(
        !failed.status.success(),
        "an unknown table must fail the invocation: {}",
        failed.stdout
    );
    // The error type and message, with cargo lambda's wrapping and box removed.
    let flat = failed.error_text();
    for part in [
        "Error:BadInput",
        "s3://sluice-lake/raw/nope/x.csv:",
        "knownrawprefixesareraw/funnel/,raw/customers/",
    ] {
        assert!(
            flat.contains(part),
            "cargo lambda invoke's error lacks {part:?}:\n{}",
            failed.stderr
        );
    }
    let out = lambda.invoke_ok(&test_event);
    assert_eq!(out["processed"], serde_json::json!([]));
    let exit = lambda.function_exit();
    assert!(
        exit.is_none(),
        "the function process is still serving: {exit:?}"
    );
}

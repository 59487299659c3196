//! The Glue route of the `transform` function against moto_server: an object above the
//! pipeline's `[glue].threshold_bytes` starts a run of the Glue job (read back with
//! GetJobRuns: its `Arguments`) and writes nothing to the lake; an object below is transformed
//! in the function as before; a start refused with `ConcurrentRunsExceededException` is
//! retried and, past the retry time, reported as `Retryable`. moto refuses a start when the
//! job's `ExecutionProperty.MaxConcurrentRuns` runs are STARTING or RUNNING; by default its
//! runs finish at once, so the concurrency test switches moto's state manager to step runs
//! only when they are read (and restores it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sluice::catalog::GlueCatalog;
use sluice::config::Pipeline;
use sluice::glue_job::{GlueRoute, GlueStarter};
use sluice::transform::{ErrorKind, Transformer};
use sluice_tests::{
    funnel_rows, funnel_sample, get_object, list_keys, moto_bucket, moto_endpoint, moto_sdk_config,
    moto_secret, parquet_batches, pipeline_copy, put_object, unique_name, workspace_root,
    LambdaFunction, Payload, TEST_HASH_KEY,
};
use sluice_transform::{handle, Deps};

const PUT_EVENT: &str = include_str!("../../events/s3-put.json");

/// Objects above this many bytes go to Glue in these tests.
const THRESHOLD: u64 = 4096;
/// Where each test puts its pipeline file in its bucket (the `--pipeline` argument).
const PIPELINE_KEY: &str = "config/pipeline.toml";

/// A bucket, a hash-key secret, a Glue database and job, and the pipeline file (the example,
/// with a `[glue]` section naming the job) both on disk and in the bucket.
struct Env {
    sdk: aws_config::SdkConfig,
    s3: aws_sdk_s3::Client,
    glue: aws_sdk_glue::Client,
    bucket: String,
    job: String,
    pipeline_text: String,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(max_concurrent_runs: i32, start_retry_secs: u64) -> Env {
        let sdk = moto_sdk_config().await;
        let bucket = unique_name("glue-route");
        let s3 = moto_bucket(&sdk, &bucket).await;
        let secret = format!("sluice/{}", unique_name("hash-key"));
        moto_secret(&sdk, &secret, TEST_HASH_KEY).await;
        let db = unique_name("glue_route");
        let job = unique_name("transform-job");
        let glue = aws_sdk_glue::Client::new(&sdk);
        create_job(&glue, &job, &bucket, max_concurrent_runs).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let example = std::fs::read_to_string(pipeline_copy(dir.path(), &db, &secret))
            .expect("pipeline copy");
        let pipeline_text = format!(
            "[glue]\njob_name = \"{job}\"\nthreshold_bytes = {THRESHOLD}\nstart_retry_secs = {start_retry_secs}\n\n{example}"
        );
        put_object(&s3, &bucket, PIPELINE_KEY, pipeline_text.clone()).await;
        Env {
            sdk,
            s3,
            glue,
            bucket,
            job,
            pipeline_text,
            _dir: dir,
        }
    }

    fn pipeline_location(&self) -> String {
        format!("s3://{}/{PIPELINE_KEY}", self.bucket)
    }

    /// The handler's `Deps`, built the way `main.rs` builds them.
    async fn deps(&self) -> Deps {
        let pipeline = Pipeline::parse(&self.pipeline_text, &self.pipeline_location())
            .expect("pipeline with [glue] parses");
        let config = pipeline.glue.clone().expect("[glue] section");
        let hash_key = sluice::secrets::load_hash_key(
            &pipeline,
            None,
            Some(&aws_sdk_secretsmanager::Client::new(&self.sdk)),
        )
        .await
        .expect("hash key from the moto secret");
        let route = GlueRoute::new(
            config,
            &self.pipeline_location(),
            Arc::new(GlueStarter::new(self.glue.clone())),
        )
        .expect("pipeline on S3");
        Deps {
            transformer: Transformer::new(pipeline, hash_key).expect("transformer"),
            lakes: sluice::lake::Lakes::S3(self.s3.clone()),
            catalog: Arc::new(GlueCatalog::new(self.glue.clone())),
            glue: Some(route),
            emit_metrics: false,
        }
    }

    /// The arguments a run for `key` of the funnel table must carry.
    fn want_arguments(&self, key: &str) -> HashMap<String, String> {
        HashMap::from([
            ("--source_bucket".to_string(), self.bucket.clone()),
            ("--source_key".to_string(), key.to_string()),
            ("--table".to_string(), "funnel".to_string()),
            ("--pipeline".to_string(), self.pipeline_location()),
        ])
    }

    /// Every run of the job, as (id, arguments). Reading runs steps them in moto.
    async fn job_runs(&self) -> Vec<(String, HashMap<String, String>)> {
        let out = self
            .glue
            .get_job_runs()
            .job_name(&self.job)
            .send()
            .await
            .expect("GetJobRuns");
        out.job_runs()
            .iter()
            .map(|r| {
                (
                    r.id().unwrap_or_default().to_string(),
                    r.arguments().cloned().unwrap_or_default(),
                )
            })
            .collect()
    }
}

async fn create_job(glue: &aws_sdk_glue::Client, job: &str, bucket: &str, max_runs: i32) {
    glue.create_job()
        .name(job)
        .role("arn:aws:iam::123456789012:role/sluice-glue-job")
        .command(
            aws_sdk_glue::types::JobCommand::builder()
                .name("glueetl")
                .python_version("3")
                .script_location(format!("s3://{bucket}/infra/glue/transform_job.py"))
                .build(),
        )
        .execution_property(
            aws_sdk_glue::types::ExecutionProperty::builder()
                .max_concurrent_runs(max_runs)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "CreateJob {job}: {}",
                aws_sdk_glue::error::DisplayErrorContext(e)
            )
        });
}

/// An S3 notification naming `(bucket, key, size)` objects, each a copy of the record in
/// `events/s3-put.json` (keys here need no URL-encoding: letters, digits, `/`, `-`, `.`).
fn s3_event(objects: &[(&str, &str, u64)]) -> Value {
    let template: Value = serde_json::from_str(PUT_EVENT).expect("events/s3-put.json is JSON");
    let record = template["Records"][0].clone();
    let records: Vec<Value> = objects
        .iter()
        .map(|(bucket, key, size)| {
            let mut r = record.clone();
            r["s3"]["bucket"]["name"] = json!(bucket);
            r["s3"]["bucket"]["arn"] = json!(format!("arn:aws:s3:::{bucket}"));
            r["s3"]["object"]["key"] = json!(key);
            r["s3"]["object"]["size"] = json!(size);
            r
        })
        .collect();
    json!({ "Records": records })
}

/// A funnel CSV above the threshold and one below.
fn big_and_small() -> (String, sluice_tests::FunnelSample) {
    let big = funnel_sample(11, &[(2019, 10)], 200).csv;
    let small = funnel_sample(12, &[(2019, 10), (2019, 11)], 10);
    assert!(
        big.len() as u64 > THRESHOLD && (small.csv.len() as u64) <= THRESHOLD,
        "sample sizes around the threshold: {} and {}",
        big.len(),
        small.csv.len()
    );
    (big, small)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_above_the_threshold_starts_a_job_run_and_one_below_is_transformed() {
    let e = Env::new(3, 60).await;
    let deps = e.deps().await;
    let (big, small) = big_and_small();
    let (big_key, small_key) = ("raw/funnel/dump-2019.csv", "raw/funnel/small.csv");
    put_object(&e.s3, &e.bucket, big_key, big.clone()).await;
    put_object(&e.s3, &e.bucket, small_key, small.csv.clone()).await;

    let event = s3_event(&[
        (&e.bucket, big_key, big.len() as u64),
        (&e.bucket, small_key, small.csv.len() as u64),
    ]);
    let resp = handle(&deps, event)
        .await
        .unwrap_or_else(|err| panic!("handler failed ({:?}): {err}", err.kind));

    // The large object: one run, with the arguments the job reads, and nothing in the lake.
    assert_eq!(resp.glue_job_runs.len(), 1, "{resp:?}");
    let g = &resp.glue_job_runs[0];
    assert_eq!(
        (g.bucket.as_str(), g.key.as_str(), g.table.as_str()),
        (e.bucket.as_str(), big_key, "funnel")
    );
    assert_eq!(
        (g.size_bytes, g.job_name.as_str()),
        (big.len() as u64, e.job.as_str())
    );
    let runs = e.job_runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, g.run_id, "the run id the response names");
    assert_eq!(runs[0].1, e.want_arguments(big_key));

    // The small object: transformed here, as before.
    assert_eq!(resp.processed.len(), 1, "{resp:?}");
    let p = &resp.processed[0];
    assert_eq!(p.key, small_key);
    assert_eq!(p.rows_written, small.expected.len() as u64);
    let curated = list_keys(&e.s3, &e.bucket, "curated/").await;
    assert_eq!(
        curated.len(),
        2,
        "two months of the small object: {curated:?}"
    );
    let mut rows = Vec::new();
    for k in &curated {
        assert!(k.contains("/small-"), "only the small object's files: {k}");
        for b in parquet_batches(get_object(&e.s3, &e.bucket, k).await) {
            rows.extend(funnel_rows(&b));
        }
    }
    assert_eq!(rows, small.expected);
    let manifests = list_keys(&e.s3, &e.bucket, "manifests/").await;
    assert_eq!(
        manifests,
        vec![p.manifest_key.clone()],
        "no manifest for the large object"
    );
    assert!(list_keys(&e.s3, &e.bucket, "quarantine/")
        .await
        .iter()
        .all(|k| !k.contains("dump-2019")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_no_table_owns_fails_before_any_job_run() {
    let e = Env::new(3, 60).await;
    let deps = e.deps().await;
    let err = handle(
        &deps,
        s3_event(&[(&e.bucket, "raw/nope/big.csv", THRESHOLD + 1)]),
    )
    .await
    .expect_err("no table owns the key");
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(err.message.contains("raw/nope/big.csv"), "{}", err.message);
    assert!(e.job_runs().await.is_empty());
}

/// Switches moto's Glue job runs to advance one state (STARTING → RUNNING → SUCCEEDED) per
/// read instead of finishing at once; dropping it restores the default, even on a panic.
struct SteppedRuns;

impl SteppedRuns {
    fn on() -> SteppedRuns {
        moto_api_post(
            "/moto-api/state-manager/set-transition",
            &json!({"model_name": "glue::job_run", "transition": {"progression": "manual", "times": 1}}),
        );
        SteppedRuns
    }
}

impl Drop for SteppedRuns {
    fn drop(&mut self) {
        moto_api_post(
            "/moto-api/state-manager/unset-transition",
            &json!({"model_name": "glue::job_run"}),
        );
    }
}

/// A POST to moto's own API (no HTTP client in this crate: one request on a plain socket).
fn moto_api_post(path: &str, body: &Value) {
    let endpoint = moto_endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/');
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(host)
        .unwrap_or_else(|e| panic!("connect to moto at {host}: {e}"));
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write to moto");
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("read moto's reply");
    assert!(
        reply.starts_with("HTTP/1.1 20") || reply.starts_with("HTTP/1.0 20"),
        "POST {path}: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_are_retried_then_reported_or_started_when_a_slot_frees() {
    let _stepped = SteppedRuns::on();
    let (big, _) = big_and_small();
    let key = "raw/funnel/dump-2019.csv";

    // 1. The job's only slot stays busy: refused, retried for start_retry_secs, then reported.
    let e = Env::new(1, 2).await;
    put_object(&e.s3, &e.bucket, key, big.clone()).await;
    e.glue
        .start_job_run()
        .job_name(&e.job)
        .send()
        .await
        .expect("the run that holds the only slot");
    let deps = e.deps().await;
    let started = Instant::now();
    let err = handle(&deps, s3_event(&[(&e.bucket, key, big.len() as u64)]))
        .await
        .expect_err("every start is refused");
    let elapsed = started.elapsed();
    assert_eq!(err.kind, ErrorKind::Retryable, "{}", err.message);
    assert!(
        err.message.contains("ConcurrentRunsExceededException"),
        "{}",
        err.message
    );
    let attempts: u32 = err
        .message
        .split(" attempts")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("attempt count in: {}", err.message));
    assert!(attempts >= 2, "retried: {}", err.message);
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "bounded by start_retry_secs = 2: {elapsed:?}"
    );
    assert_eq!(e.job_runs().await.len(), 1, "only the blocking run");
    assert!(
        list_keys(&e.s3, &e.bucket, "state/glue/").await.is_empty(),
        "the claim is released so a later retry can start"
    );

    // 2. The slot frees while the function waits: the retry starts the run.
    let e = Env::new(1, 60).await;
    put_object(&e.s3, &e.bucket, key, big.clone()).await;
    e.glue
        .start_job_run()
        .job_name(&e.job)
        .send()
        .await
        .expect("the run that holds the only slot");
    let deps = e.deps().await;
    let event = s3_event(&[(&e.bucket, key, big.len() as u64)]);
    let started = Instant::now();
    let (resp, ()) = tokio::join!(handle(&deps, event), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Two reads: the blocking run goes STARTING → RUNNING → SUCCEEDED.
        e.job_runs().await;
        e.job_runs().await;
    });
    let resp = resp.unwrap_or_else(|err| panic!("handler failed ({:?}): {err}", err.kind));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "started only after the slot freed"
    );
    assert_eq!(resp.glue_job_runs.len(), 1, "{resp:?}");
    let runs = e.job_runs().await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let ours = runs
        .iter()
        .find(|(id, _)| *id == resp.glue_job_runs[0].run_id)
        .expect("the started run");
    assert_eq!(ours.1, e.want_arguments(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_binary_starts_a_job_run_for_a_large_object() {
    let function = LambdaFunction::new("transform");
    let e = Env::new(3, 60).await;
    let (big, _) = big_and_small();
    // The large-object sample (a 5.6 GB multipart upload, its key URL-encoded), naming this
    // bucket: the key it names, decoded.
    let key = "raw/funnel/history 2019-Oct.csv";
    put_object(&e.s3, &e.bucket, key, big.clone()).await;
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("events/s3-put-large.json"))
            .expect("fixture"),
    )
    .expect("JSON");
    event["Records"][0]["s3"]["bucket"]["name"] = json!(e.bucket);

    // The function reads the pipeline from S3, the location it passes the job.
    let mut lambda = function
        .env("SLUICE_PIPELINE", e.pipeline_location())
        .start();
    let out = lambda.invoke_ok(&Payload::json(event.to_string()));
    assert_eq!(out["processed"], json!([]), "{out}");
    // The event delivered again: the run the first started is reported, none started.
    let again = lambda.invoke_ok(&Payload::json(event.to_string()));
    assert_eq!(
        again["glue_job_runs"][0]["already_started"], true,
        "{again}"
    );
    assert_eq!(
        again["glue_job_runs"][0]["run_id"],
        out["glue_job_runs"][0]["run_id"]
    );
    let runs = out["glue_job_runs"].as_array().expect("glue_job_runs");
    assert_eq!(runs.len(), 1, "{out}");
    assert_eq!(runs[0]["key"], key);
    assert_eq!(runs[0]["table"], "funnel");
    assert_eq!(runs[0]["job_name"], e.job.as_str());
    let listed = e.job_runs().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(runs[0]["run_id"], listed[0].0.as_str());
    assert_eq!(listed[0].1, e.want_arguments(key));
    assert!(list_keys(&e.s3, &e.bucket, "curated/").await.is_empty());
    assert!(list_keys(&e.s3, &e.bucket, "manifests/").await.is_empty());

    let stdout = lambda.function_stdout();
    let emf: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    assert_eq!(
        emf.len(),
        1,
        "one EMF line, for the one started run:\n{stdout}"
    );
    assert_eq!(emf[0]["GlueJobRunsStarted"], 1);
    assert_eq!(emf[0]["JobRunId"], listed[0].0.as_str());

    // A pipeline with [glue] read from a local file: the function refuses to start.
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("pipeline.toml");
    std::fs::write(&local, &e.pipeline_text).expect("local pipeline");
    let mut refused = LambdaFunction::new("transform")
        .env("SLUICE_PIPELINE", &local)
        .start();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(status) = refused.function_exit() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a local pipeline with [glue] must stop the cold start:\n{}",
            refused.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "{}", refused.logs());
    let stderr = refused.function_stderr();
    assert!(
        stderr.contains("must be on S3") && stderr.contains("SLUICE_PIPELINE"),
        "the start-up error names the fix:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_starts_one_job_run() {
    let e = Env::new(3, 60).await;
    let deps = e.deps().await;
    let (big, _) = big_and_small();
    let key = "raw/funnel/dump-2019.csv";
    put_object(&e.s3, &e.bucket, key, big.clone()).await;
    // S3 events carry the ETag without its quotes.
    let etag =
        e.s3.head_object()
            .bucket(&e.bucket)
            .key(key)
            .send()
            .await
            .expect("HeadObject")
            .e_tag()
            .expect("ETag")
            .trim_matches('"')
            .to_string();
    let mut event = s3_event(&[(&e.bucket, key, big.len() as u64)]);
    event["Records"][0]["s3"]["object"]["eTag"] = json!(etag);

    let first = handle(&deps, event.clone())
        .await
        .unwrap_or_else(|err| panic!("first delivery ({:?}): {err}", err.kind));
    assert_eq!(first.glue_job_runs.len(), 1, "{first:?}");
    assert!(!first.glue_job_runs[0].already_started);
    let second = handle(&deps, event)
        .await
        .unwrap_or_else(|err| panic!("second delivery ({:?}): {err}", err.kind));
    assert_eq!(second.glue_job_runs.len(), 1, "{second:?}");
    let (a, b) = (&first.glue_job_runs[0], &second.glue_job_runs[0]);
    assert!(b.already_started, "{second:?}");
    assert_eq!(b.run_id, a.run_id, "the run the first delivery started");

    let runs = e.job_runs().await;
    assert_eq!(runs.len(), 1, "one run for two deliveries: {runs:?}");
    assert_eq!(runs[0].0, a.run_id);
    assert_eq!(runs[0].1, e.want_arguments(key));

    // The claim names the run, under state/glue/<table>/.
    let claims = list_keys(&e.s3, &e.bucket, "state/glue/").await;
    let want = sluice::lake::layout::glue_claim_key("funnel", key, &etag);
    assert_eq!(claims, vec![want.clone()]);
    let claim: Value =
        serde_json::from_slice(&get_object(&e.s3, &e.bucket, &want).await).expect("claim JSON");
    assert_eq!(claim["run_id"], a.run_id.as_str());
    assert_eq!(claim["key"], key);

    // An event without an ETag (hand-written) finds the same claim through the object's own.
    let mut bare = s3_event(&[(&e.bucket, key, big.len() as u64)]);
    bare["Records"][0]["s3"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("eTag");
    let third = handle(&deps, bare)
        .await
        .unwrap_or_else(|err| panic!("third delivery ({:?}): {err}", err.kind));
    assert!(third.glue_job_runs[0].already_started, "{third:?}");
    assert_eq!(e.job_runs().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_lake_refuses_a_large_object_from_another_bucket() {
    let e = Env::new(3, 60).await;
    let mut deps = e.deps().await;
    // SLUICE_LAKE=s3://<our bucket>: an event from another bucket must not start a run.
    deps.lakes = sluice::lake::Lakes::Fixed(Arc::new(sluice::lake::S3Store::new(
        e.s3.clone(),
        e.bucket.clone(),
    )));
    let other = unique_name("foreign");
    let err = handle(
        &deps,
        s3_event(&[(&other, "raw/funnel/dump-2019.csv", THRESHOLD + 1)]),
    )
    .await
    .expect_err("foreign bucket");
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(
        err.message.contains(&other) && err.message.contains(&e.bucket),
        "{}",
        err.message
    );
    assert!(e.job_runs().await.is_empty());
    assert!(list_keys(&e.s3, &e.bucket, "state/").await.is_empty());
}

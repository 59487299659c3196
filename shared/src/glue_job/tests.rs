//! The retry rules on an in-memory starter that refuses a set number of times (moto can be made
//! to refuse too: `tests/tests/glue_route.rs` does it against the real SDK call).

use std::sync::Mutex;

use super::*;
use crate::lake::ObjectStore;

/// Refuses the first `refusals` starts with `code`, then accepts; records every call.
#[derive(Debug)]
struct FakeStarter {
    refusals: u32,
    code: &'static str,
    retryable: bool,
    calls: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

impl FakeStarter {
    fn new(refusals: u32, code: &'static str, retryable: bool) -> Arc<Self> {
        Arc::new(Self {
            refusals,
            code,
            retryable,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl JobStarter for FakeStarter {
    async fn start_job_run(
        &self,
        job_name: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<String, SdkFailure> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push((job_name.to_string(), arguments.clone()));
            calls.len() as u32
        };
        if n <= self.refusals {
            Err(SdkFailure {
                status: Some(400),
                code: Some(self.code.into()),
                message: format!("HTTP 400 {}: refused", self.code),
                retryable: self.retryable,
            })
        } else {
            Ok(format!("jr_{n}"))
        }
    }
}

fn config() -> GlueConfig {
    GlueConfig {
        job_name: "sluice-transform".into(),
        threshold_bytes: 100,
        start_retry_secs: 60,
    }
}

const FAST: Backoff = Backoff {
    first: Duration::from_millis(2),
    max: Duration::from_millis(8),
    budget: Duration::from_millis(200),
};

fn route(starter: Arc<FakeStarter>, backoff: Backoff) -> GlueRoute {
    GlueRoute::new(config(), "s3://conf/pipelines/p.toml", starter)
        .expect("pipeline on S3")
        .with_backoff(backoff)
}

const OBJECT: LargeObject<'static> = LargeObject {
    bucket: "lake",
    key: "raw/funnel/dump 2019.csv",
    table: "funnel",
    size_bytes: 5_000,
};

#[tokio::test]
async fn a_start_refused_for_now_is_retried_until_accepted() {
    let starter = FakeStarter::new(3, "ConcurrentRunsExceededException", true);
    let run = route(starter.clone(), FAST)
        .start(&OBJECT)
        .await
        .expect("accepted on the fourth attempt");
    assert_eq!(run.run_id, "jr_4");
    assert_eq!(run.attempts, 4);
    assert_eq!(run.job_name, "sluice-transform");
    let calls = starter.calls();
    assert_eq!(calls.len(), 4);
    let want = BTreeMap::from([
        ("--source_bucket".to_string(), "lake".to_string()),
        (
            "--source_key".to_string(),
            "raw/funnel/dump 2019.csv".to_string(),
        ),
        ("--table".to_string(), "funnel".to_string()),
        (
            "--pipeline".to_string(),
            "s3://conf/pipelines/p.toml".to_string(),
        ),
    ]);
    for (job, args) in &calls {
        assert_eq!(job, "sluice-transform");
        assert_eq!(args, &want, "every attempt has the same arguments");
    }
}

#[tokio::test]
async fn a_start_refused_past_the_retry_time_is_reported_retryable() {
    let starter = FakeStarter::new(u32::MAX, "ConcurrentRunsExceededException", true);
    let started = Instant::now();
    let e = route(starter.clone(), FAST)
        .start(&OBJECT)
        .await
        .expect_err("never accepted");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= FAST.budget && elapsed < FAST.budget + Duration::from_secs(2),
        "bounded by the retry time: {elapsed:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Retryable);
    let GlueJobError::Busy { attempts, .. } = &e else {
        panic!("want Busy, got {e:?}");
    };
    assert_eq!(*attempts as usize, starter.calls().len());
    // 200 ms of waits that are at most 8 ms each: many attempts, the last at the deadline.
    assert!(*attempts > 10, "{attempts}");
    let text = e.to_string();
    assert!(
        text.contains("ConcurrentRunsExceededException")
            && text.contains("s3://lake/raw/funnel/dump 2019.csv")
            && text.contains("sluice-transform"),
        "{text}"
    );
}

#[tokio::test]
async fn a_start_refused_for_good_is_not_retried() {
    let starter = FakeStarter::new(u32::MAX, "EntityNotFoundException", false);
    let e = route(starter.clone(), FAST)
        .start(&OBJECT)
        .await
        .expect_err("no such job");
    assert_eq!(starter.calls().len(), 1);
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(matches!(e, GlueJobError::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("EntityNotFoundException"), "{e}");
}

#[test]
fn concurrent_runs_and_throttling_are_retryable_codes() {
    for code in ["ConcurrentRunsExceededException", "ThrottlingException"] {
        assert!(crate::aws::is_retryable_code(code), "{code}");
    }
}

#[test]
fn backoff_doubles_to_its_cap_with_bounded_jitter() {
    let b = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(16),
        budget: Duration::from_secs(60),
    };
    for attempt in 1..12u32 {
        let base = Duration::from_secs(1 << (attempt - 1).min(4));
        let d = b.delay(attempt);
        assert!(
            d <= base && d > base / 2,
            "{attempt}: {d:?} (base {base:?})"
        );
    }
    assert!(b.delay(u32::MAX) <= b.max, "no overflow");
}

/// A pipeline with a csv, a jsonl and a cdc table (the cdc table's objects never go to Glue).
const FORMATS: &str = r#"
[cdc]
source_url_env = "SLUICE_CDC_SOURCE_URL"
slot = "s"
publication = "p"
stream = "changes"

[[tables]]
name = "funnel"
raw_prefix = "raw/funnel/"
format = "csv"
partition_by = "t"
catalog = { database = "lake" }
columns = [{ name = "t", type = "timestamp" }]

[[tables]]
name = "events"
raw_prefix = "raw/events/"
format = "jsonl"
partition_by = "t"
catalog = { database = "lake" }
columns = [{ name = "t", type = "timestamp" }]

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "cdc"
cdc = { schema = "public", table = "orders" }
dedup = { key = ["id"] }
catalog = { database = "lake" }
columns = [{ name = "id", type = "int" }]
"#;

#[test]
fn only_formats_the_job_reads_go_to_glue() {
    let pipeline = crate::config::Pipeline::parse(FORMATS, "formats.toml").expect("valid");
    let route = route(FakeStarter::new(0, "", false), FAST);
    let table = |name: &str| pipeline.table(name).expect(name);
    // threshold_bytes = 100: above it csv and jsonl go to Glue, a cdc table never does.
    for (name, size, glue) in [
        ("funnel", 100, false),
        ("funnel", 101, true),
        ("events", 101, true),
        ("orders", 100, false),
        ("orders", 101, false),
        ("orders", u64::MAX, false),
    ] {
        assert_eq!(
            route.routes(table(name), size),
            glue,
            "{name} at {size} bytes"
        );
    }
}

#[test]
fn the_pipeline_must_be_on_s3() {
    let starter = FakeStarter::new(0, "", false);
    for bad in [
        "/var/task/pipeline.toml",
        "pipeline.toml",
        "s3://bucket-only",
        "s3:///key",
    ] {
        let e = GlueRoute::new(config(), bad, starter.clone()).expect_err(bad);
        let text = e.to_string();
        assert!(
            text.contains(&format!("SLUICE_PIPELINE={bad}"))
                && text.contains("s3://BUCKET/KEY")
                && text.contains("sluice-transform"),
            "{text}"
        );
    }
}

#[test]
fn the_metric_line_counts_one_started_run() {
    let run = StartedRun {
        job_name: "sluice-transform".into(),
        run_id: "jr_1".into(),
        attempts: 2,
        already_started: false,
    };
    let v: serde_json::Value = serde_json::from_str(&run.emf_line(&OBJECT)).expect("JSON");
    assert_eq!(v["GlueJobRunsStarted"], 1);
    assert_eq!(v["SourceBytes"], 5_000);
    assert_eq!(v["Table"], "funnel");
    assert_eq!(v["JobRunId"], "jr_1");
    assert_eq!(
        v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        "GlueJobRunsStarted"
    );
}

fn lake() -> (tempfile::TempDir, crate::lake::LocalStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::lake::LocalStore::new(dir.path().join("lake")).expect("local lake");
    (dir, store)
}

fn claim_of(store_dir: &std::path::Path, etag: &str) -> Option<claim::Claim> {
    let key = crate::lake::layout::glue_claim_key(OBJECT.table, OBJECT.key, etag);
    let bytes = std::fs::read(store_dir.join("lake").join(key)).ok()?;
    Some(serde_json::from_slice(&bytes).expect("claim JSON"))
}

#[tokio::test]
async fn a_redelivered_object_reports_the_run_already_started() {
    let (dir, store) = lake();
    let starter = FakeStarter::new(0, "", false);
    let r = route(starter.clone(), FAST);
    let first = r.start_once(&store, &OBJECT, "e1").await.expect("started");
    assert_eq!(
        (first.run_id.as_str(), first.already_started),
        ("jr_1", false)
    );
    let claim = claim_of(dir.path(), "e1").expect("claim written");
    assert_eq!(claim.run_id.as_deref(), Some("jr_1"));
    assert_eq!(
        (claim.key.as_str(), claim.table.as_str()),
        (OBJECT.key, OBJECT.table)
    );

    let again = r.start_once(&store, &OBJECT, "e1").await.expect("reported");
    assert_eq!(
        (again.run_id.as_str(), again.already_started, again.attempts),
        ("jr_1", true, 0)
    );
    assert_eq!(again.job_name, "sluice-transform");
    assert_eq!(starter.calls().len(), 1, "no second start");

    // New content under the same key (another ETag) is another object version: another run.
    let other = r.start_once(&store, &OBJECT, "e2").await.expect("started");
    assert_eq!(
        (other.run_id.as_str(), other.already_started),
        ("jr_2", false)
    );
    assert_eq!(starter.calls().len(), 2);
}

#[tokio::test]
async fn a_start_that_fails_releases_the_claim_for_a_later_retry() {
    let (dir, store) = lake();
    // Refused for good once (say, the job was missing), then accepted.
    let starter = FakeStarter::new(1, "EntityNotFoundException", false);
    let r = route(starter.clone(), FAST);
    let e = r
        .start_once(&store, &OBJECT, "e1")
        .await
        .expect_err("refused");
    assert!(matches!(e, GlueJobError::Refused { .. }), "{e:?}");
    assert!(claim_of(dir.path(), "e1").is_none(), "claim deleted");
    let run = r.start_once(&store, &OBJECT, "e1").await.expect("started");
    assert_eq!((run.run_id.as_str(), run.already_started), ("jr_2", false));
    assert_eq!(starter.calls().len(), 2);
}

#[tokio::test]
async fn a_claim_without_a_run_is_waited_for_while_fresh_and_taken_over_when_orphaned() {
    let (dir, store) = lake();
    let starter = FakeStarter::new(0, "", false);
    let r = route(starter.clone(), FAST);
    let key = crate::lake::layout::glue_claim_key(OBJECT.table, OBJECT.key, "e1");
    let pending = |claimed_at_ms: u64| {
        let c = claim::Claim {
            bucket: OBJECT.bucket.into(),
            key: OBJECT.key.into(),
            table: OBJECT.table.into(),
            job_name: "sluice-transform".into(),
            claimed_at_ms,
            run_id: None,
        };
        bytes::Bytes::from(serde_json::to_vec(&c).expect("JSON"))
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;

    // Another invocation claimed a moment ago and is starting: retry later, start nothing.
    store
        .put(&key, pending(now_ms), crate::lake::PutMode::Overwrite)
        .await
        .expect("claim");
    let e = r
        .start_once(&store, &OBJECT, "e1")
        .await
        .expect_err("in progress");
    assert_eq!(e.kind(), ErrorKind::Retryable);
    assert!(matches!(e, GlueJobError::StartInProgress { .. }), "{e:?}");
    assert!(e.to_string().contains(&key), "{e}");
    assert!(starter.calls().is_empty());

    // Its owner died long ago without recording a run: taken over, one run started.
    let old = now_ms - (FAST.budget + claim::ORPHAN_MARGIN).as_millis() as u64 - 1_000;
    store
        .put(&key, pending(old), crate::lake::PutMode::Overwrite)
        .await
        .expect("claim");
    let run = r
        .start_once(&store, &OBJECT, "e1")
        .await
        .expect("taken over");
    assert_eq!((run.run_id.as_str(), run.already_started), ("jr_1", false));
    assert_eq!(
        claim_of(dir.path(), "e1").and_then(|c| c.run_id).as_deref(),
        Some("jr_1")
    );
    assert_eq!(starter.calls().len(), 1);
}

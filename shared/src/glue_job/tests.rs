//! The retry rules on an in-memory starter that refuses a set number of times (moto can be made
//! to refuse too: `tests/tests/glue_route.rs` does it against the real SDK call).

use std::sync::Mutex;

use super::*;

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

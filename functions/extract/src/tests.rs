//! The handler without databases: payloads (the `events/` sample among them) read into
//! requests, requests checked against the pipeline, outcomes turned into error kinds, and
//! whole invocations on a local lake whose shards cannot be reached or are held by another
//! run. Extraction from real databases is tested in `tests/` (the bootstrap under `cargo
//! lambda`, and the library's own tests).

use std::error::Error;
use std::time::Duration;

use serde_json::{json, Value};

use sluice::extract::state::{acquire_lease, Acquired};
use sluice::extract::{ExtractError, Mode, ShardError, ShardOutcome, ShardReport, ShardStats};
use sluice::lake::{layout, LocalStore, ObjectStore};
use sluice::lambda::ErrorKind;

use super::*;

type TestResult = Result<(), Box<dyn Error>>;

const SCHEDULE: &str = include_str!("../../../events/schedule-extract.json");

/// `items` extracted from three shards whose URLs are in the named variables; `plain` has no
/// source.
fn pipeline(vars: [&str; 3]) -> Result<Pipeline, Box<dyn Error>> {
    let text = format!(
        r#"
[[tables]]
name = "items"
raw_prefix = "raw/items/"
format = "jsonl"
null_tokens = []
partition_by = "updated_at"
dedup = {{ key = ["id"], order_by = "updated_at" }}
catalog = {{ database = "lake" }}
columns = [
  {{ name = "id", type = "int", required = true }},
  {{ name = "updated_at", type = "timestamp", required = true }},
  {{ name = "_shard", type = "string" }},
]

[tables.source]
engine = "mysql"
shards = [{{ id = "s1", url_env = "{}" }}, {{ id = "s2", url_env = "{}" }}, {{ id = "s3", url_env = "{}" }}]
table = "items"
key_columns = ["id"]
updated_at_column = "updated_at"

[[tables]]
name = "plain"
raw_prefix = "raw/plain/"
format = "csv"
partition_by = "at"
catalog = {{ database = "lake" }}
columns = [{{ name = "at", type = "timestamp", required = true }}]
"#,
        vars[0], vars[1], vars[2]
    );
    Ok(Pipeline::parse(&text, "extract-test.toml")?)
}

fn request(payload: Value) -> Result<Request, HandlerError> {
    Request::from_payload(&payload)
}

#[test]
fn the_schedule_null_and_an_empty_object_ask_for_every_table() -> TestResult {
    let schedule: Value = serde_json::from_str(SCHEDULE)?;
    for payload in [schedule, Value::Null, json!({})] {
        let r = request(payload.clone())?;
        assert_eq!(r, Request::default(), "{payload}");
        assert_eq!(r.mode(), Mode::Incremental);
    }
    Ok(())
}

#[test]
fn a_manual_payload_names_tables_shards_and_the_mode() -> TestResult {
    let r = request(json!({"tables": ["items"], "shards": ["s1", "s3"], "historical": true}))?;
    assert_eq!(r.tables, ["items"]);
    assert_eq!(r.shards, ["s1", "s3"]);
    assert_eq!(r.mode(), Mode::Historical);
    let r = request(json!({"historical": false}))?;
    assert_eq!((r.tables.len(), r.mode()), (0, Mode::Incremental));
    Ok(())
}

#[test]
fn a_payload_that_is_neither_is_bad_input() -> TestResult {
    let cases = [
        (json!({"table": "items"}), "unknown field `table`"),
        (json!({"tables": "items"}), "invalid type"),
        (json!({"historical": "yes"}), "invalid type"),
        (json!({"tables": []}), "`tables` is empty"),
        (json!({"shards": []}), "`shards` is empty"),
        (json!(["items"]), "expected the EventBridge scheduled event"),
        (json!("items"), "expected the EventBridge scheduled event"),
    ];
    for (payload, says) in cases {
        match request(payload.clone()) {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::BadInput, "{payload}");
                assert!(e.message.contains(says), "{payload}: {}", e.message);
            }
            Ok(r) => return Err(format!("{payload} was taken as {r:?}").into()),
        }
    }
    Ok(())
}

#[test]
fn the_plan_is_every_source_table_or_the_named_ones_checked() -> TestResult {
    let p = pipeline(["A", "B", "C"])?;
    assert_eq!(Request::default().plan(&p)?, ["items"]);
    let twice = Request {
        tables: vec!["items".into(), "items".into()],
        shards: vec!["s2".into()],
        historical: false,
    };
    assert_eq!(twice.plan(&p)?, ["items"]);
    let refused = |tables: &[&str], shards: &[&str]| {
        let r = Request {
            tables: tables.iter().map(|s| s.to_string()).collect(),
            shards: shards.iter().map(|s| s.to_string()).collect(),
            historical: false,
        };
        r.plan(&p).err().map(|e| (error_kind(&e), e.to_string()))
    };
    assert_eq!(
        refused(&["orders"], &[]),
        Some((
            ErrorKind::BadInput,
            "extract: the pipeline has no table `orders`".into()
        ))
    );
    assert_eq!(
        refused(&["plain"], &[]),
        Some((
            ErrorKind::BadInput,
            "extract: table `plain` has no [tables.source] section".into()
        ))
    );
    assert_eq!(
        refused(&[], &["s1", "s9"]),
        Some((
            ErrorKind::BadInput,
            "extract: table `items` has no shard `s9` (it has: s1, s2, s3)".into()
        ))
    );
    Ok(())
}

fn shard_failure(error: ShardError) -> ExtractError {
    ExtractError::Shard {
        table: "items".into(),
        shard: "s1".into(),
        error: Box::new(error),
    }
}

#[test]
fn each_failure_has_the_kind_the_caller_acts_on() {
    let cases = [
        (
            ShardError::Connect {
                reason: "connection refused".into(),
                retryable: true,
            },
            ErrorKind::Retryable,
        ),
        (
            ShardError::Connect {
                reason: "access denied".into(),
                retryable: false,
            },
            ErrorKind::BadInput,
        ),
        (
            ShardError::Config {
                reason: "the URL variable $X is not set".into(),
            },
            ErrorKind::BadInput,
        ),
        (
            ShardError::Column {
                column: "updated_at".into(),
                reason: "not a timestamp".into(),
            },
            ErrorKind::BadInput,
        ),
        (
            ShardError::Concurrent {
                key: "state/extract/items/s1/state.json".into(),
            },
            ErrorKind::Retryable,
        ),
        (
            ShardError::Corrupt {
                key: "raw/items/shard=s1/r/part-00000.jsonl.gz".into(),
                reason: "not gzip".into(),
            },
            ErrorKind::Internal,
        ),
        (
            ShardError::ReplicaDelay {
                reason: "replication stopped".into(),
            },
            ErrorKind::Internal,
        ),
    ];
    for (error, kind) in cases {
        let text = error.to_string();
        assert_eq!(error_kind(&shard_failure(error)), kind, "{text}");
    }
}

fn report(shard: &str, outcome: ShardOutcome) -> ShardReport {
    ShardReport {
        table: "items".into(),
        shard: shard.into(),
        outcome,
    }
}

fn stats(rows: u64) -> ShardStats {
    ShardStats {
        run: None,
        resumed: false,
        complete: true,
        rows,
        bytes: 10 * rows,
        parts: vec!["raw/items/shard=s1/r/part-00000.jsonl.gz".into()],
        pages: 1,
        source_now: "2024-01-01T00:05:00.000000Z".into(),
        replica_delay: Duration::ZERO,
        newest_updated_at: Some("2024-01-01T00:00:00.000000Z".into()),
        lag_secs: Some(300.0),
    }
}

#[test]
fn busy_and_extracted_shards_succeed_a_failed_one_fails_with_the_worst_kind() -> TestResult {
    let busy = || ShardOutcome::Busy {
        owner: "sluice-cli:ann:pid-7".into(),
        until_ms: 1,
    };
    let fine = [
        report("s1", ShardOutcome::Extracted(stats(7))),
        report("s2", busy()),
    ];
    assert_eq!(failure(&fine), None);
    let v = response(Mode::Incremental, &["items".into()], &fine);
    assert_eq!(
        (&v["mode"], &v["rows"], &v["bytes"], &v["parts"]),
        (&json!("incremental"), &json!(7), &json!(70), &json!(1))
    );
    assert_eq!(v["shards"][0]["outcome"], json!("extracted"));
    assert_eq!(v["shards"][0]["lag_secs"], json!(300.0));
    assert_eq!(
        (&v["shards"][1]["outcome"], &v["shards"][1]["holder"]),
        (&json!("busy"), &json!("sluice-cli:ann:pid-7"))
    );

    let bad = ShardError::Config {
        reason: "the URL variable $X is not set".into(),
    };
    let down = ShardError::Connect {
        reason: "connection refused".into(),
        retryable: true,
    };
    let only_bad = [
        report("s1", ShardOutcome::Extracted(stats(1))),
        report("s2", ShardOutcome::Failed(shard_failure(bad))),
    ];
    let e = failure(&only_bad).ok_or("a failed shard fails the invocation")?;
    assert_eq!(e.kind, ErrorKind::BadInput);
    assert!(
        e.message.starts_with("1 of 2 shards failed"),
        "{}",
        e.message
    );
    let mut both = only_bad.into_iter().collect::<Vec<_>>();
    both.push(report("s3", ShardOutcome::Failed(shard_failure(down))));
    both.push(report("s4", busy()));
    let e = failure(&both).ok_or("failed shards fail the invocation")?;
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(e.message.contains("$X is not set"), "{}", e.message);
    assert!(e.message.contains("connection refused"), "{}", e.message);
    assert!(
        e.message.starts_with("2 of 4 shards failed"),
        "{}",
        e.message
    );
    Ok(())
}

#[test]
fn the_run_stops_before_the_deadline_or_after_a_default_when_there_is_none() {
    let now = 1_700_000_000_000;
    let t0 = Instant::now();
    let until = run_until(now + 60_000, now);
    let left = until.saturating_duration_since(t0);
    assert!(
        left > Duration::from_secs(49) && left < Duration::from_secs(51),
        "{left:?}"
    );
    // `cargo lambda watch` sends the timeout (600000), not a deadline.
    let left = run_until(600_000, now).saturating_duration_since(t0);
    assert!(
        left >= DEFAULT_RUN && left < DEFAULT_RUN + Duration::from_secs(1),
        "{left:?}"
    );
    assert!(run_until(now + 5_000, now) <= Instant::now() + Duration::from_millis(10));
}

/// A whole invocation with three shards and no database: s1's URL variable is unset (bad
/// configuration), s2 points at a closed port (unreachable: may pass), s3 is held by another
/// run (busy). Every shard is reported; the invocation fails `Retryable` naming s1 and s2.
#[tokio::test]
async fn every_shard_runs_before_the_invocation_fails() -> TestResult {
    let dir = tempfile::tempdir()?;
    let lake = Arc::new(LocalStore::new(dir.path())?);
    let unset = format!("SLUICE_TEST_EXTRACT_UNSET_{}", std::process::id());
    let closed = format!("SLUICE_TEST_EXTRACT_CLOSED_{}", std::process::id());
    std::env::set_var(&closed, "mysql://root@127.0.0.1:1/nothing");
    let p = Arc::new(pipeline([&unset, &closed, &closed])?);
    let held = acquire_lease(
        lake.as_ref(),
        &layout::extract_lease_key("items", "s3"),
        "sluice-cli:ann:pid-7",
        Duration::from_secs(600),
        chrono::Utc::now().timestamp_millis().max(0) as u64,
    )
    .await?;
    assert!(matches!(held, Acquired::Held(_)));
    let deps = Deps {
        pipeline: p.clone(),
        extractor: Extractor::new(p, lake.clone()),
        emit_metrics: false,
    };
    let inv = Invocation {
        request_id: "req-1".into(),
        deadline_ms: 0,
    };
    let e = match handle(&deps, &inv, serde_json::from_str(SCHEDULE)?).await {
        Err(e) => e,
        Ok(v) => return Err(format!("two shards failed, yet: {v}").into()),
    };
    assert_eq!(e.kind, ErrorKind::Retryable, "{}", e.message);
    assert!(
        e.message.starts_with("2 of 3 shards failed"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(&format!(
            "shard `s1`: configuration: the URL variable ${unset} is not set"
        )),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("shard `s2`: cannot connect"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("s3"), "{}", e.message);
    assert!(
        !e.message.contains("127.0.0.1"),
        "no URL in messages: {}",
        e.message
    );

    // The busy shard alone: reported, not a failure; the leases of the failed shards were
    // released (a second run is not refused as busy).
    let only_busy = json!({"tables": ["items"], "shards": ["s3"]});
    let v = handle(&deps, &inv, only_busy).await?;
    assert_eq!(v["shards"][0]["outcome"], json!("busy"), "{v}");
    assert_eq!(v["shards"][0]["holder"], json!("sluice-cli:ann:pid-7"));
    let again = handle(&deps, &inv, json!({"shards": ["s1"]})).await;
    assert!(
        matches!(&again, Err(e) if e.kind == ErrorKind::BadInput && e.message.contains("URL variable")),
        "{again:?}"
    );
    assert!(lake.list("raw/").await?.is_empty(), "nothing extracted");
    let unknown = handle(&deps, &inv, json!({"tables": ["orders"]})).await;
    assert!(
        matches!(&unknown, Err(e) if e.kind == ErrorKind::BadInput && e.message.contains("no table `orders`")),
        "{unknown:?}"
    );
    Ok(())
}

//! The Redshift executor through the real `aws-sdk-redshiftdata` client, against the test Data
//! API endpoint (`sluice_tests::dataapi`, SQL run on the test PostgreSQL) with the lake on S3
//! in moto_server, so COPY manifests carry `s3://` URLs: loads polled to FINISHED, a failed
//! sub-statement named, a statement stuck in STARTED timing out and resumed by the next
//! invocation, conflicts retried, statements of other batches waited for, nothing submitted
//! without time to finish, and a fault at any statement of a load leaving the table as it was.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_redshiftdata::primitives::{DateTime, DateTimeFormat};

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::catalog::LocalCatalog;
use sluice::config::{Pipeline, RedshiftConfig};
use sluice::lake::layout::{copy_manifest_key, load_statement_key};
use sluice::lake::manifest::Manifest;
use sluice::lake::{LakeError, ObjectStore, PutMode, S3Store};
use sluice::lambda::ErrorKind;
use sluice::transform::Transformer;
use sluice::warehouse::{
    batch_id, CopyGroup, DataApiTarget, Dialect, Executor, LoadError, LoadOutcome, LoadPlan,
    LoadSummary, Loader, Statement, TablesFound,
};
use sluice_tests::dataapi::{DataApi, FailAt, LoadErrorDetail, Submission};
use sluice_tests::warehouse::{change_rows, change_table};
use sluice_tests::{moto_bucket, moto_sdk_config, pg_url, unique_name};

#[path = "warehouse_dataapi/cdc.rs"]
mod cdc;
#[path = "warehouse_dataapi/failures.rs"]
mod failures;

const COPY_ROLE: &str = "arn:aws:iam::123456789012:role/sluice-copy";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:sluice-redshift-AbCdEf";

fn pipeline(schema: &str, with_amount: bool) -> Pipeline {
    change_table(schema, with_amount, true)
}

/// An S3 lake in moto, a local catalog, and the Data API endpoint.
struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    catalog: LocalCatalog,
    api: DataApi,
    client: aws_sdk_redshiftdata::Client,
    schema: String,
}

async fn env() -> Env {
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("dataapi-lake");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let api = DataApi::start(&pg_url(), &sdk).await;
    let dir = tempfile::tempdir().expect("tempdir");
    Env {
        store: Arc::new(S3Store::new(s3, bucket)),
        catalog: LocalCatalog::new(dir.path().join("catalog.json")),
        client: api.client(&sdk),
        api,
        schema: unique_name("dapi"),
        _dir: dir,
    }
}

impl Env {
    /// A Serverless target with a secret, polling fast, submitting whatever the time left (the
    /// tests' deadlines are short).
    fn target(&self) -> DataApiTarget {
        self.default_target().with_min_time_left(Duration::ZERO)
    }

    /// The same with the default minimum time left to submit.
    fn default_target(&self) -> DataApiTarget {
        let cfg = RedshiftConfig {
            workgroup: Some("sluice-wg".into()),
            cluster: None,
            database: "dev".into(),
            secret: Some(SECRET.into()),
            db_user: None,
            copy_iam_role: COPY_ROLE.into(),
        };
        DataApiTarget::new(self.client.clone(), &cfg)
            .expect("target")
            .with_poll_interval(Duration::from_millis(10), Duration::from_millis(100))
            .with_conflict_backoff(Duration::from_millis(10))
    }

    /// Accepted submissions of loads (the batches `run` submits), not of the CREATEs or queries.
    fn load_calls(&self) -> usize {
        self.api.submissions().iter().filter(|s| is_load(s)).count()
    }

    /// The final and side tables created as the loader does before a first load.
    async fn create_tables(&self, p: &Pipeline, target: &DataApiTarget) {
        let plan = LoadPlan::new(p.table("orders").expect("orders")).expect("plan");
        let mut stmts = plan.session(Dialect::Redshift);
        stmts.extend(plan.create_tables(Dialect::Redshift));
        target.execute("orders", &stmts).await.expect("create");
    }

    /// Transforms `lines` as `key`; its manifest's key and the manifest.
    async fn transform(&self, p: &Pipeline, key: &str, lines: &[&str]) -> (String, Manifest) {
        let body = lines.join("\n") + "\n";
        self.store
            .put(key, body.into_bytes().into(), PutMode::Overwrite)
            .await
            .expect("put");
        let s = Transformer::new(p.clone(), None)
            .expect("transformer")
            .transform_object(self.store.as_ref(), &self.catalog, key, None)
            .await
            .expect("transform");
        let b = self
            .store
            .get_bytes(&s.manifest_key)
            .await
            .expect("manifest");
        let m = Manifest::from_json(&b, &s.manifest_key).expect("manifest");
        (s.manifest_key, m)
    }

    /// One load through the loader (lease, manifests, COPY manifests, reconciliation).
    async fn load(
        &self,
        p: &Pipeline,
        target: &DataApiTarget,
        keys: &[String],
    ) -> Result<LoadSummary, LoadError> {
        self.load_table(p, target, "orders", keys).await
    }

    /// One load of `table` through the loader.
    async fn load_table(
        &self,
        p: &Pipeline,
        target: &DataApiTarget,
        table: &str,
        keys: &[String],
    ) -> Result<LoadSummary, LoadError> {
        let loader = Loader {
            pipeline: p,
            store: self.store.as_ref(),
            executor: target,
            iam_role: COPY_ROLE.into(),
            // Short: a load that times out keeps its lease (its statement may still run), and
            // the next load of these tests waits it out, as a message back from SQS would.
            lease_ttl: Duration::from_secs(1),
            owner: "test".into(),
            use_lease: true,
        };
        for _ in 0..3 {
            match loader.load(table, keys).await? {
                LoadOutcome::Loaded(s) => return Ok(*s),
                LoadOutcome::Busy { until_ms, .. } => {
                    let wait = until_ms.saturating_sub(sluice::warehouse::lease::now_ms());
                    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
                }
            }
        }
        panic!("the lease never came free")
    }

    /// Whether the statement record of the batch of `keys` is in the lake, and its id.
    async fn recorded_statement(&self, keys: &[String]) -> Option<String> {
        self.recorded_statement_of("orders", keys).await
    }

    /// The same for a load of `table`.
    async fn recorded_statement_of(&self, table: &str, keys: &[String]) -> Option<String> {
        let key = load_statement_key(table, &batch_id(keys));
        match self.store.get_bytes(&key).await {
            Ok(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b).expect("record json");
                Some(
                    v["statement_id"]
                        .as_str()
                        .expect("statement_id")
                        .to_string(),
                )
            }
            Err(LakeError::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        }
    }
}

/// Writes a statement record of batch `batch` as the executor does.
async fn put_statement_record(
    store: &dyn ObjectStore,
    batch: &str,
    statement_id: &str,
    submitted: SystemTime,
) -> String {
    let key = load_statement_key("orders", batch);
    let at = DateTime::from(submitted)
        .fmt(DateTimeFormat::DateTime)
        .expect("RFC 3339");
    let body = serde_json::json!({
        "statement_id": statement_id,
        "submitted_at": at,
        "attempt": 1,
        "steps": ["lock", "copy"],
    });
    store
        .put(
            &key,
            body.to_string().into_bytes().into(),
            PutMode::Overwrite,
        )
        .await
        .expect("put record");
    key
}

async fn exists(store: &dyn ObjectStore, key: &str) -> bool {
    match store.head(key).await {
        Ok(_) => true,
        Err(LakeError::NotFound { .. }) => false,
        Err(e) => panic!("head {key}: {e}"),
    }
}

/// The final and side tables as text (columns, then whole rows), read from PostgreSQL.
async fn snapshot(p: &Pipeline) -> Vec<String> {
    let plan = LoadPlan::new(p.table("orders").expect("orders")).expect("plan");
    let mut c = PgConnection::connect(&pg_url()).await.expect("connect");
    let mut out = Vec::new();
    for (name, table) in [
        (plan.final_name.clone(), plan.final_table()),
        (plan.tombstone_name(), plan.tombstone_table()),
    ] {
        let cols: Vec<String> = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(&plan.schema)
        .bind(&name)
        .fetch_all(&mut c)
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        out.push(format!("{name}: {}", cols.join(", ")));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t ORDER BY 1"
        )))
        .fetch_all(&mut c)
        .await
        .expect("rows");
        out.extend(rows.iter().map(|r| r.get::<String, _>(0)));
    }
    out
}

/// A submission of a load (`run`), by its statement name.
fn is_load(s: &Submission) -> bool {
    s.batch
        && s.request["StatementName"]
            .as_str()
            .is_some_and(|n| n.starts_with("sluice load "))
}

const FIRST: [&str; 3] = [
    r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
    r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
    r#"{"note":"no key","_op":"c","_lsn":12,"_commit_ts":"2024-03-01T10:02:00Z"}"#,
];
const SECOND: [&str; 3] = [
    r#"{"order":2,"note":"b2","amount":"9.50","_op":"u","_lsn":20,"_commit_ts":"2024-04-01T00:00:00Z"}"#,
    r#"{"order":3,"note":"c","amount":"1.25","_op":"c","_lsn":21,"_commit_ts":"2024-04-01T00:00:01Z"}"#,
    r#"{"order":1,"_op":"d","_lsn":22,"_commit_ts":"2024-04-01T00:00:02Z"}"#,
];

fn first_rows() -> Vec<String> {
    vec![
        "1|a|∅|10|2024-03-01 10:00:00".to_string(),
        "2|b|∅|11|2024-03-01 10:01:00".to_string(),
    ]
}

/// The final table as `order|note|amount|lsn|commit_ts`, read from PostgreSQL directly.
async fn final_rows(p: &Pipeline, with_amount: bool) -> Vec<String> {
    let plan = LoadPlan::new(p.table("orders").expect("orders")).expect("plan");
    change_rows(&plan, with_amount).await
}

#[tokio::test]
async fn both_file_shapes_load_in_one_batch_statement_polled_to_finished() {
    let e = env().await;
    let before = pipeline(&e.schema, false);
    let after = pipeline(&e.schema, true);
    let target = e.target();
    let (k1, m1) = e.transform(&before, "raw/cdc/orders/1.jsonl", &FIRST).await;
    // The first load creates the table, before `amount` exists.
    let first = e
        .load(&before, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    assert_eq!(first.mismatch, None, "{first:?}");
    let c = first.counts;
    assert_eq!((c.expected, c.staged, c.merged, c.null_keys), (3, 3, 2, 1));
    assert_eq!(e.load_calls(), 1);
    // The tables were created in one BatchExecuteStatement (one session), the case
    // sensitivity first, so the CREATEs keep the upper case of "Order".
    let creates: Vec<Submission> = e
        .api
        .submissions()
        .into_iter()
        .filter(|s| s.sqls.iter().any(|q| q.starts_with("CREATE TABLE")))
        .collect();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(creates[0].batch);
    assert_eq!(
        creates[0].sqls[0],
        "SET enable_case_sensitive_identifier TO true"
    );
    assert!(
        creates[0].sqls[1..]
            .iter()
            .all(|q| q.starts_with("CREATE ")),
        "{:?}",
        creates[0].sqls
    );
    // Step times from the sub-statements' Duration (nanoseconds): the COPY took some.
    assert!(
        first.copy_ms > 0 && first.copy_ms <= first.run_ms,
        "copy {} ms of run {} ms",
        first.copy_ms,
        first.run_ms
    );
    assert_eq!(first.attempts, 1);
    let id = first.statement_id.clone().expect("a statement id");
    assert_eq!(
        e.recorded_statement(std::slice::from_ref(&k1)).await,
        None,
        "record deleted"
    );
    assert_eq!(final_rows(&before, false).await, first_rows());
    // The batch went as one BatchExecuteStatement to the configured workgroup, as the secret.
    let sub = e
        .api
        .submissions()
        .into_iter()
        .find(|s| s.id == id)
        .expect("the batch was submitted");
    assert!(sub.batch);
    assert_eq!(sub.request["WorkgroupName"], "sluice-wg");
    assert_eq!(sub.request["Database"], "dev");
    assert_eq!(sub.request["SecretArn"], SECRET);
    assert!(
        sub.sqls
            .iter()
            .any(|s| s.starts_with("COPY ") && s.contains("FORMAT AS PARQUET MANIFEST")),
        "{:?}",
        sub.sqls
    );

    // Files from before and after `amount` was added, in one batch: the older shape goes
    // through a stage of its own (positional COPY), then into the stage by name.
    let (k2, m2) = e.transform(&after, "raw/cdc/orders/2.jsonl", &SECOND).await;
    let keys = [k1.clone(), k2.clone()];
    let report = e.load(&after, &target, &keys).await.expect("load");
    assert_eq!(report.files, m1.files.len() + m2.files.len());
    assert_eq!(report.mismatch, None, "{report:?}");
    let c = report.counts;
    assert_eq!((c.expected, c.staged, c.null_keys), (6, 6, 1), "{c:?}");
    assert_eq!(
        (c.merged, c.deleted, c.stale, c.duplicates),
        (2, 1, 0, 2),
        "{c:?}"
    );
    assert_eq!(e.load_calls(), 2);
    let sqls = e
        .api
        .submissions()
        .into_iter()
        .rfind(is_load)
        .expect("the second batch")
        .sqls;
    let copies: Vec<&String> = sqls.iter().filter(|s| s.starts_with("COPY ")).collect();
    assert_eq!(copies.len(), 2, "one COPY per column list: {sqls:?}");
    assert!(
        copies.iter().all(|s| s.contains("'s3://")),
        "COPY manifests are in the S3 lake: {copies:?}"
    );
    assert!(
        sqls.iter()
            .any(|s| s.starts_with("ALTER TABLE") && s.contains("\"amount\"")),
        "{sqls:?}"
    );
    assert_eq!(
        final_rows(&after, true).await,
        vec![
            "2|b2|9.50|20|2024-04-01 00:00:00".to_string(),
            "3|c|1.25|21|2024-04-01 00:00:01".to_string(),
        ]
    );
    assert_eq!(e.recorded_statement(&keys).await, None);
}

#[tokio::test]
async fn a_failed_sub_statement_is_reported_by_step_name_and_nothing_commits() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let (k1, _) = e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await;
    e.load(&p, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    let (k2, _) = e
        .transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await;
    let error = "ERROR: Load into table 'sluice_stage' failed. Check 'sys_load_error_detail' system table for details.";
    e.api
        .set_fail(FailAt::Sql("FORMAT AS PARQUET MANIFEST".into()), error);
    let err = e
        .load(&p, &target, std::slice::from_ref(&k2))
        .await
        .expect_err("the COPY fails");
    let LoadError::Statement {
        statement,
        message,
        conflict,
        ..
    } = &err
    else {
        panic!("not a statement error: {err:?}");
    };
    assert_eq!(statement, "copy", "{err}");
    assert!(message.contains(error), "{message}");
    assert!(message.contains("Data API statement "), "{message}");
    assert!(!conflict);
    assert_eq!(err.kind(), ErrorKind::Internal);
    // Not a conflict: submitted once, the record deleted, the table as it was.
    assert_eq!(e.load_calls(), 2);
    assert_eq!(e.recorded_statement(std::slice::from_ref(&k2)).await, None);
    assert_eq!(final_rows(&p, false).await, first_rows());
    // Without the fault the same batch loads.
    e.api.clear_fail();
    let ok = e
        .load(&p, &target, std::slice::from_ref(&k2))
        .await
        .expect("load");
    assert_eq!(ok.counts.merged, 1);
}

#[tokio::test]
async fn a_statement_stuck_in_started_times_out_and_the_next_invocation_resumes_it() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let keys = vec![e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0];
    // The tables first: the batch that stays STARTED is the load's.
    e.create_tables(&p, &e.target()).await;
    e.api.stay_started(1);
    let short = e.target().with_deadline(Duration::from_millis(400));
    let err = e.load(&p, &short, &keys).await.expect_err("times out");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Retryable);
    let id = e
        .recorded_statement(&keys)
        .await
        .expect("the statement stays recorded");
    let text = err.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("STARTED"), "{text}");
    assert!(text.contains("next invocation"), "{text}");
    assert_eq!(e.load_calls(), 1);

    // The next invocation polls the recorded statement instead of submitting again.
    let err = e.load(&p, &short, &keys).await.expect_err("still running");
    assert!(err.to_string().contains(&id), "{err}");
    assert_eq!(e.load_calls(), 1, "not submitted again");
    assert_eq!(
        e.recorded_statement(&keys).await.as_deref(),
        Some(id.as_str())
    );
    // The tables were created before the load; no row is in.
    assert!(final_rows(&p, false).await.is_empty(), "nothing committed");

    // Cancelled (ABORTED, rolled back): the next invocation submits the batch anew.
    e.client
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect("cancel");
    let done = e.load(&p, &e.target(), &keys).await.expect("load");
    assert_eq!(e.load_calls(), 2);
    assert_ne!(done.statement_id.as_deref(), Some(id.as_str()));
    assert_eq!(done.attempts, 2, "the aborted transaction counts");
    assert_eq!(done.mismatch, None, "{done:?}");
    assert_eq!(final_rows(&p, false).await, first_rows());
    assert_eq!(e.recorded_statement(&keys).await, None);
}

#[tokio::test]
async fn a_batch_that_finished_after_the_timeout_is_not_submitted_again() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let k1 = e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0;
    e.load(&p, &target, &[k1]).await.expect("first load");
    let keys = vec![
        e.transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    // Another session holds the final table: the batch waits on it past the deadline.
    let plan = LoadPlan::new(p.table("orders").expect("orders")).expect("plan");
    let mut holder = PgConnection::connect(&pg_url()).await.expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!("LOCK TABLE {}", plan.final_table())))
        .execute(&mut *tx)
        .await
        .expect("lock");
    let short = e.target().with_deadline(Duration::from_millis(300));
    let err = e.load(&p, &short, &keys).await.expect_err("times out");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    let id = e.recorded_statement(&keys).await.expect("recorded");
    assert_eq!(e.load_calls(), 2);
    // The lock goes; the statement commits after its invocation gave up on it.
    tx.commit().await.expect("unlock");
    let d = sluice_tests::dataapi::wait_done(&e.client, &id).await;
    assert_eq!(d.status().map(|s| s.as_str()), Some("FINISHED"));
    let done = e.load(&p, &target, &keys).await.expect("load");
    assert_eq!(e.load_calls(), 2, "the finished statement is not run again");
    assert_eq!(done.statement_id.as_deref(), Some(id.as_str()));
    assert_eq!(done.mismatch, None, "{done:?}");
    assert_eq!(
        done.counts.merged, 1,
        "counts read from the recorded statement"
    );
    let mut want = first_rows();
    want.push("5|e|∅|30|2024-05-01 00:00:00".into());
    assert_eq!(final_rows(&p, false).await, want);
    assert_eq!(e.recorded_statement(&keys).await, None);
}

#[tokio::test]
async fn conflicts_of_either_isolation_level_resubmit_the_batch() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let keys = vec![e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0];
    // SERIALIZABLE's error once: the second transaction commits.
    e.api.set_fail_times(
        FailAt::Sql("INSERT INTO".into()),
        "ERROR: 1023 DETAIL: Serializable isolation violation on table - 156221, transactions forming the cycle are: 1, 2 (pid:3)",
        1,
    );
    let done = e
        .load(&p, &target, &keys)
        .await
        .expect("load after a conflict");
    assert_eq!(done.attempts, 2);
    assert_eq!(e.load_calls(), 2);
    assert_eq!(done.mismatch, None, "{done:?}");
    assert_eq!(final_rows(&p, false).await, first_rows());

    let keys2 = vec![
        e.transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    e.api.set_fail_times(
        FailAt::Sql("INSERT INTO".into()),
        "ERROR: could not complete because of conflict with concurrent transaction",
        2,
    );
    let done = e.load(&p, &target, &keys2).await.expect("load");
    assert_eq!(done.attempts, 3);
    assert_eq!(e.load_calls(), 5);
    assert_eq!(done.counts.merged, 1);

    // A conflict on every attempt: the last one is reported, as a conflict (retryable).
    e.api.set_fail(
        FailAt::Sql("INSERT INTO".into()),
        "ERROR: 1023 DETAIL: Serializable isolation violation on table - 1",
    );
    let keys3 = vec![
        e.transform(
            &p,
            "raw/cdc/orders/3.jsonl",
            &[r#"{"order":6,"note":"f","_op":"c","_lsn":40,"_commit_ts":"2024-06-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    let err = e
        .load(&p, &target.clone().with_max_attempts(2), &keys3)
        .await
        .expect_err("conflicts every time");
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Retryable);
    assert_eq!(e.load_calls(), 7);
    assert_eq!(e.recorded_statement(&keys3).await, None);
}

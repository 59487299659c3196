//! The PostgreSQL executor under faults and concurrency: a failure injected at each step of a
//! real load, a second load backing off while the lease is held, and a real serialization
//! conflict retried when lease and LOCK are off.

use super::*;

/// An executor that says when a load has begun, then takes its time before running it.
struct Slow {
    inner: PgTarget,
    started: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Executor for Slow {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError> {
        self.inner.table_columns(table, schema, name).await
    }
    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError> {
        self.started.notify_one();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        self.inner.run(plan, steps, ctx).await
    }
    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError> {
        self.inner.execute(table, statements).await
    }
}

/// An executor that runs the real PostgreSQL load with one step replaced by a failing one.
struct FailingAt {
    inner: PgTarget,
    at: usize,
}

#[async_trait::async_trait]
impl Executor for FailingAt {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError> {
        self.inner.table_columns(table, schema, name).await
    }
    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError> {
        let mut steps = steps.to_vec();
        steps[self.at] = Step::Sql(Statement {
            name: steps[self.at].name().to_string(),
            sql: "SELECT 1 / 0".into(),
        });
        self.inner.run(plan, &steps, ctx).await
    }
    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError> {
        self.inner.execute(table, statements).await
    }
}

/// Counts the steps of a load by running it with an executor that records them.
async fn step_names_of(l: &Lake, p: &Pipeline, target: &PgTarget, keys: &[String]) -> Vec<String> {
    struct Recording<'a>(&'a PgTarget, std::sync::Mutex<Vec<String>>);
    #[async_trait::async_trait]
    impl Executor for Recording<'_> {
        fn dialect(&self) -> Dialect {
            self.0.dialect()
        }
        async fn table_columns(
            &self,
            table: &str,
            schema: &str,
            name: &str,
        ) -> Result<Option<Vec<String>>, LoadError> {
            self.0.table_columns(table, schema, name).await
        }
        async fn run(
            &self,
            _plan: &LoadPlan,
            steps: &[Step],
            _ctx: &RunContext<'_>,
        ) -> Result<Executed, LoadError> {
            *self.1.lock().unwrap() = steps.iter().map(|s| s.name().to_string()).collect();
            Err(LoadError::Connect("recording only".into()))
        }
        async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError> {
            self.0.execute(table, statements).await
        }
    }
    let r = Recording(target, std::sync::Mutex::new(Vec::new()));
    let _ = load_manifests(l, p, &r, keys).await;
    let names = r.1.lock().unwrap().clone();
    names
}

#[tokio::test]
async fn a_failure_at_each_step_of_a_real_load_names_it_and_changes_nothing() {
    let schema = unique_name("fail");
    let l = lake();
    let p = changes_pipeline(&schema, false);
    let (k1, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/1.jsonl",
        &[
            r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
        ],
    )
    .await;
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    load_manifests(&l, &p, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    let plan = LoadPlan::new(p.table("orders").unwrap()).expect("plan");
    let before = final_rows(&plan, false).await;
    let (k2, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"order":1,"note":"a2","_op":"u","_lsn":20,"_commit_ts":"2024-03-02T10:00:00Z"}"#,
            r#"{"order":2,"_op":"d","_lsn":21,"_commit_ts":"2024-03-02T10:01:00Z"}"#,
            r#"{"order":3,"note":"c","_op":"c","_lsn":22,"_commit_ts":"2024-03-02T10:02:00Z"}"#,
        ],
    )
    .await;
    let keys = [k2];
    let names = step_names_of(&l, &p, &target, &keys).await;
    assert!(names.len() > 15, "{names:?}");
    for (i, name) in names.iter().enumerate() {
        let failing = FailingAt {
            inner: target.clone(),
            at: i,
        };
        let e = load_manifests(&l, &p, &failing, &keys)
            .await
            .expect_err("injected");
        match &e {
            LoadError::Statement { statement, .. } => assert_eq!(statement, name, "{e}"),
            other => panic!("step {i}: {other}"),
        }
        assert!(e.to_string().contains(name.as_str()), "{e}");
        assert_eq!(final_rows(&plan, false).await, before, "failure at {name}");
    }
    let ok = load_manifests(&l, &p, &target, &keys)
        .await
        .expect("then it loads");
    assert_eq!(ok.mismatch, None);
    assert_eq!(
        final_rows(&plan, false).await,
        vec![
            "1|a2|∅|20|2024-03-02 10:00:00".to_string(),
            "3|c|∅|22|2024-03-02 10:02:00".to_string()
        ]
    );
}

#[tokio::test]
async fn a_second_load_backs_off_while_the_lease_is_held() {
    let schema = unique_name("lease");
    let l = lake();
    let p = changes_pipeline(&schema, false);
    let (k1, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/1.jsonl",
        &[r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#],
    )
    .await;
    let (k2, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"order":1,"note":"a2","_op":"u","_lsn":20,"_commit_ts":"2024-03-02T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":21,"_commit_ts":"2024-03-02T10:01:00Z"}"#,
        ],
    )
    .await;
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    // Another load holds the table.
    let held = match lease::acquire(
        l.store.as_ref(),
        "orders",
        "another-load",
        std::time::Duration::from_secs(60),
        lease::now_ms(),
    )
    .await
    .expect("lease")
    {
        lease::Acquired::Held(h) => h,
        other => panic!("{other:?}"),
    };
    let busy = loader(l.store.as_ref(), &p, &target, "second", true)
        .load("orders", std::slice::from_ref(&k2))
        .await
        .expect("no error");
    match busy {
        LoadOutcome::Busy { owner, .. } => assert_eq!(owner, "another-load"),
        other => panic!("expected a back-off: {other:?}"),
    }
    let plan = LoadPlan::new(p.table("orders").unwrap()).expect("plan");
    lease::release(l.store.as_ref(), &held)
        .await
        .expect("release");
    // Two loads of overlapping keys at once. Load A is slowed inside its transaction, so load
    // B surely arrives while A holds the lease: B backs off without touching the table, and
    // runs once A is done, as its messages come back from the queue.
    let slow = Slow {
        inner: target.clone(),
        started: tokio::sync::Notify::new(),
    };
    let a = loader(l.store.as_ref(), &p, &slow, "a", true);
    let b = loader(l.store.as_ref(), &p, &target, "b", true);
    let b_first = async {
        slow.started.notified().await;
        b.load("orders", std::slice::from_ref(&k2)).await
    };
    let (ra, rb) = tokio::join!(a.load("orders", std::slice::from_ref(&k1)), b_first);
    match rb.expect("b") {
        LoadOutcome::Busy { owner, .. } => assert_eq!(owner, "a", "B backed off while A held it"),
        other => panic!("B did not back off: {other:?}"),
    }
    match ra.expect("a") {
        LoadOutcome::Loaded(s) => assert_eq!(s.mismatch, None),
        other => panic!("{other:?}"),
    }
    match b
        .load("orders", std::slice::from_ref(&k2))
        .await
        .expect("retry")
    {
        LoadOutcome::Loaded(s) => assert_eq!(s.mismatch, None),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        final_rows(&plan, false).await,
        vec![
            "1|a2|∅|20|2024-03-02 10:00:00".to_string(),
            "2|b|∅|21|2024-03-02 10:01:00".to_string()
        ],
        "each key once, at its latest version"
    );
}

#[tokio::test]
async fn without_lease_and_lock_a_real_serialization_conflict_is_retried() {
    let schema = unique_name("conflict");
    let l = lake();
    let p = change_table(&schema, false, false);
    let (k1, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/1.jsonl",
        &[
            r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
        ],
    )
    .await;
    let (k2, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"order":2,"note":"b-20","_op":"u","_lsn":20,"_commit_ts":"2024-03-02T10:00:00Z"}"#,
            r#"{"order":3,"note":"c","_op":"c","_lsn":21,"_commit_ts":"2024-03-02T10:01:00Z"}"#,
        ],
    )
    .await;
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    load_manifests(&l, &p, &target, &[k1]).await.expect("base");
    let plan = LoadPlan::new(p.table("orders").unwrap()).expect("plan");
    // Load A runs the plan's statements up to its commit and holds it open: it has replaced
    // keys 1 and 2 with newer versions.
    let mut ca = PgConnection::connect(&pg_url()).await.expect("connect");
    let mut tx = ca.begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *tx)
        .await
        .expect("isolation");
    for s in plan.before_copy(Dialect::Postgres, &Default::default()) {
        exec(&mut tx, &s).await.expect("before");
    }
    for (order, lsn) in [(1i64, 30i64), (2, 31)] {
        let sql = format!(
            "INSERT INTO {} (\"order\", \"Note Text\", \"_op\", \"_lsn\", \"_commit_ts\") VALUES ($1, 'from A', 'u', $2, TIMESTAMP '2024-03-03 00:00:00')",
            plan.stage_table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(order)
            .bind(lsn)
            .execute(&mut *tx)
            .await
            .expect("stage");
    }
    for s in plan.after_copy(Dialect::Postgres) {
        exec(&mut tx, &statement(&s)).await.expect("merge A");
    }
    // Load B (the loader, no lease, no LOCK) touches key 2 too: it waits on A's row lock.
    let b = tokio::spawn({
        let target = target.clone();
        let keys = vec![k2.clone()];
        let store = l.store.clone();
        let p = p.clone();
        async move {
            loader(store.as_ref(), &p, &target, "b", false)
                .load("orders", &keys)
                .await
        }
    });
    let mut watch = PgConnection::connect(&pg_url()).await.expect("connect");
    let mut waited = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut watch)
        .await
        .expect("pg_stat_activity");
        if n > 0 {
            waited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(waited, "load B never waited on load A");
    tx.commit().await.expect("commit A");
    let summary = match b.await.expect("join").expect("load B") {
        LoadOutcome::Loaded(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(
        summary.attempts >= 2,
        "the SERIALIZABLE conflict happened and was retried: {summary:?}"
    );
    assert_eq!(summary.mismatch, None, "{summary:?}");
    assert_eq!(
        final_rows(&plan, false).await,
        vec![
            "1|from A|∅|30|2024-03-03 00:00:00".to_string(),
            "2|from A|∅|31|2024-03-03 00:00:00".to_string(),
            "3|c|∅|21|2024-03-02 10:01:00".to_string()
        ],
        "each key once at its latest version: B's older 2 is stale on retry"
    );
}

//! The Redshift executor's failures and waits: a failed COPY with its load errors, statements
//! outside a load, statements of other batches waited for, nothing submitted without time to
//! finish, and a fault at any statement of a load leaving the tables as they were.

use super::*;

#[tokio::test]
async fn a_failed_copy_reports_its_sys_load_error_detail_rows() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let (k1, _) = e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await;
    e.load(&p, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    let (k2, m2) = e
        .transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await;
    let file = e.store.url(&m2.files[0].key);
    assert!(file.starts_with("s3://"), "{file}");
    // Redshift's COPY error points at the system table; the table says which rows and why.
    let error = "ERROR: Load into table 'sluice_stage_g0' failed. Check 'sys_load_error_detail' system table for details.";
    let copy = FailAt::Sql("FORMAT AS PARQUET MANIFEST".into());
    e.api.set_fail_times(copy.clone(), error, 1);
    e.api.set_load_error_detail(
        copy,
        vec![
            LoadErrorDetail {
                file_name: file.clone(),
                line_number: 1,
                column_name: "Note Text".into(),
                error_code: 1204,
                error_message: "String length exceeds DDL length".into(),
            },
            LoadErrorDetail {
                file_name: file.clone(),
                line_number: 2,
                column_name: "_lsn".into(),
                error_code: 1207,
                error_message: "Invalid digit, Value 'x', Pos 0, Type: Long".into(),
            },
        ],
    );
    let err = e
        .load(&p, &target, std::slice::from_ref(&k2))
        .await
        .expect_err("the COPY fails");
    let LoadError::Statement {
        statement, message, ..
    } = &err
    else {
        panic!("not a statement error: {err:?}");
    };
    assert_eq!(statement, "copy", "{err}");
    assert!(message.contains(error), "{message}");
    // Both rows, in start_time order, each with its file, line, column, text and code.
    let detail = message
        .split_once("; sys_load_error_detail: ")
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no load error detail: {message}"));
    assert_eq!(
        detail,
        format!(
            "{file} line 1 column Note Text: String length exceeds DDL length (code 1204); \
             {file} line 2 column _lsn: Invalid digit, Value 'x', Pos 0, Type: Long (code 1207)"
        ),
        "{message}"
    );

    // The rows were filed under the failed COPY's query id, and the executor looked up that
    // id (through ExecuteStatement, after the batch).
    let recorded = e.api.load_error_details();
    assert_eq!(recorded.len(), 2);
    let subs = e.api.submissions();
    let batch = subs.iter().rfind(|s| is_load(s)).expect("the failed batch");
    let at = batch
        .sqls
        .iter()
        .position(|q| q.starts_with("COPY "))
        .expect("a COPY in the batch");
    let query_id = batch.query_ids[at];
    assert!(query_id > 0);
    assert!(recorded.iter().all(|(q, _)| *q == query_id), "{recorded:?}");
    let lookup = subs
        .iter()
        .find(|s| !s.batch && s.sqls[0].contains("sys_load_error_detail"))
        .expect("the executor read sys_load_error_detail");
    assert!(
        lookup.sqls[0].contains(&format!("query_id = {query_id} ")),
        "{:?}",
        lookup.sqls
    );
    // Every sub-statement has an id of its own.
    let mut ids = batch.query_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), batch.sqls.len());

    // Nothing committed; with the fault gone (the details were used once) the batch loads.
    assert_eq!(final_rows(&p, false).await, first_rows());
    let ok = e
        .load(&p, &target, std::slice::from_ref(&k2))
        .await
        .expect("load");
    assert_eq!(ok.counts.merged, 1);
    assert_eq!(e.api.load_error_details().len(), 2, "no new rows");
}

#[tokio::test]
async fn execute_runs_its_statements_in_one_session_and_names_the_one_that_failed() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let plan = LoadPlan::new(p.table("orders").expect("orders")).expect("plan");
    let mut stmts = plan.session(Dialect::Redshift);
    stmts.extend(plan.create_tables(Dialect::Redshift));
    let names: Vec<&str> = stmts.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "case_sensitive_identifiers",
            "create_schema",
            "create_final",
            "create_tombstones"
        ]
    );
    let sqls: Vec<String> = stmts.iter().map(|s| s.sql.clone()).collect();
    let runs = |api: &DataApi| -> Vec<Submission> {
        api.submissions()
            .into_iter()
            .filter(|s| s.sqls == sqls)
            .collect()
    };
    let schema_exists = || async {
        let mut c = PgConnection::connect(&pg_url()).await.expect("connect");
        sqlx::query("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1")
            .bind(&e.schema)
            .fetch_one(&mut c)
            .await
            .expect("count")
            .get::<i64, _>(0)
            == 1
    };

    // A failure at the third statement names it, with its text; the transaction rolled back
    // (even the CREATE SCHEMA before it).
    let error = "ERROR: permission denied for schema";
    e.api.set_fail_times(FailAt::Index(2), error, 1);
    let err = target.execute("orders", &stmts).await.expect_err("fails");
    let LoadError::Statement {
        statement,
        message,
        conflict,
        ..
    } = &err
    else {
        panic!("not a statement error: {err:?}");
    };
    assert_eq!(statement, "create_final", "{err}");
    assert!(message.contains(error), "{message}");
    assert!(message.contains("sub-statement 3 of 4"), "{message}");
    assert!(!conflict);
    assert!(!schema_exists().await, "nothing committed");
    assert_eq!(runs(&e.api).len(), 1);
    assert!(
        runs(&e.api).iter().all(|s| s.batch),
        "one BatchExecuteStatement"
    );

    // A conflict is retried (the whole batch, again in one session); the tables are created
    // with the case the SET keeps.
    e.api.set_fail_times(
        FailAt::Index(1),
        "ERROR: could not complete because of conflict with concurrent transaction",
        1,
    );
    target
        .execute("orders", &stmts)
        .await
        .expect("created after a conflict");
    assert_eq!(runs(&e.api).len(), 3);
    assert!(schema_exists().await);
    assert_eq!(final_rows(&p, false).await, Vec::<String>::new());

    // One statement goes as an ExecuteStatement; its failure is named too.
    let one = Statement {
        name: "truncate_stage".into(),
        sql: format!("DELETE FROM {}", plan.final_table()),
    };
    target
        .execute("orders", std::slice::from_ref(&one))
        .await
        .expect("one statement");
    let last = e.api.submissions().pop().expect("submitted");
    assert!(!last.batch);
    assert_eq!(last.sqls, vec![one.sql.clone()]);
    e.api
        .set_fail_times(FailAt::Sql("DELETE FROM".into()), "ERROR: boom", 1);
    let err = target
        .execute("orders", std::slice::from_ref(&one))
        .await
        .expect_err("fails");
    assert!(
        matches!(&err, LoadError::Statement { statement, message, .. } if statement == "truncate_stage" && message.contains("ERROR: boom")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_statement_of_another_batch_still_running_is_waited_for_before_submitting() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let k1 = e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0;
    e.load(&p, &target, &[k1]).await.expect("first load");
    let a = vec![
        e.transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    let b = vec![
        e.transform(
            &p,
            "raw/cdc/orders/3.jsonl",
            &[r#"{"order":6,"note":"f","_op":"c","_lsn":40,"_commit_ts":"2024-06-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    assert_ne!(batch_id(&a), batch_id(&b));

    // Batch A stays STARTED past its invocation's deadline.
    e.api.stay_started(1);
    let short = e.target().with_deadline(Duration::from_millis(400));
    let err = e.load(&p, &short, &a).await.expect_err("A times out");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    let id_a = e.recorded_statement(&a).await.expect("A recorded");
    assert_eq!(e.load_calls(), 2);

    // B (its messages re-batched by SQS) waits for A and, at its own deadline, is not
    // submitted: the error says which statement of which batch still runs.
    let err = e.load(&p, &short, &b).await.expect_err("A still runs");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Retryable);
    let text = err.to_string();
    assert!(text.contains("not submitted"), "{text}");
    assert!(text.contains(&id_a), "{text}");
    assert!(text.contains(&batch_id(&a)), "{text}");
    assert!(text.contains("STARTED"), "{text}");
    assert_eq!(e.load_calls(), 2, "B not submitted");
    assert_eq!(e.recorded_statement(&b).await, None);

    // B again, with time: A is cancelled while B waits, and B is submitted only after.
    // (The lease the timed-out load kept expires first, so B's load starts right away.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = e.client.clone();
    let cancel_id = id_a.clone();
    let started = Instant::now();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        client
            .cancel_statement()
            .id(&cancel_id)
            .send()
            .await
            .expect("cancel A");
    });
    let done = e.load(&p, &target, &b).await.expect("B loads");
    cancel.await.expect("cancel task");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(done.counts.merged, 1, "{done:?}");
    assert_eq!(e.load_calls(), 3);
    let loads: Vec<Submission> = e.api.submissions().into_iter().filter(is_load).collect();
    let id_b = done.statement_id.clone().expect("B's statement");
    assert_eq!(loads[1].id, id_a);
    assert_eq!(loads[2].id, id_b);
    let ended_a = sluice_tests::dataapi::wait_done(&e.client, &id_a).await;
    assert_eq!(ended_a.status().map(|s| s.as_str()), Some("ABORTED"));
    let created_b = e
        .client
        .describe_statement()
        .id(&id_b)
        .send()
        .await
        .expect("describe B");
    let a_ended_at = ended_a.updated_at().expect("A's UpdatedAt").as_secs_f64();
    let b_created_at = created_b.created_at().expect("B's CreatedAt").as_secs_f64();
    assert!(
        b_created_at >= a_ended_at,
        "B submitted at {b_created_at}, before A ended at {a_ended_at}"
    );
    // A's record stays for A's own invocation, which finds it rolled back and submits anew.
    assert_eq!(
        e.recorded_statement(&a).await.as_deref(),
        Some(id_a.as_str())
    );
    let done_a = e.load(&p, &target, &a).await.expect("A loads");
    assert_eq!(done_a.attempts, 2);
    assert_eq!(done_a.counts.merged, 1);
    assert_eq!(e.recorded_statement(&a).await, None);
    let mut want = first_rows();
    want.push("5|e|∅|30|2024-05-01 00:00:00".into());
    want.push("6|f|∅|40|2024-06-01 00:00:00".into());
    assert_eq!(final_rows(&p, false).await, want);
}

#[tokio::test]
async fn records_of_other_batches_that_ended_stay_unless_older_than_a_day() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let target = e.target();
    let k1 = e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0;
    let first = e.load(&p, &target, &[k1]).await.expect("first load");
    let finished = first.statement_id.expect("a statement id");
    let now = SystemTime::now();
    let day_ago = now - Duration::from_secs(25 * 3600);
    let store = e.store.as_ref();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let recent_finished = put_statement_record(store, "recentfinished", &finished, now).await;
    let recent_unknown = put_statement_record(store, "recentunknown", unknown, now).await;
    let old_finished = put_statement_record(store, "oldfinished", &finished, day_ago).await;
    let old_unknown = put_statement_record(store, "oldunknown", unknown, day_ago).await;

    let keys = vec![
        e.transform(
            &p,
            "raw/cdc/orders/2.jsonl",
            &[r#"{"order":5,"note":"e","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
        )
        .await
        .0,
    ];
    let done = e.load(&p, &target, &keys).await.expect("load");
    assert_eq!(done.counts.merged, 1);
    // A finished batch's record is its own invocation's to read; one that cannot be described
    // yet is recent is left too. Over 24 hours old, both are orphans.
    assert!(exists(store, &recent_finished).await);
    assert!(exists(store, &recent_unknown).await);
    assert!(!exists(store, &old_finished).await);
    assert!(!exists(store, &old_unknown).await);
    assert_eq!(e.recorded_statement(&keys).await, None);
}

#[tokio::test]
async fn nothing_is_submitted_without_time_to_finish() {
    let e = env().await;
    let p = pipeline(&e.schema, false);
    let keys = vec![e.transform(&p, "raw/cdc/orders/1.jsonl", &FIRST).await.0];
    // 5 s to go, under the default 20 s: not even the CREATEs go.
    let tight = e.default_target().with_deadline(Duration::from_secs(5));
    let err = e.load(&p, &tight, &keys).await.expect_err("no time");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("not submitted: 4 s left"), "{text}");
    assert!(
        e.api
            .submissions()
            .iter()
            .all(|s| !s.sqls.iter().any(|q| q.starts_with("CREATE"))),
        "no CREATE submitted"
    );

    // With the tables there, the load itself is not submitted either, and nothing is recorded.
    e.create_tables(&p, &e.target()).await;
    let err = e.load(&p, &tight, &keys).await.expect_err("no time");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains(&batch_id(&keys)), "{err}");
    assert_eq!(e.load_calls(), 0);
    assert_eq!(e.recorded_statement(&keys).await, None);

    // A minimum of its own (here 2 s of the 5): the load goes.
    let done = e
        .load(&p, &tight.with_min_time_left(Duration::from_secs(2)), &keys)
        .await
        .expect("load");
    assert_eq!(e.load_calls(), 1);
    assert_eq!(done.mismatch, None, "{done:?}");
    assert_eq!(final_rows(&p, false).await, first_rows());
}

#[tokio::test]
async fn a_fault_at_any_statement_of_a_load_leaves_the_tables_as_they_were() {
    let e = env().await;
    let before = pipeline(&e.schema, false);
    let after = pipeline(&e.schema, true);
    let target = e.target();
    let (k1, m1) = e.transform(&before, "raw/cdc/orders/1.jsonl", &FIRST).await;
    e.load(&before, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    // The batch with the most steps: a new column, files of both shapes (two COPY groups),
    // an update, a delete, a NULL key and duplicates.
    let (k2, m2) = e.transform(&after, "raw/cdc/orders/2.jsonl", &SECOND).await;
    let keys = vec![k1.clone(), k2.clone()];
    let was = snapshot(&before).await;
    assert_eq!(was.len(), 4, "{was:?}");

    // The steps as the loader plans them: COPY groups by column list, `amount` missing.
    let plan = LoadPlan::new(after.table("orders").expect("orders")).expect("plan");
    let batch = batch_id(&keys);
    let mut shapes: Vec<(Vec<String>, String)> = [(&m1, &k1), (&m2, &k2)]
        .iter()
        .map(|(m, _)| {
            let cols = m.columns.iter().map(|c| c.name.clone()).collect();
            (cols, m.files[0].key.clone())
        })
        .collect();
    shapes.sort();
    assert!(m1.files.len() == 1 && m2.files.len() == 1);
    let groups: Vec<CopyGroup> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (columns, file))| CopyGroup {
            columns,
            files: vec![file],
            manifest_url: e.store.url(&copy_manifest_key("orders", &batch, i)),
        })
        .collect();
    let found = TablesFound {
        final_missing: vec!["amount".into()],
        stage_columns: None,
    };
    let steps = plan
        .steps(Dialect::Redshift, &groups, &found, COPY_ROLE)
        .expect("steps");
    let sqls: Vec<&str> = steps.iter().map(|s| s.sql()).collect();
    assert!(steps.len() > 15, "{} steps", steps.len());

    for (i, step) in steps.iter().enumerate() {
        let error = format!("ERROR: injected failure at statement {i}");
        e.api.set_fail_times(FailAt::Index(i), &error, 1);
        let err = e
            .load(&after, &target, &keys)
            .await
            .expect_err("the load fails");
        let sub = e
            .api
            .submissions()
            .into_iter()
            .rfind(is_load)
            .expect("the load was submitted");
        assert_eq!(sub.sqls, sqls, "the batch is the plan's steps");
        let LoadError::Statement {
            statement,
            message,
            conflict,
            ..
        } = &err
        else {
            panic!("statement {i}: not a statement error: {err:?}");
        };
        assert_eq!(statement, step.name(), "statement {i}: {err}");
        assert!(message.contains(&error), "statement {i}: {message}");
        assert!(!conflict);
        assert_eq!(snapshot(&before).await, was, "statement {i} left a change");
        assert_eq!(e.recorded_statement(&keys).await, None);
    }
    assert_eq!(e.load_calls(), 1 + steps.len());

    // Without a fault the same batch loads.
    let done = e.load(&after, &target, &keys).await.expect("load");
    assert_eq!(done.mismatch, None, "{done:?}");
    assert_eq!(
        final_rows(&after, true).await,
        vec![
            "2|b2|9.50|20|2024-04-01 00:00:00".to_string(),
            "3|c|1.25|21|2024-04-01 00:00:01".to_string(),
        ]
    );
}

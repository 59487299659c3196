//! The test Data API endpoint (`sluice_tests::dataapi`) through the real `aws-sdk-redshiftdata`
//! client: batches in one transaction, failures that commit nothing, the limits Redshift puts on
//! batches, a statement left STARTED, COPY of Parquet by position from a COPY manifest in moto
//! S3, single statements with results, and every statement of the loader's golden Redshift SQL.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use aws_sdk_redshiftdata::error::ProvideErrorMetadata;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use parquet::arrow::ArrowWriter;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use sluice_tests::dataapi::{wait_done, DataApi, FailAt};
use sluice_tests::{moto_bucket, moto_sdk_config, pg_url, put_object, unique_name, workspace_root};

#[path = "dataapi_endpoint/golden.rs"]
mod golden;

struct Env {
    api: DataApi,
    client: Client,
    sdk: aws_config::SdkConfig,
}

async fn env() -> Env {
    let sdk = moto_sdk_config().await;
    let api = DataApi::start(&pg_url(), &sdk).await;
    let client = api.client(&sdk);
    Env { api, client, sdk }
}

/// Submits a batch (workgroup form) and returns its id.
async fn batch(client: &Client, sqls: &[String]) -> String {
    client
        .batch_execute_statement()
        .set_sqls(Some(sqls.to_vec()))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "BatchExecuteStatement: {}",
                aws_sdk_redshiftdata::error::DisplayErrorContext(e)
            )
        })
        .id()
        .expect("statement id")
        .to_string()
}

async fn run_batch(client: &Client, sqls: &[String]) -> DescribeStatementOutput {
    let id = batch(client, sqls).await;
    wait_done(client, &id).await
}

fn sub_status(d: &DescribeStatementOutput) -> Vec<StatementStatusString> {
    d.sub_statements()
        .iter()
        .map(|s| s.status().cloned().expect("sub-statement status"))
        .collect()
}

async fn pg() -> PgConnection {
    PgConnection::connect(&pg_url()).await.expect("connect")
}

async fn pg_scalar(sql: &str) -> Option<String> {
    let mut c = pg().await;
    sqlx::query_scalar::<_, Option<String>>(AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_batch_runs_in_order_and_reports_rows_per_statement() {
    let e = env().await;
    let t = unique_name("dapi");
    let sqls = strings(&[
        &format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(20))"),
        &format!("INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, NULL)"),
        &format!("UPDATE {t} SET name = 'z' WHERE id >= 2"),
        &format!("SELECT id, name FROM {t} ORDER BY id"),
    ]);
    let id = batch(&e.client, &sqls).await;
    let d = wait_done(&e.client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{d:?}");
    assert_eq!(d.error(), None);
    assert_eq!(sub_status(&d), vec![StatementStatusString::Finished; 4]);
    let rows: Vec<i64> = d.sub_statements().iter().map(|s| s.result_rows()).collect();
    assert_eq!(rows, vec![0, 3, 2, 3]);
    let ids: Vec<&str> = d.sub_statements().iter().map(|s| s.id()).collect();
    assert_eq!(
        ids,
        (1..=4).map(|n| format!("{id}:{n}")).collect::<Vec<_>>()
    );
    assert_eq!(d.sub_statements()[3].has_result_set(), Some(true));
    assert_eq!(d.sub_statements()[1].has_result_set(), Some(false));
    assert_eq!(d.sub_statements()[3].query_string(), Some(sqls[3].as_str()));

    // The SELECT's result, read by its sub-statement id.
    let r = e
        .client
        .get_statement_result()
        .id(format!("{id}:4"))
        .send()
        .await
        .expect("GetStatementResult");
    assert_eq!(r.total_num_rows(), 3);
    assert_eq!(
        r.records()[0],
        vec![Field::LongValue(1), Field::StringValue("a".into())]
    );
    assert_eq!(
        r.records()[2],
        vec![Field::LongValue(3), Field::StringValue("z".into())]
    );
    let names: Vec<&str> = r
        .column_metadata()
        .iter()
        .filter_map(|c| c.name())
        .collect();
    assert_eq!(names, ["id", "name"]);

    // Committed: PostgreSQL has the rows.
    let n = pg_scalar(&format!("SELECT count(*)::text FROM {t} WHERE name = 'z'")).await;
    assert_eq!(n.as_deref(), Some("2"));
    assert_eq!(e.api.batch_calls(), 1);
    assert_eq!(e.api.submitted_sql(), vec![sqls]);
    let sub = &e.api.submissions()[0];
    assert_eq!(sub.id, id);
    assert_eq!(sub.request["WorkgroupName"], "wg");
}

#[tokio::test]
async fn a_failing_statement_fails_the_batch_and_commits_nothing() {
    let e = env().await;
    let t = unique_name("dapi");
    let missing = unique_name("nosuch");
    let sqls = strings(&[
        &format!("CREATE TABLE {t} (id BIGINT)"),
        &format!("INSERT INTO {t} VALUES (1)"),
        &format!("INSERT INTO {missing} VALUES (1)"),
        &format!("INSERT INTO {t} VALUES (2)"),
    ]);
    let d = run_batch(&e.client, &sqls).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    let err = d.error().expect("error text");
    assert!(err.starts_with("Query #3 failed with ERROR: "), "{err}");
    assert!(
        err.contains(&missing) && err.contains("does not exist"),
        "{err}"
    );
    use StatementStatusString::*;
    assert_eq!(sub_status(&d), vec![Finished, Finished, Failed, Aborted]);
    let sub_err = d.sub_statements()[2].error().expect("sub error");
    assert!(sub_err.contains(&missing), "{sub_err}");
    assert_eq!(d.sub_statements()[3].error(), None);
    // Rolled back: not even the table exists.
    assert_eq!(
        pg_scalar(&format!("SELECT to_regclass('{t}')::text")).await,
        None
    );

    // A serialization failure reads as Redshift's error 1023.
    let d = run_batch(
        &e.client,
        &strings(&[
            "SELECT 1",
            "DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END $$",
        ]),
    )
    .await;
    let err = d.error().expect("error text");
    assert!(
        err.contains("ERROR: 1023 DETAIL: Serializable isolation violation on table"),
        "{err}"
    );
}

#[tokio::test]
async fn injected_failures_hit_the_chosen_statement() {
    let e = env().await;
    let t = unique_name("dapi");
    let conflict = "ERROR: 1023 DETAIL: Serializable isolation violation on table - 1234";
    let sqls = strings(&[
        &format!("CREATE TABLE {t} (id BIGINT)"),
        &format!("INSERT INTO {t} VALUES (1) /* marker */"),
        &format!("INSERT INTO {t} VALUES (2)"),
    ]);
    e.api
        .set_fail_times(FailAt::Sql("marker".into()), conflict, 1);
    let d = run_batch(&e.client, &sqls).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert_eq!(d.sub_statements()[1].error(), Some(conflict));
    assert_eq!(
        d.error(),
        Some(format!("Query #2 failed with {conflict}").as_str())
    );
    assert_eq!(
        pg_scalar(&format!("SELECT to_regclass('{t}')::text")).await,
        None
    );

    // Once only: the same batch again succeeds.
    let d = run_batch(&e.client, &sqls).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{d:?}");

    // By index, until cleared.
    e.api.set_fail(FailAt::Index(0), "ERROR: injected");
    for _ in 0..2 {
        let d = run_batch(&e.client, &strings(&["SELECT 1", "SELECT 2"])).await;
        assert_eq!(d.error(), Some("Query #1 failed with ERROR: injected"));
    }
    e.api.clear_fail();
    let d = run_batch(&e.client, &strings(&["SELECT 1", "SELECT 2"])).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    let n = pg_scalar(&format!("SELECT count(*)::text FROM {t}")).await;
    assert_eq!(n.as_deref(), Some("2"));
}

#[tokio::test]
async fn batches_redshift_would_break_on_are_refused() {
    let e = env().await;
    let refused = |r: Result<_, aws_sdk_redshiftdata::error::SdkError<_>>| match r {
        Ok(o) => panic!("accepted: {o:?}"),
        Err(err) => {
            let se: aws_sdk_redshiftdata::operation::batch_execute_statement::BatchExecuteStatementError =
                err.into_service_error();
            assert!(se.is_validation_exception(), "{se:?}");
            se.message().unwrap_or_default().to_string()
        }
    };
    let many: Vec<String> = (0..41).map(|i| format!("SELECT {i}")).collect();
    let r = e
        .client
        .batch_execute_statement()
        .set_sqls(Some(many.clone()))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await;
    let msg = refused(r);
    assert!(msg.contains("40"), "{msg}");

    let r = e
        .client
        .batch_execute_statement()
        .set_sqls(Some(strings(&["SELECT 1", "truncate some_table"])))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await;
    let msg = refused(r);
    assert!(
        msg.contains("TRUNCATE") && msg.contains("statement 2"),
        "{msg}"
    );

    // No cluster or workgroup named.
    let r = e
        .client
        .batch_execute_statement()
        .set_sqls(Some(strings(&["SELECT 1"])))
        .database("dev")
        .send()
        .await;
    refused(r);

    assert_eq!(e.api.batch_calls(), 3);
    assert!(e.api.submitted_sql().is_empty());

    // Forty is fine.
    let d = run_batch(&e.client, &many[..40]).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    assert_eq!(d.sub_statements().len(), 40);
}

#[tokio::test]
async fn a_statement_can_stay_started_until_cancelled() {
    let e = env().await;
    let t = unique_name("dapi");
    let sqls = strings(&[&format!("CREATE TABLE {t} (id BIGINT)")]);
    e.api.stay_started(1);
    let id = batch(&e.client, &sqls).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let d = e
        .client
        .describe_statement()
        .id(&id)
        .send()
        .await
        .expect("describe");
    assert_eq!(d.status(), Some(&StatusString::Started));
    assert_eq!(sub_status(&d), vec![StatementStatusString::Started]);
    assert_eq!(
        pg_scalar(&format!("SELECT to_regclass('{t}')::text")).await,
        None
    );

    let c = e
        .client
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect("cancel");
    assert_eq!(c.status(), Some(true));
    let d = e
        .client
        .describe_statement()
        .id(&id)
        .send()
        .await
        .expect("describe");
    assert_eq!(d.status(), Some(&StatusString::Aborted));
    // Cancelling a finished statement is refused, as the API does.
    let again = e.client.cancel_statement().id(&id).send().await;
    let se = again.expect_err("second cancel").into_service_error();
    assert!(se.is_validation_exception(), "{se:?}");

    // The next batch runs; an unknown id is not found.
    let d = run_batch(&e.client, &sqls).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    let nf = e
        .client
        .describe_statement()
        .id("00000000-0000-4000-a000-000000000000")
        .send()
        .await
        .expect_err("unknown id")
        .into_service_error();
    assert!(nf.is_resource_not_found_exception(), "{nf:?}");
}

#[tokio::test]
async fn a_repeated_client_token_submits_once() {
    let e = env().await;
    let t = unique_name("dapi");
    let send = || {
        e.client
            .batch_execute_statement()
            .set_sqls(Some(strings(&[&format!("CREATE TABLE {t} (id BIGINT)")])))
            .database("dev")
            .cluster_identifier("c1")
            .db_user("loader")
            .client_token("token-1")
            .send()
    };
    let a = send().await.expect("first").id().expect("id").to_string();
    let b = send().await.expect("second").id().expect("id").to_string();
    assert_eq!(a, b);
    assert_eq!(e.api.batch_calls(), 2);
    assert_eq!(e.api.submitted_sql().len(), 1);
    let d = wait_done(&e.client, &a).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    assert_eq!(d.cluster_identifier(), Some("c1"));
}

#[tokio::test]
async fn execute_statement_returns_rows() {
    let e = env().await;
    let t = unique_name("dapi");
    let d = run_batch(
        &e.client,
        &strings(&[&format!(
            "CREATE TABLE {t} (\"Id\" BIGINT, note VARCHAR(10), x DOUBLE PRECISION)"
        )]),
    )
    .await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    // What the loader asks for a table's columns, with a parameter as the API takes them.
    let sql = "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = :table ORDER BY ordinal_position";
    let table = aws_sdk_redshiftdata::types::SqlParameter::builder()
        .name("table")
        .value(&t)
        .build()
        .expect("parameter");
    let id = e
        .client
        .execute_statement()
        .sql(sql)
        .parameters(table)
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await
        .expect("ExecuteStatement")
        .id()
        .expect("statement id")
        .to_string();
    let d = wait_done(&e.client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished));
    assert_eq!(d.result_rows(), 3);
    assert_eq!(d.has_result_set(), Some(true));
    assert!(d.sub_statements().is_empty());
    let r = e
        .client
        .get_statement_result()
        .id(&id)
        .send()
        .await
        .expect("result");
    let cols: Vec<&Field> = r.records().iter().map(|row| &row[0]).collect();
    assert_eq!(
        cols,
        [
            &Field::StringValue("Id".into()),
            &Field::StringValue("note".into()),
            &Field::StringValue("x".into())
        ]
    );

    // Types: long, double, boolean, null; an empty result is still a result.
    let id = e
        .client
        .execute_statement()
        .sql("SELECT 7::int8 AS n, 1.5::float8 AS d, true AS b, NULL::text AS z")
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await
        .expect("ExecuteStatement")
        .id()
        .expect("statement id")
        .to_string();
    wait_done(&e.client, &id).await;
    let r = e
        .client
        .get_statement_result()
        .id(&id)
        .send()
        .await
        .expect("result");
    assert_eq!(
        r.records(),
        [vec![
            Field::LongValue(7),
            Field::DoubleValue(1.5),
            Field::BooleanValue(true),
            Field::IsNull(true)
        ]]
    );
    let id = e
        .client
        .execute_statement()
        .sql(format!("SELECT * FROM {t}"))
        .database("dev")
        .workgroup_name("wg")
        .send()
        .await
        .expect("ExecuteStatement")
        .id()
        .expect("statement id")
        .to_string();
    let d = wait_done(&e.client, &id).await;
    assert_eq!((d.has_result_set(), d.result_rows()), (Some(true), 0));
    let r = e
        .client
        .get_statement_result()
        .id(&id)
        .send()
        .await
        .expect("result");
    assert_eq!(r.total_num_rows(), 0);
    assert!(r.records().is_empty());
}

// ---------------------------------------------------------------------------------------------
// COPY

fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

/// Puts the files and a COPY manifest listing them (with `mandatory`) under `prefix`; returns
/// the manifest's URL.
async fn manifest(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    files: &[(&str, Option<Vec<u8>>)],
) -> String {
    let mut entries = Vec::new();
    for (name, body) in files {
        let key = format!("{prefix}/{name}");
        let len = body.as_ref().map_or(0, |b| b.len());
        if let Some(b) = body {
            put_object(s3, bucket, &key, b.clone()).await;
        }
        entries.push(serde_json::json!({
            "url": format!("s3://{bucket}/{key}"),
            "mandatory": true,
            "meta": {"content_length": len},
        }));
    }
    let key = format!("{prefix}/copy.manifest");
    let body = serde_json::json!({ "entries": entries }).to_string();
    put_object(s3, bucket, &key, body.into_bytes()).await;
    format!("s3://{bucket}/{key}")
}

fn copy_sql(target: &str, manifest: &str) -> String {
    format!(
        "COPY {target} FROM '{manifest}' IAM_ROLE 'arn:aws:iam::123456789012:role/copy' FORMAT AS PARQUET MANIFEST"
    )
}

#[tokio::test]
async fn copy_loads_parquet_by_position_and_refuses_a_short_file() {
    let e = env().await;
    let bucket = unique_name("dapi-copy");
    let s3 = moto_bucket(&e.sdk, &bucket).await;
    let t = unique_name("dapi");
    // The file's names differ from the table's: Redshift maps Parquet by position.
    let file1 = parquet(vec![
        (
            "x",
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])) as ArrayRef,
        ),
        (
            "y",
            Arc::new(StringArray::from(vec![Some("a,\"b\""), None, Some("c")])) as ArrayRef,
        ),
        (
            "z",
            Arc::new(Float64Array::from(vec![1.5, 2.5, 3.5])) as ArrayRef,
        ),
    ]);
    let file2 = parquet(vec![
        ("x", Arc::new(Int64Array::from(vec![10])) as ArrayRef),
        ("y", Arc::new(StringArray::from(vec!["d"])) as ArrayRef),
        ("z", Arc::new(Float64Array::from(vec![0.0])) as ArrayRef),
    ]);
    let m = manifest(
        &s3,
        &bucket,
        "good",
        &[
            ("f1.parquet", Some(file1.clone())),
            ("f2.parquet", Some(file2)),
        ],
    )
    .await;
    let create = format!("CREATE TABLE {t} (id BIGINT, name VARCHAR(20), amount DOUBLE PRECISION)");
    let d = run_batch(&e.client, &[create, copy_sql(&t, &m)]).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    assert_eq!(d.sub_statements()[1].result_rows(), 4);
    let got = pg_scalar(&format!(
        "SELECT string_agg(concat_ws('|', coalesce(id::text, 'null'), coalesce(name, 'null'), amount::text), ';' ORDER BY amount) FROM {t}"
    ))
    .await;
    assert_eq!(
        got.as_deref(),
        Some("10|d|0;1|a,\"b\"|1.5;2|null|2.5;null|c|3.5")
    );

    // A file with fewer columns than the table fails the COPY, naming the file.
    let short = parquet(vec![
        ("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef),
        ("y", Arc::new(StringArray::from(vec!["e"])) as ArrayRef),
    ]);
    let m = manifest(
        &s3,
        &bucket,
        "short",
        &[("ok.parquet", Some(file1)), ("short.parquet", Some(short))],
    )
    .await;
    let d = run_batch(&e.client, &[copy_sql(&t, &m)]).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    let err = d.error().expect("error");
    assert!(
        err.contains(&format!("s3://{bucket}/short/short.parquet")),
        "{err}"
    );
    assert!(err.contains("2 columns"), "{err}");
    // Nothing of the first file stayed either.
    let n = pg_scalar(&format!("SELECT count(*)::text FROM {t}")).await;
    assert_eq!(n.as_deref(), Some("4"));

    // A mandatory file that is missing fails, naming it.
    let m = manifest(&s3, &bucket, "missing", &[("gone.parquet", None)]).await;
    let d = run_batch(&e.client, &[copy_sql(&t, &m)]).await;
    let err = d.error().expect("error");
    assert!(
        err.contains(&format!("s3://{bucket}/missing/gone.parquet")),
        "{err}"
    );
}

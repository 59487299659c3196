//! A change table with unchanged-TOAST markers through the Data API: markers resolved from the
//! final row, and the rows nothing resolves read from the load's query (by its sub-statement
//! id) and quarantined — also when an earlier invocation gave up on the statement and the next
//! one finds it FINISHED.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use sluice::lake::ObjectStore;
use sluice::warehouse::{LoadError, LoadPlan};
use sluice_tests::pg_url;
use sluice_tests::warehouse::{toast_rows, toast_table};

use super::env;

/// The quarantine records of a load, as JSON.
async fn quarantined(store: &dyn ObjectStore, keys: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for k in keys {
        let b = store.get_bytes(k).await.expect("quarantine object");
        for line in String::from_utf8(b.to_vec()).expect("utf8").lines() {
            out.push(serde_json::from_str(line).expect("json line"));
        }
    }
    out
}

#[tokio::test]
async fn unresolved_markers_are_read_back_from_the_batch_and_quarantined() {
    let e = env().await;
    let p = toast_table(&e.schema);
    let plan = LoadPlan::new(p.table("docs").expect("docs")).expect("plan");
    let target = e.target();
    let k1 = e
        .transform(
            &p,
            "raw/cdc/docs/1.jsonl",
            &[r#"{"id":1,"title":"t1","body":"B1","price":"12.5","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#],
        )
        .await
        .0;
    e.load_table(&p, &target, "docs", &[k1])
        .await
        .expect("first");
    let (k2, m2) = e
        .transform(
            &p,
            "raw/cdc/docs/2.jsonl",
            &[
                r#"{"id":1,"title":"t2","_op":"u","_lsn":20,"_commit_ts":"2024-03-01T10:01:00Z","_unchanged":"body,price"}"#,
                r#"{"id":7,"title":"x","_op":"u","_lsn":21,"_commit_ts":"2024-03-01T10:02:00Z","_unchanged":"body"}"#,
            ],
        )
        .await;
    let s = e
        .load_table(&p, &target, "docs", std::slice::from_ref(&k2))
        .await
        .expect("second");
    assert_eq!(s.mismatch, None, "{s:?}");
    assert_eq!((s.counts.merged, s.counts.unresolved), (1, 1), "{s:?}");
    assert_eq!(toast_rows(&plan).await, ["1|t2|B1|∅|12.5000000000|20"]);
    let q = quarantined(e.store.as_ref(), &s.quarantine_keys).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["object"], m2.files[0].key.as_str(), "{q:?}");
    assert_eq!(q[0]["column"], "body", "{q:?}");
    assert!(q[0]["raw"].as_str().unwrap_or("").contains("id=7"), "{q:?}");

    // The next load's statement commits after its invocation gave up on it: the next
    // invocation finds it FINISHED and reads the query's rows from it.
    let keys = vec![
        e.transform(
            &p,
            "raw/cdc/docs/3.jsonl",
            &[r#"{"id":9,"title":"y","_op":"u","_lsn":30,"_commit_ts":"2024-03-01T10:03:00Z","_unchanged":"price"}"#],
        )
        .await
        .0,
    ];
    let mut holder = PgConnection::connect(&pg_url()).await.expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!("LOCK TABLE {}", plan.final_table())))
        .execute(&mut *tx)
        .await
        .expect("lock");
    let short = e.target().with_deadline(Duration::from_millis(300));
    let err = e
        .load_table(&p, &short, "docs", &keys)
        .await
        .expect_err("times out");
    assert!(matches!(err, LoadError::Timeout { .. }), "{err:?}");
    let id = e
        .recorded_statement_of("docs", &keys)
        .await
        .expect("recorded");
    tx.commit().await.expect("unlock");
    sluice_tests::dataapi::wait_done(&e.client, &id).await;
    let done = e
        .load_table(&p, &target, "docs", &keys)
        .await
        .expect("resumed");
    assert_eq!(done.statement_id.as_deref(), Some(id.as_str()));
    assert_eq!(done.counts.unresolved, 1, "{done:?}");
    assert_eq!(done.mismatch, None, "{done:?}");
    let q = quarantined(e.store.as_ref(), &done.quarantine_keys).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["column"], "price", "{q:?}");
    assert!(q[0]["raw"].as_str().unwrap_or("").contains("id=9"), "{q:?}");
    assert_eq!(toast_rows(&plan).await, ["1|t2|B1|∅|12.5000000000|20"]);
}

//! Change tables on real PostgreSQL: unchanged-TOAST markers resolved from the key's nearest
//! earlier version (in the batch, else the final row), rows nothing resolves left out and
//! quarantined with the reason, and TRUNCATEs inside a batch.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::lake::ObjectStore;
use sluice::warehouse::{Dialect, LoadPlan, Step};
use sluice_tests::warehouse::{toast_rows, toast_table};
use sluice_tests::{pg_url, unique_name};

use super::{exec, lake, load_table, statement, transform};

/// One change row of `docs`.
#[derive(Clone, Copy)]
struct Doc {
    id: Option<i64>,
    title: Option<&'static str>,
    body: Option<&'static str>,
    blob: Option<&'static [u8]>,
    price: Option<&'static str>,
    op: &'static str,
    lsn: i64,
    unchanged: Option<&'static str>,
}

/// An insert (or update) with every value.
fn full(id: i64, op: &'static str, lsn: i64, title: &'static str, body: &'static str) -> Doc {
    Doc {
        id: Some(id),
        title: Some(title),
        body: Some(body),
        blob: Some(b"\x01\x02"),
        price: Some("12.5"),
        op,
        lsn,
        unchanged: None,
    }
}

/// An update that leaves `unchanged` out (body, blob and price are NULL in the row).
fn marked(id: i64, lsn: i64, title: &'static str, unchanged: &'static str) -> Doc {
    Doc {
        id: Some(id),
        title: Some(title),
        body: None,
        blob: None,
        price: None,
        op: "u",
        lsn,
        unchanged: Some(unchanged),
    }
}

fn delete(id: i64, lsn: i64) -> Doc {
    Doc {
        op: "d",
        title: None,
        unchanged: None,
        ..marked(id, lsn, "", "")
    }
}

fn truncate(lsn: i64) -> Doc {
    Doc {
        id: None,
        op: "t",
        ..delete(0, lsn)
    }
}

/// The row as `id|title|body|blob|price|lsn` the way `toast_rows` reads the final table.
fn row(id: i64, title: &str, body: &str, lsn: i64) -> String {
    format!("{id}|{title}|{body}|0102|12.5000000000|{lsn}")
}

async fn setup() -> (PgConnection, LoadPlan) {
    let mut c = PgConnection::connect(&pg_url()).await.expect("connect");
    let p = toast_table(&unique_name("toast"));
    let plan = LoadPlan::new(p.table("docs").expect("docs")).expect("plan");
    for s in plan.create_tables(Dialect::Postgres) {
        exec(&mut c, &s).await.expect("create tables");
    }
    (c, plan)
}

/// One load of `rows` through the plan's statements in one transaction; the rows of the
/// `unresolved_changes` query (id, lsn, missing columns).
async fn load(c: &mut PgConnection, plan: &LoadPlan, rows: &[Doc]) -> Vec<Vec<String>> {
    let mut tx = c.begin().await.expect("begin");
    for s in plan.before_copy(Dialect::Postgres, &Default::default()) {
        exec(&mut tx, &s).await.expect("before copy");
    }
    let sql = format!(
        "INSERT INTO {} (\"id\", \"title\", \"body\", \"blob\", \"price\", \"_op\", \"_lsn\", \"_commit_ts\", \"_unchanged\") VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, TIMESTAMP '2024-03-01 10:00:00', $8)",
        plan.stage_table()
    );
    for d in rows {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(d.id)
            .bind(d.title)
            .bind(d.body)
            .bind(d.blob)
            .bind(d.price)
            .bind(d.op)
            .bind(d.lsn)
            .bind(d.unchanged)
            .execute(&mut *tx)
            .await
            .expect("stage");
    }
    let mut unresolved = Vec::new();
    for s in plan.after_copy(Dialect::Postgres) {
        if let Step::Query(q) = &s {
            let rows = sqlx::query(AssertSqlSafe(q.sql.clone()))
                .fetch_all(&mut *tx)
                .await
                .expect("query");
            unresolved = rows
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get::<String, _>(i)).collect())
                .collect();
            continue;
        }
        exec(&mut tx, &statement(&s)).await.expect("merge");
    }
    tx.commit().await.expect("commit");
    unresolved
}

fn none() -> Vec<Vec<String>> {
    Vec::new()
}

fn unresolved(id: i64, lsn: i64, missing: &str) -> Vec<String> {
    vec![id.to_string(), lsn.to_string(), missing.to_string()]
}

#[tokio::test]
async fn a_marker_takes_the_value_of_an_earlier_version_in_the_batch() {
    let (mut c, plan) = setup().await;
    let got = load(
        &mut c,
        &plan,
        &[
            full(1, "c", 10, "t1", "B1"),
            marked(1, 11, "t2", "body,blob,price"),
            // The nearest earlier version counts: 2's body changed at 21.
            full(2, "c", 20, "t1", "old"),
            full(2, "u", 21, "t2", "new"),
            marked(2, 22, "t3", "body,blob,price"),
        ],
    )
    .await;
    assert_eq!(got, none());
    assert_eq!(
        toast_rows(&plan).await,
        [row(1, "t2", "B1", 11), row(2, "t3", "new", 22)]
    );
}

#[tokio::test]
async fn a_marker_takes_the_value_of_the_final_row() {
    let (mut c, plan) = setup().await;
    load(&mut c, &plan, &[full(1, "c", 10, "t1", "B1")]).await;
    let got = load(&mut c, &plan, &[marked(1, 20, "t2", "body,blob,price")]).await;
    assert_eq!(got, none());
    assert_eq!(toast_rows(&plan).await, [row(1, "t2", "B1", 20)]);
    // A marker on one column only: the others are the row's own (here a new body).
    let mut d = marked(1, 30, "t3", "blob,price");
    d.body = Some("B2");
    load(&mut c, &plan, &[d]).await;
    assert_eq!(toast_rows(&plan).await, [row(1, "t3", "B2", 30)]);
}

#[tokio::test]
async fn chains_of_marked_updates_resolve_to_the_last_value_sent() {
    let (mut c, plan) = setup().await;
    load(
        &mut c,
        &plan,
        &[full(2, "c", 10, "t1", "B2"), full(3, "c", 50, "t1", "X")],
    )
    .await;
    let got = load(
        &mut c,
        &plan,
        &[
            // In the batch: two marked updates after the insert.
            full(1, "c", 10, "t1", "B1"),
            marked(1, 11, "t2", "body,blob,price"),
            marked(1, 12, "t3", "body,blob,price"),
            // Across batches: two marked updates after the final row.
            marked(2, 20, "t2", "body,blob,price"),
            marked(2, 21, "t3", "body,blob,price"),
            // A version older than the final row (loaded late) is not the nearest: the
            // final row is.
            full(3, "u", 40, "old", "old"),
            marked(3, 60, "t2", "body,blob,price"),
        ],
    )
    .await;
    assert_eq!(got, none());
    assert_eq!(
        toast_rows(&plan).await,
        [
            row(1, "t3", "B1", 12),
            row(2, "t3", "B2", 21),
            row(3, "t2", "X", 60)
        ]
    );
}

#[tokio::test]
async fn an_unresolvable_marker_leaves_the_row_out_and_the_final_row_as_it_was() {
    let (mut c, plan) = setup().await;
    load(&mut c, &plan, &[full(6, "c", 10, "t1", "B6")]).await;
    let got = load(
        &mut c,
        &plan,
        &[
            // No earlier version anywhere.
            marked(5, 30, "t", "body"),
            // The nearest earlier version is a delete: nothing after it can be unchanged.
            delete(6, 20),
            marked(6, 21, "t2", "body,price"),
            // Loads beside them.
            full(7, "c", 22, "t", "B7"),
        ],
    )
    .await;
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        [unresolved(5, 30, "body"), unresolved(6, 21, "body,price")]
    );
    assert_eq!(
        toast_rows(&plan).await,
        [row(6, "t1", "B6", 10), row(7, "t", "B7", 22)],
        "6 keeps its previous version, 5 is not loaded with a NULL body"
    );
}

#[tokio::test]
async fn a_truncate_in_the_batch_discards_the_changes_below_it() {
    let (mut c, plan) = setup().await;
    load(&mut c, &plan, &[full(9, "c", 3, "t", "B9")]).await;
    let got = load(
        &mut c,
        &plan,
        &[
            full(1, "c", 5, "t1", "B1"),
            full(2, "c", 6, "t1", "B2"),
            full(4, "c", 7, "t1", "B4"),
            truncate(10),
            full(1, "c", 11, "again", "B1b"),
            full(3, "c", 12, "t1", "B3"),
            marked(3, 13, "t2", "body,blob,price"),
            // Its only earlier version is below the TRUNCATE: no value to take.
            marked(4, 14, "t2", "body"),
        ],
    )
    .await;
    assert_eq!(got, [unresolved(4, 14, "body")]);
    let after = [row(1, "again", "B1b", 11), row(3, "t2", "B3", 13)];
    assert_eq!(
        toast_rows(&plan).await,
        after,
        "9 (before the batch) is gone"
    );
    // An older batch loaded after the TRUNCATE changes nothing.
    let got = load(
        &mut c,
        &plan,
        &[
            full(2, "u", 8, "late", "late"),
            full(5, "c", 9, "late", "late"),
            delete(1, 9),
        ],
    )
    .await;
    assert_eq!(got, none());
    assert_eq!(toast_rows(&plan).await, after);
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {} WHERE sluice_truncate AND \"_lsn\" = 10",
        plan.tombstone_table()
    )))
    .fetch_one(&mut c)
    .await
    .expect("truncation record");
    assert_eq!(n, 1);
}

#[tokio::test]
async fn unresolved_rows_are_quarantined_with_the_reason_through_the_loader() {
    let schema = unique_name("toastq");
    let l = lake();
    let p = toast_table(&schema);
    let target = sluice::warehouse::PgTarget::connect(&pg_url())
        .await
        .expect("connect");
    let plan = LoadPlan::new(p.table("docs").unwrap()).expect("plan");
    let (k1, _) = transform(
        &l,
        &p,
        "raw/cdc/docs/1.jsonl",
        &[r#"{"id":1,"title":"t1","body":"B1","price":"12.5","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#],
    )
    .await;
    load_table(&l, &p, &target, "docs", &[k1])
        .await
        .expect("first");
    let (k2, m2) = transform(
        &l,
        &p,
        "raw/cdc/docs/2.jsonl",
        &[
            r#"{"id":1,"title":"t2","_op":"u","_lsn":20,"_commit_ts":"2024-03-01T10:01:00Z","_unchanged":"body,price"}"#,
            r#"{"id":7,"title":"x","_op":"u","_lsn":21,"_commit_ts":"2024-03-01T10:02:00Z","_unchanged":"body"}"#,
        ],
    )
    .await;
    let s = load_table(&l, &p, &target, "docs", std::slice::from_ref(&k2))
        .await
        .expect("second");
    assert_eq!(s.mismatch, None, "{s:?}");
    assert_eq!((s.counts.merged, s.counts.unresolved), (1, 1), "{s:?}");
    assert_eq!(
        toast_rows(&plan).await,
        ["1|t2|B1|∅|12.5000000000|20"],
        "7 is not loaded"
    );
    assert_eq!(s.quarantine_keys.len(), 1, "{s:?}");
    let q = l
        .store
        .get_bytes(&s.quarantine_keys[0])
        .await
        .expect("quarantine object");
    let q: Vec<serde_json::Value> = String::from_utf8(q.to_vec())
        .expect("utf8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["object"], m2.files[0].key.as_str(), "{q:?}");
    assert_eq!(q[0]["column"], "body", "{q:?}");
    let reason = q[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("unchanged TOASTed value"), "{reason}");
    let raw = q[0]["raw"].as_str().unwrap_or("");
    assert!(raw.contains("id=7") && raw.contains("_lsn=21"), "{raw}");
    // A replay finds it again and writes the same object; 1 is stale now.
    let again = load_table(&l, &p, &target, "docs", &[k2])
        .await
        .expect("replay");
    assert_eq!((again.counts.stale, again.counts.unresolved), (1, 1));
    assert_eq!(again.quarantine_keys, s.quarantine_keys);
    assert_eq!(again.mismatch, None, "{again:?}");
}

//! The load plan's SQL on real PostgreSQL: merge semantics, ordering guarantees and atomicity.
//! The stage is filled with INSERTs here (the COPY of Parquet comes with the executor); every
//! statement after that is the plan's own, run in one SERIALIZABLE transaction as a load runs.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::config::Pipeline;
use sluice::warehouse::{Dialect, LoadPlan, Statement};
use sluice_tests::{pg_url, unique_name};

/// A change table with awkward warehouse names: a reserved word, upper case, a space.
fn plan(schema: &str) -> LoadPlan {
    let text = format!(
        r#"
[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = {{ key = ["order"], order_by = "_lsn" }}
catalog = {{ database = "db" }}
warehouse = {{ schema = "{schema}", table = "Order", merge_keys = ["order"], columns = {{ note = "Note Text" }} }}
columns = [
  {{ name = "order", type = "int", required = true }},
  {{ name = "note", type = "string" }},
  {{ name = "_op", type = "string" }},
  {{ name = "_lsn", type = "int" }},
  {{ name = "_commit_ts", type = "timestamp" }},
]
"#
    );
    let p = Pipeline::parse(&text, "test").expect("pipeline");
    LoadPlan::new(p.table("orders").expect("orders")).expect("plan")
}

/// One change row: (order, note, op, lsn).
type Change = (i64, Option<&'static str>, &'static str, i64);

async fn exec(c: &mut PgConnection, s: &Statement) -> Result<(), String> {
    sqlx::query(AssertSqlSafe(s.sql.clone()))
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", s.name))
}

async fn setup() -> (PgConnection, LoadPlan) {
    let url = pg_url();
    let mut c = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let plan = plan(&unique_name("wh"));
    for s in plan.create_tables(Dialect::Postgres) {
        exec(&mut c, &s).await.expect("create tables");
    }
    (c, plan)
}

/// One load: the plan's statements around a stage filled with `rows`, in one transaction.
/// `fail_after`: run that many of the statements after the stage is filled, then fail.
async fn load(
    c: &mut PgConnection,
    plan: &LoadPlan,
    rows: &[Change],
    fail_after: Option<usize>,
) -> Result<(), String> {
    let mut tx = c.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    for s in plan.before_copy(Dialect::Postgres) {
        exec(&mut tx, &s).await?;
    }
    for (order, note, op, lsn) in rows {
        let sql = format!(
            "INSERT INTO {} (\"order\", \"Note Text\", \"_op\", \"_lsn\", \"_commit_ts\") VALUES ($1, $2, $3, $4, TIMESTAMP '2024-03-01 10:00:00')",
            plan.stage_table()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(order)
            .bind(note)
            .bind(op)
            .bind(lsn)
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("stage: {e}"))?;
    }
    for (i, s) in plan.after_copy(Dialect::Postgres).iter().enumerate() {
        if fail_after == Some(i) {
            return Err(format!("injected failure before {}", s.name)); // dropped tx rolls back
        }
        exec(&mut tx, s).await?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// The final table: (order, note, lsn), by order.
async fn table(c: &mut PgConnection, plan: &LoadPlan) -> Vec<(i64, Option<String>, i64)> {
    let sql = format!(
        "SELECT \"order\", \"Note Text\", \"_lsn\" FROM {} ORDER BY 1",
        plan.final_table()
    );
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *c)
        .await
        .expect("select final")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn rows(v: &[(i64, &str, i64)]) -> Vec<(i64, Option<String>, i64)> {
    v.iter()
        .map(|(o, n, l)| (*o, Some(n.to_string()), *l))
        .collect()
}

#[tokio::test]
async fn merge_replaces_inserts_keeps_and_lands_a_repeated_key_once() {
    let (mut c, plan) = setup().await;
    load(
        &mut c,
        &plan,
        &[
            (1, Some("a1"), "c", 10),
            (2, Some("b1"), "c", 11),
            (3, Some("c1"), "c", 12),
        ],
        None,
    )
    .await
    .expect("first load");
    // 1 updated, 4 new (twice in the batch: the later version lands), 3 untouched, 2 deleted.
    let second = [
        (1, Some("a2"), "u", 20),
        (4, Some("d-old"), "c", 21),
        (4, Some("d-new"), "u", 22),
        (2, None, "d", 23),
    ];
    load(&mut c, &plan, &second, None)
        .await
        .expect("second load");
    let want = rows(&[(1, "a2", 20), (3, "c1", 12), (4, "d-new", 22)]);
    assert_eq!(table(&mut c, &plan).await, want);
    // The same batch again changes nothing.
    load(&mut c, &plan, &second, None).await.expect("replay");
    assert_eq!(table(&mut c, &plan).await, want);
}

#[tokio::test]
async fn older_loads_after_newer_ones_change_nothing() {
    let (mut c, plan) = setup().await;
    load(
        &mut c,
        &plan,
        &[(1, Some("new"), "u", 50), (2, None, "d", 51)],
        None,
    )
    .await
    .expect("newer");
    // An older manifest, loaded late: an old version of 1, and 2 as it was before its delete.
    load(
        &mut c,
        &plan,
        &[(1, Some("old"), "c", 40), (2, Some("undead"), "c", 41)],
        None,
    )
    .await
    .expect("older");
    assert_eq!(
        table(&mut c, &plan).await,
        rows(&[(1, "new", 50)]),
        "2 stays deleted"
    );
    // A version newer than the delete brings the key back.
    load(&mut c, &plan, &[(2, Some("reborn"), "c", 60)], None)
        .await
        .expect("newer insert");
    assert_eq!(
        table(&mut c, &plan).await,
        rows(&[(1, "new", 50), (2, "reborn", 60)])
    );
}

#[tokio::test]
async fn rows_older_than_a_truncate_never_land() {
    let (mut c, plan) = setup().await;
    load(
        &mut c,
        &plan,
        &[(1, Some("a"), "c", 10), (2, Some("b"), "c", 11)],
        None,
    )
    .await
    .expect("first");
    load(
        &mut c,
        &plan,
        &[(0, None, "t", 30), (3, Some("after"), "c", 31)],
        None,
    )
    .await
    .expect("truncate");
    assert_eq!(table(&mut c, &plan).await, rows(&[(3, "after", 31)]));
    load(
        &mut c,
        &plan,
        &[(1, Some("late"), "u", 20), (4, Some("later"), "c", 40)],
        None,
    )
    .await
    .expect("late rows");
    assert_eq!(
        table(&mut c, &plan).await,
        rows(&[(3, "after", 31), (4, "later", 40)])
    );
}

#[tokio::test]
async fn a_failure_at_any_statement_leaves_the_table_as_it_was() {
    let (mut c, plan) = setup().await;
    load(
        &mut c,
        &plan,
        &[(1, Some("a"), "c", 10), (2, Some("b"), "c", 11)],
        None,
    )
    .await
    .expect("first");
    let before = table(&mut c, &plan).await;
    let batch = [
        (1, Some("a2"), "u", 20),
        (2, None, "d", 21),
        (3, Some("c"), "c", 22),
    ];
    let steps = plan.after_copy(Dialect::Postgres).len();
    for i in 0..steps {
        let e = load(&mut c, &plan, &batch, Some(i))
            .await
            .expect_err("injected");
        assert!(e.contains("injected failure"), "{e}");
        assert_eq!(table(&mut c, &plan).await, before, "failure at step {i}");
    }
    load(&mut c, &plan, &batch, None)
        .await
        .expect("then the load succeeds");
    assert_eq!(
        table(&mut c, &plan).await,
        rows(&[(1, "a2", 20), (3, "c", 22)])
    );
}

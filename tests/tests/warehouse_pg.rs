//! The load plan's SQL on real PostgreSQL: merge semantics, ordering guarantees and atomicity.
//! The stage is filled with INSERTs here (the COPY of Parquet comes with the executor); every
//! statement after that is the plan's own, run in one SERIALIZABLE transaction as a load runs.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::config::Pipeline;
use sluice::warehouse::{Dialect, LoadPlan, Statement};
use sluice_tests::warehouse::{change_rows, change_table};
use sluice_tests::{pg_url, unique_name};

#[path = "warehouse_pg/cdc.rs"]
mod cdc;
#[path = "warehouse_pg/faults.rs"]
mod faults;

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

/// A step's SQL as a statement (the tests run queries as statements too).
fn statement(s: &Step) -> Statement {
    Statement {
        name: s.name().to_string(),
        sql: s.sql().to_string(),
    }
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
    for s in plan.before_copy(Dialect::Postgres, &Default::default()) {
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
            return Err(format!("injected failure before {}", s.name())); // dropped tx rolls back
        }
        exec(&mut tx, &statement(s)).await?;
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

// ---------------------------------------------------------------------------------------------
// The PostgreSQL executor: the transform's own Parquet files COPYed and merged.

use std::sync::Arc;

use sluice::catalog::LocalCatalog;
use sluice::lake::manifest::Manifest;
use sluice::lake::{LocalStore, ObjectStore, PutMode};
use sluice::transform::Transformer;
use sluice::warehouse::{
    lease, Executed, Executor, LoadError, LoadOutcome, LoadSummary, Loader, PgTarget, RunContext,
    Step,
};

fn changes_pipeline(schema: &str, with_amount: bool) -> Pipeline {
    change_table(schema, with_amount, true)
}

struct Lake {
    _dir: tempfile::TempDir,
    store: Arc<LocalStore>,
    catalog: LocalCatalog,
}

fn lake() -> Lake {
    let dir = tempfile::tempdir().expect("tempdir");
    Lake {
        store: Arc::new(LocalStore::new(dir.path().join("lake")).expect("store")),
        catalog: LocalCatalog::new(dir.path().join("catalog.json")),
        _dir: dir,
    }
}

/// Transforms `lines` as `key` and returns its manifest's key and the manifest.
async fn transform(l: &Lake, p: &Pipeline, key: &str, lines: &[&str]) -> (String, Manifest) {
    let body = lines.join("\n") + "\n";
    l.store
        .put(key, body.into_bytes().into(), PutMode::Overwrite)
        .await
        .expect("put");
    let s = Transformer::new(p.clone(), None)
        .expect("transformer")
        .transform_object(l.store.as_ref(), &l.catalog, key, None)
        .await
        .expect("transform");
    let b = l.store.get_bytes(&s.manifest_key).await.expect("manifest");
    let m = Manifest::from_json(&b, &s.manifest_key).expect("manifest");
    (s.manifest_key, m)
}

/// One load through the loader (lease, manifests, PostgreSQL executor, reconciliation).
async fn load_manifests(
    l: &Lake,
    p: &Pipeline,
    target: &dyn Executor,
    keys: &[String],
) -> Result<LoadSummary, LoadError> {
    load_table(l, p, target, "orders", keys).await
}

/// One load of `table` through the loader.
async fn load_table(
    l: &Lake,
    p: &Pipeline,
    target: &dyn Executor,
    table: &str,
    keys: &[String],
) -> Result<LoadSummary, LoadError> {
    match loader(l.store.as_ref(), p, target, "test", true)
        .load(table, keys)
        .await?
    {
        LoadOutcome::Loaded(s) => Ok(*s),
        other => panic!("not loaded: {other:?}"),
    }
}

fn loader<'a>(
    store: &'a dyn ObjectStore,
    p: &'a Pipeline,
    target: &'a dyn Executor,
    owner: &str,
    use_lease: bool,
) -> Loader<'a> {
    Loader {
        pipeline: p,
        store,
        executor: target,
        iam_role: String::new(),
        lease_ttl: std::time::Duration::from_secs(60),
        owner: owner.into(),
        use_lease,
    }
}

async fn final_rows(plan: &LoadPlan, with_amount: bool) -> Vec<String> {
    change_rows(plan, with_amount).await
}

#[tokio::test]
async fn the_transforms_files_load_by_name_across_an_added_column() {
    let schema = unique_name("exec");
    let l = lake();
    let before = changes_pipeline(&schema, false);
    let after = changes_pipeline(&schema, true);
    let (k1, m1) = transform(
        &l,
        &before,
        "raw/cdc/orders/1.jsonl",
        &[
            r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
            r#"{"note":"no key","_op":"c","_lsn":12,"_commit_ts":"2024-03-01T10:02:00Z"}"#,
        ],
    )
    .await;
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    // The table is created by the first load, before `amount` exists.
    let first = load_manifests(&l, &before, &target, std::slice::from_ref(&k1))
        .await
        .expect("first load");
    assert_eq!(first.mismatch, None, "{first:?}");
    assert_eq!(
        (
            first.counts.staged,
            first.counts.merged,
            first.counts.null_keys
        ),
        (3, 2, 1)
    );
    // Written after `amount` was added: files of both shapes in one batch.
    let (k2, m2) = transform(
        &l,
        &after,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"order":2,"note":"b2","amount":"9.50","_op":"u","_lsn":20,"_commit_ts":"2024-04-01T00:00:00Z"}"#,
            r#"{"order":3,"note":"c","amount":"1.25","_op":"c","_lsn":21,"_commit_ts":"2024-04-01T00:00:01Z"}"#,
            r#"{"order":1,"_op":"d","_lsn":22,"_commit_ts":"2024-04-01T00:00:02Z"}"#,
        ],
    )
    .await;
    let plan = LoadPlan::new(after.table("orders").unwrap()).expect("plan");
    let report = load_manifests(&l, &after, &target, &[k1.clone(), k2.clone()])
        .await
        .expect("load");
    assert_eq!(report.files, m1.files.len() + m2.files.len());
    assert_eq!(report.mismatch, None, "{report:?}");
    let c = report.counts;
    assert_eq!((c.expected, c.staged, c.null_keys), (6, 6, 1), "{c:?}");
    // 1 and 2 twice in the batch (the older versions are duplicates); 2 (newer) and 3 merge;
    // 1 is deleted.
    assert_eq!(
        (c.merged, c.deleted, c.stale, c.duplicates),
        (2, 1, 0, 2),
        "{c:?}"
    );
    // The row without a key is quarantined with the reason, naming its file and row.
    assert_eq!(report.quarantine_keys.len(), 1, "{report:?}");
    let q = l
        .store
        .get_bytes(&report.quarantine_keys[0])
        .await
        .expect("quarantine object");
    let q: Vec<serde_json::Value> = String::from_utf8(q.to_vec())
        .expect("utf8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert_eq!(q.len(), 1);
    assert!(m1.files.iter().any(|f| f.key == q[0]["object"]), "{q:?}");
    assert_eq!(q[0]["column"], "order");
    assert!(
        q[0]["reason"].as_str().unwrap_or("").contains("NULL"),
        "{q:?}"
    );
    assert!(
        q[0]["raw"].as_str().unwrap_or("").contains("note=no key"),
        "{q:?}"
    );
    // The load's record, beside its COPY manifests.
    let record: serde_json::Value =
        serde_json::from_slice(&l.store.get_bytes(&report.record_key).await.expect("record"))
            .expect("record json");
    assert_eq!(record["counts"]["merged"], 2);
    assert_eq!(record["manifests"].as_array().map(Vec::len), Some(2));
    let want = vec![
        "2|b2|9.50|20|2024-04-01 00:00:00".to_string(),
        "3|c|1.25|21|2024-04-01 00:00:01".to_string(),
    ];
    assert_eq!(final_rows(&plan, true).await, want);
    // The same manifests again: the same table.
    let again = load_manifests(&l, &after, &target, &[k1.clone(), k2.clone()])
        .await
        .expect("replay");
    assert_eq!(again.counts.merged, 0, "{again:?}");
    assert_eq!(again.mismatch, None, "{again:?}");
    assert_eq!(final_rows(&plan, true).await, want);

    // A manifest naming a file that is gone: the load fails naming it and merges nothing.
    let gone = m2.files[0].key.clone();
    l.store.delete(&gone).await.expect("delete");
    let (k3, _) = transform(
        &l,
        &after,
        "raw/cdc/orders/3.jsonl",
        &[r#"{"order":4,"note":"d","_op":"c","_lsn":30,"_commit_ts":"2024-05-01T00:00:00Z"}"#],
    )
    .await;
    let e = load_manifests(&l, &after, &target, &[k3, k2])
        .await
        .expect_err("a file is missing");
    assert!(matches!(e, LoadError::File { .. }), "{e}");
    assert!(e.to_string().contains(&gone), "{e}");
    assert_eq!(final_rows(&plan, true).await, want, "nothing merged");
}

#[tokio::test]
async fn awkward_identifiers_load_and_old_tombstones_are_purged() {
    // A schema, table and columns with reserved words, spaces, quotes and upper case.
    let schema = format!("Sales \"{}\" Mart", unique_name("ident"));
    let text = format!(
        r#"
[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = {{ key = ["order"], order_by = "_lsn" }}
catalog = {{ database = "db" }}
warehouse = {{ schema = '{schema}', table = "Select Order", merge_keys = ["order"], tombstone_retention_days = 7, columns = {{ order = "ORDER", note = "Note \"Text\"" }} }}
columns = [
  {{ name = "order", type = "int" }},
  {{ name = "note", type = "string" }},
  {{ name = "_op", type = "string" }},
  {{ name = "_lsn", type = "int" }},
  {{ name = "_commit_ts", type = "timestamp" }},
]
"#
    );
    let p = Pipeline::parse(&text, "test").expect("pipeline");
    let plan = LoadPlan::new(p.table("orders").unwrap()).expect("plan");
    let l = lake();
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    let (k1, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/1.jsonl",
        &[
            r#"{"order":1,"note":"a \"quoted\" note","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
            r#"{"order":3,"note":"c","_op":"c","_lsn":12,"_commit_ts":"2024-03-01T10:02:00Z"}"#,
        ],
    )
    .await;
    let (k2, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"order":2,"_op":"d","_lsn":20,"_commit_ts":"2024-03-02T10:00:00Z"}"#,
            r#"{"order":3,"_op":"d","_lsn":21,"_commit_ts":"2024-03-02T10:01:00Z"}"#,
        ],
    )
    .await;
    let s = load_manifests(&l, &p, &target, &[k1, k2])
        .await
        .expect("load");
    assert_eq!(s.mismatch, None, "{s:?}");
    let mut c = PgConnection::connect(&pg_url()).await.expect("connect");
    let sql = format!(
        "SELECT \"ORDER\", \"Note \"\"Text\"\"\" FROM {} ORDER BY 1",
        plan.final_table()
    );
    let got: Vec<(i64, String)> = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut c)
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, vec![(1, "a \"quoted\" note".to_string())]);
    // Two tombstones; one of them made older than the retention: the next load purges it.
    let tombs_sql = format!(
        "SELECT \"ORDER\" FROM {} WHERE NOT sluice_truncate ORDER BY 1",
        plan.tombstone_table()
    );
    async fn tombs(c: &mut PgConnection, sql: &str) -> Vec<i64> {
        sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
            .fetch_all(c)
            .await
            .expect("tombstones")
    }
    assert_eq!(tombs(&mut c, &tombs_sql).await, vec![2, 3]);
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE {} SET sluice_at = LOCALTIMESTAMP - INTERVAL '8 days' WHERE \"ORDER\" = 2",
        plan.tombstone_table()
    )))
    .execute(&mut c)
    .await
    .expect("age a tombstone");
    let (k3, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/3.jsonl",
        &[r#"{"order":4,"note":"d","_op":"c","_lsn":30,"_commit_ts":"2024-03-03T10:00:00Z"}"#],
    )
    .await;
    load_manifests(&l, &p, &target, &[k3]).await.expect("load");
    assert_eq!(
        tombs(&mut c, &tombs_sql).await,
        vec![3],
        "the 8-day-old tombstone is purged"
    );
}

#[tokio::test]
async fn reconciliation_reports_rows_that_went_missing() {
    let schema = unique_name("recon");
    let l = lake();
    let p = changes_pipeline(&schema, false);
    let (k1, mut m1) = transform(
        &l,
        &p,
        "raw/cdc/orders/1.jsonl",
        &[
            r#"{"order":1,"note":"a","_op":"c","_lsn":10,"_commit_ts":"2024-03-01T10:00:00Z"}"#,
            r#"{"order":2,"note":"b","_op":"c","_lsn":11,"_commit_ts":"2024-03-01T10:01:00Z"}"#,
        ],
    )
    .await;
    // The manifest claims a row its file does not hold (a file rewritten short, say).
    m1.files[0].rows += 1;
    m1.counts.rows_written += 1;
    m1.counts.rows_read += 1;
    l.store
        .put(&k1, m1.to_json().expect("json").into(), PutMode::Overwrite)
        .await
        .expect("put manifest");
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
    let s = load_manifests(&l, &p, &target, std::slice::from_ref(&k1))
        .await
        .expect("the load itself succeeds");
    let m = s.mismatch.clone().expect("a mismatch");
    assert!(m.contains("holds 2 rows but the manifests list 3"), "{m}");
    let emf: serde_json::Value =
        serde_json::from_str(&s.emf_line("redshift-loader")).expect("emf json");
    assert_eq!(emf["ReconciliationMismatch"], 1, "{emf}");
    assert_eq!(emf["manifests"][0], k1.as_str(), "{emf}");
    let record: serde_json::Value =
        serde_json::from_slice(&l.store.get_bytes(&s.record_key).await.expect("record"))
            .expect("record json");
    assert!(
        record["mismatch"].as_str().unwrap_or("").contains("3"),
        "{record}"
    );
}

#[tokio::test]
async fn a_keyless_truncate_row_empties_the_table_and_guards_it_against_older_loads() {
    let schema = unique_name("trunc");
    let l = lake();
    let p = changes_pipeline(&schema, false);
    let target = PgTarget::connect(&pg_url()).await.expect("connect");
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
    load_manifests(&l, &p, &target, &[k1]).await.expect("first");
    // A TRUNCATE as change events carry it: no key, only its position in the log.
    let (k2, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/2.jsonl",
        &[
            r#"{"_op":"t","_lsn":30,"_commit_ts":"2024-03-02T00:00:00Z"}"#,
            r#"{"order":3,"note":"after","_op":"c","_lsn":31,"_commit_ts":"2024-03-02T00:00:01Z"}"#,
        ],
    )
    .await;
    let s = load_manifests(&l, &p, &target, &[k2])
        .await
        .expect("truncate");
    assert_eq!(s.mismatch, None, "{s:?}");
    assert_eq!((s.counts.truncates, s.counts.null_keys), (1, 0), "{s:?}");
    assert!(
        s.quarantine_keys.is_empty(),
        "a TRUNCATE row is not quarantined"
    );
    let plan = LoadPlan::new(p.table("orders").unwrap()).expect("plan");
    let after = vec!["3|after|∅|31|2024-03-02 00:00:01".to_string()];
    assert_eq!(final_rows(&plan, false).await, after);
    // Changes from before the TRUNCATE, arriving late, never land.
    let (k3, _) = transform(
        &l,
        &p,
        "raw/cdc/orders/3.jsonl",
        &[r#"{"order":1,"note":"late","_op":"u","_lsn":20,"_commit_ts":"2024-03-01T12:00:00Z"}"#],
    )
    .await;
    let s = load_manifests(&l, &p, &target, &[k3]).await.expect("late");
    assert_eq!((s.counts.stale, s.counts.merged), (1, 0), "{s:?}");
    assert_eq!(final_rows(&plan, false).await, after);
}

//! Faults an independent review found in extract, each shown on a real MariaDB (and, where
//! the engines differ, PostgreSQL): rows a range could skip silently, zone-less timestamps on a
//! server that is not in UTC, parts another run wrote, non-unique keys, values in errors, and a
//! page that could outlive the deadline.

mod extract_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sqlx::{Connection, PgConnection};

use extract_support::*;
use sluice::extract::{ExtractError, Extractor, Mode, ShardOutcome, Shards};
use sluice::lake::layout::extract_lease_key;
use sluice::lake::ObjectStore;
use sluice_tests::{pg_url, unique_name};

async fn pg_exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `pg_url()` with another user and password.
fn pg_url_as(user: &str, password: &str) -> String {
    let url = pg_url();
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

/// The error of a failed shard's only report, as text.
async fn failure(ex: &Extractor) -> String {
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    match &r[0].outcome {
        ShardOutcome::Failed(e) => e.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_null_updated_at_fails_the_shard_naming_the_column() {
    let shards = MyShards::create(1).await;
    shards
        .exec_all(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(100) NULL, \
             updated_at DATETIME(6) NULL)",
        )
        .await;
    shards
        .exec_all(
            "INSERT INTO items (id, v, updated_at) VALUES (1, 1, '2020-01-01 00:00:00'), (2, 2, NULL)",
        )
        .await;
    let var = url_env(&shards.url(0));
    let p = items_pipeline(
        "mysql",
        &shards_toml(&[("s0", &var)]),
        "safety_lag_secs = 0",
    );
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let e = failure(&ex).await;
    assert!(
        e.contains("column `updated_at`") && e.contains("NULL"),
        "{e}"
    );
    assert!(
        versions(lake.store.as_ref(), "raw/items/").await.is_empty(),
        "nothing written while a row would be skipped"
    );
    // Once every row has a value, the run reads them all.
    shards
        .exec_all("UPDATE items SET updated_at = '2020-01-02 00:00:00' WHERE id = 2")
        .await;
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    assert_eq!(extracted(&r[0]).rows, 2);
    shards.drop_all().await;
}

/// A role whose sessions default to Paris time writes `timestamp without time zone` in Paris
/// time: extract refuses it as the watermark, naming the column and the zone; the same table
/// through a role in UTC is read.
#[tokio::test]
async fn a_zoneless_updated_at_on_a_source_not_in_utc_fails_naming_column_and_zone() {
    let mut c = PgConnection::connect(&pg_url()).await.expect("pg");
    let s = unique_name("xz");
    let (paris, utc) = (format!("{s}_paris"), format!("{s}_utc"));
    pg_exec(&mut c, &format!("CREATE SCHEMA {s}")).await;
    pg_exec(&mut c, &format!("CREATE TABLE {s}.items (id int8 PRIMARY KEY, v int4 NOT NULL, note text, updated_at timestamp NOT NULL)")).await;
    pg_exec(
        &mut c,
        &format!("INSERT INTO {s}.items VALUES (1, 1, NULL, '2020-01-01')"),
    )
    .await;
    for (role, zone) in [(&paris, "Europe/Paris"), (&utc, "UTC")] {
        pg_exec(&mut c, &format!("CREATE ROLE {role} LOGIN PASSWORD 'pw'; ALTER ROLE {role} SET TimeZone = '{zone}'; GRANT USAGE ON SCHEMA {s} TO {role}; GRANT SELECT ON {s}.items TO {role}")).await;
    }
    let run = |user: &str| {
        let var = url_env(&pg_url_as(user, "pw"));
        let p = items_pipeline_from(
            "postgres",
            &shards_toml(&[("pg", &var)]),
            &format!("{s}.items"),
            "safety_lag_secs = 0",
        );
        Extractor::new(p, lake().store.clone())
    };
    let e = failure(&run(&paris)).await;
    assert!(
        e.contains("column `updated_at`")
            && e.contains("`Europe/Paris`")
            && e.contains("shard `pg`"),
        "{e}"
    );
    let r = run(&utc)
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    assert_eq!(extracted(&r[0]).rows, 1);
    pg_exec(
        &mut c,
        &format!("DROP SCHEMA {s} CASCADE; DROP ROLE {paris}; DROP ROLE {utc}"),
    )
    .await;
}

const ITEMS: &str =
    "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(100) NULL, \
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
    KEY (updated_at, id))";

/// Run A is held before its first part; its lease is lost (gone, as if expired) and run B
/// takes the shard over and writes the range's first part without row 2, which moved on. A
/// then finds the part there: it stops with a retryable error naming the part and leaves B's
/// part as B wrote it.
#[tokio::test]
async fn a_run_that_lost_its_lease_does_not_overwrite_the_next_runs_part() {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    shards
        .exec_all("INSERT INTO items (id, v, updated_at) VALUES (1, 1, '2020-01-01'), (2, 1, '2020-01-01'), (3, 1, '2020-01-01')")
        .await;
    let var = url_env(&shards.url(0));
    let p = items_pipeline(
        "mysql",
        &shards_toml(&[("s0", &var)]),
        "safety_lag_secs = 0",
    );
    let base = lake();
    let wrapped = Arc::new(Wrapped::new(base.store.clone()));
    wrapped.hold.store(true, Ordering::SeqCst);
    let a = Extractor::new(p.clone(), wrapped.clone()).with_owner("run-a");
    let running = tokio::spawn(async move {
        a.run_table("items", Shards::All, Mode::Incremental, limits())
            .await
    });
    wrapped.reached.notified().await;
    base.store
        .delete(&extract_lease_key("items", "s0"))
        .await
        .expect("lease gone");
    shards.exec_all("UPDATE items SET v = 2 WHERE id = 2").await;
    let b = Extractor::new(p, base.store.clone()).with_owner("run-b");
    let r = b
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run b");
    assert!(extracted(&r[0]).resumed, "B continues A's recorded range");
    let before = raw_rows(base.store.as_ref(), "raw/items/").await;
    let ids = |rows: &std::collections::BTreeMap<
        String,
        Vec<serde_json::Map<String, serde_json::Value>>,
    >|
     -> Vec<i64> {
        rows.values()
            .flatten()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(ids(&before), vec![1, 3], "row 2 left the range");
    wrapped.go.notify_one();
    let done = running.await.expect("join").expect("run a");
    let ShardOutcome::Failed(e) = &done[0].outcome else {
        panic!("A must fail: {:?}", done[0].outcome);
    };
    assert!(
        e.to_string().contains("part-00000") && e.to_string().contains("another run"),
        "{e}"
    );
    assert!(e.is_retryable(), "{e}");
    assert!(matches!(e, ExtractError::Shard { .. }));
    assert_eq!(
        raw_rows(base.store.as_ref(), "raw/items/").await,
        before,
        "B's part stands"
    );
    shards.drop_all().await;
}

/// Key columns that do not identify a row: the twin of a page's last row would be skipped by
/// the next page's `>`. The run fails naming the table and the key columns, at a page boundary
/// (pages of 2: rows 1, 2 | 2, …) and inside a page alike.
#[tokio::test]
async fn rows_sharing_updated_at_and_key_fail_naming_table_and_key_columns() {
    for page_rows in [2, 10] {
        let shards = MyShards::create(1).await;
        shards
            .exec_all(
                "CREATE TABLE items (id BIGINT NOT NULL, v INT NOT NULL, note VARCHAR(100) NULL, \
                 updated_at DATETIME(6) NOT NULL)",
            )
            .await;
        shards
            .exec_all("INSERT INTO items (id, v, updated_at) VALUES (1, 1, '2020-01-01'), (2, 1, '2020-01-01'), (2, 2, '2020-01-01'), (3, 1, '2020-01-01')")
            .await;
        let var = url_env(&shards.url(0));
        let p = items_pipeline(
            "mysql",
            &shards_toml(&[("s0", &var)]),
            &format!("safety_lag_secs = 0\npage_rows = {page_rows}"),
        );
        let e = failure(&Extractor::new(p, lake().store.clone())).await;
        assert!(
            e.contains("table `items`")
                && e.contains("(id)")
                && e.contains("do not identify a row"),
            "pages of {page_rows}: {e}"
        );
        shards.drop_all().await;
    }
}

/// A page that fails on a row's value (a cast the value does not fit): the error keeps the
/// SQLSTATE and the step, never the server's message, which quotes the value.
#[tokio::test]
async fn a_data_error_is_reported_by_its_code_without_the_value() {
    let mut c = PgConnection::connect(&pg_url()).await.expect("pg");
    let s = unique_name("xr");
    pg_exec(&mut c, &format!("CREATE SCHEMA {s}; CREATE TABLE {s}.items (id int8 PRIMARY KEY, v int4 NOT NULL, note text, updated_at timestamptz NOT NULL); INSERT INTO {s}.items VALUES (1, 1, 'secret-value-42', '2020-01-01')")).await;
    pg_exec(&mut c, &format!("CREATE VIEW {s}.items_v AS SELECT id, v, CAST(CAST(note AS int4) AS text) AS note, updated_at FROM {s}.items")).await;
    let var = url_env(&pg_url());
    let p = items_pipeline_from(
        "postgres",
        &shards_toml(&[("pg", &var)]),
        &format!("{s}.items_v"),
        "safety_lag_secs = 0",
    );
    let e = failure(&Extractor::new(p, lake().store.clone())).await;
    assert!(e.contains("SQLSTATE 22P02"), "{e}");
    assert!(!e.contains("secret-value-42"), "{e}");
    pg_exec(&mut c, &format!("DROP SCHEMA {s} CASCADE")).await;
}

/// A declared column whose PII rule drops it is never selected: it is not in `raw/`.
#[tokio::test]
async fn a_dropped_pii_column_is_not_selected() {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    shards
        .exec_all(
            "INSERT INTO items (id, v, note, updated_at) VALUES (1, 1, 'private', '2020-01-01')",
        )
        .await;
    let var = url_env(&shards.url(0));
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
warehouse = {{ schema = "shop", merge_keys = ["_shard", "id"], version_column = "updated_at" }}
columns = [
  {{ name = "id", type = "int", required = true }},
  {{ name = "v", type = "int" }},
  {{ name = "note", type = "string", pii = {{ action = "drop" }} }},
  {{ name = "updated_at", type = "timestamp", required = true }},
  {{ name = "_shard", type = "string" }},
  {{ name = "_op", type = "string" }},
]

[tables.source]
engine = "mysql"
{}
table = "items"
key_columns = ["id"]
updated_at_column = "updated_at"
safety_lag_secs = 0
"#,
        shards_toml(&[("s0", &var)])
    );
    let p = Arc::new(sluice::config::Pipeline::parse(&text, "items.toml").expect("pipeline"));
    let lake = lake();
    let r = Extractor::new(p, lake.store.clone())
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    assert_eq!(extracted(&r[0]).rows, 1);
    let rows: Vec<_> = raw_rows(lake.store.as_ref(), "raw/items/")
        .await
        .into_values()
        .flatten()
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["v"], 1);
    assert!(!rows[0].contains_key("note"), "{:?}", rows[0]);
    shards.drop_all().await;
}

/// A page that would run past the deadline (a view that sleeps half a second a row, 20 rows)
/// is stopped by the session's statement timeout, set to the time left: the run fails,
/// retryably, well before the page could have finished.
#[tokio::test]
async fn a_slow_page_is_stopped_by_the_statement_timeout_before_the_deadline() {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    let values: Vec<String> = (1..=20)
        .map(|i| format!("({i}, 1, '2020-01-01')"))
        .collect();
    shards
        .exec_all(&format!(
            "INSERT INTO items (id, v, updated_at) VALUES {}",
            values.join(", ")
        ))
        .await;
    shards
        .exec_all(
            "CREATE VIEW slow AS SELECT id, v, note, updated_at FROM items WHERE SLEEP(0.5) = 0",
        )
        .await;
    let var = url_env(&shards.url(0));
    let p = items_pipeline_from(
        "mysql",
        &shards_toml(&[("s0", &var)]),
        "slow",
        "safety_lag_secs = 0",
    );
    let started = std::time::Instant::now();
    let r = Extractor::new(p, lake().store.clone())
        .run_table(
            "items",
            Shards::All,
            Mode::Incremental,
            sluice::extract::Limits::until(started + std::time::Duration::from_secs(8)),
        )
        .await
        .expect("run");
    let took = started.elapsed();
    let ShardOutcome::Failed(e) = &r[0].outcome else {
        panic!("the slow page must be stopped: {:?}", r[0].outcome);
    };
    assert!(e.to_string().contains("statement timeout"), "{e}");
    assert!(e.is_retryable(), "{e}");
    assert!(took < std::time::Duration::from_secs(7), "took {took:?}");
    shards.drop_all().await;
}

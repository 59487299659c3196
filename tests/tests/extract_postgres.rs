//! Extract from PostgreSQL (the run's database, a schema per test): a view that joins two
//! tables, read as a table and as a query, sees a change to either side and its parts go
//! through the transform; a historical dump in key ranges hands over to incremental ranges
//! with no version twice; and rounds of changes land in `raw/` exactly once.

mod extract_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use extract_support::*;
use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::extract::{Cursor, Extractor, Limits, Mode, ShardState, Shards};
use sluice::lake::ObjectStore;
use sluice::transform::Transformer;
use sluice_tests::{pg_url, unique_name};

async fn pg() -> PgConnection {
    PgConnection::connect(&pg_url()).await.expect("connect")
}

async fn pg_exec(c: &mut PgConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const JOIN: &str = "SELECT o.order_id, o.amount, c.name AS customer_name, c.tier AS customer_tier, o.created_at, \
    GREATEST(o.updated_at, c.updated_at) AS updated_at FROM {s}.orders o JOIN {s}.customers c USING (customer_id)";

/// Two tables of one join: `order_view` reads the view, `order_query` the same SELECT.
fn join_pipeline(s: &str, var: &str) -> Arc<Pipeline> {
    let table = |name: &str, relation: &str| {
        format!(
            r#"
[[tables]]
name = "{name}"
raw_prefix = "raw/{name}/"
format = "jsonl"
null_tokens = []
partition_by = "created_at"
dedup = {{ key = ["order_id"], order_by = "updated_at" }}
catalog = {{ database = "lake" }}
warehouse = {{ schema = "shop", merge_keys = ["order_id"], version_column = "updated_at" }}
columns = [
  {{ name = "order_id", type = "int", required = true }},
  {{ name = "amount", type = "decimal(12,2)" }},
  {{ name = "customer_name", type = "string", pii = {{ action = "drop" }} }},
  {{ name = "customer_tier", type = "string" }},
  {{ name = "created_at", type = "timestamp", required = true }},
  {{ name = "updated_at", type = "timestamp", required = true }},
]

[tables.source]
engine = "postgres"
shards = [{{ id = "main", url_env = "{var}" }}]
{relation}
key_columns = ["order_id"]
updated_at_column = "updated_at"
safety_lag_secs = 0
keys_unique_across_shards = true
"#
        )
    };
    let text = table("order_view", &format!("table = \"{s}.order_customers\""))
        + &table(
            "order_query",
            &format!("query = \"\"\"{}\"\"\"", JOIN.replace("{s}", s)),
        );
    Arc::new(Pipeline::parse(&text, "join.toml").unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// `(order_id, customer_tier, updated_at)` of the rows one run of `table` wrote.
async fn run_join(ex: &Extractor, lake: &Lake, table: &str) -> Vec<(i64, String, String)> {
    let r = ex
        .run_table(table, Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    let s = extracted(&r[0]);
    let mut out = Vec::new();
    for key in &s.parts {
        for row in raw_rows(lake.store.as_ref(), key)
            .await
            .into_values()
            .flatten()
        {
            out.push((
                row["order_id"].as_i64().unwrap_or(0),
                row["customer_tier"].as_str().unwrap_or("").to_string(),
                row["updated_at"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_view_with_a_join_sees_a_change_to_either_side() {
    let mut c = pg().await;
    let s = unique_name("xj");
    for sql in [
        format!("CREATE SCHEMA {s}"),
        format!("CREATE TABLE {s}.customers (customer_id int8 PRIMARY KEY, name text NOT NULL, tier text, updated_at timestamptz NOT NULL)"),
        format!("CREATE TABLE {s}.orders (order_id int8 PRIMARY KEY, customer_id int8 NOT NULL REFERENCES {s}.customers, amount numeric(12,2), created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"),
        format!("CREATE VIEW {s}.order_customers AS {}", JOIN.replace("{s}", &s)),
        format!("INSERT INTO {s}.customers SELECT i, 'name ' || i, 'basic', '2020-01-01' FROM generate_series(1, 3) i"),
        format!("INSERT INTO {s}.orders SELECT i, i % 3 + 1, i * 1.25, '2024-01-15', '2020-01-01' FROM generate_series(1, 9) i"),
    ] {
        pg_exec(&mut c, &sql).await;
    }
    let lake = lake();
    let ex = Extractor::new(join_pipeline(&s, &url_env(&pg_url())), lake.store.clone());
    for table in ["order_view", "order_query"] {
        assert_eq!(
            run_join(&ex, &lake, table).await.len(),
            9,
            "{table}: every order once"
        );
    }
    // The customer alone changes: its orders come again, at the customer's updated_at.
    pg_exec(&mut c, &format!("UPDATE {s}.customers SET tier = 'gold', updated_at = '2024-02-01 10:00:00+00' WHERE customer_id = 2")).await;
    for table in ["order_view", "order_query"] {
        let got = run_join(&ex, &lake, table).await;
        let want: Vec<(i64, String, String)> = [1, 4, 7]
            .iter()
            .map(|&id| {
                (
                    id,
                    "gold".to_string(),
                    "2024-02-01T10:00:00.000000Z".to_string(),
                )
            })
            .collect();
        assert_eq!(got, want, "{table}: the joined table's change");
    }
    // The order alone changes.
    pg_exec(&mut c, &format!("UPDATE {s}.orders SET amount = 99, updated_at = '2024-02-02 00:00:00+00' WHERE order_id = 5")).await;
    for table in ["order_view", "order_query"] {
        let got = run_join(&ex, &lake, table).await;
        assert_eq!(
            got,
            vec![(
                5,
                "basic".to_string(),
                "2024-02-02T00:00:00.000000Z".to_string()
            )],
            "{table}"
        );
    }
    // Every part goes through the transform: 13 rows read and written, none quarantined.
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = LocalCatalog::new(dir.path().join("catalog.json"));
    let t = Transformer::new(Arc::unwrap_or_clone(join_pipeline(&s, "UNUSED")), None)
        .expect("transformer");
    let (mut read, mut written) = (0, 0);
    for key in raw_rows(lake.store.as_ref(), "raw/order_view/")
        .await
        .keys()
    {
        let summary = t
            .transform_object(lake.store.as_ref(), &catalog, key, None)
            .await
            .expect("transform");
        assert_eq!(summary.counts.rows_quarantined, 0, "{summary:?}");
        read += summary.counts.rows_read;
        written += summary.counts.rows_written;
    }
    assert_eq!((read, written), (13, 13));
    pg_exec(&mut c, &format!("DROP SCHEMA {s} CASCADE")).await;
}

async fn items_schema(c: &mut PgConnection) -> String {
    let s = unique_name("xi");
    pg_exec(c, &format!("CREATE SCHEMA {s}")).await;
    pg_exec(c, &format!("CREATE TABLE {s}.items (id int8 PRIMARY KEY, v int4 NOT NULL, note text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), deleted bool NOT NULL DEFAULT false)")).await;
    pg_exec(c, &format!("CREATE INDEX ON {s}.items (updated_at, id)")).await;
    s
}

/// A dump of 30 rows in parts of 7, two pages of 5 per invocation; rows 3 (already dumped)
/// and 25 (not yet) change in the middle: the dump keeps 3's old version and leaves 25 to the
/// next range, which has both new versions. Parts are ascending key ranges.
#[tokio::test]
async fn a_dump_hands_over_to_ranges_without_a_version_twice() {
    let mut c = pg().await;
    let s = items_schema(&mut c).await;
    pg_exec(&mut c, &format!("INSERT INTO {s}.items (id, v, updated_at) SELECT i, 1, '2020-01-01' FROM generate_series(1, 30) i")).await;
    let var = url_env(&pg_url());
    let p = items_pipeline_from(
        "postgres",
        &shards_toml(&[("pg", &var)]),
        &format!("{s}.items"),
        "page_rows = 5\npart_rows = 7\nsafety_lag_secs = 0",
    );
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let step = |mode| {
        let ex = ex.clone();
        async move {
            ex.run_table(
                "items",
                Shards::All,
                mode,
                Limits {
                    max_pages: Some(2),
                    ..limits()
                },
            )
            .await
            .expect("run")
        }
    };
    let first = step(Mode::Historical).await;
    let s1 = extracted(&first[0]);
    assert_eq!((s1.rows, s1.complete), (10, false));
    let upper = s1.run.as_ref().map(|r| r.upper.clone()).expect("a run");
    pg_exec(
        &mut c,
        &format!("UPDATE {s}.items SET v = 2, updated_at = clock_timestamp() WHERE id IN (3, 25)"),
    )
    .await;
    let mut steps = 1;
    while !extracted(&step(Mode::Incremental).await[0]).complete {
        steps += 1;
        assert!(steps < 10);
    }
    let state: ShardState = serde_json::from_slice(
        &lake
            .store
            .get_bytes("state/extract/items/pg/state.json")
            .await
            .expect("state"),
    )
    .expect("state json");
    assert_eq!(
        state.watermark,
        Some(Cursor::After {
            updated_at: upper,
            key: None
        }),
        "the watermark is where the dump began"
    );
    assert_eq!(state.run, None);
    let dump = raw_rows(lake.store.as_ref(), "raw/items/shard=pg/historical/").await;
    let mut last = 0;
    for (key, rows) in &dump {
        assert!(rows.len() <= 7, "{key}");
        for r in rows {
            let id = r["id"].as_i64().expect("id");
            assert!(id > last, "{key}: key order");
            last = id;
        }
    }
    let next = step(Mode::Incremental).await;
    assert_eq!(extracted(&next[0]).rows, 2);
    let mut got: Vec<(i64, i64)> = versions(lake.store.as_ref(), "raw/items/")
        .await
        .iter()
        .map(|v| (v.1, v.2))
        .collect();
    got.sort();
    let mut want: Vec<(i64, i64)> = (1..=30).filter(|&i| i != 25).map(|i| (i, 1)).collect();
    want.extend([(3, 2), (25, 2)]);
    want.sort();
    assert_eq!(got, want);
    pg_exec(&mut c, &format!("DROP SCHEMA {s} CASCADE")).await;
}

/// Rounds of changes on PostgreSQL, each extracted one page per run: every version present
/// at a round's runs is in `raw/` once; soft deletes carry `_op = "d"`.
#[tokio::test]
async fn rounds_of_changes_land_once() {
    let mut c = pg().await;
    let s = items_schema(&mut c).await;
    let var = url_env(&pg_url());
    let p = items_pipeline_from(
        "postgres",
        &shards_toml(&[("pg", &var)]),
        &format!("{s}.items"),
        "page_rows = 4\npart_rows = 3\nsafety_lag_secs = 0\nsoft_delete_column = \"deleted\"",
    );
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let mut expected = BTreeSet::new();
    for round in 0..5i64 {
        let base = round * 10;
        pg_exec(&mut c, &format!("INSERT INTO {s}.items (id, v) SELECT i, 1 FROM generate_series({base} + 1, {base} + 8) i")).await;
        pg_exec(
            &mut c,
            &format!(
                "UPDATE {s}.items SET v = v + 1, updated_at = clock_timestamp() WHERE id % {} = 1",
                round + 2
            ),
        )
        .await;
        pg_exec(&mut c, &format!("UPDATE {s}.items SET v = v + 1, deleted = true, updated_at = clock_timestamp() WHERE id = {base} + 4")).await;
        for row in sqlx::query(AssertSqlSafe(format!(
            "SELECT id, v, deleted FROM {s}.items"
        )))
        .fetch_all(&mut c)
        .await
        .expect("select")
        {
            expected.insert((
                row.get::<i64, _>(0),
                i64::from(row.get::<i32, _>(1)),
                row.get::<bool, _>(2),
            ));
        }
        let mut runs = 0;
        loop {
            let mode = if round == 0 && runs == 0 {
                Mode::Historical
            } else {
                Mode::Incremental
            };
            let r = ex
                .run_table(
                    "items",
                    Shards::All,
                    mode,
                    Limits {
                        max_pages: Some(1),
                        ..limits()
                    },
                )
                .await
                .expect("run");
            runs += 1;
            if extracted(&r[0]).complete {
                break;
            }
            assert!(runs < 40);
        }
    }
    let mut got: Vec<(i64, i64, bool)> = raw_rows(lake.store.as_ref(), "raw/items/")
        .await
        .into_values()
        .flatten()
        .map(|r| {
            (
                r["id"].as_i64().unwrap_or(0),
                r["v"].as_i64().unwrap_or(0),
                r["_op"] == "d",
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
    pg_exec(&mut c, &format!("DROP SCHEMA {s} CASCADE")).await;
}

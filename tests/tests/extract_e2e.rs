//! Extract end to end, every stage through its library entry point on the real databases:
//! three MariaDB databases as shards of `orders` (the same ids in every shard, so the merge key
//! includes `_shard`) and a PostgreSQL schema as the one shard of `accounts` → `Extractor`
//! (incremental runs of at most two pages, so a range takes several invocations) → every new
//! part through the transform (a local lake and catalog) → its manifests through the loader
//! (`PgTarget`, a warehouse schema on the test PostgreSQL database).
//!
//! Rounds of inserts (many rows at one instant, across pages of 7), updates and one soft delete
//! per shard, each followed by runs until every range is done. After each round the warehouse
//! table equals the source's live rows. At the end: every row version that existed at a run's
//! upper bound is in `raw/` exactly once, every (key, `updated_at`) version is in `curated/`
//! exactly once, and the latest version per key read from `curated/` equals the source.

mod extract_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use extract_support::versions::{curated_versions, latest, raw_version, Version};
use extract_support::*;
use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::extract::{Extractor, Limits, Mode, Shards};
use sluice::lake::layout::curated_prefix;
use sluice::lake::ObjectStore;
use sluice::transform::Transformer;
use sluice::warehouse::{LoadOutcome, Loader, PgTarget};
use sluice_tests::{parquet_batches, pg_url, unique_name};

const MY_ITEMS: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, \
    amount DECIMAL(12,2) NOT NULL, note VARCHAR(100) NULL, updated_at DATETIME(6) NOT NULL, \
    deleted TINYINT(1) NOT NULL DEFAULT 0, KEY (updated_at, id)) DEFAULT CHARSET utf8mb4";

const PG_ITEMS: &str = "CREATE TABLE {s}.items (id int8 PRIMARY KEY, v int4 NOT NULL, \
    amount numeric(12,2) NOT NULL, note text, updated_at timestamptz NOT NULL, \
    deleted bool NOT NULL DEFAULT false)";

/// Timestamps as extract writes them, for every reader.
const ISO_PG: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";
const ISO_MY: &str = "'%Y-%m-%dT%H:%i:%s.%fZ'";

/// Rounds of changes; the soft delete is in `DELETE_ROUND`, after the row reached the warehouse.
const ROUNDS: usize = 5;
const DELETE_ROUND: usize = 2;
/// The row every shard soft-deletes.
const DELETED_ID: i64 = 2;

/// One table of the pipeline, read from `relation` on `shards`; `per_shard_keys`: ids repeat
/// across shards, so `_shard` is part of the merge key.
fn table_toml(
    name: &str,
    engine: &str,
    shards: &str,
    relation: &str,
    wh: &str,
    per_shard_keys: bool,
) -> String {
    let merge_keys = if per_shard_keys {
        r#"["_shard", "id"]"#
    } else {
        r#"["id"]"#
    };
    format!(
        r#"
[[tables]]
name = "{name}"
raw_prefix = "raw/{name}/"
format = "jsonl"
null_tokens = []
partition_by = "updated_at"
dedup = {{ key = ["id"], order_by = "updated_at" }}
catalog = {{ database = "lake" }}
warehouse = {{ schema = "{wh}", merge_keys = {merge_keys}, version_column = "updated_at" }}
columns = [
  {{ name = "id", type = "int", required = true }},
  {{ name = "v", type = "int" }},
  {{ name = "amount", type = "decimal(12,2)" }},
  {{ name = "note", type = "string" }},
  {{ name = "updated_at", type = "timestamp", required = true }},
  {{ name = "_shard", type = "string" }},
  {{ name = "_op", type = "string" }},
]

[tables.source]
engine = "{engine}"
{shards}
table = "{relation}"
key_columns = ["id"]
updated_at_column = "updated_at"
soft_delete_column = "deleted"
page_rows = 7
part_rows = 10
safety_lag_secs = 0
keys_unique_across_shards = {unique}
"#,
        unique = !per_shard_keys
    )
}

struct World {
    shards: MyShards,
    /// The PostgreSQL source schema and the warehouse schema, both on `pg_url()`.
    pg_schema: String,
    wh: String,
    pipeline: Pipeline,
    lake: Lake,
    extractor: Extractor,
    transformer: Transformer,
    catalog: LocalCatalog,
    target: PgTarget,
    /// Raw parts already transformed.
    transformed: BTreeSet<String>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let shards = MyShards::create(3).await;
        shards.exec_all(MY_ITEMS).await;
        let (pg_schema, wh) = (unique_name("xes"), unique_name("xew"));
        let mut c = pg().await;
        pg_exec(&mut c, &format!("CREATE SCHEMA {pg_schema}")).await;
        pg_exec(&mut c, &PG_ITEMS.replace("{s}", &pg_schema)).await;
        pg_exec(
            &mut c,
            &format!("CREATE INDEX ON {pg_schema}.items (updated_at, id)"),
        )
        .await;

        let vars: Vec<(String, String)> = (0..3)
            .map(|i| (format!("s{i}"), url_env(&shards.url(i))))
            .collect();
        let my_list: Vec<(&str, &str)> =
            vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let pg_var = url_env(&pg_url());
        let text = table_toml(
            "orders",
            "mysql",
            &shards_toml(&my_list),
            "items",
            &wh,
            true,
        ) + &table_toml(
            "accounts",
            "postgres",
            &shards_toml(&[("main", &pg_var)]),
            &format!("{pg_schema}.items"),
            &wh,
            false,
        );
        let pipeline =
            Pipeline::parse(&text, "extract_e2e.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let lake = lake();
        let extractor = Extractor::new(Arc::new(pipeline.clone()), lake.store.clone());
        let transformer = Transformer::new(pipeline.clone(), None).expect("transformer");
        let dir = tempfile::tempdir().expect("tempdir");
        World {
            shards,
            pg_schema,
            wh,
            extractor,
            transformer,
            catalog: LocalCatalog::new(dir.path().join("catalog.json")),
            target: PgTarget::connect(&pg_url()).await.expect("warehouse"),
            pipeline,
            lake,
            transformed: BTreeSet::new(),
            _dir: dir,
        }
    }

    /// Round `round`'s changes on every shard: new rows (all at one instant), updates of some
    /// rows, and in `DELETE_ROUND` the soft delete of `DELETED_ID`.
    async fn change(&self, round: usize) {
        let base = 100 * round as i64;
        let modulus = round as i64 + 2;
        for i in 0..3 {
            let mut c = my_connect(&self.shards.url(i)).await;
            let rows: Vec<String> = (base + 1..=base + 15 + i as i64)
                .map(|id| {
                    let note = if id % 4 == 0 {
                        "NULL".to_string()
                    } else {
                        format!("'note \"{id}\", Zoë'")
                    };
                    format!("({id}, 1, {id}.25, {note}, UTC_TIMESTAMP(6))")
                })
                .collect();
            my_exec(
                &mut c,
                &format!(
                    "INSERT INTO items (id, v, amount, note, updated_at) VALUES {}",
                    rows.join(", ")
                ),
            )
            .await;
            my_exec(&mut c, &format!(
                "UPDATE items SET v = v + 1, amount = amount + 1, note = IF(id % 3 = 0, NULL, CONCAT('r{round} ', COALESCE(note, '-'))), \
                 updated_at = UTC_TIMESTAMP(6) WHERE deleted = 0 AND id < {base} AND id % {modulus} = {}",
                i as i64 % modulus
            ))
            .await;
            if round == DELETE_ROUND {
                my_exec(&mut c, &format!("UPDATE items SET deleted = 1, updated_at = UTC_TIMESTAMP(6) WHERE id = {DELETED_ID}")).await;
            }
        }
        let s = &self.pg_schema;
        let mut c = pg().await;
        pg_exec(
            &mut c,
            &format!(
                "INSERT INTO {s}.items (id, v, amount, note, updated_at) SELECT g, 1, g + 0.25, \
             CASE WHEN g % 4 = 0 THEN NULL ELSE 'note \"' || g || '\", Zoë' END, now() \
             FROM generate_series({}, {}) g",
                base + 1,
                base + 16
            ),
        )
        .await;
        pg_exec(&mut c, &format!(
            "UPDATE {s}.items SET v = v + 1, amount = amount + 1, \
             note = CASE WHEN id % 3 = 0 THEN NULL ELSE 'r{round} ' || COALESCE(note, '-') END, \
             updated_at = clock_timestamp() WHERE NOT deleted AND id < {base} AND id % {modulus} = 1"
        ))
        .await;
        if round == DELETE_ROUND {
            pg_exec(&mut c, &format!("UPDATE {s}.items SET deleted = true, updated_at = clock_timestamp() WHERE id = {DELETED_ID}")).await;
        }
    }

    /// Every row of the source now, deleted ones included.
    async fn source(&self, table: &str) -> BTreeSet<Version> {
        let mut out = BTreeSet::new();
        if table == "accounts" {
            let mut c = pg().await;
            let sql = format!(
                "SELECT 'main', id, to_char(updated_at, {ISO_PG}), v::int8, amount::text, note, deleted FROM {}.items",
                self.pg_schema
            );
            for r in sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await
                .expect("source rows")
            {
                out.insert(pg_version(&r, r.get::<bool, _>(6)));
            }
            return out;
        }
        for i in 0..3 {
            let mut c = my_connect(&self.shards.url(i)).await;
            let sql = format!(
                "SELECT id, DATE_FORMAT(updated_at, {ISO_MY}), CAST(v AS SIGNED), CAST(amount AS CHAR), note, CAST(deleted AS SIGNED) FROM items"
            );
            for r in sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await
                .expect("source rows")
            {
                out.insert(Version {
                    shard: format!("s{i}"),
                    id: r.get(0),
                    updated_at: r.get(1),
                    v: r.get(2),
                    amount: r.get(3),
                    note: r.get(4),
                    deleted: r.get::<i64, _>(5) != 0,
                });
            }
        }
        out
    }

    /// The warehouse table's rows (its deletes are gone, so `deleted` is false).
    async fn warehouse(&self, table: &str) -> BTreeSet<Version> {
        let sql = format!(
            "SELECT _shard, id, to_char(updated_at, {ISO_PG}), v::int8, amount::text, note FROM {}.{table}",
            self.wh
        );
        let mut c = pg().await;
        sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut c)
            .await
            .expect("warehouse rows")
            .iter()
            .map(|r| pg_version(r, false))
            .collect()
    }

    /// Runs of `table` (two pages at most each) until every shard's range is done; after each
    /// run its new parts go through the transform and their manifests through the loader.
    async fn extract(&mut self, table: &str) -> (u64, usize) {
        let (mut rows, mut runs) = (0, 0);
        loop {
            let limits = Limits {
                max_pages: Some(2),
                ..limits()
            };
            let reports = self
                .extractor
                .run_table(table, Shards::All, Mode::Incremental, limits)
                .await
                .expect("run");
            runs += 1;
            let mut parts = BTreeSet::new();
            for r in &reports {
                let s = extracted(r);
                rows += s.rows;
                parts.extend(s.parts.iter().cloned());
            }
            self.transform_and_load(table, &parts).await;
            if reports.iter().all(|r| extracted(r).complete) {
                return (rows, runs);
            }
            assert!(runs < 100, "{table}: the ranges never complete");
        }
    }

    async fn transform_and_load(&mut self, table: &str, parts: &BTreeSet<String>) {
        let listed: BTreeSet<String> = self
            .lake
            .store
            .list(&format!("raw/{table}/"))
            .await
            .expect("list raw")
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !self.transformed.contains(k))
            .collect();
        assert_eq!(
            &listed, parts,
            "{table}: the run's parts are the lake's new objects"
        );
        let mut manifests = Vec::new();
        for key in parts {
            let s = self
                .transformer
                .transform_object(self.lake.store.as_ref(), &self.catalog, key, None)
                .await
                .unwrap_or_else(|e| panic!("transform {key}: {e}"));
            let c = &s.counts;
            assert_eq!(
                (c.rows_quarantined, c.rows_duplicate),
                (0, 0),
                "{key}: {s:?}"
            );
            assert_eq!(c.rows_written, c.rows_read, "{key}");
            manifests.push(s.manifest_key);
            self.transformed.insert(key.clone());
        }
        if manifests.is_empty() {
            return;
        }
        let loader = Loader {
            pipeline: &self.pipeline,
            store: self.lake.store.as_ref(),
            executor: &self.target,
            iam_role: String::new(),
            lease_ttl: Duration::from_secs(60),
            owner: "extract_e2e".into(),
            use_lease: true,
        };
        match loader.load(table, &manifests).await.expect("load") {
            LoadOutcome::Loaded(s) => assert!(s.mismatch.is_none(), "{s:?}"),
            other => panic!("{table} not loaded: {other:?}"),
        }
    }

    /// Every version in `raw/<table>/`, in part order.
    async fn raw(&self, table: &str) -> Vec<Version> {
        raw_rows(self.lake.store.as_ref(), &format!("raw/{table}/"))
            .await
            .into_values()
            .flatten()
            .map(|r| raw_version(&r))
            .collect()
    }

    /// Every version in `curated/<table>/`'s Parquet files.
    async fn curated(&self, table: &str) -> Vec<Version> {
        let mut out = Vec::new();
        for o in self
            .lake
            .store
            .list(&curated_prefix(table))
            .await
            .expect("list curated")
        {
            assert!(o.key.ends_with(".parquet"), "{}", o.key);
            let body = self
                .lake
                .store
                .get_bytes(&o.key)
                .await
                .expect("curated file");
            for b in parquet_batches(body) {
                out.extend(curated_versions(&b));
            }
        }
        out
    }

    async fn cleanup(self) {
        let mut c = pg().await;
        for s in [&self.pg_schema, &self.wh] {
            pg_exec(&mut c, &format!("DROP SCHEMA IF EXISTS {s} CASCADE")).await;
        }
        self.shards.drop_all().await;
    }
}

async fn pg() -> PgConnection {
    let mut c = PgConnection::connect(&pg_url()).await.expect("connect");
    pg_exec(&mut c, "SET TIME ZONE 'UTC'").await;
    c
}

async fn pg_exec(c: &mut PgConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `shard, id, updated_at, v, amount, note` from PostgreSQL.
fn pg_version(r: &sqlx::postgres::PgRow, deleted: bool) -> Version {
    Version {
        shard: r.get(0),
        id: r.get(1),
        updated_at: r.get(2),
        v: r.get(3),
        amount: r.get(4),
        note: r.get(5),
        deleted,
    }
}

fn live(versions: &BTreeSet<Version>) -> BTreeSet<Version> {
    versions.iter().filter(|v| !v.deleted).cloned().collect()
}

fn sorted(mut v: Vec<Version>) -> Vec<Version> {
    v.sort();
    v
}

#[tokio::test]
async fn rounds_of_changes_reach_raw_curated_and_the_warehouse_exactly_once() {
    let mut w = World::new().await;
    let tables = ["orders", "accounts"];
    // Every version that existed when a round's runs chose their bounds (nothing changes
    // while they run, and the safety lag is 0: the bound is after every change).
    let mut at_bounds: BTreeMap<&str, BTreeSet<Version>> = BTreeMap::new();
    for round in 0..=ROUNDS {
        if round < ROUNDS {
            w.change(round).await;
        }
        for table in tables {
            let source = w.source(table).await;
            let before = at_bounds.get(table).map_or(0, BTreeSet::len);
            at_bounds
                .entry(table)
                .or_default()
                .extend(source.iter().cloned());
            let new_versions = at_bounds[table].len() - before;
            let (rows, runs) = w.extract(table).await;
            assert_eq!(
                rows as usize, new_versions,
                "{table} round {round}: the new versions, once"
            );
            if round < ROUNDS {
                assert!(
                    runs > 1,
                    "{table} round {round}: two pages a run cannot finish at once"
                );
            }
            let warehouse = w.warehouse(table).await;
            assert_eq!(
                warehouse,
                live(&source),
                "{table} round {round}: the warehouse equals the source's live rows"
            );
            assert_eq!(
                warehouse.iter().any(|v| v.id == DELETED_ID),
                round < DELETE_ROUND,
                "{table} round {round}: the soft-deleted row is in the warehouse until deleted"
            );
            let deleted = source
                .iter()
                .filter(|v| v.id == DELETED_ID && v.deleted)
                .count();
            let shards = if table == "orders" { 3 } else { 1 };
            assert_eq!(
                deleted,
                if round >= DELETE_ROUND { shards } else { 0 },
                "{table} round {round}: the soft delete, per shard"
            );
        }
    }
    for table in tables {
        let want: Vec<Version> = at_bounds[table].iter().cloned().collect();
        let raw = sorted(w.raw(table).await);
        assert_eq!(
            raw, want,
            "{table}: every version at a run's bound in raw/, exactly once"
        );
        let curated = sorted(w.curated(table).await);
        assert_eq!(
            curated, want,
            "{table}: every (key, updated_at) version in curated/, exactly once"
        );
        let source = w.source(table).await;
        assert_eq!(
            latest(&curated),
            source,
            "{table}: the latest version per key in curated/ is the source"
        );
        assert!(
            want.len() > source.len(),
            "{table}: history beyond the current rows"
        );
    }
    let orders = w.warehouse("orders").await;
    let shards_of_one: BTreeSet<&str> = orders
        .iter()
        .filter(|v| v.id == 1)
        .map(|v| v.shard.as_str())
        .collect();
    assert_eq!(
        shards_of_one.len(),
        3,
        "id 1 of every shard: `_shard` is in the merge key"
    );
    w.cleanup().await;
}

/// The benchmark's pipeline (`bench/extract.toml`, run by `bench/extract.sh` through `sluice
/// extract`) reads its two tables from a `bench_orders` shaped as
/// `../shared/bench/extract_schema_mariadb.sql` makes it: the whole table, and the query limited
/// to order ids up to 100,000 (rows 99,990 to 100,010 here, so the limit cuts them).
#[tokio::test]
async fn the_bench_pipeline_reads_its_tables() {
    let shards = MyShards::create(1).await;
    shards
        .exec_all(
            "CREATE TABLE bench_orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, \
             status VARCHAR(16) NOT NULL, amount DECIMAL(12,2) NOT NULL, note TEXT, \
             created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, \
             KEY updated_key (updated_at, order_id))",
        )
        .await;
    shards
        .exec_all(
            "INSERT INTO bench_orders SELECT seq, seq % 50000, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'), \
             (seq % 100000) / 100, IF(seq % 10 = 0, NULL, CONCAT('note \"', seq, '\", with comma')), \
             TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND, \
             TIMESTAMP'2024-01-01 00:00:00' + INTERVAL (seq DIV 3) SECOND FROM seq_99990_to_100010",
        )
        .await;
    std::env::set_var("SLUICE_BENCH_MYSQL_URL", shards.url(0));
    let path = sluice_tests::workspace_root().join("bench/extract.toml");
    let text = std::fs::read_to_string(&path).expect("bench/extract.toml");
    let pipeline = Pipeline::parse(&text, "bench/extract.toml").unwrap_or_else(|e| panic!("{e}"));
    let lake = lake();
    let ex = Extractor::new(Arc::new(pipeline), lake.store.clone());
    for (table, first, last) in [
        ("bench_orders", 99_990, 100_010),
        ("bench_orders_100k", 99_990, 100_000),
    ] {
        let r = ex
            .run_table(table, Shards::All, Mode::Incremental, limits())
            .await
            .expect("run");
        assert!(extracted(&r[0]).complete, "{table}");
        let rows: Vec<_> = raw_rows(lake.store.as_ref(), &format!("raw/{table}/"))
            .await
            .into_values()
            .flatten()
            .collect();
        let ids: Vec<i64> = rows.iter().filter_map(|r| r["order_id"].as_i64()).collect();
        assert_eq!(
            ids,
            (first..=last).collect::<Vec<_>>(),
            "{table}: (updated_at, key) order"
        );
        let row = &rows[0];
        assert_eq!(
            (&row["amount"], &row["note"], &row["updated_at"]),
            (
                &Value::from("999.90"),
                &Value::Null,
                &Value::from("2024-01-01T09:15:30.000000Z")
            ),
            "{table}: order 99,990"
        );
    }
    shards.drop_all().await;
}

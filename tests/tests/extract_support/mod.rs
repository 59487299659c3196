//! What the extract tests share: a local lake, shard databases on the run's MariaDB, pipeline
//! text for a test table, the parts read back, and lake wrappers that fail or pause a write.

#![allow(dead_code)]

pub mod versions;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Notify;

use sluice::config::Pipeline;
use sluice::extract::{read_part, Limits, ShardOutcome, ShardReport, ShardStats};
use sluice::lake::{LakeError, LocalStore, ObjectMeta, ObjectStore, PutMode, PutResult};
use sluice_tests::{mysql_url, unique_name};

/// A lake in a temporary directory.
pub struct Lake {
    pub store: Arc<LocalStore>,
    _dir: tempfile::TempDir,
}

pub fn lake() -> Lake {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LocalStore::new(dir.path()).expect("local lake"));
    Lake { store, _dir: dir }
}

/// Ten minutes: no test run waits for its deadline.
pub fn limits() -> Limits {
    Limits::until(Instant::now() + Duration::from_secs(600))
}

/// The run's MariaDB URL with another database.
pub fn mysql_db_url(db: &str) -> String {
    let base = mysql_url();
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    format!("{server}/{db}")
}

/// A connection in UTC (the test writes timestamps as UTC, as extract reads them).
pub async fn my_connect(url: &str) -> MySqlConnection {
    let mut c = MySqlConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    my_exec(&mut c, "SET time_zone = '+00:00'").await;
    c
}

pub async fn my_exec(c: &mut MySqlConnection, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Databases on the run's MariaDB, one per shard, dropped by `drop_all`.
pub struct MyShards {
    pub dbs: Vec<String>,
}

impl MyShards {
    pub async fn create(n: usize) -> Self {
        let mut admin = my_connect(&mysql_url()).await;
        let mut dbs = Vec::new();
        for _ in 0..n {
            let db = unique_name("xs");
            my_exec(&mut admin, &format!("CREATE DATABASE {db}")).await;
            dbs.push(db);
        }
        Self { dbs }
    }

    pub fn url(&self, i: usize) -> String {
        mysql_db_url(&self.dbs[i])
    }

    /// Runs `sql` in every shard.
    pub async fn exec_all(&self, sql: &str) {
        for i in 0..self.dbs.len() {
            my_exec(&mut my_connect(&self.url(i)).await, sql).await;
        }
    }

    pub async fn drop_all(self) {
        let mut admin = my_connect(&mysql_url()).await;
        for db in &self.dbs {
            my_exec(&mut admin, &format!("DROP DATABASE {db}")).await;
        }
    }
}

/// Puts `url` in a fresh environment variable and returns its name (each test runs in its
/// own process under nextest; names are unique anyway).
pub fn url_env(url: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let var = format!(
        "SLUICE_TEST_EXTRACT_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::env::set_var(&var, url);
    var
}

/// `shards = [{ id = "s0", url_env = "…" }, …]`.
pub fn shards_toml(shards: &[(&str, &str)]) -> String {
    let list: Vec<String> = shards
        .iter()
        .map(|(id, var)| format!("{{ id = \"{id}\", url_env = \"{var}\" }}"))
        .collect();
    format!("shards = [{}]", list.join(", "))
}

/// A pipeline with one extracted table `items`: id, v, note, updated_at, `_shard`, `_op`; the
/// merge key (`_shard`, id). `source` is the rest of `[tables.source]`.
pub fn items_pipeline(engine: &str, shards: &str, source: &str) -> Arc<Pipeline> {
    items_pipeline_from(engine, shards, "items", source)
}

/// `items_pipeline`, read from the source table `relation`.
pub fn items_pipeline_from(
    engine: &str,
    shards: &str,
    relation: &str,
    source: &str,
) -> Arc<Pipeline> {
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
{source}
"#
    );
    Arc::new(Pipeline::parse(&text, "items.toml").unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// Every extracted row under `prefix`, by part key (sorted), in part order.
pub async fn raw_rows(
    store: &dyn ObjectStore,
    prefix: &str,
) -> BTreeMap<String, Vec<Map<String, Value>>> {
    let mut out = BTreeMap::new();
    for o in store.list(prefix).await.expect("list raw") {
        let body = store.get_bytes(&o.key).await.expect("part");
        assert!(o.key.ends_with(".jsonl.gz"), "{}", o.key);
        out.insert(
            o.key.clone(),
            read_part(&body).unwrap_or_else(|e| panic!("{}: {e}", o.key)),
        );
    }
    out
}

/// The `(shard, id, v)` of every extracted row, in part order.
pub async fn versions(store: &dyn ObjectStore, prefix: &str) -> Vec<(String, i64, i64)> {
    raw_rows(store, prefix)
        .await
        .into_values()
        .flatten()
        .map(|r| {
            (
                r["_shard"].as_str().expect("_shard").to_string(),
                r["id"].as_i64().expect("id"),
                r["v"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The stats of an extracted shard; panics with the outcome otherwise.
pub fn extracted(r: &ShardReport) -> &ShardStats {
    match &r.outcome {
        ShardOutcome::Extracted(s) => s,
        other => panic!("shard {}: {other:?}", r.shard),
    }
}

/// A lake that passes everything to a local store, but fails the put of chosen keys, and may
/// hold the first part put until released (to keep a run in flight).
#[derive(Debug)]
pub struct Wrapped {
    pub inner: Arc<LocalStore>,
    /// Fail puts of the state that clear the run: the crash between parts and watermark.
    pub fail_commit: AtomicBool,
    /// Fail the put of a part whose key ends so (e.g. `part-00001.jsonl.gz`).
    pub fail_part: std::sync::Mutex<Option<String>>,
    /// When set, the first part put waits: `reached` is notified, then it waits for `go`.
    pub hold: AtomicBool,
    pub reached: Notify,
    pub go: Notify,
}

impl Wrapped {
    pub fn new(inner: Arc<LocalStore>) -> Self {
        Self {
            inner,
            fail_commit: AtomicBool::new(false),
            fail_part: std::sync::Mutex::new(None),
            hold: AtomicBool::new(false),
            reached: Notify::new(),
            go: Notify::new(),
        }
    }

    fn injected(key: &str) -> LakeError {
        LakeError::Service {
            op: "PutObject",
            key: key.to_string(),
            message: "injected failure".into(),
            retryable: true,
        }
    }

    async fn before_part(&self, key: &str) -> Result<(), LakeError> {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.go.notified().await;
        }
        let fail = self
            .fail_part
            .lock()
            .expect("lock")
            .as_ref()
            .is_some_and(|s| key.ends_with(s.as_str()));
        if fail {
            return Err(Self::injected(key));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Wrapped {
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError> {
        self.inner.get_bytes(key).await
    }
    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, LakeError> {
        self.inner.get_to_file(key, dest).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError> {
        let clears_run = key.ends_with("state.json")
            && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["run"].is_null());
        if clears_run && self.fail_commit.load(Ordering::SeqCst) {
            return Err(Self::injected(key));
        }
        if key.ends_with(".jsonl.gz") {
            self.before_part(key).await?;
        }
        self.inner.put(key, body, mode).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<PutResult, LakeError> {
        self.before_part(key).await?;
        self.inner.put_file(key, path).await
    }
    async fn put_file_moving(&self, key: &str, path: &Path) -> Result<PutResult, LakeError> {
        self.before_part(key).await?;
        self.inner.put_file_moving(key, path).await
    }
    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        self.inner.list(prefix).await
    }
}

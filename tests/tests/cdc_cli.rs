//! The built `sluice` binary's `cdc` commands on the logical-replication cluster: `setup
//! --check` lists a table without a primary key and fails, and `setup` then refuses; `setup`
//! creates the publication, the slot and the decoder state, and a second one keeps them;
//! `snapshot` writes the table's rows as `r` events, page by page, and refuses without a
//! state; `peek` prints the pending changes as events (from the pipeline or from a URL, the
//! same lines) and leaves the slot where it was; `run` puts the changes on a moto Kinesis
//! stream and advances the slot. Each test has its own schema, slot, publication and stream,
//! dropped at the end, also after a failure.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use futures::FutureExt;
use serde_json::{json, Value};
use sqlx::Row;

use sluice::aws::Clients;
use sluice_tests::cdc::{SourceDb, Stream};
use sluice_tests::{built_binary, moto_endpoint, moto_sdk_config, unique_name};

/// The variable the test pipelines name in `source_url_env`.
const SOURCE_ENV: &str = "SLUICE_CDC_CLI_TEST_SOURCE";

/// One test's source schema, lake directory and pipeline file.
struct Ctx {
    src: SourceDb,
    _dir: tempfile::TempDir,
    lake: PathBuf,
    pipeline: PathBuf,
}

impl Ctx {
    /// `sluice ARGS` with the source URL (and moto for AWS) in its environment.
    fn sluice(&self, args: &[&str]) -> Output {
        self.sluice_env(args, &[])
    }

    fn sluice_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(built_binary("sluice"));
        c.args(args)
            .env_remove("SLUICE_LOG")
            .env_remove("SLUICE_CDC_STREAM")
            .env(SOURCE_ENV, &self.src.url)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run sluice")
    }

    fn p(&self) -> &str {
        self.pipeline.to_str().expect("utf-8 path")
    }

    fn l(&self) -> &str {
        self.lake.to_str().expect("utf-8 path")
    }

    /// `sluice cdc setup`, which must succeed; its stdout.
    fn setup(&self) -> String {
        ok(&self.sluice(&["cdc", "setup", "--pipeline", self.p(), "--lake", self.l()]))
    }

    fn state_path(&self) -> PathBuf {
        self.lake
            .join("state/cdc")
            .join(format!("{}.json", self.src.slot))
    }

    /// The decoder state's `confirmed_lsn`.
    fn state_lsn(&self) -> u64 {
        let text = std::fs::read_to_string(self.state_path()).expect("the decoder state");
        let v: Value = serde_json::from_str(&text).expect("JSON state");
        v["confirmed_lsn"].as_u64().expect("confirmed_lsn")
    }

    async fn slot_exists(&self) -> bool {
        let mut c = self.src.connect().await;
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput')",
        )
        .bind(&self.src.slot)
        .fetch_one(&mut c)
        .await
        .expect("slot query")
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sluice failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failure(out: &Output) -> (String, String) {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `key=value` pairs of the first line starting with `first`.
fn pairs(text: &str, first: &str) -> std::collections::BTreeMap<String, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no line starting {first:?} in {text:?}"));
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pipeline with one change table per entry of `tables`, all of them `(id int, name text)`.
fn write_pipeline(dir: &Path, src: &SourceDb, tables: &[&str], stream: &str) -> PathBuf {
    let mut text = format!(
        "[cdc]\nsource_url_env = \"{SOURCE_ENV}\"\nslot = \"{}\"\npublication = \"{}\"\nstream = \"{stream}\"\n",
        src.slot, src.publication
    );
    for t in tables {
        text.push_str(&format!(
            "\n[[tables]]\nname = \"{t}\"\nraw_prefix = \"raw/cdc/{t}/\"\nformat = \"cdc\"\n\
             cdc = {{ schema = \"{}\", table = \"{t}\" }}\ndedup = {{ key = [\"id\"] }}\n\
             catalog = {{ database = \"db\" }}\n\
             columns = [{{ name = \"id\", type = \"int\", required = true }}, {{ name = \"name\", type = \"string\" }}]\n",
            src.schema
        ));
    }
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("pipeline file");
    path
}

/// Runs `body` on a fresh source schema (`ddl` in it) with a pipeline of `tables`, then drops
/// the schema, slot and publication whatever happened.
async fn with_source<F, Fut>(prefix: &str, ddl: &str, tables: &[&str], stream: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let src = SourceDb::create(prefix, ddl).await;
    let cleanup = SourceDb {
        url: src.url.clone(),
        schema: src.schema.clone(),
        slot: src.slot.clone(),
        publication: src.publication.clone(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = Ctx {
        pipeline: write_pipeline(dir.path(), &src, tables, stream),
        lake: dir.path().join("lake"),
        _dir: dir,
        src,
    };
    let result = AssertUnwindSafe(body(ctx)).catch_unwind().await;
    cleanup.drop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The events of JSON lines, one per line.
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// `(op, id)` of each event: the row's id from `after`, or `before` for a delete.
fn ops(events: &[Value]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| {
            let row = if e["op"] == "d" {
                &e["before"]
            } else {
                &e["after"]
            };
            (
                e["op"].as_str().unwrap_or("?").to_string(),
                row["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, name text);";
/// Two transactions: the inserts, then an update, a delete and a key change.
async fn dml(src: &SourceDb) {
    src.exec("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
        .await;
    src.exec(
        "UPDATE items SET name = 'uno' WHERE id = 1;
         DELETE FROM items WHERE id = 2;
         UPDATE items SET id = 10 WHERE id = 1;",
    )
    .await;
}

fn dml_ops() -> Vec<(String, i64)> {
    [("c", 1), ("c", 2), ("u", 1), ("d", 2), ("d", 1), ("c", 10)]
        .iter()
        .map(|(o, i)| (o.to_string(), *i))
        .collect()
}

#[tokio::test]
async fn setup_check_lists_a_table_without_primary_key_and_setup_refuses() {
    let ddl =
        "CREATE TABLE nopk (id int, name text); CREATE TABLE good (id int PRIMARY KEY, name text);";
    with_source(
        "cdccli_check",
        ddl,
        &["nopk", "good"],
        "s",
        |ctx| async move {
            let (stdout, stderr) =
                failure(&ctx.sluice(&["cdc", "setup", "--pipeline", ctx.p(), "--check"]));
            let problem = format!("problem: table {}.nopk has no primary key", ctx.src.schema);
            assert!(stdout.contains(&problem), "{stdout}");
            assert!(
                !stdout.contains(".good "),
                "only nopk is at fault: {stdout}"
            );
            assert!(stderr.contains(&ctx.src.slot), "{stderr}");
            // Without --check: refused, nothing created.
            let (stdout, stderr) =
                failure(&ctx.sluice(&["cdc", "setup", "--pipeline", ctx.p(), "--lake", ctx.l()]));
            assert!(stdout.contains(&problem), "{stdout}");
            assert!(stderr.contains("nothing was changed"), "{stderr}");
            assert!(!ctx.slot_exists().await);
            assert!(!ctx.state_path().exists());
        },
    )
    .await;
}

#[tokio::test]
async fn setup_creates_slot_publication_and_state_and_keeps_them() {
    with_source("cdccli_setup", ITEMS, &["items"], "s", |ctx| async move {
        let check = ok(&ctx.sluice(&["cdc", "setup", "--pipeline", ctx.p(), "--check"]));
        assert!(check.contains("ok: the source is ready"), "{check}");
        let first = ctx.setup();
        let (slot, publication) = (&ctx.src.slot, &ctx.src.publication);
        assert!(
            first.contains(&format!("created publication {publication}")),
            "{first}"
        );
        assert!(first.contains(&format!("created slot {slot}")), "{first}");
        assert!(
            first.contains(&format!(
                "set REPLICA IDENTITY FULL on {}.items",
                ctx.src.schema
            )),
            "{first}"
        );
        assert!(
            first.contains(&format!("wrote decoder state state/cdc/{slot}.json")),
            "{first}"
        );
        assert!(ctx.slot_exists().await);
        let mut c = ctx.src.connect().await;
        let published: Vec<String> = sqlx::query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
        )
        .bind(publication)
        .fetch_all(&mut c)
        .await
        .expect("publication tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
        assert_eq!(published, [format!("{}.items", ctx.src.schema)]);
        assert_eq!(ctx.state_lsn(), ctx.src.confirmed_lsn().await);
        let state = std::fs::read(ctx.state_path()).expect("state");

        // Again: everything kept, the state untouched.
        let second = ctx.setup();
        assert!(
            second.contains(&format!("slot {slot} (pgoutput) already exists")),
            "{second}"
        );
        assert!(
            second.contains("already holds exactly the pipeline's tables"),
            "{second}"
        );
        assert!(second.contains("kept decoder state"), "{second}");
        assert_eq!(std::fs::read(ctx.state_path()).expect("state"), state);

        // A slot without a state: the state is written at the slot's position, and said so.
        std::fs::remove_file(ctx.state_path()).expect("remove state");
        let third = ctx.setup();
        assert!(third.contains("existed without a decoder state"), "{third}");
        assert_eq!(ctx.state_lsn(), ctx.src.confirmed_lsn().await);
    })
    .await;
}

#[tokio::test]
async fn snapshot_writes_the_tables_rows_page_by_page_and_resumes() {
    with_source("cdccli_snap", ITEMS, &["items"], "s", |ctx| async move {
        std::fs::create_dir_all(&ctx.lake).expect("lake dir");
        let (_, stderr) =
            failure(&ctx.sluice(&["cdc", "snapshot", "--pipeline", ctx.p(), "--lake", ctx.l()]));
        assert!(
            stderr.contains(&format!("state/cdc/{}.json", ctx.src.slot)),
            "{stderr}"
        );
        assert!(stderr.contains("run `sluice cdc setup` first"), "{stderr}");

        ctx.src
            .exec("INSERT INTO items SELECT g, 'name ' || g || ' Zoë' FROM generate_series(1, 5) g")
            .await;
        ctx.setup();
        let lsn = ctx.state_lsn();
        let args = [
            "cdc",
            "snapshot",
            "--pipeline",
            ctx.p(),
            "--lake",
            ctx.l(),
            "--page-rows",
            "2",
        ];
        let out = ok(&ctx.sluice(&args));
        let t = pairs(&out, "table=items");
        assert_eq!(t["status"], "done", "{out}");
        assert_eq!(t["rows_written"], "5");
        assert_eq!(t["pages_written"], "3");
        assert_eq!(t["lsn"], lsn.to_string());

        let dir = ctx.lake.join(format!("raw/cdc/items/snapshot/{lsn}"));
        let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("snapshot pages")
            .map(|e| e.expect("entry").path())
            .collect();
        pages.sort();
        assert_eq!(pages.len(), 3, "{pages:?}");
        let mut got = Vec::new();
        for p in &pages {
            got.extend(events(&std::fs::read_to_string(p).expect("page")));
        }
        let mut c = ctx.src.connect().await;
        let table: Vec<Value> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, name FROM {}.items ORDER BY id",
            ctx.src.schema
        )))
        .fetch_all(&mut c)
        .await
        .expect("rows")
        .iter()
        .map(|r| json!({"id": r.get::<i32, _>(0), "name": r.get::<String, _>(1)}))
        .collect();
        let afters: Vec<Value> = got.iter().map(|e| e["after"].clone()).collect();
        assert_eq!(afters, table);
        for e in &got {
            assert_eq!(e["op"], "r");
            // Version 0: any change the slot delivers wins over a copied row.
            assert_eq!(e["source"]["lsn"], json!(0));
            assert_eq!(e["source"]["schema"], json!(ctx.src.schema));
        }

        // Done once: a second run reads nothing.
        let again = ok(&ctx.sluice(&args));
        let t = pairs(&again, "table=items");
        assert_eq!(
            (t["status"].as_str(), t["rows_written"].as_str()),
            ("already-done", "0")
        );
    })
    .await;
}

#[tokio::test]
async fn peek_prints_the_pending_changes_and_leaves_the_slot() {
    with_source("cdccli_peek", ITEMS, &["items"], "s", |ctx| async move {
        ctx.setup();
        dml(&ctx.src).await;
        let before = ctx.src.confirmed_lsn().await;
        let file = ctx.lake.join("peek.jsonl");
        let out = ok(&ctx.sluice(&[
            "cdc",
            "peek",
            "--pipeline",
            ctx.p(),
            "--out",
            file.to_str().expect("utf-8"),
        ]));
        let summary = pairs(&out, "slot=");
        assert_eq!(summary["changes"], "6", "{out}");
        let text = std::fs::read_to_string(&file).expect("peek output");
        let got = events(&text);
        assert_eq!(ops(&got), dml_ops());
        assert_eq!(got[2]["after"], json!({"id": 1, "name": "uno"}));
        // A key change: the delete and the insert at one LSN.
        assert_eq!(got[4]["source"]["lsn"], got[5]["source"]["lsn"]);
        assert_eq!(
            ctx.src.confirmed_lsn().await,
            before,
            "a peek never moves the slot"
        );

        // From a URL, keys from the catalog: the same lines, on stdout.
        let url_out = ctx.sluice(&[
            "cdc",
            "peek",
            "--source-url",
            &ctx.src.url,
            "--slot",
            &ctx.src.slot,
            "--publication",
            &ctx.src.publication,
        ]);
        assert_eq!(ok(&url_out), text);
        assert!(String::from_utf8_lossy(&url_out.stderr).contains("changes=6"));
        // With a cap: whole transactions, up to the first that reaches it.
        let capped = ok(&ctx.sluice(&["cdc", "peek", "--pipeline", ctx.p(), "--max-changes", "1"]));
        assert_eq!(ops(&events(&capped)), dml_ops()[..2].to_vec());
        assert_eq!(ctx.src.confirmed_lsn().await, before);

        // An unknown slot is named.
        let (_, stderr) = failure(&ctx.sluice(&[
            "cdc",
            "peek",
            "--source-url",
            &ctx.src.url,
            "--slot",
            "no_such_slot",
            "--publication",
            &ctx.src.publication,
        ]));
        assert!(stderr.contains("no_such_slot does not exist"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn run_puts_the_changes_on_kinesis_and_advances_the_slot() {
    let clients = Clients::new(moto_sdk_config().await);
    let mut stream = Stream::create(clients.kinesis.clone(), &unique_name("cdccli"), 2).await;
    let (name, arn) = (stream.name.clone(), stream.arn.clone());
    let s = &mut stream;
    // The pipeline names a stream that does not exist: the environment and --stream override it.
    let body = with_source(
        "cdccli_run",
        ITEMS,
        &["items"],
        "no-such-stream",
        |ctx| async move {
            ctx.setup();
            dml(&ctx.src).await;
            let before = ctx.src.confirmed_lsn().await;
            let args = ["cdc", "run", "--pipeline", ctx.p(), "--lake", ctx.l()];
            let out = ok(&ctx.sluice_env(&args, &[("SLUICE_CDC_STREAM", &name)]));
            let report = pairs(&out, "slot=");
            assert_eq!(report["changes"], "6", "{out}");
            assert_eq!(report["stream"], name);
            assert_eq!(report["stop"], "drained");
            let mut got: Vec<Value> = s.read_new().await.iter().map(|r| r.json()).collect();
            // Two shards: order by LSN, a key change's delete first.
            got.sort_by_key(|e| (e["source"]["lsn"].as_u64(), e["op"] != "d"));
            assert_eq!(ops(&got), dml_ops());
            let after = ctx.src.confirmed_lsn().await;
            assert!(after > before, "the slot advanced: {before} → {after}");
            assert_eq!(ctx.state_lsn(), after);
            assert_eq!(
                report["confirmed"],
                sluice::cdc::wal::source::lsn_text(after)
            );

            // The next change, to the stream given by ARN; nothing is sent twice.
            ctx.src.exec("INSERT INTO items VALUES (3, 'three')").await;
            let mut with_arn = args.to_vec();
            with_arn.extend(["--stream", arn.as_str()]);
            let out = ok(&ctx.sluice(&with_arn));
            assert_eq!(pairs(&out, "slot=")["changes"], "1", "{out}");
            let got: Vec<Value> = s.read_new().await.iter().map(|r| r.json()).collect();
            assert_eq!(ops(&got), [("c".to_string(), 3)]);
            assert!(ctx.src.confirmed_lsn().await > after);
        },
    );
    let result = AssertUnwindSafe(body).catch_unwind().await;
    stream.delete().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

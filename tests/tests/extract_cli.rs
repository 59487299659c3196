//! The built `sluice` binary: `sluice extract` from MariaDB shards (the run's server; each
//! shard a database of its own, reached by `url_env`) into a local lake. One line per shard;
//! an unreachable shard fails the command (exit 1) after the others were extracted; a range
//! read a page at a time (`--max-pages`) continues where it stopped; a shard another run holds
//! is reported busy; `--historical` dumps one shard; unknown tables and shards are refused
//! before anything runs.

mod extract_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use extract_support::{my_connect, my_exec, raw_rows, MyShards};
use sluice::extract::state::{acquire_lease, Acquired};
use sluice::lake::{layout, LocalStore};
use sluice_tests::built_binary;

const ITEMS: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, \
    updated_at DATETIME(6) NOT NULL, KEY (updated_at, id))";

/// Each shard's URL variable; `s3`'s points at a closed port.
const VARS: [&str; 3] = [
    "SLUICE_TEST_EXTRACT_CLI_S1",
    "SLUICE_TEST_EXTRACT_CLI_S2",
    "SLUICE_TEST_EXTRACT_CLI_S3",
];

fn pipeline_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
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
columns = [
  {{ name = "id", type = "int", required = true }},
  {{ name = "v", type = "int" }},
  {{ name = "updated_at", type = "timestamp", required = true }},
  {{ name = "_shard", type = "string" }},
]

[tables.source]
engine = "mysql"
shards = [{{ id = "s1", url_env = "{}" }}, {{ id = "s2", url_env = "{}" }}, {{ id = "s3", url_env = "{}" }}]
table = "items"
key_columns = ["id"]
updated_at_column = "updated_at"
page_rows = 2
part_rows = 2
safety_lag_secs = 0
"#,
        VARS[0], VARS[1], VARS[2]
    );
    std::fs::write(&path, text).expect("pipeline file");
    path
}

struct Cli<'a> {
    pipeline: &'a Path,
    lake: &'a Path,
    urls: [String; 3],
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(built_binary("sluice"));
        c.arg("extract")
            .arg("--pipeline")
            .arg(self.pipeline)
            .arg("--lake")
            .arg(self.lake)
            .args(args)
            .env_remove("SLUICE_LOG");
        for (var, url) in VARS.iter().zip(&self.urls) {
            c.env(var, url);
        }
        c.output().expect("run sluice extract")
    }
}

/// The `key=value` pairs of each shard's line, by shard.
fn lines(out: &Output) -> BTreeMap<String, BTreeMap<String, String>> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("table="))
        .map(|l| {
            let kv: BTreeMap<String, String> = l
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (kv["shard"].clone(), kv)
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `(id, v)` of every row of a shard, in part order.
async fn rows(lake: &LocalStore, prefix: &str) -> Vec<(i64, i64)> {
    raw_rows(lake, prefix)
        .await
        .into_values()
        .flatten()
        .map(|r| (r["id"].as_i64().expect("id"), r["v"].as_i64().expect("v")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_extract_reads_the_shards_into_the_lake() {
    let shards = MyShards::create(2).await;
    shards.exec_all(ITEMS).await;
    let mut s1 = my_connect(&shards.url(0)).await;
    my_exec(
        &mut s1,
        "INSERT INTO items VALUES (1, 10, '2024-01-01 00:00:01'), (2, 20, '2024-01-01 00:00:02'), \
         (3, 30, '2024-01-01 00:00:03')",
    )
    .await;
    my_exec(
        &mut my_connect(&shards.url(1)).await,
        "INSERT INTO items VALUES (1, 100, '2024-01-02 00:00:01')",
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let pipeline = pipeline_file(dir.path());
    let cli = Cli {
        pipeline: &pipeline,
        lake: &lake_dir,
        urls: [
            shards.url(0),
            shards.url(1),
            "mysql://root@127.0.0.1:1/nowhere".into(),
        ],
    };

    // Every shard: s3 cannot be reached, which fails the command after s1 and s2 ran.
    let out = cli.run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 of 3 shards failed"),
        "{}",
        stderr(&out)
    );
    let l = lines(&out);
    assert_eq!(l.len(), 3, "{l:?}");
    assert_eq!(
        (
            l["s1"]["outcome"].as_str(),
            l["s1"]["rows"].as_str(),
            l["s1"]["parts"].as_str()
        ),
        ("extracted", "3", "2"),
        "{l:?}"
    );
    assert_eq!(
        (l["s1"]["complete"].as_str(), l["s1"]["mode"].as_str()),
        ("true", "incremental")
    );
    assert_eq!(
        (l["s2"]["outcome"].as_str(), l["s2"]["rows"].as_str()),
        ("extracted", "1")
    );
    assert_eq!(
        (l["s3"]["outcome"].as_str(), l["s3"]["kind"].as_str()),
        ("failed", "Retryable")
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("127.0.0.1"),
        "no URL printed"
    );
    let lake = LocalStore::new(&lake_dir).expect("lake");
    assert_eq!(
        rows(&lake, "raw/items/shard=s1/").await,
        [(1, 10), (2, 20), (3, 30)]
    );
    assert_eq!(rows(&lake, "raw/items/shard=s2/").await, [(1, 100)]);

    // Three new rows on s1, one page (two rows) at a time: the range continues where it stopped.
    my_exec(
        &mut s1,
        "INSERT INTO items VALUES (4, 40, '2024-01-03 00:00:04'), (5, 50, '2024-01-03 00:00:05'), \
         (6, 60, '2024-01-03 00:00:06')",
    )
    .await;
    let step = cli.run(&["--shard", "s1", "--max-pages", "1"]);
    assert!(step.status.success(), "{}", stderr(&step));
    let l = lines(&step);
    assert_eq!(l.keys().collect::<Vec<_>>(), ["s1"]);
    assert_eq!(
        (l["s1"]["rows"].as_str(), l["s1"]["complete"].as_str()),
        ("2", "false")
    );
    let rest = cli.run(&["--table", "items", "--shard", "s1"]);
    assert!(rest.status.success(), "{}", stderr(&rest));
    let l = lines(&rest);
    assert_eq!(
        (
            l["s1"]["rows"].as_str(),
            l["s1"]["complete"].as_str(),
            l["s1"]["resumed"].as_str()
        ),
        ("1", "true", "true"),
        "{l:?}"
    );
    let got = rows(&lake, "raw/items/shard=s1/").await;
    assert_eq!(got.len(), 6, "each row once: {got:?}");

    // s2 held by another run: reported busy, not a failure, nothing read.
    let held = acquire_lease(
        &lake,
        &layout::extract_lease_key("items", "s2"),
        "someone-else",
        Duration::from_secs(600),
        now_ms(),
    )
    .await
    .expect("lease");
    assert!(matches!(held, Acquired::Held(_)));
    let busy = cli.run(&["--shard", "s2"]);
    assert!(busy.status.success(), "{}", stderr(&busy));
    let l = lines(&busy);
    assert_eq!(
        (l["s2"]["outcome"].as_str(), l["s2"]["holder"].as_str()),
        ("busy", "someone-else")
    );

    // A historical dump of s1.
    let dump = cli.run(&["--shard", "s1", "--historical"]);
    assert!(dump.status.success(), "{}", stderr(&dump));
    let l = lines(&dump);
    assert_eq!(
        (l["s1"]["mode"].as_str(), l["s1"]["rows"].as_str()),
        ("historical", "6")
    );
    assert_eq!(rows(&lake, "raw/items/shard=s1/historical/").await.len(), 6);

    // Refused before anything runs.
    let unknown = cli.run(&["--table", "orders"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("the pipeline has no table `orders`"),
        "{}",
        stderr(&unknown)
    );
    let shard = cli.run(&["--shard", "s9"]);
    assert_eq!(shard.status.code(), Some(1));
    assert!(
        stderr(&shard).contains("has no shard `s9` (it has: s1, s2, s3)"),
        "{}",
        stderr(&shard)
    );
    assert!(lines(&shard).is_empty());
    let no_lake = Command::new(built_binary("sluice"))
        .args(["extract", "--pipeline"])
        .arg(&pipeline)
        .output()
        .expect("run sluice extract");
    assert_eq!(
        no_lake.status.code(),
        Some(2),
        "a missing --lake is a usage error"
    );

    shards.drop_all().await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .expect("clock after 1970")
}

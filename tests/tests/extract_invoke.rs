//! The built `extract` binary, run as a Lambda function under `cargo lambda` (the harness in
//! `sluice_tests::lambda`), invoked with the scheduled-event sample of `events/`: two MariaDB
//! shards, one reached through an RDS-style secret in moto's Secrets Manager, the other through
//! a URL variable (`url_env`); the lake a moto bucket (`SLUICE_LAKE`). The parts listed in S3
//! and read back, the watermark in `state/`, the EMF lines, a second run that reads only what
//! changed, a historical dump of one shard, a manual payload naming an unknown table
//! (`BadInput`), and an unreachable shard that fails the invocation (`Retryable`) only after
//! the other shard's parts and watermark are written.

mod extract_support;

use std::str::FromStr;

use serde_json::{json, Map, Value};
use sqlx::mysql::MySqlConnectOptions;

use extract_support::{my_connect, my_exec, raw_rows, MyShards};
use sluice::extract::{Cursor, ShardState};
use sluice::lake::{layout, ObjectStore, S3Store};
use sluice_tests::{
    moto_bucket, moto_sdk_config, moto_secret, mysql_url, unique_name, LambdaFunction, Payload,
};

const ITEMS: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, \
    note VARCHAR(100) NULL, updated_at DATETIME(6) NOT NULL, KEY (updated_at, id))";

/// The function's environment variable holding the URL of the `url_env` shard.
const URL_VAR: &str = "SLUICE_TEST_EXTRACT_INVOKE_URL";

/// A pipeline file in `dir` with table `items` read from `shards` (TOML inline tables).
fn pipeline_file(dir: &std::path::Path, shards: &str) -> std::path::PathBuf {
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
  {{ name = "note", type = "string" }},
  {{ name = "updated_at", type = "timestamp", required = true }},
  {{ name = "_shard", type = "string" }},
]

[tables.source]
engine = "mysql"
shards = [{shards}]
table = "items"
key_columns = ["id"]
updated_at_column = "updated_at"
safety_lag_secs = 0
"#
    );
    std::fs::write(&path, text).expect("pipeline file");
    path
}

/// An RDS connection secret in moto for database `db` of the run's MariaDB.
async fn shard_secret(sdk: &aws_config::SdkConfig, db: &str) -> String {
    let o = MySqlConnectOptions::from_str(&mysql_url()).expect("SLUICE_TEST_MYSQL_URL");
    let name = unique_name("extract-shard");
    let body = json!({"engine": "mariadb", "host": o.get_host(), "port": o.get_port(),
                      "username": o.get_username(), "password": "", "dbname": db,
                      "sslmode": "disable"});
    moto_secret(sdk, &name, body.to_string().as_bytes()).await;
    name
}

fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// `(id, v, note, _shard)` of every row under `prefix`, in part order.
async fn rows(lake: &S3Store, prefix: &str) -> Vec<(i64, i64, Value, String)> {
    let row = |r: Map<String, Value>| {
        (
            r["id"].as_i64().expect("id"),
            r["v"].as_i64().expect("v"),
            r["note"].clone(),
            r["_shard"].as_str().expect("_shard").to_string(),
        )
    };
    raw_rows(lake, prefix)
        .await
        .into_values()
        .flatten()
        .map(row)
        .collect()
}

async fn state(lake: &S3Store, shard: &str) -> ShardState {
    let key = layout::extract_state_key("items", shard);
    let body = lake.get_bytes(&key).await.expect("the shard's state");
    serde_json::from_slice(&body).expect("state JSON")
}

fn after(updated_at: &str, id: i64) -> Option<Cursor> {
    Some(Cursor::After {
        updated_at: updated_at.into(),
        key: Some(vec![json!(id)]),
    })
}

fn shard<'a>(out: &'a Value, id: &str) -> &'a Value {
    out["shards"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["shard"] == json!(id)))
        .unwrap_or_else(|| panic!("shard {id} in {out}"))
}

fn part_keys(s: &Value) -> Vec<String> {
    serde_json::from_value(s["parts"].clone()).expect("parts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_binary_reads_its_shards_on_schedule() {
    let shards = MyShards::create(2).await;
    shards.exec_all(ITEMS).await;
    let mut s1 = my_connect(&shards.url(0)).await;
    my_exec(
        &mut s1,
        "INSERT INTO items VALUES (1, 10, 'note-one', '2024-01-01 00:00:01'), \
         (2, 20, NULL, '2024-01-01 00:00:02'), (3, 30, 'note-three', '2024-01-01 00:00:03')",
    )
    .await;
    let mut s2 = my_connect(&shards.url(1)).await;
    my_exec(
        &mut s2,
        "INSERT INTO items VALUES (1, 100, 'x', '2024-01-02 00:00:01'), \
         (2, 200, 'y', '2024-01-02 00:00:02')",
    )
    .await;
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("extract");
    let lake = S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket);
    let secret = shard_secret(&sdk, &shards.dbs[0]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = pipeline_file(
        dir.path(),
        &format!(r#"{{ id = "s1", secret = "{secret}" }}, {{ id = "s2", url_env = "{URL_VAR}" }}"#),
    );
    let mut lambda = LambdaFunction::new("extract")
        .env("SLUICE_PIPELINE", &pipeline)
        .env("SLUICE_LAKE", format!("s3://{bucket}"))
        .env(URL_VAR, shards.url(1))
        .start();

    let inv = lambda.invoke(&Payload::event("schedule-extract.json"));
    let out = inv
        .response()
        .unwrap_or_else(|e| panic!("{e}\n{}", lambda.logs()));
    assert_eq!(
        (&out["mode"], &out["tables"], &out["rows"], &out["parts"]),
        (
            &json!("incremental"),
            &json!(["items"]),
            &json!(5),
            &json!(2)
        ),
        "{out}"
    );
    let (r1, r2) = (shard(&out, "s1"), shard(&out, "s2"));
    assert_eq!(
        (&r1["outcome"], &r1["rows"], &r1["complete"]),
        (&json!("extracted"), &json!(3), &json!(true))
    );
    assert_eq!(
        (&r2["outcome"], &r2["rows"]),
        (&json!("extracted"), &json!(2))
    );
    // The parts the response names are the ones in S3, with the rows of each shard.
    let listed: Vec<String> = lake
        .list("raw/items/shard=s1/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, part_keys(r1));
    assert!(listed[0].ends_with("/part-00000.jsonl.gz"), "{listed:?}");
    assert_eq!(
        rows(&lake, "raw/items/shard=s1/").await,
        [
            (1, 10, json!("note-one"), "s1".into()),
            (2, 20, Value::Null, "s1".into()),
            (3, 30, json!("note-three"), "s1".into()),
        ]
    );
    assert_eq!(
        rows(&lake, "raw/items/shard=s2/").await,
        [
            (1, 100, json!("x"), "s2".into()),
            (2, 200, json!("y"), "s2".into())
        ]
    );
    // The watermark: the last row read, the range cleared.
    let st = state(&lake, "s1").await;
    assert_eq!(
        (st.watermark, st.run),
        (after("2024-01-01T00:00:03.000000Z", 3), None)
    );
    assert_eq!(
        state(&lake, "s2").await.watermark,
        after("2024-01-02T00:00:02.000000Z", 2)
    );
    // One EMF line per shard.
    let emf = emf_lines(&inv.function_stdout);
    assert_eq!(emf.len(), 2, "{emf:?}");
    for (id, n) in [("s1", 3), ("s2", 2)] {
        let line = emf
            .iter()
            .find(|v| v["Shard"] == json!(id))
            .unwrap_or_else(|| panic!("an EMF line for {id}: {emf:?}"));
        assert_eq!(
            (&line["Function"], &line["Table"]),
            (&json!("extract"), &json!("items"))
        );
        assert_eq!(
            (&line["RowsExtracted"], &line["ExtractFailed"]),
            (&json!(n), &json!(0))
        );
        assert!(
            line["ExtractLagSeconds"].as_f64().is_some_and(|l| l > 0.0),
            "{line}"
        );
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function", "Table", "Shard"]])
        );
    }
    assert!(
        !lambda.logs().contains("note-one"),
        "row values never reach the logs"
    );

    // A change on s1 only: the next run reads it alone, into a range of its own.
    my_exec(
        &mut s1,
        "UPDATE items SET v = 21, updated_at = '2024-01-03 00:00:00' WHERE id = 2",
    )
    .await;
    let out = lambda.invoke_ok(&Payload::event("schedule-extract.json"));
    let (r1, r2) = (shard(&out, "s1"), shard(&out, "s2"));
    assert_eq!(
        (&r1["rows"], &r2["rows"], &r2["parts"]),
        (&json!(1), &json!(0), &json!([])),
        "{out}"
    );
    let new_part = part_keys(r1);
    assert_eq!(new_part.len(), 1);
    assert!(
        !listed.contains(&new_part[0]),
        "a new range, a new folder: {new_part:?}"
    );
    let all = rows(&lake, "raw/items/shard=s1/").await;
    assert_eq!(all.len(), 4);
    assert!(all.contains(&(2, 21, Value::Null, "s1".into())), "{all:?}");
    assert_eq!(
        state(&lake, "s1").await.watermark,
        after("2024-01-03T00:00:00.000000Z", 2)
    );

    // A historical dump of s2 alone, asked for by a manual payload.
    let out = lambda.invoke_ok(&Payload::json(
        r#"{"tables": ["items"], "shards": ["s2"], "historical": true}"#,
    ));
    assert_eq!(
        (&out["mode"], out["shards"].as_array().map(Vec::len)),
        (&json!("historical"), Some(1)),
        "{out}"
    );
    let r2 = shard(&out, "s2");
    assert_eq!((&r2["rows"], &r2["historical"]), (&json!(2), &json!(true)));
    assert!(
        part_keys(r2)[0].starts_with("raw/items/shard=s2/historical/"),
        "{r2}"
    );
    assert_eq!(rows(&lake, "raw/items/shard=s2/historical/").await.len(), 2);

    // A table the pipeline does not have: BadInput, nothing run.
    let bad = lambda.invoke(&Payload::json(r#"{"tables": ["orders"]}"#));
    assert!(!bad.status.success());
    let text = bad.error_text();
    assert!(
        text.contains("BadInput") && text.contains("notable`orders`"),
        "{text}"
    );
    assert!(emf_lines(&bad.function_stdout).is_empty());

    drop(lambda);
    shards.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_shard_fails_the_invocation_after_the_others_ran() {
    let shards = MyShards::create(1).await;
    shards.exec_all(ITEMS).await;
    shards
        .exec_all("INSERT INTO items VALUES (7, 70, NULL, '2024-01-01 00:00:07')")
        .await;
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("extract");
    let lake = S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket);
    let dir = tempfile::tempdir().expect("tempdir");
    let down = "SLUICE_TEST_EXTRACT_INVOKE_DOWN";
    let pipeline = pipeline_file(
        dir.path(),
        &format!(
            r#"{{ id = "up", url_env = "{URL_VAR}" }}, {{ id = "down", url_env = "{down}" }}"#
        ),
    );
    let mut lambda = LambdaFunction::new("extract")
        .env("SLUICE_PIPELINE", &pipeline)
        .env("SLUICE_LAKE", format!("s3://{bucket}"))
        .env(URL_VAR, shards.url(0))
        .env(down, "mysql://root@127.0.0.1:1/nowhere")
        .start();
    let inv = lambda.invoke(&Payload::event("schedule-extract.json"));
    assert!(!inv.status.success(), "{}", inv.stdout);
    let text = inv.error_text();
    assert!(text.contains("Retryable"), "{text}");
    assert!(
        text.contains("1of2shardsfailed") && text.contains("shard`down`:cannotconnect"),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "no URL in the error: {text}");
    // The reachable shard's work stands: its part and its watermark.
    assert_eq!(
        rows(&lake, "raw/items/shard=up/").await,
        [(7, 70, Value::Null, "up".into())]
    );
    assert_eq!(
        state(&lake, "up").await.watermark,
        after("2024-01-01T00:00:07.000000Z", 7)
    );
    let emf = emf_lines(&inv.function_stdout);
    let failed = emf
        .iter()
        .find(|v| v["Shard"] == json!("down"))
        .expect("the failed shard's EMF line");
    assert_eq!(failed["ExtractFailed"], json!(1));
    drop(lambda);
    shards.drop_all().await;
}

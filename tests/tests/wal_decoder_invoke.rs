//! The built `wal-decoder` binary, run as a Lambda function under `cargo lambda` (the harness
//! in `sluice_tests::lambda`), invoked with the scheduled-event sample of `events/`: the source
//! reached through an RDS-style secret in moto's Secrets Manager, its state in a moto bucket
//! (`SLUICE_LAKE`), its events on a moto Kinesis stream (`SLUICE_CDC_STREAM`); the stream read
//! back, the slot's position and the EMF line checked; a bad manual payload is `BadInput`.

use serde_json::{json, Value};

use sluice::lake::S3Store;
use sluice_tests::cdc::{SourceDb, Stream};
use sluice_tests::{
    moto_bucket, moto_sdk_config, moto_secret, unique_name, LambdaFunction, Payload,
};

fn emf_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_decoder_binary_sends_the_slot_changes_on_schedule() {
    let src = SourceDb::create(
        "waldec",
        "CREATE TABLE items (id int PRIMARY KEY, name text);",
    )
    .await;
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("wal-decoder");
    let s3 = moto_bucket(&sdk, &bucket).await;
    let lake = S3Store::new(s3, &bucket);
    src.publish_and_slot(&["items"], &lake).await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let mut stream = Stream::create(kinesis, &unique_name("wal-decoder"), 1).await;

    // The source as an RDS secret: host, port, username, password, dbname (and no TLS here).
    let url = url_parts(&src.url);
    let secret = unique_name("wal-decoder-source");
    let body = json!({"engine": "postgres", "host": url.0, "port": url.1, "username": "postgres",
                      "password": "", "dbname": "postgres", "sslmode": "disable"});
    moto_secret(&sdk, &secret, body.to_string().as_bytes()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"[cdc]
source_secret = "{secret}"
slot = "{slot}"
publication = "{publication}"
stream = "overridden-by-the-environment"

[[tables]]
name = "items"
raw_prefix = "raw/cdc/items/"
format = "cdc"
cdc = {{ schema = "{schema}", table = "items" }}
dedup = {{ key = ["id"] }}
catalog = {{ database = "sluice_test" }}
columns = [ {{ name = "id", type = "int" }} ]
"#,
            slot = src.slot,
            publication = src.publication,
            schema = src.schema,
        ),
    )
    .expect("pipeline file");

    let mut lambda = LambdaFunction::new("wal-decoder")
        .env("SLUICE_PIPELINE", &pipeline)
        .env("SLUICE_LAKE", format!("s3://{bucket}"))
        .env("SLUICE_CDC_STREAM", &stream.name)
        .start();

    src.exec(
        "INSERT INTO items VALUES (1, 'a'), (2, 'b'); UPDATE items SET name = 'c' WHERE id = 1;",
    )
    .await;
    let before = src.confirmed_lsn().await;
    let out = lambda.invoke_ok(&Payload::event("schedule-wal-decoder.json"));
    assert_eq!(out["changes"], json!(3), "{out}");
    assert_eq!(out["stop"], json!("Drained"));
    assert_eq!(out["undeclared"], json!({"items": ["name"]}));
    let records = stream.read_new().await;
    let ops: Vec<Value> = records.iter().map(|r| r.json()["op"].clone()).collect();
    assert_eq!(ops, [json!("c"), json!("c"), json!("u")]);
    assert!(src.confirmed_lsn().await > before, "the slot advanced");
    let emf = emf_lines(&lambda.function_stdout());
    let main = emf
        .iter()
        .find(|v| v.get("SlotLagBytes").is_some())
        .unwrap_or_else(|| panic!("an EMF line with SlotLagBytes: {emf:?}"));
    assert_eq!(main["Function"], json!("wal-decoder"));
    assert_eq!(main["ChangesSent"], json!(3));
    let undeclared = emf.iter().find(|v| v.get("UndeclaredColumns").is_some());
    assert_eq!(undeclared.map(|v| v["Table"].clone()), Some(json!("items")));
    let logs = lambda.logs();
    assert!(
        !logs.contains("\"name\":\"c\""),
        "row values never reach the logs"
    );

    // A manual run capped at one change: the next change only, the rest of its transaction
    // left for the next run (one simple query is one transaction).
    src.exec("INSERT INTO items VALUES (3, 'x'); INSERT INTO items VALUES (4, 'y');")
        .await;
    let out = lambda.invoke_ok(&Payload::json(r#"{"max_changes": 1}"#));
    assert_eq!(out["changes"], json!(1), "{out}");
    assert_eq!(out["stop"], json!("InsideTransaction"));
    assert_eq!(out["partial"]["acked_changes"], json!(1));
    assert_eq!(stream.read_new().await.len(), 1);

    // A payload that asks for something impossible is BadInput, not a crash.
    let bad = lambda.invoke(&Payload::json(r#"{"max_changes": "many"}"#));
    assert!(!bad.status.success());
    assert!(
        bad.error_text().contains("BadInput"),
        "{}",
        bad.error_text()
    );

    drop(lambda);
    stream.delete().await;
    src.drop().await;
}

/// Host and port of a `postgres://user@host:port/db` URL.
fn url_parts(url: &str) -> (String, u16) {
    let rest = url.split('@').nth(1).expect("user@host");
    let hostport = rest.split('/').next().expect("host:port");
    let (host, port) = hostport.split_once(':').expect("a port");
    (host.to_string(), port.parse().expect("a port number"))
}

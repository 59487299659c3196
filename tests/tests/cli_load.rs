//! The built `sluice` binary: `sluice load` on a local lake into PostgreSQL (some manifests,
//! then all of a table's), its refusals, and `sluice demo --target`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::{LocalStore, ObjectStore, PutMode};
use sluice::transform::Transformer;
use sluice::warehouse::LoadPlan;
use sluice_tests::{built_binary, pg_url, unique_name, workspace_root};

fn customer(id: u32, tier: &str, updated: &str) -> String {
    serde_json::json!({
        "customer_id": id, "full_name": "N", "email": format!("c{id}@example.com"),
        "signup_date": "2020-01-01T00:00:00Z", "loyalty_tier": tier,
        "lifetime_spend": "10.00", "updated_at": updated,
    })
    .to_string()
}

fn sluice(args: &[&str]) -> Output {
    Command::new(built_binary("sluice"))
        .args(args)
        .env_remove("SLUICE_LOG")
        .output()
        .expect("run sluice")
}

/// The `key=value` pairs of `sluice load`'s summary line.
fn summary(out: &Output) -> BTreeMap<String, String> {
    assert!(
        out.status.success(),
        "sluice load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("table="))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {:?}", out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn customers(p: &Pipeline) -> Vec<String> {
    let plan = LoadPlan::new(p.table("customers").expect("customers")).expect("plan");
    let mut c = sqlx::PgConnection::connect(&pg_url())
        .await
        .expect("connect");
    let sql = format!(
        "SELECT customer_id::text || '|' || loyalty_tier FROM {} ORDER BY 1",
        plan.final_table()
    );
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut c)
        .await
        .expect("select")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

/// The example pipeline in a schema of its own, with a key file; returns its path.
fn pipeline_file(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("examples/pipeline.toml"))
        .expect("example")
        .replace("secret = \"sluice/hash-key\"", "file = \"hash.key\"")
        .replace(
            "schema = \"lake\"",
            &format!("schema = \"{}\"", unique_name("cli_load")),
        );
    std::fs::write(dir.join("hash.key"), "k".repeat(32)).expect("key");
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).expect("pipeline");
    path
}

#[tokio::test]
async fn sluice_load_loads_some_then_all_manifests_of_a_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = pipeline_file(dir.path());
    let pipeline = Pipeline::from_path(&path).expect("pipeline");
    let lake = dir.path().join("lake");
    let store = LocalStore::new(&lake).expect("store");
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, None)
        .await
        .expect("key");
    let t = Transformer::new(pipeline.clone(), hash_key).expect("transformer");
    let catalog = LocalCatalog::new(dir.path().join("catalog.json"));
    let mut keys = Vec::new();
    for (key, lines) in [
        (
            "raw/customers/a.jsonl",
            [
                customer(1, "bronze", "2024-01-01T00:00:00Z"),
                customer(2, "bronze", "2024-01-01T00:00:00Z"),
            ],
        ),
        (
            "raw/customers/b.jsonl",
            [
                customer(2, "gold", "2024-02-01T00:00:00Z"),
                customer(3, "silver", "2024-02-01T00:00:00Z"),
            ],
        ),
    ] {
        store
            .put(
                key,
                lines.join("\n").into_bytes().into(),
                PutMode::Overwrite,
            )
            .await
            .expect("put");
        let s = t
            .transform_object(&store, &catalog, key, None)
            .await
            .expect("transform");
        keys.push(s.manifest_key);
    }
    let (p, l, url) = (
        path.to_str().expect("utf8"),
        lake.to_str().expect("utf8"),
        pg_url(),
    );
    let base = [
        "load",
        "--pipeline",
        p,
        "--lake",
        l,
        "--table",
        "customers",
        "--target",
        &url,
    ];

    // One manifest.
    let mut args = base.to_vec();
    args.extend(["--manifest", &keys[0]]);
    let s = summary(&sluice(&args));
    assert_eq!(s["manifests"], "1");
    assert_eq!(
        (
            s["expected"].as_str(),
            s["staged"].as_str(),
            s["merged"].as_str()
        ),
        ("2", "2", "2"),
        "{s:?}"
    );
    assert_eq!(s["mismatch"], "none");
    assert!(store.head(&s["record"]).await.is_ok(), "{s:?}");
    assert_eq!(customers(&pipeline).await, ["1|bronze", "2|bronze"]);

    // Every manifest of the table (the default): 1 comes again (stale), 2 twice in the batch
    // (the newer wins), 3 is new.
    let s = summary(&sluice(&base));
    assert_eq!(s["manifests"], "2");
    assert_eq!(
        (
            s["expected"].as_str(),
            s["merged"].as_str(),
            s["stale"].as_str(),
            s["duplicates"].as_str()
        ),
        ("4", "2", "1", "1"),
        "{s:?}"
    );
    assert_eq!(s["mismatch"], "none");
    assert_eq!(
        customers(&pipeline).await,
        ["1|bronze", "2|gold", "3|silver"]
    );

    // Refusals, each naming what to fix.
    let no_target = failure(&sluice(&base[..7]));
    assert!(no_target.contains("--target"), "{no_target}");
    let mut funnel = base.to_vec();
    funnel[6] = "funnel";
    let e = failure(&sluice(&funnel));
    assert!(e.contains("no [tables.warehouse] section"), "{e}");
    let mut wrong = base.to_vec();
    wrong.extend(["--manifest", "manifests/funnel/0000000000000000.json"]);
    let e = failure(&sluice(&wrong));
    assert!(e.contains("manifests/funnel/0000000000000000.json"), "{e}");
    let mut missing = base.to_vec();
    missing.extend(["--manifest", "manifests/customers/0000000000000000.json"]);
    let e = failure(&sluice(&missing));
    assert!(e.contains("not found"), "{e}");
    assert_eq!(
        customers(&pipeline).await,
        ["1|bronze", "2|gold", "3|silver"],
        "nothing changed"
    );
}

#[tokio::test]
async fn sluice_demo_with_a_target_loads_and_reconciles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let url = pg_url();
    let out = sluice(&[
        "demo",
        "--dir",
        demo.to_str().expect("utf8"),
        "--rows",
        "500",
        "--target",
        &url,
    ]);
    assert!(
        out.status.success(),
        "sluice demo --target failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // customers: 500 customers in the sample; a first load merges them all, a later run of the
    // suite on the same database finds them stale. Either way nothing goes missing.
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("customers ") && l.ends_with("none"))
        .unwrap_or_else(|| panic!("no reconciled customers row in:\n{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..3], ["500", "500"], "expected, staged: {stdout}");
    let merged: u64 = row[3].parse().expect("merged");
    let stale: u64 = row[4].parse().expect("stale");
    assert_eq!(merged + stale, 500, "{stdout}");
    assert!(
        stdout.contains("funnel: not loaded (no [tables.warehouse] section"),
        "{stdout}"
    );
    let pipeline = Pipeline::from_path(&demo.join("pipeline.toml")).expect("demo pipeline");
    assert_eq!(customers(&pipeline).await.len(), 500);
}

#[test]
fn warehouse_ddl_sets_case_sensitivity_before_creating_upper_case_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        r#"
[[tables]]
name = "orders"
raw_prefix = "raw/orders/"
format = "jsonl"
partition_by = "ts"
dedup = { key = ["id"], order_by = "v" }
catalog = { database = "db" }
warehouse = { schema = "Sales", table = "Orders", merge_keys = ["id"] }
columns = [
  { name = "id", type = "int", required = true },
  { name = "v", type = "int", required = true },
  { name = "ts", type = "timestamp" },
]
"#,
    )
    .expect("write");
    let out = sluice(&[
        "warehouse",
        "ddl",
        "--pipeline",
        path.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", failure(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let set = text
        .find("SET enable_case_sensitive_identifier TO true;")
        .unwrap_or_else(|| panic!("no SET in:\n{text}"));
    let create = text
        .find("CREATE SCHEMA IF NOT EXISTS \"Sales\"")
        .unwrap_or_else(|| panic!("no CREATE in:\n{text}"));
    assert!(set < create, "the SET comes first:\n{text}");
    assert!(
        text.contains("CREATE TABLE IF NOT EXISTS \"Sales\".\"Orders\""),
        "{text}"
    );
}

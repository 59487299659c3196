//! The handler on a local lake with the PostgreSQL executor: the event fixtures of `events/`,
//! manifests made by the real transform, rows read back from PostgreSQL (`SLUICE_TEST_PG_URL`,
//! which scripts/test sets). The bootstrap under `cargo lambda` is tested in `tests/`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::manifest::Manifest;
use sluice::lake::{layout, LocalStore, ObjectStore, PutMode};
use sluice::transform::Transformer;
use sluice::warehouse::{lease, LoadPlan, PgTarget, Target};

use super::*;

type TestResult = Result<(), Box<dyn Error>>;

const SQS_EVENT: &str = include_str!("../../../events/sqs-manifests.json");
const S3_EVENT: &str = include_str!("../../../events/s3-manifest.json");
const MANUAL: &str = include_str!("../../../events/load-manual.json");
const EXAMPLE: &str = include_str!("../../../examples/pipeline.toml");

/// The raw objects whose manifests the fixtures name, and the fixtures' message ids.
const FUNNEL_RAW: &str = "raw/funnel/2019-10 sample+1.csv";
const CUSTOMERS_RAW: [&str; 2] = [
    "raw/customers/crm-2024-01.jsonl",
    "raw/customers/crm-2024-02.jsonl",
];
const FUNNEL_MSG: &str = "2e1424d4-f796-459a-8184-9c92662be6da";
const CUSTOMERS_MSGS: [&str; 2] = [
    "7b2b4c6e-2b4c-4e9d-9f0e-1f6a3c8d5e21",
    "c80e8021-a70a-42c7-a470-796e1186f753",
];

/// A warehouse section for the funnel, for these tests only (`schema` is replaced below).
const FUNNEL_WAREHOUSE: &str = "warehouse = { schema = \"lake\", merge_keys = [\"user_session\", \"event_type\", \"product_id\"], version_column = \"event_time\" }";

/// Three events, one without a session (a NULL merge key the loader quarantines), one bad time.
const FUNNEL_CSV: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
    2019-10-01 00:00:00 UTC,view,1,2,,acme,1.5,7,s1\n\
    2019-11-02 00:00:00 UTC,cart,1,2,,acme,1.5,,s2\n\
    2019-10-03 00:00:00 UTC,view,2,2,,acme,2.5,8,\n\
    not a time,view,1,2,,acme,1.5,7,s3\n";

fn customer(id: u32, tier: &str, updated: &str) -> String {
    json!({
        "customer_id": id, "full_name": "N", "email": format!("c{id}@example.com"),
        "signup_date": "2020-01-01T00:00:00Z", "loyalty_tier": tier,
        "lifetime_spend": "10.00", "updated_at": updated,
    })
    .to_string()
}

fn pg_url() -> String {
    match std::env::var("SLUICE_TEST_PG_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "SLUICE_TEST_PG_URL is not set: run the suite with scripts/test, or create a database \
             (createdb -h 127.0.0.1 -U postgres DB) and export \
             SLUICE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/DB"
        ),
    }
}

/// A schema name no other test uses.
fn unique_schema() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "loader_p{}n{}t{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

struct Lake {
    _dir: tempfile::TempDir,
    store: Arc<dyn ObjectStore>,
    deps: Deps,
    funnel_manifest: Manifest,
}

/// The example pipeline in a schema of its own (funnel lake-only when `funnel_loads` is off),
/// the fixtures' raw objects transformed into a local lake, and the PostgreSQL target.
async fn lake(funnel_loads: bool) -> Result<Lake, Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("hash.key"), "k".repeat(32))?;
    let mut text = EXAMPLE.replace("secret = \"sluice/hash-key\"", "file = \"hash.key\"");
    if funnel_loads {
        // The example keeps the funnel in the lake (no version column outside its identity);
        // here it gets a warehouse section so that one batch spans two loaded tables.
        let dedup = "dedup = { key = [\"user_session\", \"event_time\", \"event_type\", \"product_id\"] }\n";
        assert!(
            text.contains(dedup),
            "the example's funnel dedup line changed"
        );
        text = text.replacen(dedup, &format!("{dedup}{FUNNEL_WAREHOUSE}\n"), 1);
    }
    let text = text.replace(
        "schema = \"lake\"",
        &format!("schema = \"{}\"", unique_schema()),
    );
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, text)?;
    let pipeline = Pipeline::from_path(&path)?;
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, None).await?;
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("lake"))?);
    let catalog = LocalCatalog::new(dir.path().join("catalog.json"));
    let raw = [
        (FUNNEL_RAW, FUNNEL_CSV.to_string()),
        (
            CUSTOMERS_RAW[0],
            [
                customer(1, "bronze", "2024-01-01T00:00:00Z"),
                customer(2, "bronze", "2024-01-01T00:00:00Z"),
            ]
            .join("\n"),
        ),
        (
            CUSTOMERS_RAW[1],
            [
                customer(2, "gold", "2024-02-01T00:00:00Z"),
                customer(3, "silver", "2024-02-01T00:00:00Z"),
            ]
            .join("\n"),
        ),
    ];
    let transformer = Transformer::new(pipeline.clone(), hash_key)?;
    let mut manifests = Vec::new();
    for (key, body) in raw {
        store
            .put(key, body.into_bytes().into(), PutMode::Overwrite)
            .await?;
        let s = transformer
            .transform_object(store.as_ref(), &catalog, key, None)
            .await?;
        manifests.push(s.manifest_key);
    }
    // The fixtures name exactly these manifests.
    for m in &manifests {
        assert!(
            SQS_EVENT.contains(m.as_str()),
            "events/sqs-manifests.json lacks {m}"
        );
    }
    let funnel_manifest =
        Manifest::from_json(&store.get_bytes(&manifests[0]).await?, &manifests[0])?;
    let deps = Deps {
        pipeline,
        lakes: Lakes::Fixed(store.clone()),
        target: Target::Postgres(PgTarget::connect(&pg_url()).await?),
        iam_role: String::new(),
        emit_metrics: false,
    };
    Ok(Lake {
        _dir: dir,
        store,
        deps,
        funnel_manifest,
    })
}

fn invocation(id: &str) -> Invocation {
    Invocation {
        request_id: id.into(),
        deadline_ms: now_ms() + 60_000,
    }
}

/// Rows of a final table as text, ordered; None when the table does not exist.
async fn rows(l: &Lake, table: &str, select: &str) -> Result<Option<Vec<String>>, Box<dyn Error>> {
    let cfg = l.deps.pipeline.table(table).ok_or("no such table")?;
    let plan = LoadPlan::new(cfg)?;
    let mut c = sqlx::PgConnection::connect(&pg_url()).await?;
    let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .bind(plan.final_table())
        .fetch_one(&mut c)
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let sql = format!(
        "SELECT ({select})::text FROM {} ORDER BY 1",
        plan.final_table()
    );
    let got = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut c).await?;
    Ok(Some(got.iter().map(|r| r.get::<String, _>(0)).collect()))
}

async fn customers(l: &Lake) -> Result<Option<Vec<String>>, Box<dyn Error>> {
    rows(l, "customers", "customer_id::text || '|' || loyalty_tier").await
}

async fn funnel(l: &Lake) -> Result<Option<Vec<String>>, Box<dyn Error>> {
    rows(l, "funnel", "user_session || '|' || event_type").await
}

fn report<'a>(r: &'a Response, table: &str) -> &'a TableReport {
    r.loads
        .iter()
        .find(|l| l.table == table)
        .unwrap_or_else(|| panic!("no report for {table}: {r:?}"))
}

fn counts(r: &TableReport) -> LoadCounts {
    match &r.outcome {
        TableOutcome::Loaded {
            counts, mismatch, ..
        } => {
            assert_eq!(*mismatch, None, "{r:?}");
            *counts
        }
        other => panic!("{} not loaded: {other:?}", r.table),
    }
}

fn failures(r: &Response) -> Vec<&str> {
    let Some(failures) = &r.batch_item_failures else {
        panic!("not an SQS response: {r:?}");
    };
    failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[test]
fn the_lease_outlives_the_invocation() {
    let inv = Invocation {
        request_id: "r".into(),
        deadline_ms: 1_000_000 + 300_000,
    };
    assert_eq!(
        inv.lease_ttl(1_000_000),
        Duration::from_secs(300) + LEASE_MARGIN
    );
    assert_eq!(
        inv.lease_ttl(2_000_000),
        DEFAULT_LEASE_TTL + LEASE_MARGIN,
        "past the deadline"
    );
    let unknown = Invocation {
        request_id: "r".into(),
        deadline_ms: 0,
    };
    assert_eq!(
        unknown.lease_ttl(1_000_000),
        DEFAULT_LEASE_TTL + LEASE_MARGIN
    );
    assert_eq!(unknown.run_until(1_000_000), None);
    // The warehouse stops FINISH_MARGIN before the deadline (now, when that is already past).
    let left = Duration::from_secs(300) - FINISH_MARGIN;
    let before = Instant::now();
    let Some(until) = inv.run_until(1_000_000) else {
        panic!("no deadline");
    };
    let after = Instant::now();
    assert!(before + left <= until && until <= after + left);
    let Some(late) = inv.run_until(1_000_000 + 299_000) else {
        panic!("no deadline");
    };
    assert!(late <= Instant::now(), "past the finish margin: now");
    // Already past (cargo lambda's emulator sends the timeout, not a time): unknown.
    assert_eq!(inv.run_until(2_000_000), None);
    let relative = Invocation {
        request_id: "r".into(),
        deadline_ms: 600_000,
    };
    assert_eq!(relative.run_until(now_ms()), None);
}

#[tokio::test]
async fn an_sqs_batch_loads_each_table_once() -> TestResult {
    let l = lake(true).await?;
    let r = handle(
        &l.deps,
        &invocation("req-1"),
        serde_json::from_str(SQS_EVENT)?,
    )
    .await?;
    assert_eq!(failures(&r), Vec::<&str>::new(), "{r:?}");
    assert_eq!(r.loads.len(), 2, "one load per table: {r:?}");
    // Customers: two manifests (two messages) in one load; customer 2 twice, the newer wins.
    let c = report(&r, "customers");
    assert_eq!(c.manifests.len(), 2);
    let got = counts(c);
    assert_eq!(
        (got.expected, got.staged, got.merged, got.duplicates),
        (4, 4, 3, 1),
        "{got:?}"
    );
    // Funnel: the event without a session has a NULL merge key: quarantined by the load.
    let got = counts(report(&r, "funnel"));
    assert_eq!(
        (got.expected, got.staged, got.merged, got.null_keys),
        (3, 3, 2, 1),
        "{got:?}"
    );
    assert_eq!(
        customers(&l).await?,
        Some(vec!["1|bronze".into(), "2|gold".into(), "3|silver".into()])
    );
    assert_eq!(
        funnel(&l).await?,
        Some(vec!["s1|view".into(), "s2|cart".into()])
    );
    // The per-load records are in the lake, and the response says where.
    for t in &r.loads {
        let TableOutcome::Loaded { record_key, .. } = &t.outcome else {
            panic!("{t:?}")
        };
        assert!(
            record_key.starts_with(&layout::loads_prefix(&t.table)),
            "{record_key}"
        );
        l.store.head(record_key).await?;
    }
    // What Lambda reads, spelled as it wants it.
    let v = serde_json::to_value(&r)?;
    assert_eq!(v["batchItemFailures"], json!([]));
    assert_eq!(v["loads"][0]["outcome"], "loaded");
    assert_eq!(v["loads"][0]["counts"]["merged"], 3);

    // The same batch again (a redelivery): nothing changes, every row is stale.
    let again = handle(
        &l.deps,
        &invocation("req-2"),
        serde_json::from_str(SQS_EVENT)?,
    )
    .await?;
    assert_eq!(failures(&again), Vec::<&str>::new());
    let got = counts(report(&again, "customers"));
    assert_eq!(
        (got.merged, got.stale, got.duplicates),
        (0, 3, 1),
        "{got:?}"
    );
    assert_eq!(customers(&l).await?.map(|v| v.len()), Some(3));
    Ok(())
}

#[tokio::test]
async fn a_failed_load_returns_only_its_tables_messages() -> TestResult {
    let l = lake(true).await?;
    // A curated file of the funnel is gone: its load fails, naming it.
    let gone = l.funnel_manifest.files[0].key.clone();
    l.store.delete(&gone).await?;
    let r = handle(
        &l.deps,
        &invocation("req-1"),
        serde_json::from_str(SQS_EVENT)?,
    )
    .await?;
    assert_eq!(failures(&r), vec![FUNNEL_MSG], "{r:?}");
    match &report(&r, "funnel").outcome {
        TableOutcome::Failed { kind, error } => {
            assert_eq!(*kind, ErrorKind::BadInput);
            assert!(error.contains(&gone), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(report(&r, "customers")).merged, 3);
    assert_eq!(customers(&l).await?.map(|v| v.len()), Some(3));
    assert_eq!(
        funnel(&l).await?.unwrap_or_default(),
        Vec::<String>::new(),
        "nothing merged"
    );
    Ok(())
}

#[tokio::test]
async fn a_busy_table_returns_its_messages() -> TestResult {
    let l = lake(true).await?;
    let held = lease::acquire(
        l.store.as_ref(),
        "customers",
        "another-invocation",
        Duration::from_secs(600),
        now_ms(),
    )
    .await?;
    assert!(matches!(held, lease::Acquired::Held(_)), "{held:?}");
    let r = handle(
        &l.deps,
        &invocation("req-1"),
        serde_json::from_str(SQS_EVENT)?,
    )
    .await?;
    assert_eq!(failures(&r), CUSTOMERS_MSGS.to_vec(), "{r:?}");
    match &report(&r, "customers").outcome {
        TableOutcome::Busy { holder, .. } => assert_eq!(holder, "another-invocation"),
        other => panic!("{other:?}"),
    }
    assert_eq!(customers(&l).await?, None, "nothing done while busy");
    assert!(l
        .store
        .list(&layout::loads_prefix("customers"))
        .await?
        .is_empty());
    assert_eq!(counts(report(&r, "funnel")).merged, 2);
    Ok(())
}

#[tokio::test]
async fn unreadable_messages_fail_and_strangers_are_acknowledged() -> TestResult {
    // Funnel is lake-only here: its manifests are acknowledged without a load.
    let l = lake(false).await?;
    let mut event: Value = serde_json::from_str(SQS_EVENT)?;
    let records = event["Records"].as_array_mut().ok_or("Records")?;
    let mut extra = records[0].clone();
    extra["messageId"] = json!("not-json");
    extra["body"] = json!("manifests/customers/x.json");
    records.push(extra);
    let mut extra = records[0].clone();
    extra["messageId"] = json!("a-raw-key");
    extra["body"] = json!(records[0]["body"]
        .as_str()
        .ok_or("body")?
        .replace("manifests/funnel/6803e28260d2f0ef.json", "raw/funnel/x.csv"));
    records.push(extra);
    let r = handle(&l.deps, &invocation("req-1"), event).await?;
    assert_eq!(failures(&r), vec!["not-json"], "{r:?}");
    assert_eq!(
        r.ignored,
        vec!["s3://sluice-lake/raw/funnel/x.csv".to_string()]
    );
    assert!(
        matches!(report(&r, "funnel").outcome, TableOutcome::NotLoaded { .. }),
        "{r:?}"
    );
    assert_eq!(counts(report(&r, "customers")).merged, 3);
    assert!(l
        .store
        .list(&layout::loads_prefix("funnel"))
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn s3_events_and_manual_payloads_load_or_fail_the_invocation() -> TestResult {
    let l = lake(true).await?;
    let r = handle(
        &l.deps,
        &invocation("req-1"),
        serde_json::from_str(S3_EVENT)?,
    )
    .await?;
    assert_eq!(r.batch_item_failures, None);
    assert_eq!(r.loads.len(), 1, "{r:?}");
    assert_eq!(counts(report(&r, "customers")).merged, 3);
    assert_eq!(customers(&l).await?.map(|v| v.len()), Some(3));

    // The manual payload names the same manifests: a replay, every row stale.
    let r = handle(&l.deps, &invocation("req-2"), serde_json::from_str(MANUAL)?).await?;
    let got = counts(report(&r, "customers"));
    assert_eq!((got.staged, got.merged, got.stale), (4, 0, 3), "{got:?}");

    // A manifest that is not there: the invocation fails, BadInput, naming it.
    let missing = json!({ "bucket": "sluice-lake", "table": "customers", "manifests": ["manifests/customers/0000000000000000.json"] });
    let e = handle(&l.deps, &invocation("req-3"), missing)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput, "{e}");
    assert!(
        e.message
            .contains("manifests/customers/0000000000000000.json"),
        "{e}"
    );

    // The table's lease is held: Retryable, so S3 (or whoever invoked) tries again.
    lease::acquire(
        l.store.as_ref(),
        "customers",
        "other",
        Duration::from_secs(600),
        now_ms(),
    )
    .await?;
    let e = handle(
        &l.deps,
        &invocation("req-4"),
        serde_json::from_str(S3_EVENT)?,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retryable, "{e}");
    assert!(e.message.contains("being loaded by other"), "{e}");

    // A manual load of a table without a warehouse section is refused before anything runs.
    let l = lake(false).await?;
    let e = handle(
        &l.deps,
        &invocation("req-5"),
        json!({ "bucket": "b", "table": "funnel", "manifests": ["manifests/funnel/6803e28260d2f0ef.json"] }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
    assert!(e.message.contains("[tables.warehouse]"), "{e}");
    Ok(())
}

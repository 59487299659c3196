//! `sluice demo`: sample data through the real transform on a local lake, in one command; with
//! `--target`, on through the real loader into PostgreSQL.

use std::fmt::Write as _;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use sluice::config::Pipeline;
use sluice::lake::{ObjectStore, PutMode};
use sluice::transform::Transformer;
use sluice::warehouse::{open_target, LoadPlan};

use crate::BoxError;

const EXAMPLE: &str = include_str!("../../examples/pipeline.toml");

pub(crate) async fn run(dir: &Path, rows: usize, target: Option<&str>) -> Result<(), BoxError> {
    std::fs::create_dir_all(dir)?;
    // A fresh random key per demo directory; kept so re-runs hash the same way.
    let key_path = dir.join("hash.key");
    if !key_path.exists() {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        std::fs::write(&key_path, hex_string(&key))?;
    }
    let pipeline_path = dir.join("pipeline.toml");
    let text = EXAMPLE.replace("secret = \"sluice/hash-key\"", "file = \"hash.key\"");
    std::fs::write(&pipeline_path, text)?;

    let pipeline = Pipeline::from_path(&pipeline_path)?;
    let hash_key = sluice::secrets::load_hash_key(&pipeline, None, None).await?;
    let lake = dir.join("lake");
    let (store, catalog) = crate::open_lake(&lake.to_string_lossy()).await?;

    // The sample objects go where the pipeline says each table's raw objects live.
    let raw_key = |table: &str, file: &str| -> Result<String, BoxError> {
        let t = pipeline
            .table(table)
            .ok_or_else(|| format!("the example pipeline has no table {table}"))?;
        Ok(format!("{}{file}", t.raw_prefix))
    };
    let funnel_key = raw_key("funnel", "funnel-demo.csv")?;
    let customers_key = raw_key("customers", "customers-demo.jsonl")?;
    let mut rng = StdRng::seed_from_u64(42);
    let samples = [
        (&funnel_key, funnel_csv(&mut rng, rows)),
        (&customers_key, customers_jsonl(&mut rng, 500)),
    ];
    for (key, body) in samples {
        store
            .put(key, body.into_bytes().into(), PutMode::Overwrite)
            .await?;
    }
    let t = Transformer::new(pipeline, hash_key)?;

    println!("Sluice demo: a local lake in {}", lake.display());
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>12} {:>11} {:>6}",
        "table", "rows in", "rows out", "dup", "quarantined", "partitions", "files"
    );
    let mut details = String::new();
    let mut manifests: Vec<(String, String)> = Vec::new();
    for key in [&funnel_key, &customers_key] {
        let s = t
            .transform_object(store.as_ref(), catalog.as_ref(), key, None)
            .await?;
        let c = s.counts;
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>12} {:>11} {:>6}",
            s.table,
            c.rows_read,
            c.rows_written,
            c.rows_duplicate,
            c.rows_quarantined,
            s.partitions.len(),
            s.files.len()
        );
        let _ = writeln!(details, "  {}: manifest {}", s.table, s.manifest_key);
        manifests.push((s.table.clone(), s.manifest_key.clone()));
        if let Some(q) = &s.quarantine_key {
            let _ = writeln!(
                details,
                "  {}: quarantined rows (with line, column and reason) in {q}",
                s.table
            );
        }
    }
    println!();
    print!("{details}");
    println!(
        "  Parquet under {}/{}, catalog in {}/_catalog/catalog.json",
        lake.display(),
        sluice::lake::layout::CURATED,
        lake.display()
    );
    println!("  Pipeline file: {}", pipeline_path.display());
    if let Some(url) = target {
        load(t.pipeline(), store.as_ref(), url, &manifests).await?;
    }
    Ok(())
}

/// Loads this run's manifests of every table with a warehouse section, as the redshift-loader
/// does, and prints each load's reconciliation.
async fn load(
    pipeline: &Pipeline,
    store: &dyn ObjectStore,
    url: &str,
    manifests: &[(String, String)],
) -> Result<(), BoxError> {
    let executor = open_target(Some(url), pipeline, None).await?.executor(None);
    println!();
    println!("Loaded into PostgreSQL (the loader's merge, one transaction per table):");
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10}  mismatch",
        "table", "expected", "staged", "merged", "stale", "deleted", "duplicates", "NULL keys"
    );
    let mut details = String::new();
    for t in &pipeline.tables {
        let keys: Vec<String> = manifests
            .iter()
            .filter(|(table, _)| *table == t.name)
            .map(|(_, k)| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        if t.warehouse.is_none() {
            let _ = writeln!(
                details,
                "  {}: not loaded (no [tables.warehouse] section: it stays in the lake)",
                t.name
            );
            continue;
        }
        let s = crate::load::load_table(pipeline, store, executor.as_ref(), &t.name, &keys).await?;
        let c = s.counts;
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>10}  {}",
            s.table,
            c.expected,
            c.staged,
            c.merged,
            c.stale,
            c.deleted,
            c.duplicates,
            c.null_keys,
            s.mismatch.as_deref().unwrap_or("none")
        );
        let final_table = LoadPlan::new(t)?.final_table();
        let _ = writeln!(
            details,
            "  {}: table {final_table}, load record {}",
            s.table, s.record_key
        );
    }
    println!();
    print!("{details}");
    println!("  Run the demo again: the same rows come back stale, the tables stay as they are.");
    Ok(())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Clickstream rows shaped like `../shared/bench/gen_funnel.py`, ~2% exact duplicate lines,
/// and a few broken rows (bad timestamp, short row, bad number) to show quarantine.
fn funnel_csv(rng: &mut StdRng, rows: usize) -> String {
    let types = [
        "view",
        "view",
        "view",
        "view",
        "view",
        "view",
        "cart",
        "remove_from_cart",
        "purchase",
    ];
    let cats = [
        "electronics.smartphone",
        "appliances.kitchen.refrigerators",
        "computers.notebook",
        "",
        "apparel.shoes",
    ];
    let brands = [
        "samsung", "apple", "xiaomi", "", "huawei", "lenovo", "bosch",
    ];
    let sessions: Vec<String> = (0..500)
        .map(|_| format!("{:032x}", rng.random::<u128>()))
        .collect();
    let mut out = String::from("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n");
    let mut prev = String::new();
    for i in 0..rows {
        if i == rows / 3 {
            out.push_str("2019-13-45 99:00:00 UTC,view,1,2,,,1.00,5,broken-date\n");
            out.push_str("2019-11-02 10:00:00 UTC,view,short-row\n");
            out.push_str("2019-11-02 10:00:00 UTC,view,not-a-number,2,,,1.00,5,bad-product\n");
        }
        if !prev.is_empty() && rng.random_bool(0.02) {
            out.push_str(&prev);
            continue;
        }
        let secs = rng.random_range(0..214 * 86_400);
        let (d, s) = (secs / 86_400, secs % 86_400);
        let (y, m, dd) = add_days(2019, 10, 1, d);
        let line = format!(
            "{y:04}-{m:02}-{dd:02} {:02}:{:02}:{:02} UTC,{},{},{},{},{},{:.2},{},{}\n",
            s / 3600,
            s / 60 % 60,
            s % 60,
            types[rng.random_range(0..types.len())],
            rng.random_range(1_000_000..60_000_000),
            2_053_013_550_000_000_000u64 + rng.random_range(0..10_000_000u64),
            cats[rng.random_range(0..cats.len())],
            brands[rng.random_range(0..brands.len())],
            f64::from(rng.random_range(100..250_000)) / 100.0,
            rng.random_range(500_000_000..600_000_000),
            sessions[rng.random_range(0..sessions.len())],
        );
        out.push_str(&line);
        prev = line;
    }
    out
}

fn add_days(y: i32, m: u32, d: u32, n: u32) -> (i32, u32, u32) {
    let (mut y, mut m, mut d) = (y, m, d);
    for _ in 0..n {
        let dim = match m {
            4 | 6 | 9 | 11 => 30,
            2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
            2 => 28,
            _ => 31,
        };
        d += 1;
        if d > dim {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
    (y, m, d)
}

/// Supermarket customers as CRM JSON lines: several versions per customer (the latest
/// `updated_at` wins), a date of birth, a JSON address, and a few broken lines.
fn customers_jsonl(rng: &mut StdRng, customers: usize) -> String {
    let cities = [
        ("Leeds", "LS1", 53.80, -1.55),
        ("York", "YO1", 53.96, -1.08),
        ("Bath", "BA1", 51.38, -2.36),
    ];
    let tiers = ["bronze", "silver", "gold"];
    let mut out = String::new();
    for id in 1..=customers {
        let versions = rng.random_range(1..=3);
        for v in 0..versions {
            let (city, pc, lat, lon) = cities[rng.random_range(0..cities.len())];
            let address = serde_json::json!({
                "street": format!("{} High Street", rng.random_range(1..200)),
                "city": city, "postcode": pc, "geo": {"lat": lat, "lon": lon}, "tags": ["home"],
            });
            let row = serde_json::json!({
                "customer_id": id,
                "full_name": format!("Customer {id}"),
                "email": format!("customer{id}@example.com"),
                "date_of_birth": format!("{}-{:02}-{:02}", rng.random_range(1940..2006), rng.random_range(1..13), rng.random_range(1..29)),
                "signup_date": format!("20{:02}-{:02}-{:02}T09:00:00Z", rng.random_range(15..24), rng.random_range(1..13), rng.random_range(1..29)),
                "loyalty_tier": tiers[v.min(2)],
                "lifetime_spend": format!("{}.{:02}", rng.random_range(0..5000), rng.random_range(0..100)),
                "address": if id % 2 == 0 { address.to_string().into() } else { address },
                "updated_at": format!("2024-0{}-01T00:00:00Z", v + 1),
            });
            out.push_str(&row.to_string());
            out.push('\n');
        }
    }
    out.push_str("{\"customer_id\": 9001, \"signup_date\": \"2020-01-01\", \"updated_at\": \"2024-01-01\", \"address\": \"{broken json\"}\n");
    out.push_str("{\"customer_id\": \"not-a-number\", \"signup_date\": \"2020-01-01\", \"updated_at\": \"2024-01-01\"}\n");
    out.push_str("this line is not JSON at all\n");
    out
}

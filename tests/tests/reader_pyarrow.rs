//! The curated Parquet read by another implementation: pyarrow (what pandas, DuckDB-via-Arrow
//! and many notebooks use) reads the local lake the transform wrote, as a hive-partitioned
//! dataset. Types, PII columns, hashes and row counts are checked from its point of view.

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use serde_json::Value;

use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::lake::{LocalStore, ObjectStore, PutMode};
use sluice::secrets::HashKey;
use sluice::transform::{Manifest, TransformSummary, Transformer};
use sluice_tests::{funnel_sample, hmac_hex, workspace_root, TEST_HASH_KEY};

const CUSTOMERS: &str = include_str!("../fixtures/customers.jsonl");

/// Reads `<lake>/curated/<table>/` for each table named after the lake directory and prints
/// one JSON object. Exit 3 when pyarrow cannot be imported.
const SCRIPT: &str = r#"
import json, os, sys
try:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
except ImportError as e:
    print(f"cannot import pyarrow: {e}", file=sys.stderr)
    sys.exit(3)

lake = sys.argv[1]
out = {"pyarrow": pa.__version__}
for table in sys.argv[2:]:
    base = os.path.join(lake, "curated", table)
    # Partition values as strings, as the Glue table declares them.
    partitioning = ds.partitioning(pa.schema([("year", pa.string()), ("month", pa.string())]), flavor="hive")
    d = ds.dataset(base, format="parquet", partitioning=partitioning)
    t = d.to_table()
    files = sorted(d.files)
    first = pq.ParquetFile(files[0])
    columns = {}
    for f in t.schema:
        col = t.column(f.name)
        if pa.types.is_timestamp(f.type):
            col = col.cast(pa.int64())
        elif pa.types.is_decimal(f.type) or pa.types.is_floating(f.type):
            col = col.cast(pa.string())
        columns[f.name] = col.to_pylist()
    out[table] = {
        "schema": {f.name: str(f.type) for f in t.schema},
        "file_schema": [f.name for f in first.schema_arrow],
        "logical_types": {first.schema.column(i).name: str(first.schema.column(i).logical_type) for i in range(len(first.schema))},
        "codecs": sorted({pq.ParquetFile(p).metadata.row_group(g).column(c).compression
                          for p in files
                          for g in range(pq.ParquetFile(p).metadata.num_row_groups)
                          for c in range(pq.ParquetFile(p).metadata.num_columns)}),
        "rows": t.num_rows,
        "files": {os.path.relpath(p, lake): pq.ParquetFile(p).metadata.num_rows for p in files},
        "columns": columns,
    }
print(json.dumps(out))
"#;

fn pyarrow_read(lake: &std::path::Path, tables: &[&str]) -> Value {
    let how = "scripts/test installs it (python3 -m pip install -r scripts/requirements-test.txt)";
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(lake)
        .args(tables)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); pyarrow reads the curated files here: {how}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!(
            "pyarrow is not installed for python3 ({}): {how}",
            stderr.trim()
        );
    }
    assert!(
        out.status.success(),
        "the pyarrow reader failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pyarrow reader printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn is_hex64(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn strings(v: &Value) -> Vec<Option<String>> {
    v.as_array()
        .expect("column list")
        .iter()
        .map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Row counts per file from the manifest, keyed like the reader's (`curated/...` under the lake).
async fn manifest_files(store: &LocalStore, s: &TransformSummary) -> BTreeMap<String, u64> {
    let m: Manifest =
        serde_json::from_slice(&store.get_bytes(&s.manifest_key).await.expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(m.counts, s.counts);
    m.files.iter().map(|f| (f.key.clone(), f.rows)).collect()
}

#[tokio::test]
async fn pyarrow_reads_the_curated_lake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let store = LocalStore::new(&lake).expect("local lake");
    let catalog = LocalCatalog::new(lake.join("_catalog/catalog.json"));
    let pipeline = Pipeline::from_path(&workspace_root().join("examples/pipeline.toml"))
        .expect("examples/pipeline.toml");
    let transformer = Transformer::new(
        pipeline,
        Some(HashKey::new(TEST_HASH_KEY.to_vec()).expect("key")),
    )
    .expect("transformer");

    let sample = funnel_sample(11, &[(2019, 10), (2019, 11)], 30);
    let (fkey, ckey) = ("raw/funnel/2019-10.csv", "raw/customers/crm.jsonl");
    store
        .put(fkey, Bytes::from(sample.csv.clone()), PutMode::Overwrite)
        .await
        .expect("put funnel");
    store
        .put(
            ckey,
            Bytes::from_static(CUSTOMERS.as_bytes()),
            PutMode::Overwrite,
        )
        .await
        .expect("put customers");
    let fs = transformer
        .transform_object(&store, &catalog, fkey, None)
        .await
        .expect("transform funnel");
    let cs = transformer
        .transform_object(&store, &catalog, ckey, None)
        .await
        .expect("transform customers");

    let got = pyarrow_read(&lake, &["funnel", "customers"]);

    // --- funnel
    let f = &got["funnel"];
    let schema: BTreeMap<String, String> =
        serde_json::from_value(f["schema"].clone()).expect("schema map");
    let want: BTreeMap<String, String> = [
        ("event_time", "timestamp[us, tz=UTC]"),
        ("event_type", "string"),
        ("product_id", "int64"),
        ("category_id", "int64"),
        ("category_code", "string"),
        ("brand", "string"),
        ("price", "double"),
        ("user_id_hash", "string"),
        ("user_session", "string"),
        ("year", "string"),
        ("month", "string"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        schema, want,
        "funnel as pyarrow sees it (pyarrow {})",
        got["pyarrow"]
    );
    assert!(
        !schema.contains_key("user_id"),
        "user_id must not reach the lake"
    );
    let logical = f["logical_types"]["event_time"].as_str().unwrap_or("");
    assert!(
        logical.contains("isAdjustedToUTC=true") && logical.contains("microseconds"),
        "event_time's Parquet logical type: {logical}"
    );
    assert_eq!(f["codecs"], serde_json::json!(["ZSTD"]));
    assert_eq!(f["rows"], fs.counts.rows_written);
    assert_eq!(f["rows"], sample.expected.len() as u64);
    let files: BTreeMap<String, u64> = serde_json::from_value(f["files"].clone()).expect("files");
    assert_eq!(
        files,
        manifest_files(&store, &fs).await,
        "files and rows per file = the manifest"
    );

    let cols = &f["columns"];
    let times: Vec<i64> =
        serde_json::from_value(cols["event_time"].clone()).expect("event_time as int64 µs");
    assert_eq!(
        sorted(times),
        sorted(sample.expected.iter().map(|r| r.event_time_us).collect())
    );
    let hashes = strings(&cols["user_id_hash"]);
    assert!(
        cols["user_id_hash"]
            .as_array()
            .expect("list")
            .iter()
            .all(|h| h.is_null() || is_hex64(h)),
        "64 lower-case hex"
    );
    assert_eq!(
        sorted(hashes),
        sorted(
            sample
                .expected
                .iter()
                .map(|r| r.user_id_hash.clone())
                .collect()
        )
    );
    let months = sorted(
        strings(&cols["year"])
            .into_iter()
            .zip(strings(&cols["month"]))
            .map(|(y, m)| (y.unwrap_or_default(), m.unwrap_or_default()))
            .collect::<Vec<_>>(),
    );
    let mut distinct = months.clone();
    distinct.dedup();
    assert_eq!(distinct, sample.partitions, "hive partitions, zero-padded");

    // --- customers
    let c = &got["customers"];
    let schema: BTreeMap<String, String> =
        serde_json::from_value(c["schema"].clone()).expect("schema map");
    for gone in [
        "full_name",
        "email",
        "address_street",
        "date_of_birth",
        "address",
        "street",
    ] {
        assert!(
            !schema.contains_key(gone),
            "{gone} must not reach the lake: {schema:?}"
        );
    }
    for (name, ty) in [
        ("customer_id", "int64"),
        ("email_hash", "string"),
        ("date_of_birth_age_band", "string"),
        ("signup_date", "timestamp[us, tz=UTC]"),
        ("lifetime_spend", "decimal128(12, 2)"),
        ("address_city", "string"),
        ("address_geo_lat", "double"),
        ("updated_at", "timestamp[us, tz=UTC]"),
    ] {
        assert_eq!(
            schema.get(name).map(String::as_str),
            Some(ty),
            "customers.{name}: {schema:?}"
        );
    }
    assert_eq!(c["rows"], cs.counts.rows_written);
    assert_eq!(c["rows"], 2);
    let files: BTreeMap<String, u64> = serde_json::from_value(c["files"].clone()).expect("files");
    assert_eq!(files, manifest_files(&store, &cs).await);
    let cols = &c["columns"];
    assert!(cols["email_hash"]
        .as_array()
        .expect("list")
        .iter()
        .all(is_hex64));
    assert_eq!(
        sorted(strings(&cols["email_hash"])),
        sorted(vec![
            Some(hmac_hex(TEST_HASH_KEY, "ada@example.org")),
            Some(hmac_hex(TEST_HASH_KEY, "emile@example.fr"))
        ])
    );
    assert_eq!(
        sorted(strings(&cols["lifetime_spend"])),
        vec![Some("1999.99".to_string()), Some("42.00".to_string())]
    );
    // The only text anywhere in the output that came from a name or an e-mail would be here.
    let all = c.to_string();
    for pii in ["Ada", "Lovelace", "Zola", "ada@example.org", "St James"] {
        assert!(!all.contains(pii), "{pii} reached the lake");
    }
}

//! Engine tests on the local lake and local catalog: rows read back from Parquet and compared.
//! What one input must become (typing, cleaning, flattening, PII, dedup, quarantine reasons,
//! key names) is in the golden cases, `tests/golden/`, which the PySpark job passes too; here
//! is what they cannot show: scale and batch breaks, memory bounds and file rolling, re-runs
//! and upgrades, schema changes, errors that refuse a whole object.
//! `events.rs`: a CSV table of events; `examples.rs`: the tables of `examples/pipeline.toml`;
//! `builtin.rs`: built-in columns named by a CSV header; `varchar.rs`: Redshift's VARCHAR and
//! VARBYTE limits on tables with a warehouse section; `cdc.rs`: change events
//! (`format = "cdc"`).

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;
use crate::catalog::LocalCatalog;
use crate::lake::{LocalStore, PutMode};

mod builtin;
mod cdc;
mod events;
mod examples;
mod varchar;

pub(crate) const TEST_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

struct Lake {
    _dir: tempfile::TempDir,
    store: LocalStore,
    catalog: LocalCatalog,
}

fn lake() -> Lake {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path()).expect("store");
    let catalog = LocalCatalog::new(dir.path().join("_catalog/catalog.json"));
    Lake {
        _dir: dir,
        store,
        catalog,
    }
}

fn transformer(toml_text: &str) -> Transformer {
    let p = Pipeline::parse(toml_text, "test").expect("pipeline");
    Transformer::new(p, Some(HashKey::new(TEST_KEY.to_vec()).expect("key"))).expect("transformer")
}

async fn put(l: &Lake, key: &str, body: &[u8]) {
    l.store
        .put(key, Bytes::copy_from_slice(body), PutMode::Overwrite)
        .await
        .expect("put");
}

/// Every row under `curated/<table>/`, rendered `col=value|…` in file order (files by key).
async fn rows(l: &Lake, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in l
        .store
        .list(&format!("curated/{table}/"))
        .await
        .expect("list")
    {
        let b = l.store.get_bytes(&m.key).await.expect("get");
        let reader = ParquetRecordBatchReaderBuilder::try_new(b)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            out.extend(crate::testing::render_rows(&batch.expect("batch")));
        }
    }
    out
}

async fn quarantine(l: &Lake, s: &TransformSummary) -> Vec<serde_json::Value> {
    match &s.quarantine_key {
        None => Vec::new(),
        Some(k) => String::from_utf8(l.store.get_bytes(k).await.expect("q").to_vec())
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect(),
    }
}

fn balanced(c: &Counts) {
    assert_eq!(
        c.rows_read,
        c.rows_written + c.rows_duplicate + c.rows_quarantined,
        "counts balance: {c:?}"
    );
}

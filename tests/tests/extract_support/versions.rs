//! Row versions of the end-to-end extract test as every reader renders them: the source's
//! rows, the parts in `raw/`, the Parquet files in `curated/` and the warehouse table, so that
//! one `Version` compares across all four (timestamps as extract writes them, decimals exact).

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};

/// Extract's timestamp rendering, for Arrow's formatter (chrono).
const ISO_ARROW: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// One row version, as the source, `raw/`, `curated/` and the warehouse all render it: the key
/// and `updated_at` first, so a sorted set groups a key's versions in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub shard: String,
    pub id: i64,
    pub updated_at: String,
    pub v: i64,
    pub amount: String,
    pub note: Option<String>,
    pub deleted: bool,
}

/// A row of a part read back (`read_part`).
pub fn raw_version(r: &Map<String, Value>) -> Version {
    let text = |c: &str| {
        r[c].as_str()
            .unwrap_or_else(|| panic!("{c} in {r:?}"))
            .to_string()
    };
    Version {
        shard: text("_shard"),
        id: r["id"].as_i64().expect("id"),
        updated_at: text("updated_at"),
        v: r["v"].as_i64().expect("v"),
        amount: text("amount"),
        note: r["note"].as_str().map(str::to_string),
        deleted: match r["_op"].as_str() {
            Some("d") => true,
            Some("u") => false,
            other => panic!("_op {other:?}"),
        },
    }
}

/// The versions of one curated batch, its values rendered as the other readers render them.
pub fn curated_versions(b: &RecordBatch) -> Vec<Version> {
    let opts = FormatOptions::new()
        .with_timestamp_format(Some(ISO_ARROW))
        .with_timestamp_tz_format(Some(ISO_ARROW));
    let column = |name: &str| -> Vec<Option<String>> {
        let a = b
            .column_by_name(name)
            .unwrap_or_else(|| panic!("curated column {name}"));
        let f = ArrayFormatter::try_new(a.as_ref(), &opts).expect("formatter");
        (0..a.len())
            .map(|i| a.is_valid(i).then(|| f.value(i).to_string()))
            .collect()
    };
    let [shard, id, updated_at, v, amount, note, op] =
        ["_shard", "id", "updated_at", "v", "amount", "note", "_op"].map(column);
    let number = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .expect("a number")
    };
    (0..b.num_rows())
        .map(|i| Version {
            shard: shard[i].clone().expect("_shard"),
            id: number(&id[i]),
            updated_at: updated_at[i].clone().expect("updated_at"),
            v: number(&v[i]),
            amount: amount[i].clone().expect("amount"),
            note: note[i].clone(),
            deleted: op[i].as_deref() == Some("d"),
        })
        .collect()
}

/// The last version of each key (versions sorted by key, then `updated_at`).
pub fn latest(versions: &[Version]) -> BTreeSet<Version> {
    let mut by_key: BTreeMap<(String, i64), &Version> = BTreeMap::new();
    for v in versions {
        let slot = by_key.entry((v.shard.clone(), v.id)).or_insert(v);
        if v.updated_at > slot.updated_at {
            *slot = v;
        }
    }
    by_key.into_values().cloned().collect()
}

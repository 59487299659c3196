//! Faults an independent review found in extract, each shown on a real MariaDB (and, where
//! the engines differ, PostgreSQL): rows a range could skip silently, zone-less timestamps on a
//! server that is not in UTC, parts another run wrote, non-unique keys, values in errors, and a
//! page that could outlive the deadline.

mod extract_support;

use extract_support::*;
use sluice::extract::{Extractor, Mode, ShardOutcome, Shards};

/// The error of a failed shard's only report, as text.
async fn failure(ex: &Extractor) -> String {
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    match &r[0].outcome {
        ShardOutcome::Failed(e) => e.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_null_updated_at_fails_the_shard_naming_the_column() {
    let shards = MyShards::create(1).await;
    shards
        .exec_all(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(100) NULL, \
             updated_at DATETIME(6) NULL)",
        )
        .await;
    shards
        .exec_all(
            "INSERT INTO items (id, v, updated_at) VALUES (1, 1, '2020-01-01 00:00:00'), (2, 2, NULL)",
        )
        .await;
    let var = url_env(&shards.url(0));
    let p = items_pipeline("mysql", &shards_toml(&[("s0", &var)]), "safety_lag_secs = 0");
    let lake = lake();
    let ex = Extractor::new(p, lake.store.clone());
    let e = failure(&ex).await;
    assert!(e.contains("column `updated_at`") && e.contains("NULL"), "{e}");
    assert!(
        versions(lake.store.as_ref(), "raw/items/").await.is_empty(),
        "nothing written while a row would be skipped"
    );
    // Once every row has a value, the run reads them all.
    shards
        .exec_all("UPDATE items SET updated_at = '2020-01-02 00:00:00' WHERE id = 2")
        .await;
    let r = ex
        .run_table("items", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    assert_eq!(extracted(&r[0]).rows, 2);
    shards.drop_all().await;
}

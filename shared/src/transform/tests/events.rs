//! A CSV table of events: dedup at scale, re-runs, schema changes, partitions and file rolling.

use super::*;

const EVENTS: &str = r#"
[hash_key]
file = "unused.key"

[[tables]]
name = "events"
raw_prefix = "raw/events/"
format = "csv"
partition_by = "ts"
dedup = { key = ["id"], order_by = "version" }
catalog = { database = "test_db" }
output = { batch_rows = BATCH }

[[tables.columns]]
name = "id"
type = "int"
required = true

[[tables.columns]]
name = "version"
type = "int"

[[tables.columns]]
name = "ts"
type = "timestamp"
required = true

[[tables.columns]]
name = "Note"
type = "string"

[[tables.columns]]
name = "email"
type = "string"
pii = { action = "hash" }
"#;

fn events(batch: usize) -> Transformer {
    transformer(&EVENTS.replace("BATCH", &batch.to_string()))
}

#[tokio::test]
async fn dedup_latest_version_wins_far_apart_across_batches() {
    // 3000 keys; each key appears three times with versions out of order, far apart.
    let mut csv = String::from("id,version,ts,Note,email\n");
    for pass in [2, 3, 1] {
        for id in 0..3000 {
            csv.push_str(&format!(
                "{id},{pass},2024-0{}-15 10:00:00 UTC,v{pass},u{id}@x.org\n",
                1 + id % 3
            ));
        }
    }
    let mut expected: Option<Vec<String>> = None;
    for batch in [1, 7, 8192] {
        let l = lake();
        put(&l, "raw/events/a.csv", csv.as_bytes()).await;
        let s = events(batch)
            .transform_object(&l.store, &l.catalog, "raw/events/a.csv", None)
            .await
            .expect("transform");
        assert_eq!(
            s.counts,
            Counts {
                rows_read: 9000,
                rows_written: 3000,
                rows_duplicate: 6000,
                rows_quarantined: 0
            }
        );
        let got = rows(&l, "events").await;
        assert_eq!(got.len(), 3000);
        assert!(
            got.iter()
                .all(|r| r.contains("|version=3|") && r.contains("|note=v3|")),
            "latest version only"
        );
        let mut ids: Vec<&str> = got
            .iter()
            .map(|r| r.split('|').next().unwrap_or(""))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3000, "each key once");
        match &expected {
            None => expected = Some(got),
            Some(e) => assert_eq!(&got, e, "batch size {batch} changes nothing"),
        }
    }
}

#[tokio::test]
async fn replay_is_idempotent_and_a_changed_object_leaves_only_new_rows() {
    let l = lake();
    let t = events(8192);
    let key = "raw/events/r.csv";
    put(
        &l,
        key,
        b"id,version,ts,Note,email\n1,1,2024-01-01,a,x\n2,1,2024-02-01,b,y\n3,1,2024-03-01,c,z\n",
    )
    .await;
    let first = t
        .transform_object(&l.store, &l.catalog, key, None)
        .await
        .expect("first");
    let keys1 = l.store.list("curated/").await.expect("list");
    let again = t
        .transform_object(&l.store, &l.catalog, key, None)
        .await
        .expect("again");
    let keys2 = l.store.list("curated/").await.expect("list");
    assert_eq!(
        keys1.iter().map(|m| &m.key).collect::<Vec<_>>(),
        keys2.iter().map(|m| &m.key).collect::<Vec<_>>()
    );
    // The same files (keys, partitions, rows, bytes); only the local store's ETags, which
    // change with every write, may differ.
    let without_etag = |files: &[ManifestFile]| {
        files
            .iter()
            .map(|f| ManifestFile {
                etag: None,
                ..f.clone()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(without_etag(&first.files), without_etag(&again.files));
    assert!(again.files.iter().all(|f| f.etag.is_some()));
    assert_eq!(rows(&l, "events").await.len(), 3);
    // The object changes: now only January and April.
    put(
        &l,
        key,
        b"id,version,ts,Note,email\n1,2,2024-01-01,a2,x\n4,1,2024-04-01,d,w\n",
    )
    .await;
    let changed = t
        .transform_object(&l.store, &l.catalog, key, None)
        .await
        .expect("changed");
    assert_eq!(changed.stale_files_deleted, 2);
    let got = rows(&l, "events").await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with("id=1|version=2|") && got[1].starts_with("id=4|"),
        "{got:?}"
    );
    let m: Manifest = serde_json::from_slice(
        &l.store
            .get_bytes(&changed.manifest_key)
            .await
            .expect("manifest"),
    )
    .expect("json");
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.counts.rows_written, 2);
    assert_eq!(m.source_key, key);
}

#[tokio::test]
async fn incompatible_type_change_is_refused_and_quarantined() {
    let l = lake();
    put(
        &l,
        "raw/events/a.csv",
        b"id,version,ts,Note,email\n1,1,2024-01-01,a,x\n",
    )
    .await;
    events(8192)
        .transform_object(&l.store, &l.catalog, "raw/events/a.csv", None)
        .await
        .expect("first");
    let changed = EVENTS.replace("BATCH", "8192").replace(
        "name = \"Note\"\ntype = \"string\"",
        "name = \"Note\"\ntype = \"int\"",
    );
    let err = transformer(&changed)
        .transform_object(&l.store, &l.catalog, "raw/events/a.csv", None)
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(err.to_string().contains("note"), "{err}");
    let q = l
        .store
        .get_bytes(&Layout::new("events", "raw/events/a.csv").quarantine_key)
        .await
        .expect("quarantined");
    assert!(String::from_utf8_lossy(&q).contains("\"column\":\"note\""));
    // A new nullable column is additive and accepted.
    let added = EVENTS.replace("BATCH", "8192")
        + "\n[[tables.columns]]\nname = \"extra\"\ntype = \"float\"\n";
    let s = transformer(&added)
        .transform_object(&l.store, &l.catalog, "raw/events/a.csv", None)
        .await
        .expect("additive");
    assert_eq!(s.added_columns, vec!["extra".to_string()]);
    assert_eq!(s.missing_columns, vec!["extra".to_string()]);
}

#[tokio::test]
async fn gzip_input_and_unknown_table() {
    let l = lake();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"id,version,ts,Note,email\n1,1,2024-01-01,a,x\n2,1,2024-01-02,b,y\n")
        .expect("gz");
    put(&l, "raw/events/z.csv.gz", &gz.finish().expect("gz")).await;
    let t = events(8192);
    let s = t
        .transform_object(&l.store, &l.catalog, "raw/events/z.csv.gz", None)
        .await
        .expect("gz transform");
    assert_eq!(s.counts.rows_written, 2);
    let err = t
        .transform_object(&l.store, &l.catalog, "raw/other/z.csv", None)
        .await
        .expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert!(
        err.to_string().contains("raw/other/z.csv") && err.to_string().contains("raw/events/"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_required_header_column_is_a_clear_error() {
    let l = lake();
    put(
        &l,
        "raw/events/h.csv",
        b"version,ts,Note,email\n1,2024-01-01,a,x\n",
    )
    .await;
    let err = events(8192)
        .transform_object(&l.store, &l.catalog, "raw/events/h.csv", None)
        .await
        .expect_err("no id column");
    assert!(
        err.to_string().contains("raw/events/h.csv") && err.to_string().contains("`id`"),
        "{err}"
    );
    let _ = Arc::new(());
}

#[tokio::test]
async fn rows_spread_over_many_partitions_all_land_with_bounded_builders() {
    let mut csv = String::from("id,version,ts,Note,email\n");
    for i in 0..2000 {
        let m = i % 40;
        csv.push_str(&format!(
            "{i},1,{}-{:02}-10 00:00:00,n,e\n",
            2020 + m / 12,
            1 + m % 12
        ));
    }
    for batch in [7, 8192] {
        let l = lake();
        put(&l, "raw/events/spread.csv", csv.as_bytes()).await;
        let s = events(batch)
            .transform_object(&l.store, &l.catalog, "raw/events/spread.csv", None)
            .await
            .expect("transform");
        assert_eq!(s.counts.rows_written, 2000);
        assert_eq!(s.partitions.len(), 40);
        assert_eq!(
            s.files.iter().map(|f| f.rows).sum::<u64>(),
            2000,
            "manifest rows match"
        );
        assert_eq!(rows(&l, "events").await.len(), 2000);
        if batch == 8192 {
            assert_eq!(
                s.files.len(),
                40,
                "one file per partition when nothing forces a flush"
            );
        }
    }
}

#[tokio::test]
async fn files_roll_at_the_target_size() {
    let text = EVENTS.replace("output = { batch_rows = BATCH }", "output = { batch_rows = 1024, target_file_size_bytes = 1048576, row_group_bytes = 65536, buffer_budget_bytes = 65536 }");
    let t = transformer(&text);
    let mut csv = String::from("id,version,ts,Note,email\n");
    for i in 0..40_000 {
        csv.push_str(&format!(
            "{i},1,2024-05-{:02} 10:00:00,note {i},user{i}@example.org\n",
            1 + i % 28
        ));
    }
    let l = lake();
    put(&l, "raw/events/big.csv", csv.as_bytes()).await;
    let s = t
        .transform_object(&l.store, &l.catalog, "raw/events/big.csv", None)
        .await
        .expect("transform");
    assert_eq!(s.partitions.len(), 1);
    assert!(
        s.files.len() >= 2,
        "rolled into several files: {:?}",
        s.files
    );
    let parts: Vec<&str> = s
        .files
        .iter()
        .map(|f| f.key.rsplit('-').next().unwrap_or(""))
        .collect();
    assert_eq!(parts[0], "00000.parquet");
    assert_eq!(parts[1], "00001.parquet");
    assert!(
        s.files.iter().all(|f| f.bytes < 2 * 1024 * 1024),
        "{:?}",
        s.files
    );
    assert_eq!(s.files.iter().map(|f| f.rows).sum::<u64>(), 40_000);
    assert_eq!(rows(&l, "events").await.len(), 40_000);
}

/// Rows over many months with small buffers, so partitions tie on size when one must be
/// flushed: every run writes byte-identical files (ties broken by partition, not by the hash
/// map's per-process order).
#[tokio::test]
async fn many_partitions_give_identical_files_every_run() {
    let text = EVENTS.replace(
        "output = { batch_rows = BATCH }",
        "output = { batch_rows = 64, row_group_bytes = 65536, buffer_budget_bytes = 65536, max_open_partitions = 3 }",
    );
    let mut csv = String::from("id,version,ts,Note,email\n");
    for i in 0..30_000 {
        csv.push_str(&format!(
            "{i},1,20{:02}-{:02}-01 00:00:00,note {i} {i} {i},u{i}@x.org\n",
            10 + i % 7,
            1 + (i / 7) % 12
        ));
    }
    let mut runs: Vec<Vec<(String, Bytes)>> = Vec::new();
    for _ in 0..3 {
        let l = lake();
        put(&l, "raw/events/m.csv", csv.as_bytes()).await;
        let s = transformer(&text)
            .transform_object(&l.store, &l.catalog, "raw/events/m.csv", None)
            .await
            .expect("transform");
        assert!(s.partitions.len() > 3, "more months than open files");
        let mut files = Vec::new();
        for f in &s.files {
            files.push((f.key.clone(), l.store.get_bytes(&f.key).await.expect("get")));
        }
        runs.push(files);
    }
    assert!(
        runs.windows(2).all(|w| w[0] == w[1]),
        "same files, same bytes"
    );
}

/// A manifest written before an upgrade (version 1: no columns, no ETags) still drives the
/// clean-up of a re-run: its files that the new run does not write are deleted.
#[tokio::test]
async fn a_version_1_manifest_still_cleans_up_stale_files() {
    let l = lake();
    let t = events(8192);
    let key = "raw/events/old.csv";
    put(
        &l,
        key,
        b"id,version,ts,Note,email\n1,1,2024-01-01,a,x\n2,1,2024-02-01,b,y\n",
    )
    .await;
    let first = t
        .transform_object(&l.store, &l.catalog, key, None)
        .await
        .expect("first");
    assert_eq!(first.files.len(), 2);
    // Rewrite the manifest as the previous version wrote it.
    let mut v: serde_json::Value =
        serde_json::from_slice(&l.store.get_bytes(&first.manifest_key).await.expect("m"))
            .expect("json");
    v["version"] = 1.into();
    v.as_object_mut().expect("object").remove("columns");
    for f in v["files"].as_array_mut().expect("files") {
        f.as_object_mut().expect("file").remove("etag");
    }
    put(&l, &first.manifest_key, v.to_string().as_bytes()).await;
    // The object now holds January only: February's file is stale.
    put(&l, key, b"id,version,ts,Note,email\n1,2,2024-01-01,a2,x\n").await;
    let again = t
        .transform_object(&l.store, &l.catalog, key, None)
        .await
        .expect("again");
    assert_eq!(again.stale_files_deleted, 1);
    assert_eq!(rows(&l, "events").await.len(), 1);
}

//! The lake and the catalog, each implementation held to the same suite: S3 and Glue against
//! moto_server, the local store and local catalog in a temp dir.

use std::collections::HashMap;

use sluice::catalog::{
    Catalog, CatalogColumn, CatalogError, GlueCatalog, LocalCatalog, PartitionSpec, TableDef,
};
use sluice::lake::{LocalStore, ObjectStore, PutMode, S3Store};
use sluice_tests::conformance;
use sluice_tests::{moto_bucket, moto_sdk_config, unique_name};

#[tokio::test]
async fn s3_store_conformance() {
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("lake");
    let store = S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket);
    assert_eq!(store.bucket(), bucket);
    conformance::suite(&store).await;
    // Twice on the same bucket: the suite must not trip over what it left behind.
    conformance::suite(&store).await;
}

/// ListObjectsV2 returns at most 1,000 keys a page; `list` must follow the continuation.
#[tokio::test]
async fn s3_list_follows_pages() {
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("lake");
    let store = S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket);
    let count = 1_030;
    let keys: Vec<String> = (0..count).map(|i| format!("many/{i:05}")).collect();
    for batch in keys.chunks(50) {
        let mut puts = tokio::task::JoinSet::new();
        for key in batch {
            let (store, key) = (store.clone(), key.clone());
            puts.spawn(async move {
                store
                    .put(&key, bytes::Bytes::from_static(b"x"), PutMode::Overwrite)
                    .await
            });
        }
        while let Some(put) = puts.join_next().await {
            put.expect("put task").expect("put");
        }
    }
    let listed: Vec<String> = store
        .list("many/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, keys);
}

#[tokio::test]
async fn local_store_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("lake")).expect("open local lake");
    conformance::suite(&store).await;
    conformance::suite(&store).await;
}

#[tokio::test]
async fn glue_catalog() {
    let sdk = moto_sdk_config().await;
    let glue = aws_sdk_glue::Client::new(&sdk);
    let db = unique_name("db").replace('-', "_");
    catalog_suite(&GlueCatalog::new(glue.clone()), &db).await;

    // What Athena reads, beyond what `get_table` gives back.
    let table = glue
        .get_table()
        .database_name(&db)
        .name("funnel_projected")
        .send()
        .await
        .expect("GetTable")
        .table
        .expect("table");
    let params: HashMap<String, String> = table.parameters.clone().unwrap_or_default();
    let expected = [
        ("classification", "parquet"),
        ("parquet.compression", "ZSTD"),
        ("projection.enabled", "true"),
        ("projection.year.type", "integer"),
        ("projection.year.range", "2019,2031"),
        ("projection.month.type", "integer"),
        ("projection.month.range", "1,12"),
        ("projection.month.digits", "2"),
        (
            "storage.location.template",
            "s3://sluice-test-lake/curated/funnel_projected/year=${year}/month=${month}/",
        ),
    ];
    for (key, value) in expected {
        assert_eq!(
            params.get(key).map(String::as_str),
            Some(value),
            "table parameter {key}"
        );
    }
    assert_eq!(table.table_type.as_deref(), Some("EXTERNAL_TABLE"));
    let sd = table.storage_descriptor.expect("storage descriptor");
    assert_eq!(
        sd.input_format.as_deref(),
        Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
    );
    assert_eq!(
        sd.output_format.as_deref(),
        Some("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
    );
    assert_eq!(
        sd.serde_info.and_then(|s| s.serialization_library),
        Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe".to_string())
    );
}

#[tokio::test]
async fn local_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lake/_catalog/catalog.json");
    catalog_suite(&LocalCatalog::new(&path), "sluice_local").await;
    // A second instance on the same file sees everything the first one wrote.
    let again = LocalCatalog::new(&path);
    assert_eq!(
        again
            .list_partitions("sluice_local", "funnel")
            .await
            .expect("list")
            .len(),
        250
    );
}

fn col(name: &str, glue_type: &str) -> CatalogColumn {
    CatalogColumn {
        name: name.into(),
        glue_type: glue_type.into(),
    }
}

fn table_def(
    db: &str,
    table: &str,
    columns: Vec<CatalogColumn>,
    projection_years: Option<(i32, i32)>,
) -> TableDef {
    TableDef {
        database: db.into(),
        table: table.into(),
        location: format!("s3://sluice-test-lake/curated/{table}/"),
        columns,
        partition_keys: vec!["year".into(), "month".into()],
        projection_years,
    }
}

/// The catalog contract, on any implementation. `db` must not exist yet.
async fn catalog_suite(cat: &dyn Catalog, db: &str) {
    // Creation, and reading the definition back.
    let v1 = table_def(
        db,
        "funnel",
        vec![
            col("id", "bigint"),
            col("name", "string"),
            col("price", "decimal(10,2)"),
        ],
        None,
    );
    assert_eq!(
        cat.get_table(db, "funnel")
            .await
            .expect("get_table before create"),
        None
    );
    let created = cat.ensure_table(&v1).await.expect("ensure_table creates");
    assert!(
        created.created,
        "first ensure_table must create: {created:?}"
    );
    assert!(created.added_columns.is_empty(), "{created:?}");
    assert_eq!(
        cat.get_table(db, "funnel")
            .await
            .expect("get_table")
            .as_ref(),
        Some(&v1)
    );
    let same = cat.ensure_table(&v1).await.expect("ensure_table again");
    assert_eq!(
        (same.created, same.added_columns.len()),
        (false, 0),
        "unchanged definition: {same:?}"
    );

    // A new column is appended; a column the definition no longer lists is kept.
    let v2 = table_def(
        db,
        "funnel",
        vec![
            col("id", "bigint"),
            col("price", "decimal(10,2)"),
            col("brand", "string"),
        ],
        None,
    );
    let evolved = cat
        .ensure_table(&v2)
        .await
        .expect("ensure_table with a new column");
    assert_eq!(evolved.added_columns, vec!["brand".to_string()]);
    assert!(!evolved.created);
    let read = cat
        .get_table(db, "funnel")
        .await
        .expect("get_table")
        .expect("table exists");
    assert_eq!(
        read.columns,
        vec![
            col("id", "bigint"),
            col("name", "string"),
            col("price", "decimal(10,2)"),
            col("brand", "string")
        ]
    );

    // A type change is refused, naming the column, and changes nothing.
    let v3 = table_def(
        db,
        "funnel",
        vec![col("id", "bigint"), col("price", "double")],
        None,
    );
    match cat.ensure_table(&v3).await {
        Err(CatalogError::Incompatible {
            database,
            table,
            column,
            existing,
            requested,
        }) => {
            assert_eq!((database.as_str(), table.as_str()), (db, "funnel"));
            assert_eq!(
                (column.as_str(), existing.as_str(), requested.as_str()),
                ("price", "decimal(10,2)", "double")
            );
        }
        other => panic!("changed type: expected Incompatible, got {other:?}"),
    }
    assert_eq!(
        cat.get_table(db, "funnel")
            .await
            .expect("get_table")
            .expect("table")
            .columns,
        read.columns
    );

    // 250 partitions: three BatchCreatePartition chunks in Glue. Given out of order, twice
    // (the second time every one exists, which counts as success).
    let mut parts: Vec<PartitionSpec> = (0..250)
        .map(|i| {
            let (year, month) = (2000 + i / 12, format!("{:02}", i % 12 + 1));
            PartitionSpec {
                values: vec![year.to_string(), month.clone()],
                location: format!("{}year={year}/month={month}/", v2.location),
            }
        })
        .collect();
    parts.reverse();
    cat.add_partitions(&v2, &parts)
        .await
        .expect("add_partitions");
    cat.add_partitions(&v2, &parts[..120])
        .await
        .expect("add_partitions again (all exist)");
    cat.add_partitions(&v2, &parts)
        .await
        .expect("add_partitions again (all exist)");
    let listed = cat
        .list_partitions(db, "funnel")
        .await
        .expect("list_partitions");
    let mut expected: Vec<Vec<String>> = parts.iter().map(|p| p.values.clone()).collect();
    expected.sort();
    assert_eq!(listed.len(), 250);
    assert_eq!(
        listed, expected,
        "list_partitions: every partition once, sorted"
    );
    assert_eq!(
        listed.first(),
        Some(&vec!["2000".to_string(), "01".to_string()])
    );

    // Partition projection: parameters round trip, nothing to register.
    let projected = table_def(
        db,
        "funnel_projected",
        vec![col("id", "bigint")],
        Some((2019, 2030)),
    );
    assert!(
        cat.ensure_table(&projected)
            .await
            .expect("ensure projected table")
            .created
    );
    let read = cat
        .get_table(db, "funnel_projected")
        .await
        .expect("get_table")
        .expect("table");
    assert_eq!(read, projected);
    cat.add_partitions(&projected, &parts)
        .await
        .expect("add_partitions under projection");
    assert!(cat
        .list_partitions(db, "funnel_projected")
        .await
        .expect("list_partitions")
        .is_empty());

    // A new year at the end of the range is an update, not a new table.
    let extended = TableDef {
        projection_years: Some((2019, 2031)),
        ..projected
    };
    let outcome = cat
        .ensure_table(&extended)
        .await
        .expect("extend projection range");
    assert!(
        !outcome.created && outcome.added_columns.is_empty(),
        "{outcome:?}"
    );
    let read = cat
        .get_table(db, "funnel_projected")
        .await
        .expect("get_table")
        .expect("table");
    assert_eq!(read.projection_years, Some((2019, 2031)));

    assert_eq!(
        cat.get_table(db, "no_such_table")
            .await
            .expect("get_table of a missing table"),
        None
    );
    assert_eq!(
        cat.get_table("sluice_no_such_db", "funnel")
            .await
            .expect("get_table in a missing db"),
        None
    );
}

/// `sluice::aws::Clients` honours the service-specific endpoint variables, not only
/// `AWS_ENDPOINT_URL`: with only `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL_GLUE` pointing at
/// moto, the lake (path-style) and the catalog work, and `SLUICE_LAKE` opens the bucket.
/// (nextest runs each test in its own process, so setting variables here touches no other test.)
#[tokio::test]
async fn clients_honour_service_specific_endpoints() {
    let endpoint = sluice_tests::moto_endpoint();
    std::env::remove_var("AWS_ENDPOINT_URL");
    std::env::set_var("AWS_ENDPOINT_URL_S3", &endpoint);
    std::env::set_var("AWS_ENDPOINT_URL_GLUE", &endpoint);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
    let clients = sluice::aws::Clients::from_env().await;
    assert!(
        clients.sdk.endpoint_url().is_none(),
        "no global endpoint in this test"
    );
    let bucket = unique_name("svc-endpoint");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket through AWS_ENDPOINT_URL_S3");
    std::env::set_var("SLUICE_LAKE", format!("s3://{bucket}"));
    let store = sluice::lambda::required_lake_from_env(&clients)
        .await
        .expect("SLUICE_LAKE opens");
    store
        .put(
            "state/probe",
            bytes::Bytes::from_static(b"x"),
            PutMode::Overwrite,
        )
        .await
        .expect("put through the lake");
    assert_eq!(&store.get_bytes("state/probe").await.unwrap()[..], b"x");
    let db = unique_name("svc_endpoint").replace('-', "_");
    clients
        .glue
        .create_database()
        .database_input(
            aws_sdk_glue::types::DatabaseInput::builder()
                .name(&db)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateDatabase through AWS_ENDPOINT_URL_GLUE");
    std::env::remove_var("SLUICE_LAKE");
    let e = sluice::lambda::required_lake_from_env(&clients)
        .await
        .expect_err("missing SLUICE_LAKE is an error");
    assert!(e.to_string().contains("SLUICE_LAKE is not set"), "{e}");
}

/// The loader's lease on S3 (moto): create-if-absent and update-if-match do the locking.
#[tokio::test]
async fn load_lease_on_s3() {
    use sluice::warehouse::lease::{acquire, release, Acquired};
    let sdk = moto_sdk_config().await;
    let bucket = unique_name("lease");
    let store = S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket);
    let ttl = std::time::Duration::from_secs(60);
    let t0 = 1_700_000_000_000;
    let Acquired::Held(a) = acquire(&store, "orders", "a", ttl, t0)
        .await
        .expect("acquire")
    else {
        panic!("free lease not taken")
    };
    assert!(matches!(
        acquire(&store, "orders", "b", ttl, t0 + 1).await.expect("acquire"),
        Acquired::Busy { ref owner, .. } if owner == "a"
    ));
    let Acquired::Held(b) = acquire(&store, "orders", "b", ttl, t0 + 61_000)
        .await
        .expect("acquire")
    else {
        panic!("expired lease not taken over")
    };
    // a's late release fails its If-Match: b's lease stays.
    release(&store, &a).await.expect("stale release");
    assert!(matches!(
        acquire(&store, "orders", "c", ttl, t0 + 62_000)
            .await
            .expect("acquire"),
        Acquired::Busy { ref owner, until_ms } if owner == "b" && until_ms == t0 + 121_000
    ));
    // Release expires the lease in place (the object stays), and it is free at once.
    release(&store, &b).await.expect("release");
    let released = store.get_bytes(&b.key).await.expect("released lease stays");
    let released: serde_json::Value = serde_json::from_slice(&released).expect("json");
    assert_eq!(released["expires_at_ms"], 0, "{released}");
    assert!(matches!(
        acquire(&store, "orders", "c", ttl, t0 + 63_000)
            .await
            .expect("acquire"),
        Acquired::Held(_)
    ));
}

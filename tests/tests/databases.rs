//! The databases `scripts/test` sets up for the run are there and usable: the run's database on
//! the local PostgreSQL and on MariaDB, and the throwaway logical-replication cluster. Each test
//! writes rows into a uniquely named table, reads them back, and drops what it made (the run's
//! databases and the cluster go at the end of the run anyway, also after a failed test).

use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice_tests::{mysql_url, pg_logical_url, pg_url, unique_name};

/// Rows the smoke tests write and expect back: (id, name, active, note).
fn sample_rows() -> Vec<(i64, String, bool, Option<String>)> {
    vec![
        (1, "alpha".to_string(), true, None),
        (
            2,
            "Zoë 🚀 ünïcode".to_string(),
            false,
            Some("second".to_string()),
        ),
        (i64::MAX, "max id".to_string(), true, Some(String::new())),
    ]
}

async fn pg_connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// Creates `table`, inserts the sample rows with bound parameters, reads them back, and
/// asserts they are the same; drops the table.
async fn pg_round_trip(c: &mut PgConnection, table: &str) {
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, active boolean NOT NULL, note text)"
    )))
    .execute(&mut *c)
    .await
    .unwrap_or_else(|e| panic!("create table {table}: {e}"));
    let rows = sample_rows();
    for (id, name, active, note) in &rows {
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, name, active, note) VALUES ($1, $2, $3, $4)"
        )))
        .bind(id)
        .bind(name)
        .bind(active)
        .bind(note)
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
        assert_eq!(done.rows_affected(), 1);
    }
    let got: Vec<(i64, String, bool, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, name, active, note FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut *c)
    .await
    .unwrap_or_else(|e| panic!("select from {table}: {e}"));
    assert_eq!(got, rows, "rows read back from {table}");
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("drop table {table}: {e}"));
}

#[tokio::test]
async fn postgres_run_database_round_trips_rows() {
    let url = pg_url();
    let mut c = pg_connect(&url).await;
    let want_db = url.rsplit('/').next().expect("a database in the URL");
    let row = sqlx::query("SELECT current_database() AS db, current_user AS usr")
        .fetch_one(&mut c)
        .await
        .expect("current_database()");
    assert_eq!(row.get::<String, _>("db"), want_db);
    assert_eq!(row.get::<String, _>("usr"), "postgres");

    let schema = unique_name("smoke");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("create schema {schema}: {e}"));
    pg_round_trip(&mut c, &format!("{schema}.items")).await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("drop schema {schema}: {e}"));
    let left: i64 =
        sqlx::query("SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = $1")
            .bind(&schema)
            .fetch_one(&mut c)
            .await
            .expect("schemata")
            .get("n");
    assert_eq!(left, 0, "schema {schema} is gone");
    c.close().await.expect("close");
}

#[tokio::test]
async fn mariadb_run_database_round_trips_rows() {
    let url = mysql_url();
    let mut c = MySqlConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let want_db = url.rsplit('/').next().expect("a database in the URL");
    let db: String = sqlx::query("SELECT DATABASE() AS db")
        .fetch_one(&mut c)
        .await
        .expect("DATABASE()")
        .get("db");
    assert_eq!(db, want_db);

    let table = unique_name("smoke");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
         active BOOLEAN NOT NULL, note TEXT) CHARACTER SET utf8mb4"
    )))
    .execute(&mut c)
    .await
    .unwrap_or_else(|e| panic!("create table {table}: {e}"));
    let rows = sample_rows();
    for (id, name, active, note) in &rows {
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, name, active, note) VALUES (?, ?, ?, ?)"
        )))
        .bind(id)
        .bind(name)
        .bind(active)
        .bind(note)
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
        assert_eq!(done.rows_affected(), 1);
    }
    let got: Vec<(i64, String, bool, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, name, active, note FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .unwrap_or_else(|e| panic!("select from {table}: {e}"));
    assert_eq!(got, rows, "rows read back from {table}");
    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("drop table {table}: {e}"));
    let left: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
    )
    .bind(&table)
    .fetch_one(&mut c)
    .await
    .expect("information_schema.tables")
    .get("n");
    assert_eq!(left, 0, "table {table} is gone");
    c.close().await.expect("close");
}

/// pgoutput message types (protocol 1) in the changes a slot holds: `B`egin, `R`elation,
/// `I`nsert, `C`ommit, ...
async fn pgoutput_message_types(c: &mut PgConnection, slot: &str, publication: &str) -> String {
    let rows = sqlx::query(
        "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
         'proto_version', '1', 'publication_names', $2)",
    )
    .bind(slot)
    .bind(publication)
    .fetch_all(&mut *c)
    .await
    .unwrap_or_else(|e| panic!("peek changes of slot {slot}: {e}"));
    rows.iter()
        .map(|r| {
            let data: Vec<u8> = r.get("data");
            char::from(*data.first().expect("a non-empty pgoutput message"))
        })
        .collect()
}

#[tokio::test]
async fn logical_cluster_round_trips_rows_and_decodes_with_pgoutput() {
    let url = pg_logical_url();
    let mut c = pg_connect(&url).await;
    let wal_level: String = sqlx::query("SHOW wal_level")
        .fetch_one(&mut c)
        .await
        .expect("SHOW wal_level")
        .get(0);
    assert_eq!(wal_level, "logical");
    for setting in ["max_replication_slots", "max_wal_senders"] {
        let v: String = sqlx::query(AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&mut c)
            .await
            .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"))
            .get(0);
        let n: u32 = v.parse().unwrap_or_else(|e| panic!("{setting} = {v}: {e}"));
        assert!(n >= 10, "{setting} = {n}, want at least 10");
    }

    pg_round_trip(&mut c, &unique_name("smoke")).await;

    // A logical slot with the built-in pgoutput plugin sees a committed insert into a
    // published table, then is dropped.
    let table = unique_name("cdc");
    let publication = unique_name("pub");
    let slot = unique_name("slot");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"
    )))
    .execute(&mut c)
    .await
    .unwrap_or_else(|e| panic!("create table {table}: {e}"));
    sqlx::query(AssertSqlSafe(format!(
        "CREATE PUBLICATION {publication} FOR TABLE {table}"
    )))
    .execute(&mut c)
    .await
    .unwrap_or_else(|e| panic!("create publication {publication}: {e}"));
    let created = sqlx::query(
        "SELECT slot_name::text AS slot_name, lsn::text AS lsn \
         FROM pg_create_logical_replication_slot($1, 'pgoutput')",
    )
    .bind(&slot)
    .fetch_one(&mut c)
    .await
    .unwrap_or_else(|e| panic!("create logical slot {slot}: {e}"));
    assert_eq!(created.get::<String, _>("slot_name"), slot);
    assert!(
        created.get::<String, _>("lsn").contains('/'),
        "a consistent point LSN"
    );
    let (plugin, slot_type, database): (String, String, String) = sqlx::query_as(
        "SELECT plugin::text, slot_type, database::text FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&slot)
    .fetch_one(&mut c)
    .await
    .expect("pg_replication_slots");
    assert_eq!(
        (plugin.as_str(), slot_type.as_str(), database.as_str()),
        ("pgoutput", "logical", "postgres")
    );

    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, name) VALUES (1, 'one')"
    )))
    .execute(&mut c)
    .await
    .unwrap_or_else(|e| panic!("insert into {table}: {e}"));
    assert_eq!(
        pgoutput_message_types(&mut c, &slot, &publication).await,
        "BRIC",
        "begin, relation, insert, commit"
    );

    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(&mut c)
        .await
        .unwrap_or_else(|e| panic!("drop slot {slot}: {e}"));
    let left: i64 =
        sqlx::query("SELECT count(*) AS n FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .fetch_one(&mut c)
            .await
            .expect("pg_replication_slots")
            .get("n");
    assert_eq!(left, 0, "slot {slot} is gone");
    for drop in [
        format!("DROP PUBLICATION {publication}"),
        format!("DROP TABLE {table}"),
    ] {
        sqlx::query(AssertSqlSafe(drop.clone()))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{drop}: {e}"));
    }
    c.close().await.expect("close");
}

//! `sluice cdc setup` and `sluice cdc snapshot` on the logical-replication cluster: every
//! problem reported at once and `apply` refusing on them; the publication, replica identities
//! and the pgoutput slot created, and kept on a second run; the snapshot's pages equal to the
//! source table, typed per CDC.md, and a snapshot stopped at its deadline resuming to the same
//! objects. Each test works in its own schema with its own slot and publication, and drops them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::cdc::setup::{self, Action, Problem, SetupError, SetupSpec};
use sluice::cdc::snapshot::{self, SnapshotReport, SnapshotSpec, SnapshotTable, TableStatus};
use sluice::lake::{LocalStore, ObjectStore};
use sluice_tests::{pg_logical_url, pg_url, unique_name};

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Runs `sql` (one or more statements, `{sc}` standing for the test's schema).
async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A schema, slot and publication of one test, dropped after `body` whatever it did.
struct Scratch {
    schema: String,
    slot: String,
    publication: String,
}

impl Scratch {
    fn new() -> Self {
        Self {
            schema: unique_name("cdcsetup"),
            slot: unique_name("slot"),
            publication: unique_name("pub"),
        }
    }

    fn spec(&self, tables: &[&str], full: bool) -> SetupSpec {
        SetupSpec {
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            tables: tables
                .iter()
                .map(|t| (self.schema.clone(), t.to_string()))
                .collect(),
            replica_identity_full: full,
        }
    }

    async fn run<F, Fut>(self, body: F)
    where
        F: FnOnce(PgConnection, Scratch) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut c = connect(&pg_logical_url()).await;
        exec(&mut c, &format!("CREATE SCHEMA {}", self.schema)).await;
        let (schema, slot, publication) = (
            self.schema.clone(),
            self.slot.clone(),
            self.publication.clone(),
        );
        let result = AssertUnwindSafe(body(connect(&pg_logical_url()).await, self))
            .catch_unwind()
            .await;
        sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .execute(&mut c)
            .await
            .expect("drop slot");
        exec(&mut c, &format!("DROP PUBLICATION IF EXISTS {publication}")).await;
        exec(&mut c, &format!("DROP SCHEMA {schema} CASCADE")).await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

fn table_problem(p: &Problem) -> Option<String> {
    Some(match p {
        Problem::TableMissing { table, .. } => format!("missing {table}"),
        Problem::NotATable { table, kind, .. } => format!("{kind} {table}"),
        Problem::NoPrimaryKey { table, .. } => format!("no pk {table}"),
        Problem::ReplicaIdentityNothing { table, .. } => format!("nothing {table}"),
        Problem::ReplicaIdentityIndex { table, index, .. } => format!("index {table} {index}"),
        Problem::NotOwner { table, .. } => format!("not owner {table}"),
        _ => return None,
    })
}

#[tokio::test]
async fn check_reports_every_problem_at_once_and_apply_refuses() {
    Scratch::new()
        .run(|mut c, s| async move {
            let sc = &s.schema;
            exec(&mut c, &format!(
                "CREATE TABLE {sc}.nopk (a int); CREATE TABLE {sc}.nothing (id int PRIMARY KEY);
                 ALTER TABLE {sc}.nothing REPLICA IDENTITY NOTHING;
                 CREATE TABLE {sc}.altidx (id int PRIMARY KEY, u int NOT NULL);
                 CREATE UNIQUE INDEX altidx_u ON {sc}.altidx (u);
                 ALTER TABLE {sc}.altidx REPLICA IDENTITY USING INDEX altidx_u;
                 CREATE TABLE {sc}.good (id int PRIMARY KEY, v text); CREATE VIEW {sc}.view AS SELECT 1 AS id"
            )).await;
            // A physical slot under the wanted name (reserving no WAL).
            sqlx::query("SELECT pg_create_physical_replication_slot($1)")
                .bind(&s.slot)
                .execute(&mut c)
                .await
                .expect("physical slot");

            let spec = s.spec(
                &["nopk", "nothing", "altidx", "good", "ghost", "view"],
                true,
            );
            let problems = setup::check(&mut c, &spec).await.expect("check");
            let found: BTreeSet<String> = problems.iter().filter_map(table_problem).collect();
            let want: BTreeSet<String> = [
                "no pk nopk",
                "nothing nothing",
                "index altidx altidx_u",
                "missing ghost",
                "view view",
            ]
            .map(String::from)
            .into();
            assert_eq!(found, want, "{problems:#?}");
            assert!(
                problems.contains(&Problem::SlotNotLogical {
                    slot: s.slot.clone()
                }),
                "{problems:#?}"
            );
            assert_eq!(
                problems.len(),
                6,
                "nothing else (wal_level, rights) is wrong here: {problems:#?}"
            );
            assert!(problems.iter().all(Problem::is_blocking));

            let e = setup::apply(&mut c, &spec)
                .await
                .expect_err("apply must refuse");
            let SetupError::Refused { problems: refused } = &e else {
                panic!("{e}")
            };
            assert_eq!(refused, &problems);
            for text in [
                "nopk has no primary key",
                "ghost does not exist",
                "NOTHING",
                "altidx_u",
                "is a view",
                "physical",
            ] {
                assert!(e.to_string().contains(text), "{text:?} in {e}");
            }
            let published: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_publication WHERE pubname = $1")
                    .bind(&s.publication)
                    .fetch_one(&mut c)
                    .await
                    .expect("count");
            assert_eq!(published, 0, "a refused apply creates nothing");
        })
        .await;
}

#[tokio::test]
async fn check_reports_missing_rights_and_ownership() {
    Scratch::new()
        .run(|mut c, s| async move {
            let (sc, role) = (&s.schema, unique_name("norepl"));
            exec(
                &mut c,
                &format!("CREATE TABLE {sc}.t1 (id int PRIMARY KEY)"),
            )
            .await;
            exec(
                &mut c,
                &format!("CREATE ROLE {role} NOLOGIN; GRANT USAGE ON SCHEMA {sc} TO {role}"),
            )
            .await;
            exec(&mut c, &format!("SET ROLE {role}")).await;
            let problems = setup::check(&mut c, &s.spec(&["t1"], true)).await;
            exec(
                &mut c,
                &format!("RESET ROLE; DROP OWNED BY {role}; DROP ROLE {role}"),
            )
            .await;
            let problems = problems.expect("check");
            let db: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut c)
                .await
                .expect("db");
            let want = vec![
                Problem::NoReplicationRights { user: role.clone() },
                Problem::NoCreateOnDatabase {
                    user: role.clone(),
                    database: db,
                },
                Problem::NotOwner {
                    schema: sc.clone(),
                    table: "t1".into(),
                    owner: "postgres".into(),
                    user: role.clone(),
                },
            ];
            assert_eq!(problems, want);
            assert!(
                problems[0].to_string().contains("rds_replication"),
                "{}",
                problems[0]
            );
        })
        .await;
}

/// The machine's own cluster runs with wal_level = replica: `check` (read-only) says so.
#[tokio::test]
async fn check_reports_wal_level_not_logical() {
    let mut c = connect(&pg_url()).await;
    let spec = SetupSpec {
        slot: unique_name("slot"),
        publication: unique_name("pub"),
        tables: vec![("public".into(), unique_name("ghost"))],
        replica_identity_full: true,
    };
    let problems = setup::check(&mut c, &spec).await.expect("check");
    assert_eq!(
        problems[0],
        Problem::WalLevel {
            current: "replica".into()
        },
        "{problems:#?}"
    );
    assert!(problems[0].to_string().contains("wal_level is replica"));
    assert!(
        matches!(problems[1], Problem::TableMissing { .. }),
        "{problems:#?}"
    );
}

async fn publication_tables(c: &mut PgConnection, publication: &str) -> BTreeSet<String> {
    sqlx::query("SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1")
        .bind(publication)
        .fetch_all(&mut *c)
        .await
        .expect("publication tables")
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

async fn replica_identity(c: &mut PgConnection, schema: &str, table: &str) -> String {
    sqlx::query_scalar("SELECT c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2")
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *c)
        .await
        .expect("relreplident")
}

#[tokio::test]
async fn apply_creates_publication_slot_and_full_identity_and_is_idempotent() {
    Scratch::new().run(|mut c, s| async move {
        let sc = &s.schema;
        exec(&mut c, &format!(
            "CREATE TABLE {sc}.docs (id int PRIMARY KEY, body text, n numeric);
             CREATE TABLE {sc}.counts (id int PRIMARY KEY, n int8, at timestamptz);
             CREATE TABLE {sc}.extra (id int PRIMARY KEY)"
        )).await;
        let spec = s.spec(&["docs", "counts"], true);

        let first = setup::apply(&mut c, &spec).await.expect("apply");
        assert!(!first.slot_existed);
        assert_eq!(first.replica_identity_full_set, vec![(sc.clone(), "docs".to_string())]);
        assert_eq!(
            first.actions,
            vec![
                Action::CreatedPublication { publication: s.publication.clone(), tables: vec![format!("{sc}.docs"), format!("{sc}.counts")] },
                Action::SetReplicaIdentityFull { schema: sc.clone(), table: "docs".into() },
                Action::CreatedSlot { slot: s.slot.clone(), consistent_lsn: first.slot_lsn },
            ]
        );
        assert_eq!(publication_tables(&mut c, &s.publication).await, ["counts", "docs"].map(String::from).into());
        assert_eq!(replica_identity(&mut c, sc, "docs").await, "f");
        assert_eq!(replica_identity(&mut c, sc, "counts").await, "d", "an int-only table keeps DEFAULT");
        let row = sqlx::query("SELECT plugin::text, (confirmed_flush_lsn - '0/0'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&s.slot).fetch_one(&mut c).await.expect("slot");
        assert_eq!(row.get::<String, _>(0), "pgoutput");
        assert_eq!(row.get::<String, _>(1), first.slot_lsn.to_string());

        let again = setup::apply(&mut c, &spec).await.expect("apply again");
        assert!(again.slot_existed);
        assert_eq!(again.slot_lsn, first.slot_lsn, "the slot is kept, not recreated");
        assert_eq!(
            again.actions,
            vec![
                Action::KeptPublication { publication: s.publication.clone() },
                Action::KeptSlot { slot: s.slot.clone(), confirmed_flush_lsn: first.slot_lsn },
            ]
        );

        // Someone widened the publication and narrowed what it publishes: reported, not blocking,
        // and set back by apply.
        let p = &s.publication;
        exec(&mut c, &format!("ALTER PUBLICATION {p} ADD TABLE {sc}.extra; ALTER PUBLICATION {p} SET (publish = 'insert')")).await;
        let problems = setup::check(&mut c, &spec).await.expect("check");
        let differs = Problem::PublicationDiffers {
            publication: s.publication.clone(),
            missing: vec![],
            extra: vec![format!("{sc}.extra")],
            missing_operations: ["update", "delete", "truncate"].map(String::from).into(),
        };
        assert_eq!(problems, vec![differs]);
        assert!(!problems[0].is_blocking());
        let third = setup::apply(&mut c, &spec).await.expect("apply third");
        assert_eq!(
            third.actions[..2],
            [
                Action::AlteredPublication { publication: s.publication.clone(), added: vec![], removed: vec![format!("{sc}.extra")] },
                Action::SetPublishedOperations { publication: s.publication.clone() },
            ]
        );
        assert_eq!(publication_tables(&mut c, &s.publication).await, ["counts", "docs"].map(String::from).into());
        assert_eq!(setup::check(&mut c, &spec).await.expect("check"), vec![]);
    })
    .await;
}

const ROWS: i64 = 2_500;

/// A table with a two-column key and the common types, `ROWS` rows.
async fn items_table(c: &mut PgConnection, schema: &str) {
    exec(c, &format!(
        "CREATE TABLE {schema}.items (region text, id int8, qty int4, amount numeric(12,2), price float8, \
           ok bool, code char(4), at timestamptz, day date, doc jsonb, raw bytea, note varchar(40), \
           PRIMARY KEY (region, id))"
    ))
    .await;
    exec(c, &format!(
        "INSERT INTO {schema}.items SELECT 'r' || (i % 3), i, i * 2, i * 1.25, i / 4.0, i % 2 = 0, 'c' || (i % 10), \
           timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i) + i * interval '1 microsecond', \
           date '2026-01-01' + (i % 28), jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i)), \
           decode(lpad(to_hex(i), 8, '0'), 'hex'), CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || i || ' é✓' END \
         FROM generate_series(1, {ROWS}) i"
    ))
    .await;
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Row `i` of `items` as CDC.md types it.
fn expected_after(i: i64) -> Value {
    json!({
        "region": format!("r{}", i % 3),
        "id": i,
        "qty": i * 2,
        "amount": format!("{:.2}", i as f64 * 1.25),
        "price": i as f64 / 4.0,
        "ok": i % 2 == 0,
        "code": format!("c{}  ", i % 10),
        "at": format!("2026-01-01T00:{:02}:{:02}.{:06}Z", i / 60, i % 60, i),
        "day": format!("2026-01-{:02}", 1 + i % 28),
        "doc": {"i": i, "tags": ["a", i]},
        "raw": base64(&(i as u32).to_be_bytes()),
        "note": if i % 7 == 0 { Value::Null } else { json!(format!("note {i} é✓")) },
    })
}

fn items(schema: &str, lake_table: &str, key_columns: &[&str]) -> SnapshotTable {
    SnapshotTable {
        schema: schema.into(),
        table: "items".into(),
        lake_table: lake_table.into(),
        key_columns: key_columns.iter().map(|k| k.to_string()).collect(),
    }
}

/// The snapshot objects of `lake_table`: key → parsed lines.
async fn pages(lake: &dyn ObjectStore, lake_table: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for o in lake
        .list(&format!("raw/cdc/{lake_table}/snapshot/"))
        .await
        .expect("list")
    {
        let body = lake.get_bytes(&o.key).await.expect("get");
        let lines = std::str::from_utf8(&body).expect("utf-8").lines();
        out.insert(
            o.key,
            lines
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect(),
        );
    }
    out
}

#[tokio::test]
async fn snapshot_pages_equal_the_table() {
    Scratch::new()
        .run(|mut c, s| async move {
            items_table(&mut c, &s.schema).await;
            let lsn = setup::apply(&mut c, &s.spec(&["items"], true))
                .await
                .expect("apply")
                .slot_lsn;
            let dir = tempfile::tempdir().expect("tempdir");
            let lake = LocalStore::new(dir.path()).expect("lake");
            let db: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&mut c)
                .await
                .expect("db");
            let spec = SnapshotSpec {
                db_name: db.clone(),
                tables: vec![items(&s.schema, "items", &["id", "region"])],
                consistent_lsn: lsn,
                page_rows: 1000,
            };
            let report = snapshot::snapshot(&mut c, &lake, &spec, None)
                .await
                .expect("snapshot");
            assert!(report.is_complete());
            assert_eq!(outcome(&report), (TableStatus::Done, 3, 2500, 3));

            let pages = pages(&lake, "items").await;
            let keys: Vec<&String> = pages.keys().collect();
            let want: Vec<String> = (0..3)
                .map(|p| format!("raw/cdc/items/snapshot/{lsn}/{p:08}.jsonl"))
                .collect();
            assert_eq!(keys, want.iter().collect::<Vec<_>>());
            assert_eq!(
                pages.values().map(Vec::len).collect::<Vec<_>>(),
                [1000, 1000, 500]
            );
            let mut seen = BTreeSet::new();
            let mut previous_key = None;
            for event in pages.values().flatten() {
                assert_eq!(event["op"], "r");
                assert_eq!(event["before"], Value::Null);
                let source = &event["source"];
                assert_eq!(
                    (
                        &source["db"],
                        &source["schema"],
                        &source["table"],
                        &source["lsn"],
                        &source["txid"]
                    ),
                    (
                        &json!(db),
                        &json!(s.schema),
                        &json!("items"),
                        // Every copied row is version 0 (snapshot::SNAPSHOT_LSN): any change
                        // the slot delivers wins over it.
                        &json!(0),
                        &json!(0)
                    )
                );
                assert!(
                    source["commit_ts"]
                        .as_str()
                        .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
                    "{source}"
                );
                let i = event["after"]["id"].as_i64().expect("id");
                assert_eq!(event["after"], expected_after(i), "row {i}");
                let key = (event["after"]["region"].as_str().map(String::from), i);
                assert!(
                    previous_key.as_ref().is_none_or(|p| p < &key),
                    "pages in key order"
                );
                previous_key = Some(key);
                seen.insert(i);
            }
            assert_eq!(seen, (1..=ROWS).collect());

            let again = snapshot::snapshot(&mut c, &lake, &spec, None)
                .await
                .expect("snapshot again");
            assert_eq!(outcome(&again), (TableStatus::AlreadyDone, 0, 0, 3));
        })
        .await;
}

/// The one table's (status, pages written, rows written, next page) of a report.
fn outcome(r: &SnapshotReport) -> (TableStatus, u64, u64, u64) {
    let t = &r.tables[0];
    (t.status, t.pages_written, t.rows_written, t.next_page)
}

/// Every event with `source.commit_ts` taken out (each run stamps its own start time).
fn without_commit_ts(pages: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Vec<Value>> {
    let mut out = pages.clone();
    for e in out.values_mut().flatten() {
        e["source"]
            .as_object_mut()
            .expect("source")
            .remove("commit_ts");
    }
    out
}

#[tokio::test]
async fn a_stopped_snapshot_resumes_to_the_same_objects() {
    Scratch::new()
        .run(|mut c, s| async move {
            items_table(&mut c, &s.schema).await;
            let (one, two) = (
                tempfile::tempdir().expect("tempdir"),
                tempfile::tempdir().expect("tempdir"),
            );
            let (whole, stopped) = (
                LocalStore::new(one.path()).expect("lake"),
                LocalStore::new(two.path()).expect("lake"),
            );
            let spec = |lsn| SnapshotSpec {
                db_name: "src".into(),
                tables: vec![items(&s.schema, "items", &[])],
                consistent_lsn: lsn,
                page_rows: 1000,
            };
            let lsn = 0x1_2345_6789;
            snapshot::snapshot(&mut c, &whole, &spec(lsn), None)
                .await
                .expect("one run");

            // A deadline already past: one page, then stop.
            let r = snapshot::snapshot(&mut c, &stopped, &spec(lsn), Some(Instant::now()))
                .await
                .expect("first run");
            assert!(!r.is_complete());
            assert_eq!(outcome(&r), (TableStatus::Stopped, 1, 1000, 1));
            assert_eq!(pages(&stopped, "items").await.len(), 1);
            let progress: Value = serde_json::from_slice(
                &stopped
                    .get_bytes("state/cdc/snapshot/items.json")
                    .await
                    .expect("progress"),
            )
            .expect("json");
            assert_eq!(
                (
                    &progress["consistent_lsn"],
                    &progress["next_page"],
                    &progress["done"]
                ),
                (&json!(lsn), &json!(1), &json!(false))
            );

            let r = snapshot::snapshot(&mut c, &stopped, &spec(lsn), None)
                .await
                .expect("second run");
            assert_eq!(outcome(&r), (TableStatus::Done, 2, 1500, 3));
            let (a, b) = (pages(&whole, "items").await, pages(&stopped, "items").await);
            assert_eq!(without_commit_ts(&a), without_commit_ts(&b));
            let stamps: BTreeSet<String> = b
                .values()
                .flatten()
                .map(|e| e["source"]["commit_ts"].to_string())
                .collect();
            assert_eq!(stamps.len(), 1, "a resumed copy keeps its start time");

            let r = snapshot::snapshot(&mut c, &stopped, &spec(lsn), None)
                .await
                .expect("third run");
            assert_eq!(outcome(&r), (TableStatus::AlreadyDone, 0, 0, 3));

            // Progress for another slot's consistent point: the copy starts over.
            let r = snapshot::snapshot(&mut c, &stopped, &spec(lsn + 1), None)
                .await
                .expect("new slot");
            assert_eq!(outcome(&r), (TableStatus::Done, 3, 2500, 3));
            let newer = stopped
                .list(&format!("raw/cdc/items/snapshot/{}/", lsn + 1))
                .await
                .expect("list");
            assert_eq!(newer.len(), 3);
        })
        .await;
}

#[tokio::test]
async fn snapshot_errors_name_the_table() {
    Scratch::new()
        .run(|mut c, s| async move {
            exec(&mut c, &format!("CREATE TABLE {}.nopk (a int)", s.schema)).await;
            items_table(&mut c, &s.schema).await;
            let dir = tempfile::tempdir().expect("tempdir");
            let lake = LocalStore::new(dir.path()).expect("lake");
            let run = |t: SnapshotTable| SnapshotSpec {
                db_name: "src".into(),
                tables: vec![t],
                consistent_lsn: 1,
                page_rows: 10,
            };
            let mut nopk = items(&s.schema, "lake_nopk", &[]);
            nopk.table = "nopk".into();
            let e = snapshot::snapshot(&mut c, &lake, &run(nopk), None)
                .await
                .expect_err("no key");
            assert!(
                e.to_string().contains("lake_nopk") && e.to_string().contains("primary key"),
                "{e}"
            );
            let e = snapshot::snapshot(
                &mut c,
                &lake,
                &run(items(&s.schema, "lake_items", &["id"])),
                None,
            )
            .await
            .expect_err("wrong key");
            assert!(
                e.to_string().contains("lake_items") && e.to_string().contains("region"),
                "{e}"
            );
            let mut ghost = items(&s.schema, "lake_ghost", &[]);
            ghost.table = "ghost".into();
            let e = snapshot::snapshot(&mut c, &lake, &run(ghost), None)
                .await
                .expect_err("missing");
            assert!(
                e.to_string().contains("ghost") && e.to_string().contains("not found"),
                "{e}"
            );
            assert!(lake.list("raw/").await.expect("list").is_empty());
        })
        .await;
}

//! The wal-decoder's run against the real logical-replication cluster and moto_server's
//! Kinesis: changes reach the stream and the slot advances; a transaction larger than one
//! run's budget passes over several runs, each change once; a run that dies after PutRecords
//! and before the advance re-sends on the next run (never skips); an idle database's slot
//! moves with heartbeats; a recreated or dropped slot is an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use sluice::aws::Clients;
use sluice::cdc::wal::{
    self, CdcTable, KinesisSink, Publisher, RunLimits, RunReport, SourceLocation, Stop, WalError,
    WalRun,
};
use sluice::lake::{LocalStore, ObjectStore};
use sluice_tests::cdc::{FailingState, Record, SourceDb, Stream};
use sluice_tests::{moto_sdk_config, unique_name};

const DDL: &str = "CREATE TABLE items (id int PRIMARY KEY, name text, qty int);
                   CREATE TABLE other (id int PRIMARY KEY, v text);";

struct Fixture {
    src: SourceDb,
    stream: Stream,
    lake: Arc<dyn ObjectStore>,
    _dir: tempfile::TempDir,
    cfg: WalRun,
}

async fn fixture(prefix: &str) -> Fixture {
    let src = SourceDb::create(prefix, DDL).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lake: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path()).expect("local lake"));
    src.publish_and_slot(&["items"], lake.as_ref()).await;
    let clients = Clients::new(moto_sdk_config().await);
    let stream = Stream::create(clients.kinesis.clone(), &unique_name("cdcwal"), 2).await;
    let mut tables = HashMap::new();
    tables.insert(
        (src.schema.clone(), "items".to_string()),
        CdcTable {
            name: "items".into(),
            key_columns: vec!["id".into()],
            declared: ["id", "name"].iter().map(|s| s.to_string()).collect(),
        },
    );
    let cfg = WalRun {
        slot: src.slot.clone(),
        publications: vec![src.publication.clone()],
        max_changes_per_peek: 1000,
        tables,
        heartbeat_interval: Duration::from_secs(3600),
        limits: RunLimits {
            deadline: Instant::now(),
            max_changes: None,
        },
    };
    Fixture {
        src,
        stream,
        lake,
        _dir: dir,
        cfg,
    }
}

impl Fixture {
    async fn run_with(
        &self,
        lake: Arc<dyn ObjectStore>,
        max_changes: Option<u64>,
    ) -> Result<RunReport, WalError> {
        std::env::set_var("SLUICE_TEST_CDC_SOURCE", &self.src.url);
        let options = wal::connect_options(
            &SourceLocation::UrlEnv("SLUICE_TEST_CDC_SOURCE".into()),
            None,
        )
        .await?;
        let mut cfg = self.cfg.clone();
        cfg.limits = RunLimits {
            deadline: Instant::now() + Duration::from_secs(60),
            max_changes,
        };
        let sink = Arc::new(KinesisSink::new(
            self.stream.kinesis.clone(),
            self.stream.name.clone(),
        ));
        let mut publisher = Publisher::new(sink, lake.clone());
        wal::run(&options, lake.as_ref(), &mut publisher, &cfg).await
    }

    async fn run(&self, max_changes: Option<u64>) -> RunReport {
        self.run_with(self.lake.clone(), max_changes)
            .await
            .expect("a wal-decoder run")
    }

    async fn cleanup(&self) {
        self.stream.delete().await;
        self.src.drop().await;
    }
}

fn events(records: &[Record]) -> Vec<Value> {
    let mut v: Vec<Value> = records.iter().map(Record::json).collect();
    // A key change's delete and insert share an LSN (and may sit on two shards): delete first.
    v.sort_by_key(|e| (e["source"]["lsn"].as_u64(), e["op"] != "d"));
    v
}

#[tokio::test]
async fn changes_reach_the_stream_and_the_slot_advances() {
    let mut f = fixture("cdcwala").await;
    let before = f.src.confirmed_lsn().await;
    f.src
        .exec(
            "INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2);
             UPDATE items SET name = 'uno' WHERE id = 1;
             DELETE FROM items WHERE id = 2;
             INSERT INTO other VALUES (1, 'not published');
             UPDATE items SET id = 10 WHERE id = 1;",
        )
        .await;
    let report = f.run(None).await;
    assert_eq!(report.stop, Stop::Drained);
    assert_eq!(report.changes, 6, "{report:?}");
    let got = events(&f.stream.read_new().await);
    let ops: Vec<(&str, Option<i64>)> = got
        .iter()
        .map(|e| {
            let row = if e["op"] == "d" {
                &e["before"]
            } else {
                &e["after"]
            };
            (e["op"].as_str().unwrap_or(""), row["id"].as_i64())
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("c", Some(1)),
            ("c", Some(2)),
            ("u", Some(1)),
            ("d", Some(2)),
            ("d", Some(1)),
            ("c", Some(10))
        ]
    );
    assert_eq!(got[2]["after"], json!({"id": 1, "name": "uno", "qty": 1}));
    assert_eq!(got[0]["source"]["schema"], json!(f.src.schema));
    // The key change: a delete and an insert at one LSN.
    assert_eq!(got[4]["source"]["lsn"], got[5]["source"]["lsn"]);
    // The undeclared column is reported, not dropped.
    assert_eq!(
        report.undeclared,
        BTreeMap::from([("items".to_string(), ["qty".to_string()].into())])
    );
    let after = f.src.confirmed_lsn().await;
    assert!(after > before, "the slot advanced: {before} → {after}");
    assert_eq!(report.confirmed_lsn, after);

    // Nothing new: nothing sent again.
    let again = f.run(None).await;
    assert_eq!(again.changes, 0);
    assert!(f.stream.read_new().await.is_empty());
    f.cleanup().await;
}

#[tokio::test]
async fn a_transaction_over_the_budget_passes_over_several_runs_each_change_once() {
    let mut f = fixture("cdcwalb").await;
    f.src
        .exec("INSERT INTO items SELECT g, 'n' || g, g FROM generate_series(1, 10000) g")
        .await;
    f.src
        .exec("INSERT INTO items VALUES (20000, 'after', 0)")
        .await;
    let mut runs = Vec::new();
    for _ in 0..10 {
        let r = f.run(Some(3000)).await;
        let stop = r.stop;
        runs.push(r);
        if stop == Stop::Drained {
            break;
        }
    }
    let stops: Vec<Stop> = runs.iter().map(|r| r.stop).collect();
    assert_eq!(
        stops,
        [
            Stop::InsideTransaction,
            Stop::InsideTransaction,
            Stop::InsideTransaction,
            Stop::Drained
        ]
    );
    let partials: Vec<Option<u64>> = runs
        .iter()
        .map(|r| r.partial.as_ref().map(|p| p.acked_changes))
        .collect();
    assert_eq!(partials, [Some(3000), Some(6000), Some(9000), None]);
    assert_eq!(
        runs[3].changes, 1001,
        "the rest of the large one and the next"
    );
    assert_eq!(
        runs[1].skipped, 3000,
        "the second run skips what the first sent"
    );
    let got = f.stream.read_new().await;
    assert_eq!(got.len(), 10_001);
    let lsns: HashSet<u64> = got
        .iter()
        .filter_map(|r| r.json()["source"]["lsn"].as_u64())
        .collect();
    assert_eq!(lsns.len(), 10_001, "each change once");
    f.cleanup().await;
}

#[tokio::test]
async fn a_run_that_dies_before_the_advance_resends_on_the_next() {
    let mut f = fixture("cdcwalc").await;
    f.src
        .exec("INSERT INTO items VALUES (1, 'a', 1); INSERT INTO items VALUES (2, 'b', 2);")
        .await;
    let before = f.src.confirmed_lsn().await;
    let failing = Arc::new(FailingState::new(f.lake.clone()));
    failing.set_failing(true);
    let err = f
        .run_with(failing.clone(), None)
        .await
        .expect_err("the state write fails");
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(f.src.confirmed_lsn().await, before, "the slot did not move");
    let first = f.stream.read_new().await;
    assert_eq!(first.len(), 2, "the events were put before the failure");

    failing.set_failing(false);
    let report = f.run_with(failing, None).await.expect("the next run");
    assert_eq!(report.changes, 2, "re-sent");
    let second = f.stream.read_new().await;
    assert_eq!(events(&first), events(&second), "the same events again");
    assert!(f.src.confirmed_lsn().await > before);
    f.cleanup().await;
}

#[tokio::test]
async fn heartbeats_move_the_slot_of_an_idle_database() {
    let mut f = fixture("cdcwald").await;
    f.cfg.heartbeat_interval = Duration::from_secs(1);
    // Only an unpublished table changes: the slot has nothing to send, but WAL grows.
    f.src
        .exec("INSERT INTO other SELECT g, 'x' FROM generate_series(1, 1000) g")
        .await;
    let before = f.src.confirmed_lsn().await;
    let report = f.run(None).await;
    assert!(report.heartbeat_lsn.is_some());
    assert_eq!(report.changes, 0);
    let after = f.src.confirmed_lsn().await;
    assert!(
        after > report.heartbeat_lsn.unwrap_or(u64::MAX) && after > before,
        "the slot moved past the heartbeat: {before} → {after}"
    );
    assert!(
        f.stream.read_new().await.is_empty(),
        "a heartbeat is not a change"
    );
    // Within the interval no heartbeat is written.
    let next = f.run(None).await;
    assert!(next.heartbeat_lsn.is_none());
    f.cleanup().await;
}

#[tokio::test]
async fn a_recreated_or_dropped_slot_is_an_error() {
    let f = fixture("cdcwale").await;
    f.src.exec("INSERT INTO items VALUES (1, 'a', 1)").await;
    let mut c = f.src.connect().await;
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&f.src.slot)
        .execute(&mut c)
        .await
        .expect("drop the slot");
    let err = f.run_with(f.lake.clone(), None).await.expect_err("dropped");
    assert!(matches!(err, WalError::SlotMissing { .. }), "{err}");
    assert!(err.to_string().contains(&f.src.slot));
    f.src.exec("INSERT INTO items VALUES (2, 'b', 2)").await;
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(&f.src.slot)
        .execute(&mut c)
        .await
        .expect("recreate the slot");
    let err = f
        .run_with(f.lake.clone(), None)
        .await
        .expect_err("recreated");
    assert!(matches!(err, WalError::SlotMoved { .. }), "{err}");
    assert!(!err.is_retryable());
    f.cleanup().await;
}

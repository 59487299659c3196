//! The CDC path end to end, every stage through its real handler or library entry point, on
//! real services: DML on a PostgreSQL table (the logical-replication cluster) → `wal-decoder`'s
//! handler (pgoutput slot → moto_server's Kinesis) → the stream read back and fed to
//! `cdc-sink`'s handler as Lambda would (→ `raw/cdc/` in a moto S3 bucket) → the transform
//! (→ `curated/` Parquet and manifests) → the loader (→ a second schema of the same PostgreSQL
//! database). After every round the warehouse table's source columns equal the source table,
//! compared both ways with EXCEPT, the source's columns cast to their lake types.
//!
//! Rounds: a snapshot with changes made during and after it; inserts, updates (one leaving a
//! TOASTed column unchanged with REPLICA IDENTITY DEFAULT, so the loader resolves the marker
//! from the final row), deletes, a key change and a 10,000-row transaction; a decoder run that
//! dies after PutRecords and before the slot advance, then the run that re-sends; a TRUNCATE
//! followed by inserts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use sluice::catalog::LocalCatalog;
use sluice::cdc::setup::{self, SetupSpec};
use sluice::cdc::snapshot::{self, SnapshotSpec, SnapshotTable};
use sluice::cdc::wal::{self, state, KinesisSink, WalState};
use sluice::config::Pipeline;
use sluice::lake::{ObjectStore, S3Store};
use sluice::transform::Transformer;
use sluice::warehouse::{LoadOutcome, Loader, PgTarget};
use sluice_tests::cdc::{FailingState, SourceDb, Stream};
use sluice_tests::{moto_bucket, moto_sdk_config, unique_name};

const DDL: &str = "
CREATE TABLE accounts (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  balance numeric(30,10),
  score float8,
  active boolean,
  born date,
  seen_at timestamptz,
  tags text[],
  doc jsonb,
  blob bytea,
  note text
);
ALTER TABLE accounts ALTER COLUMN note SET STORAGE EXTERNAL;";

/// The source's columns cast to their lake types, for the comparison; `{t}` is the table.
const SOURCE_AS_LAKE: &str = "id, name, balance, score, active, born, \
    (seen_at AT TIME ZONE 'UTC') AS seen_at, to_jsonb(tags) AS tags, doc, blob, note";
/// The warehouse's columns, the JSON text read back as jsonb (json has no equality).
const WAREHOUSE_AS_LAKE: &str = "id, name, balance, score, active, born, seen_at, \
    tags::jsonb AS tags, doc::jsonb AS doc, blob, note";

fn pipeline_toml(schema: &str, wh: &str) -> String {
    format!(
        r#"
[cdc]
source_url_env = "SLUICE_TEST_CDC_E2E_SOURCE"
slot = "{schema}_slot"
publication = "{schema}_pub"
stream = "unused-the-test-passes-its-own"
replica_identity_full = false

[[tables]]
name = "accounts"
raw_prefix = "raw/cdc/accounts/"
format = "cdc"
cdc = {{ schema = "{schema}", table = "accounts" }}
dedup = {{ key = ["id"] }}
catalog = {{ database = "sluice_e2e" }}
warehouse = {{ schema = "{wh}", merge_keys = ["id"] }}
columns = [
  {{ name = "id", type = "int", required = true }},
  {{ name = "name", type = "string" }},
  {{ name = "balance", type = "decimal(30,10)" }},
  {{ name = "score", type = "float" }},
  {{ name = "active", type = "bool" }},
  {{ name = "born", type = "date" }},
  {{ name = "seen_at", type = "timestamp" }},
  {{ name = "tags", type = "string" }},
  {{ name = "doc", type = "string" }},
  {{ name = "blob", type = "binary" }},
  {{ name = "note", type = "string" }},
]
"#
    )
}

struct World {
    src: SourceDb,
    wh: String,
    pipeline: Pipeline,
    stream: Stream,
    lake: Arc<FailingState>,
    catalog: LocalCatalog,
    _dir: tempfile::TempDir,
    decoder: sluice_wal_decoder::Deps,
    sink: sluice_cdc_sink::Deps,
    /// raw/cdc objects already transformed.
    transformed: HashSet<String>,
}

impl World {
    async fn new() -> World {
        let src = SourceDb::create("cdce2e", DDL).await;
        let wh = format!("{}_wh", src.schema);
        std::env::set_var("SLUICE_TEST_CDC_E2E_SOURCE", &src.url);
        let text = pipeline_toml(&src.schema, &wh);
        let pipeline = Pipeline::parse(&text, "cdc_e2e pipeline").expect("the pipeline parses");
        let sdk = moto_sdk_config().await;
        let bucket = unique_name("cdce2e");
        let s3 = moto_bucket(&sdk, &bucket).await;
        let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(s3, &bucket));
        let lake = Arc::new(FailingState::new(store));
        let clients = sluice::aws::Clients::new(sdk);
        let stream = Stream::create(clients.kinesis.clone(), &unique_name("cdce2e"), 2).await;
        let settings = wal::settings_from_pipeline(&pipeline).expect("wal settings");
        let source = wal::connect_options(&settings.source, None)
            .await
            .expect("source options");
        let decoder = sluice_wal_decoder::Deps {
            source,
            lake: lake.clone(),
            sink: Arc::new(KinesisSink::new(
                clients.kinesis.clone(),
                stream.name.clone(),
            )),
            run: settings.run,
            emit_metrics: false,
        };
        let mut routes = HashMap::new();
        routes.insert(
            (src.schema.clone(), "accounts".to_string()),
            "accounts".to_string(),
        );
        let sink = sluice_cdc_sink::Deps {
            store: lake.clone(),
            routes,
            emit_metrics: false,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        World {
            catalog: LocalCatalog::new(dir.path().join("catalog.json")),
            _dir: dir,
            src,
            wh,
            pipeline,
            stream,
            lake,
            decoder,
            sink,
            transformed: HashSet::new(),
        }
    }

    /// `sluice cdc setup`'s library call, then the decoder state at the slot's consistent point.
    async fn setup(&self) -> u64 {
        let mut c = self.src.connect().await;
        let spec = SetupSpec {
            slot: self.src.slot.clone(),
            publication: self.src.publication.clone(),
            tables: vec![(self.src.schema.clone(), "accounts".into())],
            replica_identity_full: false,
        };
        let outcome = setup::apply(&mut c, &spec).await.expect("setup");
        state::reset(
            self.lake.as_ref(),
            WalState::new(&self.src.slot, outcome.slot_lsn),
        )
        .await
        .expect("decoder state");
        outcome.slot_lsn
    }

    async fn snapshot(&self, consistent_lsn: u64) {
        let mut c = self.src.connect().await;
        let spec = SnapshotSpec {
            db_name: "postgres".into(),
            tables: vec![SnapshotTable {
                schema: self.src.schema.clone(),
                table: "accounts".into(),
                lake_table: "accounts".into(),
                key_columns: vec!["id".into()],
            }],
            consistent_lsn,
            page_rows: 40,
        };
        let report = snapshot::snapshot(&mut c, self.lake.as_ref(), &spec, None)
            .await
            .expect("snapshot");
        assert!(report.is_complete(), "{report:?}");
    }

    /// One scheduled wal-decoder invocation.
    async fn decode(&self) -> Result<serde_json::Value, String> {
        sluice_wal_decoder::handle(&self.decoder, 0, json!({"detail-type": "Scheduled Event"}))
            .await
            .map_err(|e| e.to_string())
    }

    /// What arrived on the stream since the last call, through cdc-sink in batches of 500.
    async fn sink(&mut self) -> usize {
        let records = self.stream.read_new().await;
        for batch in records.chunks(500) {
            let resp = sluice_cdc_sink::handle(&self.sink, self.stream.event(batch))
                .await
                .expect("cdc-sink");
            assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
        }
        records.len()
    }

    /// Transforms the raw objects not transformed yet and loads their manifests in one batch.
    async fn transform_and_load(&mut self) {
        let objects = self
            .lake
            .list("raw/cdc/accounts/")
            .await
            .expect("list raw/cdc");
        let t = Transformer::new(self.pipeline.clone(), None).expect("transformer");
        let mut manifests = Vec::new();
        for o in objects {
            if !self.transformed.insert(o.key.clone()) {
                continue;
            }
            let s = t
                .transform_object(self.lake.as_ref(), &self.catalog, &o.key, None)
                .await
                .unwrap_or_else(|e| panic!("transform {}: {e}", o.key));
            assert_eq!(s.counts.rows_quarantined, 0, "{}: {s:?}", o.key);
            manifests.push(s.manifest_key);
        }
        if manifests.is_empty() {
            return;
        }
        let target = PgTarget::connect(&self.src.url).await.expect("warehouse");
        let loader = Loader {
            pipeline: &self.pipeline,
            store: self.lake.as_ref(),
            executor: &target,
            iam_role: String::new(),
            lease_ttl: Duration::from_secs(60),
            owner: "cdc_e2e".into(),
            use_lease: true,
        };
        match loader.load("accounts", &manifests).await.expect("load") {
            LoadOutcome::Loaded(s) => assert!(s.mismatch.is_none(), "{s:?}"),
            other => panic!("not loaded: {other:?}"),
        }
    }

    /// Everything the stream holds now, through to the warehouse.
    async fn through(&mut self) {
        self.sink().await;
        self.transform_and_load().await;
    }

    /// (id, columns) of every event in `raw/cdc/` that marks columns unchanged.
    async fn marked_unchanged(&self) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for o in self.lake.list("raw/cdc/accounts/").await.expect("list") {
            let body = self.lake.get_bytes(&o.key).await.expect("get");
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let e: serde_json::Value = serde_json::from_slice(line).expect("an event");
                if let Some(u) = e.get("unchanged") {
                    let cols: Vec<&str> = u
                        .as_array()
                        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
                        .unwrap_or_default();
                    out.push((e["after"]["id"].as_i64().unwrap_or(-1), cols.join(",")));
                }
            }
        }
        out
    }

    /// Rows of `a EXCEPT b` and of `b EXCEPT a`.
    async fn differences(&self) -> (i64, i64) {
        let mut c = PgConnection::connect(&self.src.url).await.expect("connect");
        let src = format!("SELECT {SOURCE_AS_LAKE} FROM {}.accounts", self.src.schema);
        let wh = format!("SELECT {WAREHOUSE_AS_LAKE} FROM {}.accounts", self.wh);
        let count = |a: &str, b: &str| format!("SELECT count(*) FROM ({a} EXCEPT {b}) d");
        let left: i64 = sqlx::query_scalar(AssertSqlSafe(count(&src, &wh)))
            .fetch_one(&mut c)
            .await
            .expect("source EXCEPT warehouse");
        let right: i64 = sqlx::query_scalar(AssertSqlSafe(count(&wh, &src)))
            .fetch_one(&mut c)
            .await
            .expect("warehouse EXCEPT source");
        (left, right)
    }

    async fn assert_equal(&self, round: &str) {
        let mut c = PgConnection::connect(&self.src.url).await.expect("connect");
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.accounts",
            self.src.schema
        )))
        .fetch_one(&mut c)
        .await
        .expect("count");
        assert_eq!(
            self.differences().await,
            (0, 0),
            "{round}: source ≠ warehouse ({n} source rows)"
        );
    }

    async fn cleanup(&self) {
        self.stream.delete().await;
        self.src.drop().await;
        let mut c = PgConnection::connect(&self.src.url).await.expect("connect");
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.wh
        )))
        .execute(&mut c)
        .await;
    }
}

fn row(id: i64, note: &str) -> String {
    format!(
        "({id}, 'name {id} Zoë', {id}.0123456789, {id}.5, {}, DATE '2020-01-01' + {id}, \
         TIMESTAMPTZ '2026-11-26 09:00:00.123456+00' + {id} * interval '1 minute', \
         ARRAY['a', 'b\"q', NULL], jsonb_build_object('k', {id}, 'nested', jsonb_build_object('x', 'y')), \
         '\\x00ff{id:02x}'::bytea, {note})",
        id % 2 == 0
    )
}

#[tokio::test]
async fn dml_on_the_source_makes_the_warehouse_equal_the_source() {
    let mut w = World::new().await;

    // Round 0: rows before the slot, a snapshot, changes made during it (after the slot's
    // consistent point, before the copy ends) and after it.
    let initial: Vec<String> = (1..=100).map(|i| row(i, "'short'")).collect();
    w.src
        .exec(&format!(
            "INSERT INTO accounts VALUES {}",
            initial.join(",")
        ))
        .await;
    let consistent = w.setup().await;
    w.src
        .exec("UPDATE accounts SET name = 'during' WHERE id <= 10; DELETE FROM accounts WHERE id BETWEEN 90 AND 95;")
        .await;
    w.snapshot(consistent).await;
    w.src
        .exec(&format!(
            "INSERT INTO accounts VALUES {}; UPDATE accounts SET balance = -1 WHERE id = 20;",
            row(101, "NULL")
        ))
        .await;
    w.decode().await.expect("decode round 0");
    w.through().await;
    w.assert_equal("snapshot + changes during and after").await;

    // Round 1: a large TOASTed value, then an update leaving it unchanged (DEFAULT identity:
    // a marker the loader resolves from the final row), deletes, a key change, 10,000 rows in
    // one transaction.
    // 48,000 bytes: TOASTed (STORAGE EXTERNAL, over ~2 kB) yet under Redshift's VARCHAR limit,
    // which the transform enforces for warehouse tables.
    let big = "repeat(md5(random()::text), 1500)";
    w.src
        .exec(&format!("INSERT INTO accounts VALUES {}", row(200, big)))
        .await;
    w.decode().await.expect("decode round 1a");
    w.through().await;
    w.src
        .exec(
            "UPDATE accounts SET name = 'toast kept' WHERE id = 200;
             DELETE FROM accounts WHERE id IN (1, 2, 3);
             UPDATE accounts SET id = 1000 WHERE id = 4;
             UPDATE accounts SET doc = NULL, tags = '{}' WHERE id = 5;",
        )
        .await;
    let bulk: String = "INSERT INTO accounts SELECT g, 'bulk ' || g, g / 7.0, g * 0.25, g % 3 = 0, \
         DATE '2024-01-01' + (g % 365), TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * interval '1 second', \
         ARRAY[g::text], jsonb_build_object('g', g), NULL, NULL FROM generate_series(10001, 20000) g"
        .into();
    w.src.exec(&bulk).await;
    let r = w.decode().await.expect("decode round 1b");
    assert!(r["changes"].as_u64() >= Some(10_004), "{r}");
    w.through().await;
    // The update of 200 left its TOASTed note out (DEFAULT identity): the event marks it, and
    // the loader filled it from the final row (else the comparison below fails).
    assert_eq!(w.marked_unchanged().await, vec![(200, "note".to_string())]);
    w.assert_equal("inserts, updates, deletes, key change, 10,000-row transaction")
        .await;

    // Round 2: the decoder dies after PutRecords and before the advance; the next run re-sends.
    w.src
        .exec("UPDATE accounts SET score = -score WHERE id BETWEEN 10001 AND 10100; DELETE FROM accounts WHERE id = 1000;")
        .await;
    w.lake.set_failing(true);
    let err = w.decode().await.expect_err("the state write fails");
    assert!(err.contains("injected failure"), "{err}");
    w.lake.set_failing(false);
    let sent_before_failure = w.sink().await;
    assert_eq!(
        sent_before_failure, 101,
        "the events were put before the failure"
    );
    w.decode().await.expect("decode round 2, re-sending");
    w.through().await;
    w.assert_equal("after a run that died before the slot advance")
        .await;

    // Round 3: TRUNCATE, then new rows.
    w.src
        .exec(&format!(
            "TRUNCATE accounts; INSERT INTO accounts VALUES {}, {};",
            row(7, "'after truncate'"),
            row(8, "NULL")
        ))
        .await;
    w.decode().await.expect("decode round 3");
    w.through().await;
    w.assert_equal("TRUNCATE then inserts").await;

    w.cleanup().await;
}

//! Support for the CDC tests: a Kinesis stream in moto (created, read back record by record
//! with shard and sequence number, turned into the event cdc-sink receives, deleted), and a
//! source schema on the logical-replication cluster with its own slot and publication, dropped
//! at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use base64::Engine;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use sluice::cdc::wal::{state, WalState};
use sluice::lake::{LakeError, ObjectMeta, ObjectStore, PutMode, PutResult};

/// One record read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub shard: String,
    pub sequence: String,
    pub partition_key: String,
    pub data: Vec<u8>,
}

impl Record {
    /// The record's JSON (an event or a spill pointer).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data).expect("a JSON record")
    }
}

/// A stream in moto, read incrementally: each `read_new` returns what arrived since the last.
pub struct Stream {
    pub kinesis: aws_sdk_kinesis::Client,
    pub name: String,
    pub arn: String,
    /// The last sequence number read per shard.
    seen: HashMap<String, String>,
}

impl Stream {
    /// Creates a stream with `shards` shards and waits until it is active.
    pub async fn create(kinesis: aws_sdk_kinesis::Client, name: &str, shards: i32) -> Stream {
        kinesis
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .expect("CreateStream in moto");
        for _ in 0..100 {
            let summary = kinesis
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .expect("DescribeStreamSummary");
            let s = summary.stream_description_summary().expect("a summary");
            if s.stream_status() == &StreamStatus::Active {
                let arn = s.stream_arn().to_string();
                return Stream {
                    kinesis,
                    name: name.to_string(),
                    arn,
                    seen: HashMap::new(),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("stream {name} never became active");
    }

    pub async fn delete(&self) {
        self.kinesis
            .delete_stream()
            .stream_name(&self.name)
            .enforce_consumer_deletion(true)
            .send()
            .await
            .expect("DeleteStream");
    }

    /// Every record that arrived since the last call, shard by shard in sequence order.
    pub async fn read_new(&mut self) -> Vec<Record> {
        let shards = self
            .kinesis
            .list_shards()
            .stream_name(&self.name)
            .send()
            .await
            .expect("ListShards");
        let mut out = Vec::new();
        for shard in shards.shards() {
            let id = shard.shard_id().to_string();
            let req = self
                .kinesis
                .get_shard_iterator()
                .stream_name(&self.name)
                .shard_id(&id);
            let req = match self.seen.get(&id) {
                Some(seq) => req
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let mut iterator = req
                .send()
                .await
                .expect("GetShardIterator")
                .shard_iterator()
                .map(str::to_string);
            while let Some(it) = iterator {
                let page = self
                    .kinesis
                    .get_records()
                    .shard_iterator(it)
                    .limit(10_000)
                    .send()
                    .await
                    .expect("GetRecords");
                if page.records().is_empty() {
                    break;
                }
                for r in page.records() {
                    out.push(Record {
                        shard: id.clone(),
                        sequence: r.sequence_number().to_string(),
                        partition_key: r.partition_key().unwrap_or_default().to_string(),
                        data: r.data().as_ref().to_vec(),
                    });
                }
                iterator = page.next_shard_iterator().map(str::to_string);
            }
            if let Some(last) = out.iter().rev().find(|r| r.shard == id) {
                self.seen.insert(id.clone(), last.sequence.clone());
            }
        }
        out
    }

    /// The Kinesis event Lambda's event source mapping would deliver for `records`.
    pub fn event(&self, records: &[Record]) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let records: Vec<Value> = records
            .iter()
            .map(|r| {
                json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r.partition_key,
                        "sequenceNumber": r.sequence,
                        "data": b64.encode(&r.data),
                        "approximateArrivalTimestamp": 1764147600.5
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("{}:{}", r.shard, r.sequence),
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/cdc-sink",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": self.arn,
                })
            })
            .collect();
        json!({ "Records": records })
    }
}

/// A schema of its own on the logical-replication cluster, with a slot and publication named
/// after it. `drop` removes all three (call it at the end, also after a failure).
pub struct SourceDb {
    pub url: String,
    pub schema: String,
    pub slot: String,
    pub publication: String,
}

impl SourceDb {
    /// Creates the schema and runs `ddl` in it (`search_path` set to it).
    pub async fn create(prefix: &str, ddl: &str) -> SourceDb {
        let url = crate::pg_logical_url();
        let schema = crate::unique_name(prefix);
        let db = SourceDb {
            url,
            slot: format!("{schema}_slot"),
            publication: format!("{schema}_pub"),
            schema,
        };
        let mut c = db.connect().await;
        c.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", db.schema)))
            .await
            .expect("CREATE SCHEMA");
        db.exec(ddl).await;
        db
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to the logical-replication cluster")
    }

    /// Runs SQL (several statements allowed) with the schema first on the search path.
    pub async fn exec(&self, sql: &str) {
        let mut c = self.connect().await;
        c.execute(sqlx::AssertSqlSafe(format!(
            "SET search_path = {}, public; {sql}",
            self.schema
        )))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Publishes `tables` (of the schema), creates the pgoutput slot and records its
    /// consistent point as the decoder's state in `lake`. Returns the consistent point.
    pub async fn publish_and_slot(&self, tables: &[&str], lake: &dyn ObjectStore) -> u64 {
        let list: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{t}", self.schema))
            .collect();
        self.exec(&format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            self.publication,
            list.join(", ")
        ))
        .await;
        let mut c = self.connect().await;
        let lsn: i64 = sqlx::query_scalar(
            "SELECT (lsn - '0/0'::pg_lsn)::int8 FROM pg_create_logical_replication_slot($1, 'pgoutput')",
        )
        .bind(&self.slot)
        .fetch_one(&mut c)
        .await
        .expect("create the slot");
        state::reset(lake, WalState::new(&self.slot, lsn as u64))
            .await
            .expect("write the decoder state");
        lsn as u64
    }

    /// The slot's confirmed position.
    pub async fn confirmed_lsn(&self) -> u64 {
        let mut c = self.connect().await;
        let v: i64 = sqlx::query_scalar(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_one(&mut c)
        .await
        .expect("the slot's position");
        v as u64
    }

    /// Drops the slot, the publication and the schema.
    pub async fn drop(&self) {
        let mut c = self.connect().await;
        let _ = sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .execute(&mut c)
        .await;
        let _ = c
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP PUBLICATION IF EXISTS {}; DROP SCHEMA IF EXISTS {} CASCADE",
                self.publication, self.schema
            )))
            .await;
    }
}

/// A lake whose writes under `state/cdc/` fail while `fail` is set: a wal-decoder run then dies
/// after its PutRecords and before it records progress or advances the slot.
#[derive(Debug)]
pub struct FailingState {
    pub inner: Arc<dyn ObjectStore>,
    pub fail: AtomicBool,
}

impl FailingState {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FailingState {
        FailingState {
            inner,
            fail: AtomicBool::new(false),
        }
    }

    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

#[async_trait]
impl ObjectStore for FailingState {
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError> {
        self.inner.get_bytes(key).await
    }
    async fn get_to_file(
        &self,
        key: &str,
        dest: &std::path::Path,
    ) -> Result<ObjectMeta, LakeError> {
        self.inner.get_to_file(key, dest).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError> {
        if key.starts_with("state/cdc/") && self.fail.load(Ordering::SeqCst) {
            return Err(LakeError::Service {
                op: "PutObject",
                key: key.into(),
                message: "injected failure before the slot advance".into(),
                retryable: true,
            });
        }
        self.inner.put(key, body, mode).await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<PutResult, LakeError> {
        self.inner.put_file(key, path).await
    }
    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        self.inner.list(prefix).await
    }
}

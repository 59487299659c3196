//! The wal-decoder's publisher against moto_server's Kinesis and S3: events of mixed sizes go
//! out in calls moto accepts (moto enforces the same 500-record, 5 MiB and 1 MiB limits as
//! Kinesis), an oversized one through the lake, and every record reads back exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::aws::Clients;
use sluice::cdc::event::{Source, SpillPointer, SpillRef};
use sluice::cdc::wal::publish::{KinesisSink, PendingRecord, PublishError, Publisher};
use sluice::lake::layout::spill_key;
use sluice::lake::{ObjectStore, S3Store};
use sluice_tests::cdc::Stream;
use sluice_tests::{moto_bucket, moto_sdk_config, unique_name};

/// Every record of the stream, as (partition key, data, shard).
async fn read_all(stream: &mut Stream) -> Vec<(String, Vec<u8>, String)> {
    stream
        .read_new()
        .await
        .into_iter()
        .map(|r| (r.partition_key, r.data, r.shard))
        .collect()
}

fn source(i: u32) -> Source {
    Source {
        db: "shop".into(),
        schema: "public".into(),
        table: "orders".into(),
        lsn: lsn(i),
        txid: 100 + i / 4,
        commit_ts: format!("2026-11-26T09:{:02}:00.000001Z", i % 60),
    }
}

fn lsn(i: u32) -> u64 {
    5_000_000 + u64::from(i) * 10
}

/// Event sizes: one over 1 MiB (spilled), a run of ten of 600 KB (6 MB: the 5 MiB limit
/// splits them), some of 50 KB, the rest under 3 KB.
fn pad_bytes(i: u32) -> usize {
    match (i, i % 97) {
        (777, _) => 1_200_000,
        (100..=109, _) => 600_000,
        (_, 0) => 50_000,
        _ => (i as usize * 37) % 3000,
    }
}

fn pending(i: u32) -> PendingRecord {
    let s = source(i);
    let event = json!({"op": "c", "before": null,
        "after": {"id": i, "pad": "x".repeat(pad_bytes(i))}, "source": s_json(&s)});
    PendingRecord {
        table: "orders".into(),
        partition_key: format!("public.orders/{}", i % 41),
        data: serde_json::to_vec(&event).unwrap(),
        lsn: s.lsn,
        index: i % 4,
        source: s,
    }
}

fn s_json(s: &Source) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

#[tokio::test]
async fn publishes_1200_mixed_events_and_reads_them_back_exactly() {
    let sdk = moto_sdk_config().await;
    let clients = Clients::new(sdk.clone());
    let bucket = unique_name("cdc-publish");
    let mut stream = Stream::create(clients.kinesis.clone(), &unique_name("cdcpub"), 3).await;
    let lake = Arc::new(S3Store::new(moto_bucket(&sdk, &bucket).await, &bucket));
    let sink = Arc::new(KinesisSink::new(clients.kinesis.clone(), &stream.name));
    let mut publisher =
        Publisher::new(sink, lake.clone()).with_deadline(Instant::now() + Duration::from_secs(120));

    let records: Vec<PendingRecord> = (0..1200).map(pending).collect();
    for r in records.clone() {
        publisher.add(r).await.expect("add");
    }
    publisher.flush().await.expect("flush");
    assert_eq!((publisher.added(), publisher.acked()), (1200, 1200));
    let c = publisher.counters();
    assert_eq!((c.records_sent, c.spilled, c.retries), (1200, 1, 0));
    // The 6 MB run makes a call after 108 records (8 of 600 KB), then 500, 500 and 92: one
    // call more than by count alone, and moto refuses a call over 5 MiB.
    assert_eq!(c.calls, 4, "{c:?}");

    // What the stream must hold: each event, the spilled one as its pointer.
    let big = &records[777];
    let key = spill_key("orders", big.lsn, u64::from(big.index));
    let mut want: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.partition_key.clone(), r.data.clone()))
        .collect();
    let pointer = SpillPointer {
        spill: SpillRef {
            key: key.clone(),
            bytes: big.data.len() as u64,
        },
        source: big.source.clone(),
    };
    want[777].1 = serde_json::to_vec(&pointer).unwrap();
    assert_eq!(
        lake.get_bytes(&key)
            .await
            .expect("the spilled event")
            .to_vec(),
        big.data
    );

    let read = read_all(&mut stream).await;
    let mut shard_of: HashMap<&str, &str> = HashMap::new();
    for (pk, _, shard) in &read {
        let first = shard_of.entry(pk).or_insert(shard);
        assert_eq!(first, shard, "one partition key, one shard");
    }
    let shards: std::collections::HashSet<&&str> = shard_of.values().collect();
    assert!(
        shards.len() >= 2,
        "records spread over the shards: {shards:?}"
    );
    let mut got: Vec<(String, Vec<u8>)> = read.into_iter().map(|(k, d, _)| (k, d)).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the stream holds exactly the events, once each"
    );

    stream.delete().await;
    lake.delete(&key).await.expect("delete the spill object");
}

/// A stream named by ARN takes records; a missing stream is a lasting error naming it.
#[tokio::test]
async fn publishes_by_arn_and_names_a_missing_stream() {
    let sdk = moto_sdk_config().await;
    let clients = Clients::new(sdk.clone());
    let mut stream = Stream::create(clients.kinesis.clone(), &unique_name("cdcarn"), 1).await;
    let arn = stream.arn.clone();
    assert!(arn.starts_with("arn:"), "{arn}");
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(sluice::lake::LocalStore::new(dir.path()).unwrap());
    let sink = Arc::new(KinesisSink::new(clients.kinesis.clone(), &arn));
    let mut publisher = Publisher::new(sink, lake.clone());
    for i in 0..3 {
        publisher.add(pending(i)).await.expect("add");
    }
    publisher.flush().await.expect("flush by ARN");
    let read = read_all(&mut stream).await;
    let mut got: Vec<Vec<u8>> = read.into_iter().map(|(_, d, _)| d).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..3).map(|i| pending(i).data).collect();
    want.sort();
    assert_eq!(got, want);
    stream.delete().await;

    let missing = unique_name("cdcmissing");
    let sink = Arc::new(KinesisSink::new(clients.kinesis.clone(), &missing));
    let mut publisher = Publisher::new(sink, lake);
    publisher.add(pending(0)).await.expect("add buffers");
    let e = publisher.flush().await.unwrap_err();
    assert!(
        matches!(&e, PublishError::Rejected { stream, code, records_left: 1, .. }
            if stream == &missing && code == "ResourceNotFoundException"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(publisher.acked(), 0);
}

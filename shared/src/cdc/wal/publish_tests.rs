//! The publisher against a fake stream that refuses chosen records or calls, and a local lake.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::lake::LocalStore;

const STREAM: &str = "fake-stream";

/// A stream in memory. Records whose data is in `plan` are refused with its code until their
/// count of refusals runs out; `call_failures` fail whole calls first, one per call.
#[derive(Debug, Default)]
struct FakeSink {
    plan: Mutex<HashMap<Vec<u8>, (u32, String)>>,
    call_failures: Mutex<VecDeque<SdkFailure>>,
    /// Answer one result fewer than asked (a broken response).
    short_answer: bool,
    /// The records of every call, in order.
    calls: Mutex<Vec<Vec<StreamRecord>>>,
    /// The records accepted, in order.
    accepted: Mutex<Vec<StreamRecord>>,
}

impl FakeSink {
    fn refuse(&self, data: &[u8], times: u32, code: &str) {
        self.plan
            .lock()
            .unwrap()
            .insert(data.to_vec(), (times, code.to_string()));
    }

    fn fail_call(&self, code: Option<&str>, retryable: bool) {
        self.call_failures.lock().unwrap().push_back(SdkFailure {
            status: code.map(|_| 400),
            code: code.map(str::to_string),
            message: "call failed".into(),
            retryable,
        });
    }

    fn call_sizes(&self) -> Vec<usize> {
        self.calls.lock().unwrap().iter().map(Vec::len).collect()
    }

    fn accepted_data(&self) -> Vec<Vec<u8>> {
        let accepted = self.accepted.lock().unwrap();
        accepted.iter().map(|r| r.data.clone()).collect()
    }
}

#[async_trait]
impl RecordSink for FakeSink {
    fn stream(&self) -> &str {
        STREAM
    }

    async fn put_batch(&self, records: &[StreamRecord]) -> Result<Vec<RecordResult>, SdkFailure> {
        self.calls.lock().unwrap().push(records.to_vec());
        if let Some(f) = self.call_failures.lock().unwrap().pop_front() {
            return Err(f);
        }
        let mut plan = self.plan.lock().unwrap();
        let mut accepted = self.accepted.lock().unwrap();
        let mut out = Vec::new();
        for r in records {
            match plan.get_mut(&r.data) {
                Some((left, code)) if *left > 0 => {
                    *left -= 1;
                    out.push(Err(RecordFailure {
                        code: code.clone(),
                        message: "refused".into(),
                    }));
                }
                _ => {
                    accepted.push(r.clone());
                    out.push(Ok(format!("seq-{}", accepted.len())));
                }
            }
        }
        if self.short_answer {
            out.pop();
        }
        Ok(out)
    }
}

/// Retries without waiting, so tests run fast.
fn no_wait(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        first_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    }
}

fn source(lsn: u64) -> Source {
    Source {
        db: "shop".into(),
        schema: "public".into(),
        table: "orders".into(),
        lsn,
        txid: 7461,
        commit_ts: "2026-11-26T09:00:00.123456Z".into(),
    }
}

fn record(i: u32, data: Vec<u8>) -> PendingRecord {
    PendingRecord {
        table: "orders".into(),
        partition_key: format!("k{}", i % 7),
        data,
        lsn: 1000 + u64::from(i),
        index: i,
        source: source(1000 + u64::from(i)),
    }
}

fn small(i: u32) -> PendingRecord {
    record(i, format!("r{i}").into_bytes())
}

struct Fixture {
    sink: Arc<FakeSink>,
    lake: Arc<LocalStore>,
    _dir: tempfile::TempDir,
}

fn fixture(sink: FakeSink) -> (Fixture, Publisher) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(LocalStore::new(dir.path()).unwrap());
    let sink = Arc::new(sink);
    let publisher = Publisher::new(sink.clone(), lake.clone()).with_retry(no_wait(5));
    let f = Fixture {
        sink,
        lake,
        _dir: dir,
    };
    (f, publisher)
}

async fn add_all(p: &mut Publisher, records: impl IntoIterator<Item = PendingRecord>) {
    for r in records {
        p.add(r).await.unwrap();
    }
}

#[tokio::test]
async fn only_the_refused_records_are_resent() {
    let sink = FakeSink::default();
    sink.refuse(b"r3", 2, "ProvisionedThroughputExceededException");
    sink.refuse(b"r5", 1, "KMSThrottlingException");
    sink.refuse(b"r7", 1, "InternalFailure");
    let (f, mut p) = fixture(sink);
    add_all(&mut p, (0..10).map(small)).await;
    assert_eq!(
        f.sink.call_sizes(),
        Vec::<usize>::new(),
        "nothing sent before flush"
    );
    p.flush().await.unwrap();
    let calls = f.sink.calls.lock().unwrap().clone();
    let data =
        |c: &Vec<StreamRecord>| -> Vec<Vec<u8>> { c.iter().map(|r| r.data.clone()).collect() };
    assert_eq!(calls.len(), 3);
    assert_eq!(
        data(&calls[1]),
        [b"r3".to_vec(), b"r5".to_vec(), b"r7".to_vec()]
    );
    assert_eq!(data(&calls[2]), [b"r3".to_vec()]);
    let mut accepted = f.sink.accepted_data();
    accepted.sort();
    let mut want: Vec<Vec<u8>> = (0..10).map(|i| format!("r{i}").into_bytes()).collect();
    want.sort();
    assert_eq!(accepted, want, "every record on the stream exactly once");
    assert_eq!((p.added(), p.acked()), (10, 10));
    let c = p.counters();
    assert_eq!(
        (c.calls, c.retries, c.records_retried, c.records_sent),
        (3, 2, 4, 10)
    );
    assert_eq!(
        c.bytes_sent,
        (0..10)
            .map(|i| 2 + format!("r{i}").len() as u64)
            .sum::<u64>()
    );
}

/// `acked` moves only when a whole send succeeded, and a send that gave up keeps its
/// unacknowledged records for the next flush (and only those).
#[tokio::test]
async fn acked_counts_in_add_order_and_a_failed_send_keeps_its_records() {
    let sink = FakeSink::default();
    sink.refuse(b"r520", 5, "ProvisionedThroughputExceededException");
    let (f, mut p) = fixture(sink);
    add_all(&mut p, (0..500).map(small)).await;
    assert_eq!(p.acked(), 0);
    p.add(small(500)).await.unwrap();
    assert_eq!(
        (p.added(), p.acked()),
        (501, 500),
        "the 501st add sent the first 500"
    );
    add_all(&mut p, (501..600).map(small)).await;
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(&e, PublishError::GaveUp { stream, attempts: 5, records_left: 1, last_code, .. }
            if stream == STREAM && last_code == "ProvisionedThroughputExceededException"),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert!(e.to_string().contains(STREAM), "{e}");
    assert_eq!(
        p.acked(),
        500,
        "the refused record holds back everything added after 500"
    );
    // The refusals have run out: the next flush sends r520 alone.
    p.flush().await.unwrap();
    assert_eq!(p.acked(), 600);
    let calls = f.sink.calls.lock().unwrap().clone();
    let last = calls.last().unwrap();
    assert_eq!(
        last.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        [b"r520".to_vec()]
    );
    assert_eq!(f.sink.accepted_data().len(), 600);
}

#[tokio::test]
async fn gives_up_after_the_attempts_with_the_last_code() {
    let sink = FakeSink::default();
    sink.refuse(b"r1", u32::MAX, "InternalFailure");
    let (f, p) = fixture(sink);
    let mut p = p.with_retry(no_wait(4));
    add_all(&mut p, (0..3).map(small)).await;
    let e = p.flush().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Kinesis stream fake-stream: 1 records still unacknowledged after 4 attempts \
         (last error InternalFailure: refused)"
    );
    assert_eq!(f.sink.call_sizes(), [3, 1, 1, 1]);
    assert_eq!(p.acked(), 0);
}

#[tokio::test]
async fn a_lasting_record_failure_is_not_retried() {
    let sink = FakeSink::default();
    sink.refuse(b"r0", 1, "KMSAccessDeniedException");
    let (f, mut p) = fixture(sink);
    add_all(&mut p, (0..2).map(small)).await;
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(&e, PublishError::Rejected { records_left: 1, code, .. } if code == "KMSAccessDeniedException"),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    assert_eq!(f.sink.call_sizes(), [2]);
}

#[tokio::test]
async fn whole_call_failures_are_retried_when_transient() {
    let sink = FakeSink::default();
    sink.fail_call(Some("ThrottlingException"), true);
    sink.fail_call(None, true); // a network failure: no response
    let (f, mut p) = fixture(sink);
    add_all(&mut p, (0..4).map(small)).await;
    p.flush().await.unwrap();
    assert_eq!(f.sink.call_sizes(), [4, 4, 4]);
    assert_eq!(p.acked(), 4);

    let sink = FakeSink::default();
    sink.fail_call(Some("ResourceNotFoundException"), false);
    let (f, mut p) = fixture(sink);
    add_all(&mut p, (0..4).map(small)).await;
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(&e, PublishError::Rejected { records_left: 4, code, .. } if code == "ResourceNotFoundException"),
        "{e:?}"
    );
    assert_eq!(f.sink.call_sizes(), [4]);

    let sink = FakeSink::default();
    for _ in 0..3 {
        sink.fail_call(None, true);
    }
    let (_f, p) = fixture(sink);
    let mut p = p.with_retry(no_wait(3));
    p.add(small(0)).await.unwrap();
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(&e, PublishError::GaveUp { records_left: 1, last_code, .. } if last_code == "NoResponse"),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_deadline_stops_resends() {
    let sink = FakeSink::default();
    sink.refuse(b"r0", 1, "ProvisionedThroughputExceededException");
    let (f, p) = fixture(sink);
    let mut p = p
        .with_retry(RetryPolicy {
            max_attempts: 5,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
        })
        .with_deadline(Instant::now() + Duration::from_millis(500));
    p.add(small(0)).await.unwrap();
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(
            &e,
            PublishError::DeadlineReached {
                records_left: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_eq!(f.sink.call_sizes(), [1]);
}

#[tokio::test]
async fn a_short_answer_is_an_error() {
    let sink = FakeSink {
        short_answer: true,
        ..FakeSink::default()
    };
    let (_f, mut p) = fixture(sink);
    add_all(&mut p, (0..3).map(small)).await;
    let e = p.flush().await.unwrap_err();
    assert!(
        matches!(
            e,
            PublishError::BadResponse {
                sent: 3,
                got: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(p.acked(), 0);
}

#[tokio::test]
async fn calls_hold_at_most_500_records() {
    let (f, mut p) = fixture(FakeSink::default());
    add_all(&mut p, (0..501).map(small)).await;
    p.flush().await.unwrap();
    assert_eq!(f.sink.call_sizes(), [500, 1]);
    assert_eq!(p.acked(), 501);
}

#[tokio::test]
async fn calls_hold_at_most_5_mib_partition_keys_included() {
    // 12 records of 512 KiB (6 MiB): 9 fit with their keys, the 10th would pass 5 MiB.
    let (f, mut p) = fixture(FakeSink::default());
    add_all(&mut p, (0..12).map(|i| record(i, vec![b'x'; 512 * 1024]))).await;
    p.flush().await.unwrap();
    assert_eq!(f.sink.call_sizes(), [9, 3]);

    // Records of exactly 1 MiB with their key are not spilled, and 5 of them fill one call.
    let (f, mut p) = fixture(FakeSink::default());
    add_all(
        &mut p,
        (0..6).map(|i| record(i, vec![b'y'; MAX_RECORD_BYTES - 2])),
    )
    .await;
    p.flush().await.unwrap();
    assert_eq!(f.sink.call_sizes(), [5, 1]);
    for call in f.sink.calls.lock().unwrap().iter() {
        let bytes: usize = call.iter().map(StreamRecord::size_bytes).sum();
        assert!(bytes <= MAX_BYTES_PER_CALL, "{bytes}");
    }
    assert_eq!(p.counters().spilled, 0);
}

#[tokio::test]
async fn an_oversized_event_is_spilled_before_its_pointer_is_sent() {
    let (f, mut p) = fixture(FakeSink::default());
    // One byte over the limit with its 2-byte key.
    let big = vec![b'z'; MAX_RECORD_BYTES - 1];
    p.add(small(0)).await.unwrap();
    p.add(record(8, big.clone())).await.unwrap();
    let key = spill_key("orders", 1008, 8);
    assert_eq!(key, "spill/cdc/orders/1008-8.json");
    assert_eq!(f.sink.call_sizes(), Vec::<usize>::new(), "nothing sent yet");
    assert_eq!(
        f.lake.get_bytes(&key).await.unwrap().to_vec(),
        big,
        "spilled at add"
    );
    p.flush().await.unwrap();
    let accepted = f.sink.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        accepted[1].partition_key, "k1",
        "the event's own partition key"
    );
    let pointer: serde_json::Value = serde_json::from_slice(&accepted[1].data).unwrap();
    assert_eq!(
        pointer,
        json!({"spill": {"key": key, "bytes": MAX_RECORD_BYTES - 1},
               "source": {"db": "shop", "schema": "public", "table": "orders", "lsn": 1008,
                          "txid": 7461, "commit_ts": "2026-11-26T09:00:00.123456Z"}})
    );
    let c = p.counters();
    assert_eq!(
        (c.spilled, c.spilled_bytes),
        (1, (MAX_RECORD_BYTES - 1) as u64)
    );
    assert_eq!(p.acked(), 2);
}

#[tokio::test]
async fn a_failed_spill_adds_nothing() {
    let (f, mut p) = fixture(FakeSink::default());
    // A file where the table's spill folder should be: the write cannot happen.
    let blocker = f.lake.local_path("spill/cdc/orders").unwrap();
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a folder").unwrap();
    let e = p
        .add(record(3, vec![b'z'; MAX_RECORD_BYTES + 1]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PublishError::Spill { table, lsn: 1003, index: 3, key, .. }
            if table == "orders" && key == "spill/cdc/orders/1003-3.json"),
        "{e:?}"
    );
    assert_eq!(p.added(), 0);
    p.flush().await.unwrap();
    assert_eq!(f.sink.call_sizes(), Vec::<usize>::new());
}

#[tokio::test]
async fn partition_keys_must_have_1_to_256_characters() {
    let (_f, mut p) = fixture(FakeSink::default());
    for bad in [String::new(), "a".repeat(257)] {
        let r = PendingRecord {
            partition_key: bad,
            ..small(0)
        };
        let e = p.add(r).await.unwrap_err();
        assert!(matches!(e, PublishError::BadRecord { .. }), "{e:?}");
        assert!(e.to_string().contains("1 to 256"), "{e}");
    }
    // Kinesis counts characters: 256 two-byte characters pass.
    let r = PendingRecord {
        partition_key: "é".repeat(256),
        ..small(0)
    };
    p.add(r).await.unwrap();
}

#[test]
fn waits_double_up_to_the_cap_with_jitter() {
    let policy = RetryPolicy {
        max_attempts: 10,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    for attempt in 1..40 {
        let base =
            Duration::from_millis(100 * (1u64 << (attempt - 1).min(20))).min(policy.max_backoff);
        let wait = policy.wait(attempt);
        assert!(
            wait >= base / 2 && wait <= base,
            "attempt {attempt}: {wait:?} for {base:?}"
        );
    }
    let waits: std::collections::HashSet<Duration> = (0..50).map(|_| policy.wait(5)).collect();
    assert!(waits.len() > 1, "jitter varies the waits");
}

//! The failure paths on a store that fails chosen writes and reads (as S3 throttling would):
//! each reports the lowest sequence number not durably written, and writes nothing past it
//! that a retry would duplicate.

use std::path::Path;

use async_trait::async_trait;

use super::*;

/// A store that fails puts under one prefix and reads of one key (as S3 throttling would).
#[derive(Debug)]
struct FailingStore {
    inner: Arc<LocalStore>,
    fail_puts_under: Option<String>,
    fail_get: Option<String>,
}

fn throttled(op: &'static str, key: &str) -> LakeError {
    LakeError::Service {
        op,
        key: key.to_string(),
        message: "SlowDown".into(),
        retryable: true,
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    fn url(&self, key: &str) -> String {
        self.inner.url(key)
    }
    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError> {
        if self.fail_get.as_deref() == Some(key) {
            return Err(throttled("GetObject", key));
        }
        self.inner.get_bytes(key).await
    }
    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, LakeError> {
        self.inner.get_to_file(key, dest).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError> {
        if self
            .fail_puts_under
            .as_deref()
            .is_some_and(|p| key.starts_with(p))
        {
            return Err(throttled("PutObject", key));
        }
        self.inner.put(key, body, mode).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<PutResult, LakeError> {
        self.inner.put_file(key, path).await
    }
    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        self.inner.list(prefix).await
    }
}

fn failing(
    inner: &Arc<LocalStore>,
    puts_under: Option<&str>,
    get: Option<&str>,
) -> Arc<FailingStore> {
    Arc::new(FailingStore {
        inner: inner.clone(),
        fail_puts_under: puts_under.map(str::to_string),
        fail_get: get.map(str::to_string),
    })
}

#[tokio::test]
async fn a_failed_write_reports_the_lowest_sequence_number_not_written() -> TestResult {
    let (_dir, local) = local_lake()?;
    let store = failing(
        &local,
        Some(layout::raw_cdc_prefix("orders").as_str()),
        None,
    );
    let deps = deps(store.clone())?;
    // Refused records on both sides of the failed group's first record.
    let event = kinesis_event(&[
        ("101", b"{not json"),
        ("102", &change("customers", 1, 10)),
        ("103", &change("orders", 1, 11)),
        ("104", b"[1, 2]"),
        ("105", &change("orders", 2, 12)),
        ("106", &change("customers", 2, 13)),
    ]);
    let response = handle(&deps, event.clone()).await?;
    assert_eq!(failures(&response), ["103"]);
    assert_eq!(
        serde_json::to_value(&response)?,
        json!({"batchItemFailures": [{"itemIdentifier": "103"}]})
    );
    // The other table is written; only the refused record before 103 is quarantined (104
    // comes back with the retry).
    assert_eq!(
        keys(local.as_ref(), layout::RAW_CDC).await?,
        [layout::cdc_object_key("customers", SHARD, "102", "106")]
    );
    let qkey = layout::cdc_quarantine_key(SHARD, "101", "101");
    assert_eq!(
        keys(local.as_ref(), layout::QUARANTINE).await?,
        std::slice::from_ref(&qkey)
    );
    assert_eq!(quarantined(local.as_ref(), &qkey).await?[0].line, 1);
    let report = run_sink(store.as_ref(), &event).await?;
    assert_eq!(report.retried, 4);
    assert!(
        report.failures[0].contains("raw/cdc/orders/"),
        "{:?}",
        report.failures
    );
    Ok(())
}

#[tokio::test]
async fn a_spill_read_error_stops_the_batch_at_its_pointer() -> TestResult {
    let (_dir, local) = local_lake()?;
    local
        .put(SPILL_KEY, Bytes::from(spilled_change()), PutMode::Overwrite)
        .await?;
    let store = failing(&local, None, Some(SPILL_KEY));
    let event: Value = serde_json::from_str(SPILL_SAMPLE)?;
    let data = data_of(&event)?;
    let report = run_sink(store.as_ref(), &event).await?;
    assert_eq!(
        report.retry_from.as_ref().map(|s| s.to_string()),
        Some(seq(101))
    );
    assert_eq!(report.retried, 5);
    assert_eq!(report.spills_resolved, 0);
    // Only the record before the pointer is written; everything after it comes back.
    let orders = layout::cdc_object_key("orders", SHARD, &seq(100), &seq(100));
    assert_eq!(
        keys(local.as_ref(), layout::RAW_CDC).await?,
        std::slice::from_ref(&orders)
    );
    assert_eq!(local.get_bytes(&orders).await?.to_vec(), jsonl(&[&data[0]]));
    assert!(keys(local.as_ref(), layout::QUARANTINE).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failed_quarantine_write_reports_its_first_record() -> TestResult {
    let (_dir, local) = local_lake()?;
    let store = failing(&local, Some(layout::QUARANTINE), None);
    let event = kinesis_event(&[
        ("7", &change("orders", 1, 11)),
        ("8", b"\xff\xfe not utf-8"),
        ("9", &change("orders", 2, 12)),
    ]);
    let report = run_sink(store.as_ref(), &event).await?;
    assert_eq!(report.retry_from.as_ref().map(|s| s.as_str()), Some("8"));
    assert_eq!(report.retried, 2);
    assert_eq!(report.quarantined(), 0);

    // With the quarantine writable, a record that is not UTF-8 is kept in base64.
    let report = run_sink(local.as_ref(), &event).await?;
    assert_eq!(report.retry_from, None);
    let q = quarantined(local.as_ref(), &layout::cdc_quarantine_key(SHARD, "8", "8")).await?;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(&q[0].raw)?,
        b"\xff\xfe not utf-8"
    );
    assert!(q[0].reason.contains("base64"), "{}", q[0].reason);
    Ok(())
}

//! The `transform` Lambda: S3 ObjectCreated on `raw/` → `sluice::transform`.
//!
//! The handler only turns the event into calls on the shared library: decode each record's
//! key, skip what is not ours, transform the rest, emit one EMF metrics line per object.
//! An object larger than the pipeline's `[glue]` threshold (the event's `s3.object.size`), of a
//! table whose format the Glue job reads (csv, jsonl), is not transformed here: a run of the
//! Glue job is started for it (`sluice::glue_job`), once per object version (a claim under
//! `state/glue/` makes a re-delivered event report that run). A cdc table's objects are always
//! transformed here.
//! Every record is attempted; if any failed, the invocation fails naming each failed key
//! (S3 then retries the event, and deterministic output keys make that harmless).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use sluice::catalog::Catalog;
use sluice::events::decode_s3_key;
use sluice::glue_job::{GlueRoute, LargeObject};
use sluice::lake::{layout, Lakes};
use sluice::lambda::ErrorKind;
pub use sluice::lambda::HandlerError;
use sluice::transform::Transformer;

/// Everything built once at init and borrowed by every invocation.
pub struct Deps {
    pub transformer: Transformer,
    /// The object store for each bucket an event names (S3, or one fixed lake).
    pub lakes: Lakes,
    pub catalog: Arc<dyn Catalog>,
    /// The Glue route for objects above `[glue].threshold_bytes`; `None` without `[glue]`.
    pub glue: Option<GlueRoute>,
    /// Print the EMF metrics line to stdout (CloudWatch turns it into metrics).
    pub emit_metrics: bool,
}

/// What one invocation did, returned as the function's result (and seen in `cargo lambda invoke`).
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Response {
    pub processed: Vec<Processed>,
    pub ignored: Vec<String>,
    /// Objects handed to the Glue job, one run each (absent from the JSON when there are none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub glue_job_runs: Vec<GlueJobRun>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Processed {
    pub bucket: String,
    pub key: String,
    pub table: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_duplicate: u64,
    pub rows_quarantined: u64,
    pub files: usize,
    pub manifest_key: String,
}

/// An object above the Glue threshold, and the job run started for it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GlueJobRun {
    pub bucket: String,
    pub key: String,
    pub table: String,
    pub size_bytes: u64,
    pub job_name: String,
    pub run_id: String,
    /// The run was started by an earlier delivery of this object; this invocation started none.
    pub already_started: bool,
}

/// What became of one record of the event.
enum Outcome {
    Processed(Processed),
    GlueJobRun(GlueJobRun),
    Ignored(String),
    Failed(ErrorKind, String),
}

/// Handles one S3 notification event (or the `s3:TestEvent` S3 sends on set-up).
pub async fn handle(deps: &Deps, event: Value) -> Result<Response, HandlerError> {
    if event.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        tracing::info!("s3:TestEvent received; nothing to do");
        return Ok(Response::default());
    }
    let records = event
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            HandlerError::bad_input("event has no Records array: not an S3 notification")
        })?;
    let mut response = Response::default();
    let mut failures = Vec::new();
    let mut worst = ErrorKind::BadInput;
    for (i, r) in records.iter().enumerate() {
        match handle_record(deps, i, r).await {
            Outcome::Processed(p) => response.processed.push(p),
            Outcome::GlueJobRun(g) => response.glue_job_runs.push(g),
            Outcome::Ignored(key) => response.ignored.push(key),
            Outcome::Failed(kind, message) => {
                worst = worst.worst(kind);
                failures.push(message);
            }
        }
    }
    if failures.is_empty() {
        Ok(response)
    } else {
        Err(HandlerError::new(
            worst,
            format!(
                "{} of {} records failed: {}",
                failures.len(),
                records.len(),
                failures.join("; ")
            ),
        ))
    }
}

/// One record: checks it is an object of ours, then transforms it here or hands it to Glue.
async fn handle_record(deps: &Deps, i: usize, r: &Value) -> Outcome {
    let bucket = r.pointer("/s3/bucket/name").and_then(Value::as_str);
    let raw_key = r.pointer("/s3/object/key").and_then(Value::as_str);
    let (Some(bucket), Some(raw_key)) = (bucket, raw_key) else {
        return Outcome::Failed(
            ErrorKind::BadInput,
            format!("record {i}: missing s3.bucket.name or s3.object.key"),
        );
    };
    let key = match decode_s3_key(raw_key) {
        Ok(k) => k,
        Err(e) => return Outcome::Failed(ErrorKind::BadInput, format!("record {i}: {e}")),
    };
    let event_name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
    if !event_name.is_empty() && !event_name.starts_with("ObjectCreated") {
        tracing::info!(
            bucket,
            key,
            event_name,
            "not an ObjectCreated event; ignored"
        );
        return Outcome::Ignored(key);
    }
    if !layout::is_raw_object(&key) {
        tracing::info!(
            bucket,
            key,
            "key is outside raw/ (or a folder marker); ignored"
        );
        return Outcome::Ignored(key);
    }
    // S3 always sends the size; an event without one (hand-written) is transformed here.
    let size = r.pointer("/s3/object/size").and_then(Value::as_u64);
    if let Some((route, table, size_bytes)) = glue_route(deps, &key, size) {
        let etag = r.pointer("/s3/object/eTag").and_then(Value::as_str);
        let object = LargeObject {
            bucket,
            key: &key,
            table,
            size_bytes,
        };
        return start_glue_run(deps, route, i, &object, etag).await;
    }
    transform(deps, i, bucket, key).await
}

/// The Glue route an object takes, with its table and size: when it is above the threshold
/// and its table's format is one the job reads. A cdc table's objects stay here whatever their
/// size (the job does not read change events); a key no table owns is transformed here, which
/// fails naming the prefixes.
fn glue_route<'a>(
    deps: &'a Deps,
    key: &str,
    size: Option<u64>,
) -> Option<(&'a GlueRoute, &'a str, u64)> {
    let (route, size) = (deps.glue.as_ref()?, size?);
    let table = deps.transformer.table_for_key(key).ok()?;
    if route.routes(table, size) {
        return Some((route, table.name.as_str(), size));
    }
    if route.config().routes(size) {
        tracing::info!(
            table = %table.name,
            key,
            size_bytes = size,
            format = ?table.format,
            "object above the Glue threshold, of a format the Glue job does not read: transformed here"
        );
    }
    None
}

/// Transforms the object in this invocation.
async fn transform(deps: &Deps, i: usize, bucket: &str, key: String) -> Outcome {
    let store = match deps.lakes.for_bucket(bucket) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(ErrorKind::BadInput, format!("record {i}: {e}")),
    };
    match deps
        .transformer
        .transform_object(store.as_ref(), deps.catalog.as_ref(), &key, None)
        .await
    {
        Ok(s) => {
            if deps.emit_metrics {
                println!("{}", s.emf_line());
            }
            Outcome::Processed(Processed {
                bucket: bucket.to_string(),
                key,
                table: s.table,
                rows_read: s.counts.rows_read,
                rows_written: s.counts.rows_written,
                rows_duplicate: s.counts.rows_duplicate,
                rows_quarantined: s.counts.rows_quarantined,
                files: s.files.len(),
                manifest_key: s.manifest_key,
            })
        }
        Err(e) => {
            tracing::error!(bucket, key, error = %e, kind = ?e.kind(), "transform failed");
            Outcome::Failed(e.kind(), format!("s3://{bucket}/{key}: {e}"))
        }
    }
}

/// Starts a Glue job run for an object above the threshold (its table resolved by
/// [`glue_route`] as the transform resolves it).
async fn start_glue_run(
    deps: &Deps,
    route: &GlueRoute,
    i: usize,
    object: &LargeObject<'_>,
    etag: Option<&str>,
) -> Outcome {
    let LargeObject {
        bucket,
        key,
        table,
        size_bytes,
    } = *object;
    // The lake pin (SLUICE_LAKE) holds here too: the job would write into the event's bucket.
    let store = match deps.lakes.for_bucket(bucket) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(ErrorKind::BadInput, format!("record {i}: {e}")),
    };
    // S3 always sends the ETag; a hand-written event without one gets it from the object.
    let etag = match etag {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => match store.head(key).await {
            Ok(meta) => meta.etag.unwrap_or_default(),
            Err(e) => {
                let kind = if e.is_retryable() {
                    ErrorKind::Retryable
                } else {
                    ErrorKind::BadInput
                };
                return Outcome::Failed(kind, format!("s3://{bucket}/{key}: {e}"));
            }
        },
    };
    match route.start_once(store.as_ref(), object, &etag).await {
        Ok(run) if run.already_started => {
            tracing::info!(
                table,
                key,
                job_name = %run.job_name,
                run_id = %run.run_id,
                "object above the Glue threshold: its job run was already started; none started now"
            );
            Outcome::GlueJobRun(GlueJobRun {
                bucket: bucket.to_string(),
                key: key.to_string(),
                table: table.to_string(),
                size_bytes,
                job_name: run.job_name,
                run_id: run.run_id,
                already_started: true,
            })
        }
        Ok(run) => {
            tracing::info!(
                table,
                key,
                size_bytes,
                threshold_bytes = route.config().threshold_bytes,
                job_name = %run.job_name,
                run_id = %run.run_id,
                attempts = run.attempts,
                "object above the Glue threshold: job run started"
            );
            if deps.emit_metrics {
                println!("{}", run.emf_line(object));
            }
            Outcome::GlueJobRun(GlueJobRun {
                bucket: bucket.to_string(),
                key: key.to_string(),
                table: table.to_string(),
                size_bytes,
                job_name: run.job_name,
                run_id: run.run_id,
                already_started: false,
            })
        }
        Err(e) => {
            tracing::error!(table, key, size_bytes, error = %e, kind = ?e.kind(), "Glue job run not started");
            Outcome::Failed(e.kind(), e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    //! The handler on a local lake and catalog: the same event fixture as the deployed
    //! function's, no AWS at all (the moto and bootstrap tests are in `tests/`).
    use super::*;
    use sluice::catalog::LocalCatalog;
    use sluice::config::Pipeline;
    use sluice::lake::manifest::Manifest;
    use sluice::lake::{LocalStore, ObjectStore, PutMode};

    const PUT_EVENT: &str = include_str!("../../../events/s3-put.json");
    const EXAMPLE: &str = include_str!("../../../examples/pipeline.toml");

    #[tokio::test]
    async fn handles_the_put_fixture_on_a_local_lake() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("hash.key"), "k".repeat(32))?;
        let pipeline_path = dir.path().join("pipeline.toml");
        let text = EXAMPLE.replace("secret = \"sluice/hash-key\"", "file = \"hash.key\"");
        std::fs::write(&pipeline_path, text)?;
        let pipeline = Pipeline::from_path(&pipeline_path)?;
        let hash_key = sluice::secrets::load_hash_key(&pipeline, None, None).await?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("lake"))?);
        // The key the fixture names, once decoded.
        let key = "raw/funnel/2019-10 sample+1.csv";
        let csv = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
                   2019-10-01 00:00:00 UTC,view,1,2,,acme,1.5,7,s1\n\
                   2019-11-02 00:00:00 UTC,cart,1,2,,acme,1.5,,s2\n\
                   not a time,view,1,2,,acme,1.5,7,s3\n";
        store
            .put(key, csv.as_bytes().to_vec().into(), PutMode::Overwrite)
            .await?;
        let deps = Deps {
            transformer: Transformer::new(pipeline, hash_key)?,
            lakes: Lakes::Fixed(store.clone()),
            catalog: Arc::new(LocalCatalog::new(dir.path().join("catalog.json"))),
            glue: None,
            emit_metrics: false,
        };
        let event: Value = serde_json::from_str(PUT_EVENT)?;
        let r = handle(&deps, event).await?;
        assert_eq!(r.processed.len(), 1, "{r:?}");
        let p = &r.processed[0];
        assert_eq!((p.key.as_str(), p.table.as_str()), (key, "funnel"));
        assert_eq!((p.rows_read, p.rows_written, p.rows_quarantined), (3, 2, 1));
        let m = Manifest::from_json(&store.get_bytes(&p.manifest_key).await?, &p.manifest_key)?;
        assert_eq!(m.files.len(), 2, "two months");
        assert_eq!(m.file_rows(), 2);
        for f in &m.files {
            assert_eq!(store.head(&f.key).await?.etag, f.etag);
        }
        Ok(())
    }

    /// Records the source key of every start (the trait is `async_trait`, written out here
    /// because this crate does not depend on the macro).
    #[derive(Debug, Default)]
    struct RecordingStarter(std::sync::Mutex<Vec<String>>);

    impl sluice::glue_job::JobStarter for RecordingStarter {
        fn start_job_run<'s, 'j, 'a, 'f>(
            &'s self,
            _job_name: &'j str,
            arguments: &'a std::collections::BTreeMap<String, String>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<String, sluice::aws::SdkFailure>>
                    + Send
                    + 'f,
            >,
        >
        where
            's: 'f,
            'j: 'f,
            'a: 'f,
            Self: 'f,
        {
            let key = arguments
                .get(sluice::glue_job::ARG_SOURCE_KEY)
                .cloned()
                .unwrap_or_default();
            Box::pin(async move {
                let mut starts = self.0.lock().map_err(|_| sluice::aws::SdkFailure {
                    status: None,
                    code: None,
                    message: "poisoned".into(),
                    retryable: false,
                })?;
                starts.push(key);
                Ok(format!("jr_{}", starts.len()))
            })
        }
    }

    const CDC_AND_JSONL: &str = r#"
[glue]
job_name = "sluice-transform"
threshold_bytes = 10

[cdc]
source_url_env = "SLUICE_CDC_SOURCE_URL"
slot = "s"
publication = "p"
stream = "changes"

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "cdc"
cdc = { schema = "public", table = "orders" }
dedup = { key = ["id"] }
catalog = { database = "lake" }
columns = [{ name = "id", type = "int" }]

[[tables]]
name = "events"
raw_prefix = "raw/events/"
format = "jsonl"
partition_by = "t"
catalog = { database = "lake" }
columns = [{ name = "t", type = "timestamp" }]
"#;

    /// The put fixture's record for `key`, `size` bytes.
    fn put_record(key: &str, size: u64) -> Result<Value, Box<dyn std::error::Error>> {
        let mut event: Value = serde_json::from_str(PUT_EVENT)?;
        let mut record = event["Records"][0].take();
        record["s3"]["object"]["key"] = Value::from(key);
        record["s3"]["object"]["size"] = Value::from(size);
        Ok(record)
    }

    #[tokio::test]
    async fn a_cdc_object_above_the_glue_threshold_is_transformed_here(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pipeline = Pipeline::parse(CDC_AND_JSONL, "cdc-and-jsonl.toml")?;
        let glue = pipeline.glue.clone().ok_or("no [glue]")?;
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("lake"))?);
        let cdc_key = "raw/cdc/orders/shardId-000000000000/1-2.jsonl";
        let change = r#"{"op":"c","before":null,"after":{"id":1},"source":{"db":"shop","schema":"public","table":"orders","lsn":5,"txid":1,"commit_ts":"2026-11-26T09:00:00.000000Z"}}"#;
        store
            .put(
                cdc_key,
                format!("{change}\n").into_bytes().into(),
                PutMode::Overwrite,
            )
            .await?;
        let jsonl_key = "raw/events/big.jsonl";
        let starter = Arc::new(RecordingStarter::default());
        let deps = Deps {
            transformer: Transformer::new(pipeline, None)?,
            lakes: Lakes::Fixed(store.clone()),
            catalog: Arc::new(LocalCatalog::new(dir.path().join("catalog.json"))),
            glue: Some(GlueRoute::new(glue, "s3://conf/p.toml", starter.clone())?),
            emit_metrics: false,
        };
        // Both far above the 10-byte threshold.
        let event = serde_json::json!({"Records": [
            put_record(cdc_key, 1 << 30)?,
            put_record(jsonl_key, 1 << 30)?,
        ]});
        let r = handle(&deps, event).await?;
        let processed: Vec<(&str, &str, u64)> = r
            .processed
            .iter()
            .map(|p| (p.key.as_str(), p.table.as_str(), p.rows_written))
            .collect();
        assert_eq!(processed, [(cdc_key, "orders", 1)], "{r:?}");
        let runs: Vec<(&str, &str)> = r
            .glue_job_runs
            .iter()
            .map(|g| (g.key.as_str(), g.table.as_str()))
            .collect();
        assert_eq!(runs, [(jsonl_key, "events")]);
        let starts = starter.0.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(starts, [jsonl_key]);
        Ok(())
    }
}

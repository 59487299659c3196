//! The transform: one raw object in, typed, cleaned, deduplicated, PII-free Parquet out,
//! partitioned by year/month, registered in the catalog, and a manifest written last.
//!
//! Order of effects, so a crash at any point leaves the lake consistent and a re-run heals it:
//! 1. catalog table ensured (a type change stops here, before any file is written);
//! 2. Parquet files written under deterministic keys (a re-run overwrites the same keys);
//! 3. files of the previous manifest that this run did not write are deleted (a changed
//!    object leaves no stale rows; the old manifest still lists them until step 5);
//! 4. partitions registered;
//! 5. manifest written, last: the loader's trigger.

mod decode;
mod engine;
mod error;
mod keyset;
mod plan;
mod values;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::catalog::{Catalog, CatalogError, PartitionSpec};
use crate::config::{Pipeline, TableConfig};
use crate::lake::layout::{self, ObjectKeys};
use crate::lake::manifest::{self, RowCounts};
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{LakeError, ObjectStore, PutMode};
use crate::metrics::Emf;
use crate::secrets::HashKey;

/// Row counts of one object (the manifest's type: the counts the loader reconciles).
pub use crate::lake::manifest::RowCounts as Counts;
pub use crate::lake::manifest::{Manifest, ManifestFile};
pub use error::{ErrorKind, TransformError};

/// The lake keys of one source object (the rule lives in `lake::layout`).
pub type Layout = ObjectKeys;

/// Progress callback: bytes of the source read so far (increments).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What one transformed object produced.
#[derive(Debug, Clone)]
pub struct TransformSummary {
    pub table: String,
    pub source_key: String,
    pub source_bytes: u64,
    pub counts: RowCounts,
    pub files: Vec<ManifestFile>,
    /// Distinct (year, month) partitions written.
    pub partitions: Vec<(String, String)>,
    pub manifest_key: String,
    pub quarantine_key: Option<String>,
    /// Files of a previous run of the same key that were deleted.
    pub stale_files_deleted: usize,
    /// Columns added to the catalog table by this run.
    pub added_columns: Vec<String>,
    /// Header columns the pipeline does not declare (schema drift, ignored).
    pub unknown_columns: Vec<String>,
    /// Declared columns the header lacks (written as nulls).
    pub missing_columns: Vec<String>,
    pub duration_ms: u64,
}

impl TransformSummary {
    /// One CloudWatch Embedded Metric Format line for the object.
    pub fn emf_line(&self) -> String {
        let c = &self.counts;
        Emf::new("transform")
            .dimension("Table", &self.table)
            .property("SourceKey", self.source_key.as_str())
            .count("RowsRead", c.rows_read)
            .count("RowsWritten", c.rows_written)
            .count("RowsDuplicate", c.rows_duplicate)
            .count("RowsQuarantined", c.rows_quarantined)
            .bytes("SourceBytes", self.source_bytes)
            .count("FilesWritten", self.files.len() as u64)
            .millis("DurationMs", self.duration_ms)
            .line()
    }
}

/// The compiled pipeline plus the hash key: built once at start-up, shared by every event.
#[derive(Debug)]
pub struct Transformer {
    pipeline: Arc<Pipeline>,
    plans: HashMap<String, Arc<plan::Plan>>,
    hash_key: Option<HashKey>,
}

impl Transformer {
    /// Compiles every table's plan (so a bad pipeline fails at start-up, not on the first
    /// event) and checks the hash key is there when a table hashes PII.
    pub fn new(pipeline: Pipeline, hash_key: Option<HashKey>) -> Result<Self, TransformError> {
        let mut plans = HashMap::new();
        for t in &pipeline.tables {
            let p = plan::Plan::compile(t)
                .map_err(|e| TransformError::Plan(format!("table {}: {e}", t.name)))?;
            if hash_key.is_none() && p.outs.iter().any(|o| matches!(o.kind, plan::OutKind::Hash)) {
                return Err(TransformError::HashKey);
            }
            plans.insert(t.name.clone(), Arc::new(p));
        }
        Ok(Self {
            pipeline: Arc::new(pipeline),
            plans,
            hash_key,
        })
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Transforms one object of the lake.
    pub async fn transform_object(
        &self,
        store: &dyn ObjectStore,
        catalog: &dyn Catalog,
        key: &str,
        progress: Option<Progress>,
    ) -> Result<TransformSummary, TransformError> {
        let started = Instant::now();
        let table =
            self.pipeline
                .table_for_key(key)
                .ok_or_else(|| TransformError::UnknownTable {
                    key: key.to_string(),
                    prefixes: self
                        .pipeline
                        .tables
                        .iter()
                        .map(|t| t.raw_prefix.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let plan = self
            .plans
            .get(&table.name)
            .cloned()
            .ok_or_else(|| TransformError::Internal("plan missing".into()))?;
        let layout = ObjectKeys::new(&table.name, key);

        let work = tempfile::Builder::new()
            .prefix("sluice-transform-")
            .tempdir()
            .map_err(|e| TransformError::Io {
                key: key.to_string(),
                source: e,
            })?;
        let (input_path, meta) = match store.local_path(key) {
            Some(p) => (p, store.head(key).await?),
            None => {
                let p = work.path().join("input");
                let meta = store.get_to_file(key, &p).await?;
                (p, meta)
            }
        };

        // 1. Catalog first: an incompatible schema stops before any file is written.
        let def = plan.table_def(table, store.url(&layout::curated_prefix(&table.name)));
        let ensured = match catalog.ensure_table(&def).await {
            Ok(o) => o,
            Err(e @ CatalogError::Incompatible { .. }) => {
                let record = QuarantineRecord {
                    object: key.to_string(),
                    line: 0,
                    column: incompatible_column(&e),
                    reason: e.to_string(),
                    raw: String::new(),
                    raw_truncated: false,
                };
                let line = record
                    .to_json_line()
                    .map_err(|e| TransformError::Internal(format!("quarantine record: {e}")))?;
                store
                    .put(
                        &layout.quarantine_key,
                        Bytes::from(line),
                        PutMode::Overwrite,
                    )
                    .await?;
                tracing::error!(table = %table.name, key, quarantine = %layout.quarantine_key, error = %e, "schema change is not additive; object quarantined");
                return Err(TransformError::Incompatible {
                    key: key.to_string(),
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !ensured.added_columns.is_empty() {
            tracing::info!(table = %table.name, added = ?ensured.added_columns, "catalog table gained columns");
        }

        // 2. The engine, on a blocking thread.
        let out = {
            let table_cfg: TableConfig = table.clone();
            let plan = plan.clone();
            let key_owned = key.to_string();
            let hash_key = self.hash_key.clone();
            let work_dir = work.path().to_path_buf();
            let input_path: PathBuf = input_path.clone();
            tokio::task::spawn_blocking(move || {
                let progress_ref = progress.as_deref().map(|p| p as &(dyn Fn(u64) + Sync));
                let job = engine::EngineJob {
                    table: &table_cfg,
                    plan: &plan,
                    source_key: &key_owned,
                    hash_key: hash_key.as_ref(),
                    work_dir: &work_dir,
                    progress: progress_ref,
                };
                engine::run(&job, &input_path)
            })
            .await
            .map_err(|e| TransformError::Internal(format!("transform task: {e}")))??
        };

        // Upload files under deterministic keys.
        let mut files = Vec::with_capacity(out.files.len());
        for f in &out.files {
            let k = layout.curated_key(&f.year, &f.month, f.part);
            let put = store.put_file_moving(&k, &f.path).await?;
            files.push(ManifestFile {
                key: k,
                year: f.year.clone(),
                month: f.month.clone(),
                rows: f.rows,
                bytes: f.bytes,
                etag: put.etag,
            });
        }
        let quarantine_key = match &out.quarantine {
            Some(p) => {
                store.put_file_moving(&layout.quarantine_key, p).await?;
                Some(layout.quarantine_key.clone())
            }
            None => {
                // A re-run of a fixed object leaves no old quarantine behind.
                store.delete(&layout.quarantine_key).await?;
                None
            }
        };

        // 3. Stale files of a previous run of this key.
        let mut stale_files_deleted = 0;
        match store.get_bytes(&layout.manifest_key).await {
            Ok(b) => match Manifest::file_keys(&b, &layout.manifest_key) {
                Ok(prev) => {
                    let now: BTreeSet<&str> = files.iter().map(|f| f.key.as_str()).collect();
                    for k in prev.iter().filter(|k| !now.contains(k.as_str())) {
                        store.delete(k).await?;
                        stale_files_deleted += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(manifest = %layout.manifest_key, error = %e, "previous manifest unreadable; stale files (if any) not cleaned")
                }
            },
            Err(LakeError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }

        // 4. Partitions.
        let partitions: Vec<(String, String)> = files
            .iter()
            .map(|f| (f.year.clone(), f.month.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let specs: Vec<PartitionSpec> = partitions
            .iter()
            .map(|(y, m)| PartitionSpec {
                values: vec![y.clone(), m.clone()],
                location: store.url(&layout::partition_prefix(&table.name, y, m)),
            })
            .collect();
        catalog.add_partitions(&def, &specs).await?;

        // 5. The manifest, last.
        let counts: RowCounts = out.counts;
        let manifest = Manifest {
            version: manifest::MANIFEST_VERSION,
            table: table.name.clone(),
            source_key: key.to_string(),
            source_etag: meta.etag.clone(),
            source_bytes: meta.size_bytes,
            columns: crate::schema::manifest_columns(&plan.columns),
            files: files.clone(),
            counts,
            quarantine_key: quarantine_key.clone(),
        };
        let body = manifest
            .to_json()
            .map_err(|e| TransformError::Internal(format!("manifest: {e}")))?;
        store
            .put(&layout.manifest_key, Bytes::from(body), PutMode::Overwrite)
            .await?;

        let summary = TransformSummary {
            table: table.name.clone(),
            source_key: key.to_string(),
            source_bytes: meta.size_bytes,
            counts,
            files,
            partitions,
            manifest_key: layout.manifest_key,
            quarantine_key,
            stale_files_deleted,
            added_columns: ensured.added_columns,
            unknown_columns: out.unknown_columns,
            missing_columns: out.missing_columns,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let c = summary.counts;
        tracing::info!(
            table = %summary.table,
            key,
            rows_read = c.rows_read,
            rows_written = c.rows_written,
            rows_duplicate = c.rows_duplicate,
            rows_quarantined = c.rows_quarantined,
            files = summary.files.len(),
            partitions = summary.partitions.len(),
            stale_files_deleted,
            // Names only counted: a headerless file read with `header = true` would log its
            // first row as "column names", and rows may hold PII.
            unknown_columns = summary.unknown_columns.len(),
            missing_columns = ?summary.missing_columns,
            duration_ms = summary.duration_ms,
            "transformed"
        );
        Ok(summary)
    }
}

fn incompatible_column(e: &CatalogError) -> Option<String> {
    match e {
        CatalogError::Incompatible { column, .. } => Some(column.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

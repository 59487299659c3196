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
mod steps;
mod values;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::catalog::Catalog;
use crate::config::{Pipeline, TableConfig};
use crate::lake::layout::ObjectKeys;
use crate::lake::manifest::RowCounts;
use crate::lake::ObjectStore;
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

    /// Transforms one object of the lake, in the order of effects at the top of this file.
    pub async fn transform_object(
        &self,
        store: &dyn ObjectStore,
        catalog: &dyn Catalog,
        key: &str,
        progress: Option<Progress>,
    ) -> Result<TransformSummary, TransformError> {
        let started = Instant::now();
        let (table, plan) = self.table_and_plan(key)?;
        let run = steps::Run {
            store,
            catalog,
            table,
            plan: &plan,
            key,
            keys: ObjectKeys::new(&table.name, key),
        };
        let work = run.work_dir()?;
        let (input_path, meta) = run.input(work.path()).await?;
        let (def, ensured) = run.ensure_catalog().await?;
        let out = run
            .engine(self.hash_key.clone(), work.path(), input_path, progress)
            .await?;
        let files = run.upload_files(&out.files).await?;
        let quarantine_key = run.upload_quarantine(out.quarantine.as_deref()).await?;
        let stale_files_deleted = run.delete_stale(&files).await?;
        let partitions = run.register_partitions(&def, &files).await?;
        run.write_manifest(&meta, &files, out.counts, quarantine_key.clone())
            .await?;
        let summary = TransformSummary {
            table: table.name.clone(),
            source_key: key.to_string(),
            source_bytes: meta.size_bytes,
            counts: out.counts,
            files,
            partitions,
            manifest_key: run.keys.manifest_key.clone(),
            quarantine_key,
            stale_files_deleted,
            added_columns: ensured.added_columns,
            unknown_columns: out.unknown_columns,
            missing_columns: out.missing_columns,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        summary.log();
        Ok(summary)
    }

    /// The table that owns `key` (the longest `raw_prefix`), or the error a transform of the
    /// key fails with. The Glue route resolves its `--table` argument here too.
    pub fn table_for_key(&self, key: &str) -> Result<&TableConfig, TransformError> {
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
            })
    }

    /// The table that owns `key`, and its compiled plan.
    fn table_and_plan(&self, key: &str) -> Result<(&TableConfig, Arc<plan::Plan>), TransformError> {
        let table = self.table_for_key(key)?;
        let plan = self
            .plans
            .get(&table.name)
            .cloned()
            .ok_or_else(|| TransformError::Internal("plan missing".into()))?;
        Ok((table, plan))
    }
}

impl TransformSummary {
    /// The one log line per object.
    fn log(&self) {
        let c = self.counts;
        tracing::info!(
            table = %self.table,
            key = %self.source_key,
            rows_read = c.rows_read,
            rows_written = c.rows_written,
            rows_duplicate = c.rows_duplicate,
            rows_quarantined = c.rows_quarantined,
            files = self.files.len(),
            partitions = self.partitions.len(),
            stale_files_deleted = self.stale_files_deleted,
            // Names only counted: a headerless file read with `header = true` would log its
            // first row as "column names", and rows may hold PII.
            unknown_columns = self.unknown_columns.len(),
            missing_columns = ?self.missing_columns,
            duration_ms = self.duration_ms,
            "transformed"
        );
    }
}

#[cfg(test)]
mod tests;

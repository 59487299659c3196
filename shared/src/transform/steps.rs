//! The steps of one object's transform, in the order of effects `mod.rs` describes: input,
//! catalog, engine, files, quarantine, stale files, partitions, manifest. Each step is a method
//! on `Run`, the object's context.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::catalog::{Catalog, CatalogError, EnsureOutcome, PartitionSpec, TableDef};
use crate::config::TableConfig;
use crate::lake::layout::{self, ObjectKeys};
use crate::lake::manifest::{self, Manifest, ManifestFile, RowCounts};
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{LakeError, ObjectMeta, ObjectStore, PutMode};
use crate::secrets::HashKey;

use super::engine::{self, EngineOutput, LocalFile};
use super::plan::Plan;
use super::{Progress, TransformError};

/// One object's transform: where it reads and writes, and what it is.
pub(super) struct Run<'a> {
    pub store: &'a dyn ObjectStore,
    pub catalog: &'a dyn Catalog,
    pub table: &'a TableConfig,
    pub plan: &'a std::sync::Arc<Plan>,
    pub key: &'a str,
    pub keys: ObjectKeys,
}

impl Run<'_> {
    fn io(&self, e: std::io::Error) -> TransformError {
        TransformError::Io {
            key: self.key.to_string(),
            source: e,
        }
    }

    /// A private work directory, removed when dropped.
    pub fn work_dir(&self) -> Result<tempfile::TempDir, TransformError> {
        tempfile::Builder::new()
            .prefix("sluice-transform-")
            .tempdir()
            .map_err(|e| self.io(e))
    }

    /// The source as a local file: the local store's own file, or a streamed copy.
    pub async fn input(&self, work: &Path) -> Result<(PathBuf, ObjectMeta), TransformError> {
        match self.store.local_path(self.key) {
            Some(p) => Ok((p, self.store.head(self.key).await?)),
            None => {
                let p = work.join("input");
                let meta = self.store.get_to_file(self.key, &p).await?;
                Ok((p, meta))
            }
        }
    }

    /// 1. The catalog table, first: an incompatible schema stops here, before any file is
    ///    written, with the object quarantined and the column named.
    pub async fn ensure_catalog(&self) -> Result<(TableDef, EnsureOutcome), TransformError> {
        let location = self.store.url(&layout::curated_prefix(&self.table.name));
        let def = self.plan.table_def(self.table, location);
        match self.catalog.ensure_table(&def).await {
            Ok(o) => {
                if !o.added_columns.is_empty() {
                    tracing::info!(table = %self.table.name, added = ?o.added_columns, "catalog table gained columns");
                }
                Ok((def, o))
            }
            Err(e @ CatalogError::Incompatible { .. }) => Err(self.quarantine_object(e).await),
            Err(e) => Err(e.into()),
        }
    }

    /// Quarantines the whole object for a schema change the catalog refused.
    async fn quarantine_object(&self, e: CatalogError) -> TransformError {
        let column = match &e {
            CatalogError::Incompatible { column, .. } => Some(column.clone()),
            _ => None,
        };
        let record = QuarantineRecord {
            object: self.key.to_string(),
            line: 0,
            column,
            reason: e.to_string(),
            raw: String::new(),
            raw_truncated: false,
        };
        let written = match record.to_json_line() {
            Ok(line) => self
                .store
                .put(
                    &self.keys.quarantine_key,
                    Bytes::from(line),
                    PutMode::Overwrite,
                )
                .await
                .map_err(TransformError::from),
            Err(se) => Err(TransformError::Internal(format!("quarantine record: {se}"))),
        };
        if let Err(we) = written {
            return we;
        }
        tracing::error!(table = %self.table.name, key = self.key, quarantine = %self.keys.quarantine_key, error = %e, "schema change is not additive; object quarantined");
        TransformError::Incompatible {
            key: self.key.to_string(),
            source: Box::new(e),
        }
    }

    /// 2. The engine, on a blocking thread: Parquet files and the quarantine file, locally.
    pub async fn engine(
        &self,
        hash_key: Option<HashKey>,
        work: &Path,
        input: PathBuf,
        progress: Option<Progress>,
    ) -> Result<EngineOutput, TransformError> {
        let table = self.table.clone();
        let plan = self.plan.clone();
        let key = self.key.to_string();
        let work_dir = work.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let progress_ref = progress.as_deref().map(|p| p as &(dyn Fn(u64) + Sync));
            let job = engine::EngineJob {
                table: &table,
                plan: &plan,
                source_key: &key,
                hash_key: hash_key.as_ref(),
                work_dir: &work_dir,
                progress: progress_ref,
            };
            engine::run(&job, &input)
        })
        .await
        .map_err(|e| TransformError::Internal(format!("transform task: {e}")))?
    }

    /// The files, under deterministic keys (a re-run overwrites the same keys).
    pub async fn upload_files(
        &self,
        out: &[LocalFile],
    ) -> Result<Vec<ManifestFile>, TransformError> {
        let mut files = Vec::with_capacity(out.len());
        for f in out {
            let k = self.keys.curated_key(&f.year, &f.month, f.part);
            let put = self.store.put_file_moving(&k, &f.path).await?;
            files.push(ManifestFile {
                key: k,
                year: f.year.clone(),
                month: f.month.clone(),
                rows: f.rows,
                bytes: f.bytes,
                etag: put.etag,
            });
        }
        Ok(files)
    }

    /// The quarantine file, or none: a re-run of a fixed object leaves no old one behind.
    pub async fn upload_quarantine(
        &self,
        path: Option<&Path>,
    ) -> Result<Option<String>, TransformError> {
        let key = &self.keys.quarantine_key;
        match path {
            Some(p) => {
                self.store.put_file_moving(key, p).await?;
                Ok(Some(key.clone()))
            }
            None => {
                self.store.delete(key).await?;
                Ok(None)
            }
        }
    }

    /// 3. Files of a previous run of this key that this run did not write (the previous
    ///    manifest still lists them until step 5). Returns how many were deleted.
    pub async fn delete_stale(&self, files: &[ManifestFile]) -> Result<usize, TransformError> {
        let mkey = &self.keys.manifest_key;
        let bytes = match self.store.get_bytes(mkey).await {
            Ok(b) => b,
            Err(LakeError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let prev = match Manifest::file_keys(&bytes, mkey) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(manifest = %mkey, error = %e, "previous manifest unreadable; stale files (if any) not cleaned");
                return Ok(0);
            }
        };
        let now: BTreeSet<&str> = files.iter().map(|f| f.key.as_str()).collect();
        let mut deleted = 0;
        for k in prev.iter().filter(|k| !now.contains(k.as_str())) {
            self.store.delete(k).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// 4. The partitions the files are in, registered (existing ones count as success).
    pub async fn register_partitions(
        &self,
        def: &TableDef,
        files: &[ManifestFile],
    ) -> Result<Vec<(String, String)>, TransformError> {
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
                location: self
                    .store
                    .url(&layout::partition_prefix(&self.table.name, y, m)),
            })
            .collect();
        self.catalog.add_partitions(def, &specs).await?;
        Ok(partitions)
    }

    /// 5. The manifest, last: the loader's trigger.
    pub async fn write_manifest(
        &self,
        meta: &ObjectMeta,
        files: &[ManifestFile],
        counts: RowCounts,
        quarantine_key: Option<String>,
    ) -> Result<(), TransformError> {
        let manifest = Manifest {
            version: manifest::MANIFEST_VERSION,
            table: self.table.name.clone(),
            source_key: self.key.to_string(),
            source_etag: meta.etag.clone(),
            source_bytes: meta.size_bytes,
            columns: crate::schema::manifest_columns(&self.plan.columns),
            files: files.to_vec(),
            counts,
            quarantine_key,
        };
        let body = manifest
            .to_json()
            .map_err(|e| TransformError::Internal(format!("manifest: {e}")))?;
        self.store
            .put(
                &self.keys.manifest_key,
                Bytes::from(body),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }
}

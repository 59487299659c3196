//! One table's load, from transform manifests to the final table, whatever runs the SQL
//! (`executor.rs`; counts and record in `reconcile.rs`, NULL keys in `null_keys.rs`):
//! the lease, the manifests read and checked, the NULL-key rows quarantined, the COPY groups
//! and their COPY manifests, the plan run by an [`Executor`] in one transaction, then
//! reconciliation and the per-load record under `loads/<table>/`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{Pipeline, Staging};
use crate::lake::layout::{
    copy_manifest_key, load_record_key, load_replay_record_key, source_hash,
};
use crate::lake::manifest::Manifest;
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{LakeError, ObjectStore, PutMode};

use super::executor::{Executed, Executor, LoadError, RunContext};
use super::lease::{self, Acquired};
use super::plan::{step_names, CopyGroup, LoadPlan, Statement, Step, TablesFound};
use super::reconcile::{counts, LoadCounts, LoadSummary};
use super::sql::Dialect;

/// How a load request ended.
#[derive(Debug, Clone)]
pub enum LoadOutcome {
    Loaded(Box<LoadSummary>),
    /// Another load of the table holds the lease: nothing was done; try again later.
    Busy {
        table: String,
        owner: String,
        until_ms: u64,
    },
}

/// Loads batches of manifests into their tables.
pub struct Loader<'a> {
    pub pipeline: &'a Pipeline,
    pub store: &'a dyn ObjectStore,
    pub executor: &'a dyn Executor,
    /// The role Redshift's COPY assumes to read `curated/` (unused by PostgreSQL).
    pub iam_role: String,
    /// How long the lease holds: longer than a load may take (the Lambda's timeout).
    pub lease_ttl: Duration,
    /// Who holds the lease: the invocation's request id, or the CLI's process.
    pub owner: String,
    /// Take the table's lease first (tests turn it off to make two loads really conflict).
    pub use_lease: bool,
}

/// The id of a batch: xxh3-64 of its sorted manifest keys.
pub fn batch_id(manifest_keys: &[String]) -> String {
    let mut keys = manifest_keys.to_vec();
    keys.sort();
    keys.dedup();
    source_hash(&keys.join("\n"))
}

impl Loader<'_> {
    /// Loads the files of `manifest_keys` (all of table `table`) in one transaction.
    pub async fn load(
        &self,
        table: &str,
        manifest_keys: &[String],
    ) -> Result<LoadOutcome, LoadError> {
        let lease = if self.use_lease {
            let got = lease::acquire(
                self.store,
                table,
                &self.owner,
                self.lease_ttl,
                lease::now_ms(),
            )
            .await
            .map_err(|e| lake_err(table, &crate::lake::layout::load_lease_key(table), e))?;
            match got {
                Acquired::Held(l) => Some(l),
                Acquired::Busy { owner, until_ms } => {
                    tracing::warn!(table, holder = %owner, until_ms, "another load of this table holds the lease; backing off");
                    return Ok(LoadOutcome::Busy {
                        table: table.to_string(),
                        owner,
                        until_ms,
                    });
                }
            }
        } else {
            None
        };
        let result = self.load_held(table, manifest_keys).await;
        if let Err(LoadError::Timeout { .. }) = &result {
            // The statement may still be running in the warehouse: the lease stays until it
            // expires, so no other load of the table starts beside it.
            tracing::warn!(
                table,
                "the load is still running in the warehouse; the lease is kept until it expires"
            );
            return result.map(|s| LoadOutcome::Loaded(Box::new(s)));
        }
        if let Some(l) = lease {
            // A lease left behind expires on its own; the load's outcome stands either way.
            if let Err(e) = lease::release(self.store, &l).await {
                tracing::warn!(table, error = %e, "releasing the load lease failed; it expires on its own");
            }
        }
        result.map(|s| LoadOutcome::Loaded(Box::new(s)))
    }

    async fn load_held(
        &self,
        table: &str,
        manifest_keys: &[String],
    ) -> Result<LoadSummary, LoadError> {
        let cfg = self
            .pipeline
            .table(table)
            .ok_or_else(|| LoadError::Config {
                table: table.to_string(),
                message: "not a table of the pipeline file".into(),
            })?;
        let plan = LoadPlan::new(cfg)?;
        let dialect = self.executor.dialect();
        let mut keys = manifest_keys.to_vec();
        keys.sort();
        keys.dedup();
        let batch = batch_id(&keys);
        let manifests = self.read_manifests(table, &keys).await?;
        let expected: u64 = manifests
            .iter()
            .flat_map(|(_, m)| &m.files)
            .map(|f| f.rows)
            .sum();
        let files = manifests.iter().map(|(_, m)| m.files.len()).sum::<usize>();
        let mut summary = LoadSummary {
            table: table.to_string(),
            batch: batch.clone(),
            manifests: keys.clone(),
            files,
            statement_id: None,
            attempts: 0,
            counts: LoadCounts {
                expected,
                ..LoadCounts::default()
            },
            mismatch: None,
            quarantine_mismatch: None,
            quarantine_keys: Vec::new(),
            record_key: load_record_key(table, &batch),
            run_ms: 0,
            copy_ms: 0,
            finished_at_ms: 0,
        };
        if files == 0 {
            // Every row of these sources was quarantined by the transform: nothing to COPY.
            tracing::info!(table, manifests = ?keys, "no files in the batch; acknowledged without a load");
            return self.finish(summary).await;
        }
        self.check_files(table, &manifests).await?;
        let quarantine = self.scan_null_keys(&plan, &manifests).await?;
        let groups = self.copy_groups(&plan, &batch, &manifests, dialect).await?;
        let found = self.prepare_tables(&plan, dialect).await?;
        let steps = plan.steps(dialect, &groups, &found, &self.iam_role)?;
        if !found.final_missing.is_empty() {
            tracing::info!(table, columns = ?found.final_missing, "adding new columns to the final table");
        }
        let ctx = RunContext {
            store: self.store,
            table,
            batch: &batch,
        };
        let started = std::time::Instant::now();
        let executed = self.executor.run(&plan, &steps, &ctx).await?;
        summary.run_ms = started.elapsed().as_millis() as u64;
        summary.copy_ms = steps
            .iter()
            .zip(&executed.millis)
            .filter(|(s, _)| matches!(s, Step::Copy(_)) || s.name() == step_names::STAGE_GROUP)
            .map(|(_, ms)| ms.unwrap_or(0))
            .sum();
        summary.statement_id = executed.statement_id.clone();
        summary.attempts = executed.attempts;
        summary.counts = counts(&steps, &executed, expected);
        let quarantined: u64 = quarantine.iter().map(|(_, r)| r.len() as u64).sum();
        let unresolved = unresolved_rows(&steps, &executed);
        let mut records = quarantine;
        records.extend(
            self.unresolved_records(&plan, &manifests, unresolved, &summary.record_key)
                .await?,
        );
        // After the commit: these rows are out of the load whatever happens next; a re-run
        // writes the same objects again (a replay finds the unresolved rows again: they
        // changed nothing).
        summary.quarantine_keys = self.write_quarantine(&plan, merge_by_file(records)).await?;
        summary.quarantine_mismatch = quarantine_mismatch(&summary.counts, quarantined, unresolved);
        if let (Staging::Table(_), true) = (&plan.staging, plan.truncate_stage) {
            // Outside the load's transaction: TRUNCATE commits in Redshift.
            let mut stmts = plan.session(dialect);
            stmts.push(Statement {
                name: "truncate_stage".into(),
                sql: format!("TRUNCATE {}", plan.stage_table()),
            });
            if let Err(e) = self.executor.execute(table, &stmts).await {
                tracing::warn!(table, error = %e, "TRUNCATE of the persistent stage failed (it is empty: the load cleared it with DELETE)");
            }
        }
        self.finish(summary).await
    }

    /// Creates the tables a load needs when one is missing, in a transaction of its own (in
    /// the load's, the first CREATE would take the snapshot before the LOCK), and reports what
    /// the load must add.
    async fn prepare_tables(
        &self,
        plan: &LoadPlan,
        dialect: Dialect,
    ) -> Result<TablesFound, LoadError> {
        let table = plan.table.as_str();
        let columns = |schema: String, name: String| async move {
            self.executor.table_columns(table, &schema, &name).await
        };
        let existing = columns(plan.schema.clone(), plan.final_name.clone()).await?;
        let tombstones = columns(plan.schema.clone(), plan.tombstone_name()).await?;
        let stage_columns = match &plan.staging {
            Staging::Table(name) => {
                let (schema, name) = name.split_once('.').unwrap_or(("public", name));
                columns(schema.to_string(), name.to_string()).await?
            }
            Staging::Temp => None,
        };
        let stage_missing = matches!(plan.staging, Staging::Table(_)) && stage_columns.is_none();
        if existing.is_none() || tombstones.is_none() || stage_missing {
            tracing::info!(table, "creating the warehouse tables");
            let mut stmts = plan.session(dialect);
            stmts.extend(plan.create_tables(dialect));
            self.executor.execute(table, &stmts).await?;
        }
        Ok(TablesFound {
            final_missing: missing_columns(plan, existing.as_deref()),
            stage_columns,
        })
    }

    async fn finish(&self, mut summary: LoadSummary) -> Result<LoadSummary, LoadError> {
        summary.mismatch = summary
            .counts
            .mismatch()
            .or_else(|| summary.quarantine_mismatch.clone());
        summary.finished_at_ms = lease::now_ms();
        if let Some(m) = &summary.mismatch {
            tracing::error!(table = %summary.table, batch = %summary.batch, manifests = ?summary.manifests, mismatch = %m, "reconciliation mismatch: rows went missing between the lake and the warehouse");
        }
        let body = serde_json::to_vec_pretty(&summary).map_err(|e| LoadError::Lake {
            table: summary.table.clone(),
            key: summary.record_key.clone(),
            message: e.to_string(),
        })?;
        // The first load of a batch keeps its record; a replay of the same manifests (all
        // stale) is recorded beside it instead of over it.
        match self
            .store
            .put(&summary.record_key, body.clone().into(), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(LakeError::AlreadyExists { .. }) => {
                summary.record_key =
                    load_replay_record_key(&summary.table, &summary.batch, summary.finished_at_ms);
                let body = serde_json::to_vec_pretty(&summary).unwrap_or(body);
                self.store
                    .put(&summary.record_key, body.into(), PutMode::Overwrite)
                    .await
                    .map_err(|e| lake_err(&summary.table, &summary.record_key, e))?;
            }
            Err(e) => return Err(lake_err(&summary.table, &summary.record_key, e)),
        }
        Ok(summary)
    }

    async fn read_manifests(
        &self,
        table: &str,
        keys: &[String],
    ) -> Result<Vec<(String, Manifest)>, LoadError> {
        let mut out = Vec::new();
        for key in keys {
            let bytes = self.store.get_bytes(key).await.map_err(|e| match e {
                LakeError::NotFound { .. } => LoadError::Manifest {
                    table: table.to_string(),
                    key: key.clone(),
                    message: "not found".into(),
                },
                e => lake_err(table, key, e),
            })?;
            let m = Manifest::from_json(&bytes, key).map_err(|e| LoadError::Manifest {
                table: table.to_string(),
                key: key.clone(),
                message: e.to_string(),
            })?;
            if m.table != table {
                return Err(LoadError::Manifest {
                    table: table.to_string(),
                    key: key.clone(),
                    message: format!("is a manifest of table {}", m.table),
                });
            }
            out.push((key.clone(), m));
        }
        Ok(out)
    }

    /// Every listed file is there before anything runs: a missing one fails the load with its
    /// name, and nothing merges.
    async fn check_files(
        &self,
        table: &str,
        manifests: &[(String, Manifest)],
    ) -> Result<(), LoadError> {
        for (mkey, m) in manifests {
            for f in &m.files {
                match self.store.head(&f.key).await {
                    Ok(meta) => {
                        if f.etag.is_some() && meta.etag.is_some() && meta.etag != f.etag {
                            tracing::warn!(table, file = %f.key, manifest = %mkey, "file was rewritten after its manifest (a transform re-run); loading what is there now");
                        }
                    }
                    Err(LakeError::NotFound { .. }) => {
                        return Err(LoadError::File {
                            table: table.to_string(),
                            key: f.key.clone(),
                            message: format!("listed by manifest {mkey} but not in the lake"),
                        })
                    }
                    Err(e) => return Err(lake_err(table, &f.key, e)),
                }
            }
        }
        Ok(())
    }

    /// Files grouped by column list (Redshift maps Parquet columns by position), with a COPY
    /// manifest per group under `loads/<table>/<batch>/` when the executor is Redshift's.
    async fn copy_groups(
        &self,
        plan: &LoadPlan,
        batch: &str,
        manifests: &[(String, Manifest)],
        dialect: Dialect,
    ) -> Result<Vec<CopyGroup>, LoadError> {
        let mut by_columns: BTreeMap<Vec<String>, Vec<(String, u64)>> = BTreeMap::new();
        for (_, m) in manifests {
            let cols: Vec<String> = if m.columns.is_empty() {
                plan.columns.iter().map(|c| c.lake.clone()).collect()
            } else {
                m.columns.iter().map(|c| c.name.clone()).collect()
            };
            let entry = by_columns.entry(cols).or_default();
            entry.extend(m.files.iter().map(|f| (f.key.clone(), f.bytes)));
        }
        let mut groups = Vec::new();
        for (i, (columns, files)) in by_columns.into_iter().enumerate() {
            let key = copy_manifest_key(&plan.table, batch, i);
            if dialect == Dialect::Redshift {
                let entries: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(k, bytes)| {
                        serde_json::json!({
                            "url": self.store.url(k),
                            "mandatory": true,
                            "meta": { "content_length": bytes },
                        })
                    })
                    .collect();
                let body = serde_json::to_vec_pretty(&serde_json::json!({ "entries": entries }))
                    .map_err(|e| lake_err_msg(&plan.table, &key, e.to_string()))?;
                self.store
                    .put(&key, body.into(), PutMode::Overwrite)
                    .await
                    .map_err(|e| lake_err(&plan.table, &key, e))?;
            }
            groups.push(CopyGroup {
                columns,
                files: files.into_iter().map(|(k, _)| k).collect(),
                manifest_url: self.store.url(&key),
            });
        }
        Ok(groups)
    }
}

/// The rows the load's `unresolved_changes` query returned (none when it has none).
fn unresolved_rows<'a>(steps: &[Step], executed: &'a Executed) -> &'a [Vec<String>] {
    steps
        .iter()
        .position(|s| matches!(s, Step::Query(q) if q.name == step_names::UNRESOLVED))
        .and_then(|i| executed.results.get(&i))
        .map_or(&[], Vec::as_slice)
}

/// Quarantine records of one object, whatever found them: one object per source file, so the
/// NULL-key rows and the unresolved rows of a file never overwrite each other.
fn merge_by_file(
    records: Vec<(String, Vec<QuarantineRecord>)>,
) -> Vec<(String, Vec<QuarantineRecord>)> {
    let mut by_file: BTreeMap<String, Vec<QuarantineRecord>> = BTreeMap::new();
    for (file, rs) in records {
        by_file.entry(file).or_default().extend(rs);
    }
    for rs in by_file.values_mut() {
        rs.sort_by_key(|r| r.line);
    }
    by_file.into_iter().collect()
}

/// Why the quarantined rows do not match the rows the load left out, if they do not.
fn quarantine_mismatch(
    counts: &LoadCounts,
    null_keys: u64,
    unresolved: &[Vec<String>],
) -> Option<String> {
    if counts.null_keys != null_keys {
        return Some(format!(
            "the load dropped {} rows with a NULL key or version but {null_keys} were quarantined",
            counts.null_keys
        ));
    }
    (counts.unresolved != unresolved.len() as u64).then(|| {
        format!(
            "the load left out {} rows with unresolved unchanged-TOAST markers but returned {}",
            counts.unresolved,
            unresolved.len()
        )
    })
}

/// Lake names of output columns the final table lacks (None: the table is new and is created
/// with every column).
fn missing_columns(plan: &LoadPlan, existing: Option<&[String]>) -> Vec<String> {
    let Some(existing) = existing else {
        return Vec::new();
    };
    // Redshift reports folded (lower-case) names unless case sensitivity is on.
    let has = |w: &str| existing.iter().any(|e| e == w || e.eq_ignore_ascii_case(w));
    plan.final_columns()
        .filter(|c| !has(&c.warehouse))
        .map(|c| c.lake.clone())
        .collect()
}

pub(super) fn lake_err(table: &str, key: &str, e: LakeError) -> LoadError {
    lake_err_msg(table, key, e.to_string())
}

pub(super) fn lake_err_msg(table: &str, key: &str, message: String) -> LoadError {
    LoadError::Lake {
        table: table.to_string(),
        key: key.to_string(),
        message,
    }
}

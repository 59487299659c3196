//! One table's load, from transform manifests to the final table, whatever runs the SQL:
//! the lease, the manifests read and checked, the NULL-key rows quarantined, the COPY groups
//! and their COPY manifests, the plan run by an [`Executor`] in one transaction, then
//! reconciliation and the per-load record under `loads/<table>/`.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;

use crate::config::{Pipeline, Staging};
use crate::lake::layout::{
    copy_manifest_key, load_quarantine_key, load_record_key, load_replay_record_key, source_hash,
};
use crate::lake::manifest::Manifest;
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{LakeError, ObjectStore, PutMode};
use crate::lambda::ErrorKind;
use crate::metrics::Emf;

use super::lease::{self, Acquired};
use super::plan::{step_names, CopyGroup, LoadPlan, PlanError, Statement, Step, TablesFound};
use super::sql::Dialect;

/// Why a load failed. Nothing was committed: the final table is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("connecting to the warehouse: {0}")]
    Connect(String),
    #[error("load of {table}: statement {statement} failed: {message}")]
    Statement {
        table: String,
        statement: String,
        message: String,
        /// A serialization or write conflict: another transaction won; the load may succeed
        /// when run again.
        conflict: bool,
    },
    #[error("load of {table}: file {key}: {message}")]
    File {
        table: String,
        key: String,
        message: String,
    },
    #[error("load of {table}: manifest {key}: {message}")]
    Manifest {
        table: String,
        key: String,
        message: String,
    },
    #[error("load of {table}: lake object {key}: {message}")]
    Lake {
        table: String,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("load of {table}: {message}")]
    Config { table: String, message: String },
    /// The warehouse did not finish in time (a statement still running, the deadline near).
    #[error("load of {table}: {message}")]
    Timeout { table: String, message: String },
}

impl LoadError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, LoadError::Statement { conflict: true, .. })
    }

    /// What a retry of the same load would do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::Statement { conflict: true, .. }
            | LoadError::Connect(_)
            | LoadError::Lake { .. }
            | LoadError::Timeout { .. } => ErrorKind::Retryable,
            LoadError::Manifest { .. }
            | LoadError::File { .. }
            | LoadError::Plan(_)
            | LoadError::Config { .. } => ErrorKind::BadInput,
            LoadError::Statement { .. } => ErrorKind::Internal,
        }
    }
}

/// Where an executor runs a load: the lake (for state such as a submitted statement's id) and
/// the batch's identity.
pub struct RunContext<'a> {
    pub store: &'a dyn ObjectStore,
    pub table: &'a str,
    /// The batch id: the same manifests give the same id, so a re-invocation finds its state.
    pub batch: &'a str,
}

/// What an executor reports of a committed load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// Rows each step affected (COPY: rows loaded), by step position; None where the database
    /// does not say.
    pub rows: Vec<Option<u64>>,
    /// Milliseconds each step took, by step position, where the executor measures them.
    pub millis: Vec<Option<u64>>,
    /// The Data API statement id, when there is one.
    pub statement_id: Option<String>,
    /// Transactions it took (more than one after conflicts).
    pub attempts: u32,
}

/// Runs a load plan's steps in one transaction.
#[async_trait]
pub trait Executor: Send + Sync {
    fn dialect(&self) -> Dialect;

    /// Names of a table's columns, or None when the table does not exist.
    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError>;

    /// Runs `steps` in one transaction (retrying conflicts); all or nothing.
    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError>;

    /// Statements outside a load, in one transaction of their own (creating the tables before
    /// a first load; the optional TRUNCATE of a persistent stage after one).
    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError>;
}

/// Rows of a load, by what became of them, each counted by the statement that acted on them.
/// They balance: `staged = merged + stale + deleted + duplicates + null_keys + truncates`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    /// Σ `rows_written` of the manifests: what the lake says the batch holds.
    pub expected: u64,
    /// Rows COPYed into the stage.
    pub staged: u64,
    /// Rows inserted into the final table.
    pub merged: u64,
    /// Rows not newer than the final row, a tombstone or a TRUNCATE.
    pub stale: u64,
    /// Deletes applied (tombstones recorded).
    pub deleted: u64,
    /// Older versions of a key twice in the batch.
    pub duplicates: u64,
    /// Rows with a NULL merge key (or version), quarantined.
    pub null_keys: u64,
    /// TRUNCATE change rows (their version recorded; they are no row of the table).
    pub truncates: u64,
}

impl LoadCounts {
    /// Why the counts do not add up, if they do not.
    pub fn mismatch(&self) -> Option<String> {
        if self.staged != self.expected {
            return Some(format!(
                "the stage holds {} rows but the manifests list {}",
                self.staged, self.expected
            ));
        }
        let accounted = self.merged
            + self.stale
            + self.deleted
            + self.duplicates
            + self.null_keys
            + self.truncates;
        (accounted != self.staged).then(|| {
            format!(
                "{} rows staged but {accounted} accounted for (merged {} + stale {} + deleted {} + duplicates {} + NULL keys {} + truncates {})",
                self.staged, self.merged, self.stale, self.deleted, self.duplicates, self.null_keys, self.truncates
            )
        })
    }
}

/// What one load did; also the per-load record written to `loads/<table>/<batch>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub table: String,
    pub batch: String,
    pub manifests: Vec<String>,
    pub files: usize,
    pub statement_id: Option<String>,
    pub attempts: u32,
    pub counts: LoadCounts,
    /// None when the counts balance; else what does not add up.
    pub mismatch: Option<String>,
    #[serde(skip)]
    quarantine_mismatch: Option<String>,
    pub quarantine_keys: Vec<String>,
    pub record_key: String,
    /// Wall time of the load transaction (all attempts), and of its COPY steps in the attempt
    /// that committed (where the executor measures steps).
    pub run_ms: u64,
    pub copy_ms: u64,
    pub finished_at_ms: u64,
}

impl LoadSummary {
    /// The EMF line: CloudWatch metrics per table, `ReconciliationMismatch` 1 when rows went
    /// missing (the alarm watches it).
    pub fn emf_line(&self, function: &str) -> String {
        let c = &self.counts;
        Emf::new(function)
            .dimension("Table", &self.table)
            .count("RowsExpected", c.expected)
            .count("RowsStaged", c.staged)
            .count("RowsMerged", c.merged)
            .count("RowsStale", c.stale)
            .count("RowsDeleted", c.deleted)
            .count("RowsDuplicate", c.duplicates)
            .count("RowsNullKey", c.null_keys)
            .count("ReconciliationMismatch", u64::from(self.mismatch.is_some()))
            .count("Attempts", u64::from(self.attempts))
            .property("batch", self.batch.clone())
            .property("manifests", self.manifests.clone())
            .line()
    }
}

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
        // After the commit: these rows are out of the load whatever happens next; a re-run
        // writes the same objects again.
        summary.quarantine_keys = self.write_quarantine(&plan, quarantine).await?;
        if summary.counts.null_keys != quarantined {
            summary.quarantine_mismatch = Some(format!(
                "the load dropped {} rows with a NULL key or version but {quarantined} were quarantined",
                summary.counts.null_keys
            ));
        }
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

    /// Rows whose merge key is NULL, read from the files before the load (the load drops them
    /// from the stage and counts them). Files whose manifest says every key column is required
    /// are not read: the transform already quarantined such rows.
    async fn scan_null_keys(
        &self,
        plan: &LoadPlan,
        manifests: &[(String, Manifest)],
    ) -> Result<Vec<(String, Vec<QuarantineRecord>)>, LoadError> {
        let key_lake: Vec<&str> = plan
            .columns
            .iter()
            .filter(|c| plan.keys.contains(&c.warehouse))
            .map(|c| c.lake.as_str())
            .collect();
        let lake_of = |w: &str| {
            plan.columns
                .iter()
                .find(|c| c.warehouse == w)
                .map(|c| c.lake.as_str())
        };
        let version_lake = lake_of(&plan.version).unwrap_or_default();
        let op_lake = plan.op.as_deref().and_then(lake_of);
        let must_have: Vec<&str> = key_lake
            .iter()
            .copied()
            .chain(std::iter::once(version_lake))
            .collect();
        let mut out = Vec::new();
        for (_, m) in manifests {
            let keys_required = !m.columns.is_empty()
                && must_have
                    .iter()
                    .all(|k| m.columns.iter().any(|c| c.name == *k && !c.nullable));
            if keys_required {
                continue;
            }
            for f in &m.files {
                // Through a local file, not memory: a Lambda holds one row group at a time
                // however large the file.
                let dir = tempfile::tempdir()
                    .map_err(|e| lake_err_msg(&plan.table, &f.key, e.to_string()))?;
                let path = dir.path().join("file.parquet");
                self.store
                    .get_to_file(&f.key, &path)
                    .await
                    .map_err(|e| lake_err(&plan.table, &f.key, e))?;
                let cols = NullCheck {
                    keys: &key_lake,
                    version: version_lake,
                    op: op_lake,
                };
                let records = null_key_rows(plan, &cols, &f.key, &path).map_err(|message| {
                    LoadError::File {
                        table: plan.table.clone(),
                        key: f.key.clone(),
                        message,
                    }
                })?;
                if !records.is_empty() {
                    out.push((f.key.clone(), records));
                }
            }
        }
        Ok(out)
    }

    async fn write_quarantine(
        &self,
        plan: &LoadPlan,
        files: Vec<(String, Vec<QuarantineRecord>)>,
    ) -> Result<Vec<String>, LoadError> {
        let mut keys = Vec::new();
        for (file_key, records) in files {
            let key = load_quarantine_key(&plan.table, &file_key);
            let mut body = Vec::new();
            for r in &records {
                body.extend(
                    r.to_json_line()
                        .map_err(|e| lake_err_msg(&plan.table, &key, e.to_string()))?,
                );
            }
            self.store
                .put(&key, body.into(), PutMode::Overwrite)
                .await
                .map_err(|e| lake_err(&plan.table, &key, e))?;
            tracing::warn!(table = %plan.table, file = %file_key, quarantine = %key, rows = records.len(), "rows with a NULL merge key quarantined");
            keys.push(key);
        }
        Ok(keys)
    }
}

/// Lake names of output columns the final table lacks (None: the table is new and is created
/// with every column).
fn missing_columns(plan: &LoadPlan, existing: Option<&[String]>) -> Vec<String> {
    let Some(existing) = existing else {
        return Vec::new();
    };
    // Redshift reports folded (lower-case) names unless case sensitivity is on.
    let has = |w: &str| existing.iter().any(|e| e == w || e.eq_ignore_ascii_case(w));
    plan.columns
        .iter()
        .filter(|c| !has(&c.warehouse))
        .map(|c| c.lake.clone())
        .collect()
}

/// The counts, from the rows each named step affected.
fn counts(steps: &[Step], executed: &Executed, expected: u64) -> LoadCounts {
    let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, rows) in steps.iter().zip(&executed.rows) {
        *sum.entry(s.name()).or_default() += rows.unwrap_or(0);
    }
    let get = |n: &str| sum.get(n).copied().unwrap_or(0);
    LoadCounts {
        expected,
        staged: get(step_names::COPY) + get(step_names::STAGE_GROUP),
        merged: get(step_names::INSERT),
        stale: step_names::STALE.iter().map(|n| get(n)).sum(),
        deleted: get(step_names::TOMBSTONES),
        duplicates: get(step_names::DUPLICATES),
        null_keys: get(step_names::DROP_NULL_KEYS),
        truncates: get(step_names::TRUNCATES),
    }
}

/// The columns a loadable row must have: the merge keys (except on a TRUNCATE change row,
/// which has none) and the version.
struct NullCheck<'a> {
    keys: &'a [&'a str],
    version: &'a str,
    op: Option<&'a str>,
}

/// The rows of one Parquet file that cannot load (a NULL merge key or version), as quarantine
/// records (the row as `col=value|…`, its 1-based position in the file).
fn null_key_rows(
    plan: &LoadPlan,
    check: &NullCheck<'_>,
    file_key: &str,
    path: &std::path::Path,
) -> Result<Vec<QuarantineRecord>, String> {
    let open = || std::fs::File::open(path).map_err(|e| e.to_string());
    let builder = ParquetRecordBatchReaderBuilder::try_new(open()?).map_err(|e| e.to_string())?;
    // Only the checked columns first: most files have no such row and are done after this.
    let schema = builder.parquet_schema();
    let wanted = |n: &str| check.keys.contains(&n) || n == check.version || Some(n) == check.op;
    let idx: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| wanted(schema.column(i).name()))
        .collect();
    let mask = ProjectionMask::leaves(schema, idx);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut bad_rows = Vec::new();
    let mut base = 0usize;
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        let col = |n: &str| b.schema().index_of(n).ok().map(|i| b.column(i).clone());
        let keys: Vec<_> = check.keys.iter().filter_map(|k| col(k)).collect();
        let version = col(check.version);
        let op = check
            .op
            .and_then(col)
            .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned());
        for r in 0..b.num_rows() {
            let truncate = op
                .as_ref()
                .is_some_and(|o| o.is_valid(r) && o.value(r) == "t");
            let no_version = version.as_ref().is_none_or(|v| v.is_null(r));
            let no_key = keys.len() < check.keys.len() || keys.iter().any(|a| a.is_null(r));
            if no_version || (no_key && !truncate) {
                bad_rows.push(base + r);
            }
        }
        base += b.num_rows();
    }
    if bad_rows.is_empty() {
        return Ok(Vec::new());
    }
    let named = format!(
        "a merge key ({}) or the version ({}) is NULL",
        check.keys.join(", "),
        check.version
    );
    // Then the whole rows of those few, for the quarantine record.
    let reader = ParquetRecordBatchReaderBuilder::try_new(open()?)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut base = 0usize;
    let mut next = bad_rows.iter().peekable();
    for b in reader {
        let b: RecordBatch = b.map_err(|e| e.to_string())?;
        let opts = FormatOptions::default();
        let fmts: Vec<ArrayFormatter<'_>> = b
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        while let Some(&&r) = next.peek() {
            if r >= base + b.num_rows() {
                break;
            }
            let raw = b
                .schema()
                .fields()
                .iter()
                .zip(&fmts)
                .map(|(f, x)| format!("{}={}", f.name(), x.value(r - base)))
                .collect::<Vec<_>>()
                .join("|");
            let column = check
                .keys
                .iter()
                .chain(std::iter::once(&check.version))
                .filter(|c| {
                    b.schema()
                        .index_of(c)
                        .map_or(true, |i| b.column(i).is_null(r - base))
                })
                .copied()
                .collect::<Vec<_>>()
                .join(",");
            out.push(QuarantineRecord {
                object: file_key.to_string(),
                line: r as u64 + 1,
                column: Some(column),
                reason: format!(
                    "{named}: the row cannot match, be matched or be ordered in {}",
                    plan.final_table()
                ),
                raw,
                raw_truncated: false,
            });
            next.next();
        }
        base += b.num_rows();
    }
    Ok(out)
}

fn lake_err(table: &str, key: &str, e: LakeError) -> LoadError {
    lake_err_msg(table, key, e.to_string())
}

fn lake_err_msg(table: &str, key: &str, message: String) -> LoadError {
    LoadError::Lake {
        table: table.to_string(),
        key: key.to_string(),
        message,
    }
}

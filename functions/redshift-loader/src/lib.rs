//! The `redshift-loader` Lambda: transform manifests → one merge per table
//! (`sluice::warehouse::Loader`).
//!
//! Triggers (see `event.rs`):
//! - **SQS** (the deployed path: S3 notifications for `manifests/` queued, so bursts of
//!   manifests batch up): every manifest of the invocation is grouped per (bucket, table) and
//!   each table is loaded once. The response's `batchItemFailures` lists exactly the messages of
//!   tables whose load failed or found the table's lease held (`Busy`); those messages return
//!   to the queue and come back, the others are deleted. A message whose body cannot be read
//!   (not JSON, not an S3 notification, a record without a key) is reported as failed too: it
//!   can never load, but acknowledging it would drop a manifest silently, whereas failing it
//!   sends it to the queue's DLQ after `maxReceiveCount` receives, where an operator sees it.
//!   Records that are simply not ours (another event type, a key outside `manifests/`) and
//!   manifests of tables without a `[tables.warehouse]` section (lake-only tables) are
//!   acknowledged and listed under `ignored` / as `not_loaded`: retrying cannot change them.
//! - **S3** notification invoking the function directly: the same grouping; any failed or busy
//!   table fails the invocation (error type from `LoadError::kind()`), so S3's retries of an
//!   asynchronous invocation run it again. Loads are idempotent: a re-run changes nothing.
//! - **Manual** `{"bucket", "table", "manifests": [...]}` (backfills, DLQ replays): one load;
//!   failed or busy fails the invocation.
//!
//! Each load prints its EMF line (`LoadSummary::emf_line`) and logs one line; the response
//! lists per table its outcome, counts, record key and any reconciliation mismatch.

mod event;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use sluice::config::Pipeline;
use sluice::lake::Lakes;
use sluice::lambda::ErrorKind;
pub use sluice::lambda::HandlerError;
use sluice::warehouse::lease::now_ms;
use sluice::warehouse::{LoadCounts, LoadOutcome, Loader, Target};

pub use event::{parse, ManifestRef, ManualLoad, Notification, SqsMessage, Trigger};

/// The function name in metrics.
pub const FUNCTION: &str = "redshift-loader";
/// Lease time when the invocation's deadline is unknown: Lambda's longest timeout.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// Added to the invocation's remaining time: the lease must not expire while the invocation
/// can still be running, even with some clock skew between whoever reads it next and us.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// Taken off the invocation's deadline for the warehouse's part of a load: time left to write
/// the load's record and return before Lambda stops the invocation.
const FINISH_MARGIN: Duration = Duration::from_secs(30);

/// Everything built once at init and borrowed by every invocation.
pub struct Deps {
    pub pipeline: Pipeline,
    /// The object store for each bucket an event names (S3, or one fixed lake).
    pub lakes: Lakes,
    /// The warehouse (Redshift through the Data API, or PostgreSQL).
    pub target: Target,
    /// The role Redshift's COPY assumes (the pipeline's `[redshift].copy_iam_role`; unused by
    /// PostgreSQL).
    pub iam_role: String,
    /// Print the EMF metrics line to stdout (CloudWatch turns it into metrics).
    pub emit_metrics: bool,
}

/// What the runtime tells about this invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The lease owner: who holds a table while this invocation loads it.
    pub request_id: String,
    /// When Lambda stops the invocation (ms since the epoch); 0 when unknown.
    pub deadline_ms: u64,
}

impl Invocation {
    pub fn from_context(ctx: &lambda_runtime::Context) -> Self {
        Self {
            request_id: ctx.request_id.clone(),
            deadline_ms: ctx.deadline,
        }
    }

    /// How long a table's lease holds: the invocation's remaining time and a margin, so the
    /// lease outlives any run of this invocation (a crashed one blocks the table that long at
    /// most).
    pub fn lease_ttl(&self, now_ms: u64) -> Duration {
        match self.deadline_ms.checked_sub(now_ms) {
            Some(left) if left > 0 => Duration::from_millis(left) + LEASE_MARGIN,
            _ => DEFAULT_LEASE_TTL + LEASE_MARGIN,
        }
    }

    /// When the warehouse's part of a load must end: the deadline less time to finish; None
    /// when the deadline is unknown (the executor's own default applies). A deadline already
    /// past is taken as unknown, as by `lease_ttl`: Lambda never sends one, but `cargo lambda
    /// watch` sends the timeout itself (`Lambda-Runtime-Deadline-Ms: 600000`, not epoch ms),
    /// which would leave no time for any statement.
    pub fn run_until(&self, now_ms: u64) -> Option<Instant> {
        if self.deadline_ms <= now_ms {
            return None;
        }
        let left = Duration::from_millis(self.deadline_ms.saturating_sub(now_ms));
        Some(Instant::now() + left.saturating_sub(FINISH_MARGIN))
    }
}

/// The function's result. For SQS, Lambda reads `batchItemFailures` (the event source mapping
/// must have `ReportBatchItemFailures` on) and ignores the rest; the rest is for people.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Response {
    #[serde(rename = "batchItemFailures", skip_serializing_if = "Option::is_none")]
    pub batch_item_failures: Option<Vec<BatchItemFailure>>,
    pub loads: Vec<TableReport>,
    /// Records that are not ours, `s3://bucket/key`.
    pub ignored: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// What became of one table's manifests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableReport {
    pub bucket: String,
    pub table: String,
    pub manifests: Vec<String>,
    #[serde(flatten)]
    pub outcome: TableOutcome,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TableOutcome {
    Loaded {
        batch: String,
        counts: LoadCounts,
        /// None when the counts balance.
        mismatch: Option<String>,
        record_key: String,
        quarantine_keys: Vec<String>,
    },
    /// Another load holds the table's lease; nothing was done.
    Busy { holder: String, until_ms: u64 },
    Failed {
        #[serde(skip)]
        kind: ErrorKind,
        error: String,
    },
    /// The table has no `[tables.warehouse]` section: it lives in the lake only.
    NotLoaded { reason: String },
}

impl TableReport {
    /// Whether the table's messages go back to the queue (or the invocation fails).
    fn needs_retry(&self) -> bool {
        matches!(
            self.outcome,
            TableOutcome::Busy { .. } | TableOutcome::Failed { .. }
        )
    }
}

/// Handles one invocation: an SQS batch, an S3 notification or a manual payload.
pub async fn handle(deps: &Deps, inv: &Invocation, event: Value) -> Result<Response, HandlerError> {
    match parse(&event)? {
        Trigger::Test => {
            tracing::info!("s3:TestEvent received; nothing to do");
            Ok(Response::default())
        }
        Trigger::Sqs(messages) => Ok(handle_sqs(deps, inv, messages).await),
        Trigger::S3(n) => {
            let mut groups = Groups::default();
            for m in n.manifests {
                groups.add(m, None);
            }
            let loads = load_all(deps, inv, groups.into_loads()).await;
            let response = Response {
                batch_item_failures: None,
                loads,
                ignored: n.ignored,
            };
            fail_on_any(response, n.errors)
        }
        Trigger::Manual(m) => {
            let has_warehouse = deps
                .pipeline
                .table(&m.table)
                .is_some_and(|t| t.warehouse.is_some());
            if !has_warehouse {
                return Err(HandlerError::bad_input(format!(
                    "table {} is not a table of the pipeline with a [tables.warehouse] section",
                    m.table
                )));
            }
            let load = TableLoad {
                bucket: m.bucket,
                table: m.table,
                keys: m.manifests,
            };
            let response = Response {
                batch_item_failures: None,
                loads: load_all(deps, inv, vec![load]).await,
                ignored: Vec::new(),
            };
            fail_on_any(response, Vec::new())
        }
    }
}

/// The SQS path: one load per table over the whole batch; the failed or busy tables' messages,
/// and the unreadable ones, are reported back.
async fn handle_sqs(deps: &Deps, inv: &Invocation, messages: Vec<SqsMessage>) -> Response {
    let mut groups = Groups::default();
    let mut failed: Vec<String> = Vec::new();
    let mut ignored = Vec::new();
    for msg in messages {
        let n = match msg.notification {
            Ok(n) => n,
            Err(reason) => {
                tracing::error!(message_id = %msg.message_id, reason, "unreadable message; reported as failed (the DLQ keeps it)");
                failed.push(msg.message_id);
                continue;
            }
        };
        if !n.errors.is_empty() {
            tracing::error!(message_id = %msg.message_id, errors = ?n.errors, "message has unreadable records; reported as failed (the DLQ keeps it)");
            failed.push(msg.message_id.clone());
        }
        ignored.extend(n.ignored);
        for m in n.manifests {
            groups.add(m, Some(&msg.message_id));
        }
    }
    let messages_of = groups.messages.clone();
    let loads = load_all(deps, inv, groups.into_loads()).await;
    for r in loads.iter().filter(|r| r.needs_retry()) {
        if let Some(ids) = messages_of.get(&(r.bucket.clone(), r.table.clone())) {
            failed.extend(ids.iter().cloned());
        }
    }
    failed.sort();
    failed.dedup();
    Response {
        batch_item_failures: Some(
            failed
                .into_iter()
                .map(|item_identifier| BatchItemFailure { item_identifier })
                .collect(),
        ),
        loads,
        ignored,
    }
}

/// Direct invocations: any failed or busy table, or any unreadable record, fails the whole
/// invocation with the worst kind.
fn fail_on_any(response: Response, mut errors: Vec<String>) -> Result<Response, HandlerError> {
    let mut kind = ErrorKind::BadInput;
    for r in &response.loads {
        match &r.outcome {
            TableOutcome::Failed { kind: k, error } => {
                kind = kind.worst(*k);
                errors.push(format!("s3://{}: {error}", r.bucket));
            }
            TableOutcome::Busy { holder, until_ms } => {
                kind = kind.worst(ErrorKind::Retryable);
                errors.push(format!(
                    "table {} is being loaded by {holder} (lease until {until_ms} ms); try again later",
                    r.table
                ));
            }
            TableOutcome::Loaded { .. } | TableOutcome::NotLoaded { .. } => {}
        }
    }
    if errors.is_empty() {
        Ok(response)
    } else {
        Err(HandlerError::new(kind, errors.join("; ")))
    }
}

/// The manifests of one table in one bucket: one load.
#[derive(Debug, Clone)]
struct TableLoad {
    bucket: String,
    table: String,
    keys: Vec<String>,
}

/// Manifests grouped per (bucket, table), with the SQS messages that named them.
#[derive(Default)]
struct Groups {
    keys: BTreeMap<(String, String), Vec<String>>,
    messages: BTreeMap<(String, String), Vec<String>>,
}

impl Groups {
    fn add(&mut self, m: ManifestRef, message_id: Option<&str>) {
        let at = (m.bucket, m.table);
        if let Some(id) = message_id {
            self.messages
                .entry(at.clone())
                .or_default()
                .push(id.to_string());
        }
        self.keys.entry(at).or_default().push(m.key);
    }

    fn into_loads(self) -> Vec<TableLoad> {
        self.keys
            .into_iter()
            .map(|((bucket, table), mut keys)| {
                keys.sort();
                keys.dedup();
                TableLoad {
                    bucket,
                    table,
                    keys,
                }
            })
            .collect()
    }
}

/// Runs the loads one after the other, in (bucket, table) order. Not in parallel: the first
/// loads of two tables in one schema would race on `CREATE SCHEMA IF NOT EXISTS` (PostgreSQL
/// reports a unique violation, not a serialization failure), and Redshift commits one
/// transaction at a time anyway.
async fn load_all(deps: &Deps, inv: &Invocation, loads: Vec<TableLoad>) -> Vec<TableReport> {
    let mut reports = Vec::with_capacity(loads.len());
    for l in loads {
        reports.push(load_one(deps, inv, l).await);
    }
    reports
}

async fn load_one(deps: &Deps, inv: &Invocation, l: TableLoad) -> TableReport {
    let outcome = load_outcome(deps, inv, &l).await;
    TableReport {
        bucket: l.bucket,
        table: l.table,
        manifests: l.keys,
        outcome,
    }
}

async fn load_outcome(deps: &Deps, inv: &Invocation, l: &TableLoad) -> TableOutcome {
    let (bucket, table) = (l.bucket.as_str(), l.table.as_str());
    // Lake-only tables get manifests too (the notification covers all of `manifests/`).
    if deps
        .pipeline
        .table(table)
        .is_some_and(|t| t.warehouse.is_none())
    {
        tracing::info!(
            bucket,
            table,
            manifests = l.keys.len(),
            "table has no [tables.warehouse] section; not loaded"
        );
        return TableOutcome::NotLoaded {
            reason: "the table has no [tables.warehouse] section".into(),
        };
    }
    let store = match deps.lakes.for_bucket(bucket) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(bucket, table, error = %e, "no lake for this bucket");
            return TableOutcome::Failed {
                kind: ErrorKind::BadInput,
                error: e.to_string(),
            };
        }
    };
    let executor = deps.target.executor(inv.run_until(now_ms()));
    let loader = Loader {
        pipeline: &deps.pipeline,
        store: store.as_ref(),
        executor: executor.as_ref(),
        iam_role: deps.iam_role.clone(),
        lease_ttl: inv.lease_ttl(now_ms()),
        owner: inv.request_id.clone(),
        use_lease: true,
    };
    match loader.load(table, &l.keys).await {
        Ok(LoadOutcome::Loaded(s)) => {
            if deps.emit_metrics {
                println!("{}", s.emf_line(FUNCTION));
            }
            let c = s.counts;
            tracing::info!(
                bucket,
                table,
                batch = %s.batch,
                manifests = s.manifests.len(),
                files = s.files,
                expected = c.expected,
                staged = c.staged,
                merged = c.merged,
                stale = c.stale,
                deleted = c.deleted,
                duplicates = c.duplicates,
                null_keys = c.null_keys,
                mismatch = s.mismatch.as_deref().unwrap_or("none"),
                record = %s.record_key,
                "loaded"
            );
            TableOutcome::Loaded {
                batch: s.batch,
                counts: c,
                mismatch: s.mismatch,
                record_key: s.record_key,
                quarantine_keys: s.quarantine_keys,
            }
        }
        Ok(LoadOutcome::Busy {
            owner, until_ms, ..
        }) => {
            tracing::warn!(bucket, table, holder = %owner, until_ms, "table is being loaded by another invocation; its messages come back later");
            TableOutcome::Busy {
                holder: owner,
                until_ms,
            }
        }
        Err(e) => {
            tracing::error!(bucket, table, manifests = ?l.keys, error = %e, kind = ?e.kind(), "load failed");
            TableOutcome::Failed {
                kind: e.kind(),
                error: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests;

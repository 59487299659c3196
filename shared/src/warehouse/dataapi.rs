//! The Redshift executor: a load plan run through the Redshift Data API as ONE
//! `BatchExecuteStatement` (one transaction: all or nothing), polled with `DescribeStatement`.
//!
//! Order of effects, so that an invocation that runs out of time never loads a batch twice:
//! 1. On entry, a statement recorded for this batch (`load_statement_key`) is described:
//!    still SUBMITTED/PICKED/STARTED → polled again, never submitted twice; FINISHED → its
//!    counts are returned; FAILED/ABORTED → it rolled back, and the batch is submitted anew.
//! 2. The batch is submitted and its id recorded in the lake before the first poll.
//! 3. `DescribeStatement` is polled with backoff until a terminal state or the deadline (set
//!    below the Lambda timeout). At the deadline the record stays: the next invocation of the
//!    same manifests (the same batch id) resumes at 1.
//! 4. A terminal outcome deletes the record. A serialization or write conflict resubmits the
//!    whole batch (it rolled back) with backoff and jitter, up to `max_attempts` transactions.
//!
//! A crash between the submit and its record leaves a statement nobody tracks: the next
//! invocation submits again, the `LOCK` that opens a load queues it behind the first, and the
//! version guard counts its rows stale instead of merging them twice.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_redshiftdata::error::SdkError;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use crate::aws::{classify, SdkFailure};
use crate::config::RedshiftConfig;
use crate::lake::layout::load_statement_key;
use crate::lake::{LakeError, PutMode};

use super::load::{Executed, Executor, LoadError, RunContext};
use super::plan::{LoadPlan, Statement, Step};
use super::postgres::rand_ms;
use super::sql::{quote_literal, Dialect};

/// Polls start this fast (short statements finish in well under a second)…
const POLL_FIRST: Duration = Duration::from_millis(100);
/// …and slow down to this, so a long load costs a few hundred `DescribeStatement` calls.
const POLL_MAX: Duration = Duration::from_secs(2);
/// Below the loader Lambda's 15-minute timeout, leaving time to record the outcome.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(13 * 60);
/// Transactions one batch may take when Redshift reports a serialization or write conflict.
const MAX_ATTEMPTS: u32 = 5;
/// First wait before resubmitting after a conflict; doubled per attempt, with jitter. A
/// Redshift transaction takes seconds, so a shorter wait mostly meets the same winner.
const CONFLICT_BACKOFF: Duration = Duration::from_secs(1);
/// The `sys_load_error_detail` rows added to a failed COPY's error: enough to see the pattern.
const DETAIL_ROWS: usize = 5;
/// The most the `sys_load_error_detail` look-up may take (it only adds to an error).
const DETAIL_BUDGET: Duration = Duration::from_secs(30);

/// Which Redshift the Data API talks to.
#[derive(Debug, Clone)]
enum Warehouse {
    Workgroup(String),
    Cluster(String),
}

/// How the Data API signs in. Only names and ARNs: never a password.
#[derive(Debug, Clone)]
enum Auth {
    Secret(String),
    DbUser(String),
    /// Serverless with the caller's IAM identity.
    Iam,
}

/// When polling gives up.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// This long after each `run`/`execute`/`table_columns` starts.
    After(Duration),
    /// At this instant (an invocation's own deadline).
    At(Instant),
}

/// A Redshift cluster or Serverless workgroup as a load target, through the Data API.
#[derive(Debug, Clone)]
pub struct DataApiTarget {
    client: Client,
    warehouse: Warehouse,
    database: String,
    auth: Auth,
    poll_first: Duration,
    poll_max: Duration,
    deadline: Deadline,
    max_attempts: u32,
    conflict_backoff: Duration,
}

impl DataApiTarget {
    /// The target of a `[redshift]` section (validated: a workgroup or a cluster).
    pub fn new(client: Client, cfg: &RedshiftConfig) -> Result<Self, LoadError> {
        let warehouse = match (&cfg.workgroup, &cfg.cluster) {
            (Some(w), _) => Warehouse::Workgroup(w.clone()),
            (None, Some(c)) => Warehouse::Cluster(c.clone()),
            (None, None) => {
                return Err(LoadError::Config {
                    table: "[redshift]".into(),
                    message: "set `workgroup` (Serverless) or `cluster`".into(),
                })
            }
        };
        let auth = match (&cfg.secret, &cfg.db_user) {
            (Some(s), _) => Auth::Secret(s.clone()),
            (None, Some(u)) => Auth::DbUser(u.clone()),
            (None, None) => Auth::Iam,
        };
        Ok(Self {
            client,
            warehouse,
            database: cfg.database.clone(),
            auth,
            poll_first: POLL_FIRST,
            poll_max: POLL_MAX,
            deadline: Deadline::After(DEFAULT_DEADLINE),
            max_attempts: MAX_ATTEMPTS,
            conflict_backoff: CONFLICT_BACKOFF,
        })
    }

    /// Polling gives up this long after a call starts (default 13 minutes).
    pub fn with_deadline(mut self, after: Duration) -> Self {
        self.deadline = Deadline::After(after);
        self
    }

    /// Polling gives up at `at` (e.g. the invocation's deadline less a margin).
    pub fn with_deadline_at(mut self, at: Instant) -> Self {
        self.deadline = Deadline::At(at);
        self
    }

    /// The first wait between polls and the cap it doubles up to.
    pub fn with_poll_interval(mut self, first: Duration, max: Duration) -> Self {
        self.poll_first = first;
        self.poll_max = max.max(first);
        self
    }

    /// Transactions one batch may take when conflicts roll it back (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The first wait before resubmitting after a conflict (doubled per attempt).
    pub fn with_conflict_backoff(mut self, first: Duration) -> Self {
        self.conflict_backoff = first;
        self
    }

    fn until(&self) -> Instant {
        match self.deadline {
            Deadline::After(d) => Instant::now() + d,
            Deadline::At(at) => at,
        }
    }

    /// Submits one statement and polls it to a terminal state.
    async fn execute_sql(
        &self,
        table: &str,
        name: &str,
        sql: &str,
        until: Instant,
    ) -> Result<(String, Described), LoadError> {
        let b = self.client.execute_statement().sql(sql);
        let b = b.database(&self.database);
        let b = match &self.warehouse {
            Warehouse::Workgroup(w) => b.workgroup_name(w),
            Warehouse::Cluster(c) => b.cluster_identifier(c),
        };
        let b = match &self.auth {
            Auth::Secret(s) => b.secret_arn(s),
            Auth::DbUser(u) => b.db_user(u),
            Auth::Iam => b,
        };
        let out = b
            .statement_name(format!("sluice {table} {name}"))
            .send()
            .await
            .map_err(|e| sdk_error(table, "ExecuteStatement", &e))?;
        let id = out.id().unwrap_or_default().to_string();
        match self.wait(table, &id, until).await? {
            Waited::Done(d) if d.phase == Phase::Finished => Ok((id, d)),
            Waited::Done(d) => {
                let error = d.error.clone().unwrap_or_else(|| no_error_text(d.phase));
                Err(LoadError::Statement {
                    table: table.to_string(),
                    statement: name.to_string(),
                    conflict: is_conflict(&error),
                    message: format!("{error} (Data API statement {id})"),
                })
            }
            Waited::TimedOut { status, waited } => Err(LoadError::Timeout {
                table: table.to_string(),
                message: format!(
                    "statement {name} (Data API statement {id}) is still {status} after {waited:?}; it keeps running in Redshift"
                ),
            }),
        }
    }

    /// The rows of a query, every value as text (NULL as empty), all pages.
    async fn query(
        &self,
        table: &str,
        name: &str,
        sql: &str,
        until: Instant,
    ) -> Result<Vec<Vec<String>>, LoadError> {
        let (id, d) = self.execute_sql(table, name, sql, until).await?;
        if !d.has_result_set || d.rows == Some(0) {
            return Ok(Vec::new());
        }
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .get_statement_result()
                .id(&id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(table, "GetStatementResult", &e))?;
            rows.extend(
                out.records()
                    .iter()
                    .map(|r| r.iter().map(field_text).collect::<Vec<_>>()),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(rows),
            }
        }
    }

    async fn describe_raw(&self, id: &str) -> Result<Described, SdkFailure> {
        self.client
            .describe_statement()
            .id(id)
            .send()
            .await
            .map(|o| Described::from_output(&o))
            .map_err(|e| classify(&e))
    }

    /// Polls `id` with backoff until it ends or `until` passes.
    async fn wait(&self, table: &str, id: &str, until: Instant) -> Result<Waited, LoadError> {
        let started = Instant::now();
        let mut delay = self.poll_first;
        loop {
            let d = self
                .describe_raw(id)
                .await
                .map_err(|f| sdk_failure(table, "DescribeStatement", f))?;
            if d.phase != Phase::Running {
                return Ok(Waited::Done(d));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(Waited::TimedOut {
                    status: d.status,
                    waited: round_ms(now - started),
                });
            }
            tokio::time::sleep(delay.min(until - now)).await;
            delay = (delay * 2).min(self.poll_max);
        }
    }

    /// What became of the statement recorded for this batch, if one is.
    async fn resume(&self, ctx: &RunContext<'_>, key: &str) -> Result<Resume, LoadError> {
        let bytes = match ctx.store.get_bytes(key).await {
            Ok(b) => b,
            Err(LakeError::NotFound { .. }) => return Ok(Resume::Nothing),
            Err(e) => return Err(lake_error(ctx.table, key, e)),
        };
        let rec: StatementRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(table = ctx.table, key, error = %e, "unreadable statement record; submitting the batch anew");
                return Ok(Resume::Nothing);
            }
        };
        match self.describe_raw(&rec.statement_id).await {
            Ok(d) => Ok(match d.phase {
                Phase::Running => {
                    tracing::info!(table = ctx.table, statement_id = %rec.statement_id, status = %d.status, submitted_at = %rec.submitted_at, "resuming the batch an earlier invocation submitted");
                    Resume::Running(rec)
                }
                Phase::Finished => Resume::Finished(rec, d),
                Phase::Failed | Phase::Aborted => {
                    tracing::warn!(table = ctx.table, statement_id = %rec.statement_id, status = %d.status, error = d.error.as_deref().unwrap_or(""), "the batch an earlier invocation submitted did not commit (rolled back); submitting it anew");
                    Resume::Failed(rec)
                }
            }),
            Err(f) if f.retryable => Err(sdk_failure(ctx.table, "DescribeStatement", f)),
            // Statements are kept 24 hours: an older one cannot be asked about any more.
            Err(f) => {
                tracing::warn!(table = ctx.table, statement_id = %rec.statement_id, error = %f.message, "the recorded statement cannot be described; submitting the batch anew");
                Ok(Resume::Failed(rec))
            }
        }
    }

    /// Submits the batch and records its id before anything polls it.
    async fn submit(
        &self,
        ctx: &RunContext<'_>,
        key: &str,
        steps: &[Step],
        attempt: u32,
    ) -> Result<StatementRecord, LoadError> {
        let b = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(steps.iter().map(|s| s.sql().to_string()).collect()));
        let b = b.database(&self.database);
        let b = match &self.warehouse {
            Warehouse::Workgroup(w) => b.workgroup_name(w),
            Warehouse::Cluster(c) => b.cluster_identifier(c),
        };
        let b = match &self.auth {
            Auth::Secret(s) => b.secret_arn(s),
            Auth::DbUser(u) => b.db_user(u),
            Auth::Iam => b,
        };
        let out = b
            .statement_name(format!("sluice load {} {}", ctx.table, ctx.batch))
            .send()
            .await
            .map_err(|e| sdk_error(ctx.table, "BatchExecuteStatement", &e))?;
        let rec = StatementRecord {
            statement_id: out.id().unwrap_or_default().to_string(),
            submitted_at: chrono::Utc::now().to_rfc3339(),
            attempt,
            steps: steps.iter().map(|s| s.name().to_string()).collect(),
        };
        tracing::info!(table = ctx.table, batch = ctx.batch, statement_id = %rec.statement_id, attempt, statements = steps.len(), "load submitted to the Redshift Data API");
        // Not recording leaves the statement untracked should this invocation time out; it
        // may still finish within it, so the load goes on (see the note at the top).
        let body = serde_json::to_vec_pretty(&rec).unwrap_or_default();
        if let Err(e) = ctx.store.put(key, body.into(), PutMode::Overwrite).await {
            tracing::warn!(table = ctx.table, key, statement_id = %rec.statement_id, error = %e, "recording the submitted statement failed; a time-out now would submit it again");
        }
        Ok(rec)
    }

    /// Deletes the statement record once its outcome is handled.
    async fn forget(&self, ctx: &RunContext<'_>, key: &str) {
        if let Err(e) = ctx.store.delete(key).await {
            tracing::warn!(table = ctx.table, key, error = %e, "deleting the statement record failed; the next load of this batch describes it again");
        }
    }

    /// `sys_load_error_detail` rows of a failed COPY, as one line; None when there are none or
    /// the look-up fails (it must never hide the COPY's own error).
    async fn load_error_detail(
        &self,
        table: &str,
        query_id: i64,
        until: Instant,
    ) -> Option<String> {
        let sql = format!(
            "SELECT TRIM(file_name), line_number, TRIM(column_name), error_code, TRIM(error_message) FROM sys_load_error_detail WHERE query_id = {query_id} ORDER BY start_time LIMIT {DETAIL_ROWS}"
        );
        let until = until.min(Instant::now() + DETAIL_BUDGET);
        match self.query(table, "load_error_detail", &sql, until).await {
            Ok(rows) => format_load_errors(&rows),
            Err(e) => {
                tracing::warn!(table, query_id, error = %e, "reading sys_load_error_detail failed; reporting the COPY error alone");
                None
            }
        }
    }

    /// The error of a failed batch, with the step that failed and, for a COPY, its load errors.
    async fn failure_error(
        &self,
        table: &str,
        rec: &StatementRecord,
        steps: &[Step],
        d: &Described,
        until: Instant,
    ) -> LoadError {
        let f = failure(d, &rec.steps);
        let mut message = format!("{} (Data API statement {}", f.error, rec.statement_id);
        if let Some(i) = f.index {
            message.push_str(&format!(", sub-statement {} of {}", i + 1, rec.steps.len()));
        }
        message.push(')');
        let is_copy = steps
            .iter()
            .any(|s| s.name() == f.statement && matches!(s, Step::Copy(_)));
        if let (true, Some(q)) = (is_copy, f.query_id) {
            if let Some(detail) = self.load_error_detail(table, q, until).await {
                message.push_str("; sys_load_error_detail: ");
                message.push_str(&detail);
            }
        }
        LoadError::Statement {
            table: table.to_string(),
            statement: f.statement,
            message,
            conflict: f.conflict,
        }
    }
}

#[async_trait]
impl Executor for DataApiTarget {
    fn dialect(&self) -> Dialect {
        Dialect::Redshift
    }

    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError> {
        let sql = format!(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = {} AND table_name = {} ORDER BY ordinal_position",
            quote_literal(schema),
            quote_literal(name)
        );
        let rows = self
            .query(table, "table_columns", &sql, self.until())
            .await?;
        let cols: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        Ok((!cols.is_empty()).then_some(cols))
    }

    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError> {
        let until = self.until();
        let table = ctx.table;
        let key = load_statement_key(table, ctx.batch);
        let names: Vec<&str> = steps.iter().map(Step::name).collect();
        let (mut pending, mut attempt) = match self.resume(ctx, &key).await? {
            Resume::Nothing => (None, 0),
            Resume::Running(rec) => {
                let attempt = rec.attempt;
                (Some(rec), attempt)
            }
            Resume::Finished(rec, d) => {
                self.forget(ctx, &key).await;
                tracing::info!(table, statement_id = %rec.statement_id, "the batch an earlier invocation submitted has committed");
                return Ok(finished(&rec, &d, &names));
            }
            Resume::Failed(rec) => (None, rec.attempt),
        };
        loop {
            let rec = match pending.take() {
                Some(rec) => rec,
                None => {
                    attempt += 1;
                    self.submit(ctx, &key, steps, attempt).await?
                }
            };
            let d = match self.wait(table, &rec.statement_id, until).await? {
                Waited::Done(d) => d,
                Waited::TimedOut { status, waited } => {
                    return Err(LoadError::Timeout {
                        table: table.to_string(),
                        message: format!(
                            "Data API statement {} is still {status} after {waited:?}, the deadline before the Lambda timeout; it keeps running in Redshift, and the next invocation of this load resumes it instead of submitting it again (recorded at {key})",
                            rec.statement_id
                        ),
                    });
                }
            };
            if d.phase == Phase::Finished {
                self.forget(ctx, &key).await;
                return Ok(finished(&rec, &d, &names));
            }
            let f = failure(&d, &rec.steps);
            let backoff = jittered(self.conflict_backoff, attempt);
            if f.conflict && attempt < self.max_attempts && Instant::now() + backoff < until {
                tracing::warn!(table = %plan.table, attempt, statement_id = %rec.statement_id, step = %f.statement, error = %f.error, "serialization conflict; the batch rolled back and is submitted again");
                tokio::time::sleep(backoff).await;
                continue;
            }
            let err = self.failure_error(table, &rec, steps, &d, until).await;
            self.forget(ctx, &key).await;
            return Err(err);
        }
    }

    async fn execute(&self, table: &str, statement: &Statement) -> Result<(), LoadError> {
        self.execute_sql(table, &statement.name, &statement.sql, self.until())
            .await
            .map(|_| ())
    }
}

/// What an earlier invocation left for this batch.
enum Resume {
    Nothing,
    Running(StatementRecord),
    Finished(StatementRecord, Described),
    /// Rolled back (or too old to describe): submit anew, counting its attempts.
    Failed(StatementRecord),
}

/// The lake record of a submitted batch (`load_statement_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StatementRecord {
    statement_id: String,
    /// RFC 3339, UTC.
    submitted_at: String,
    /// Transactions this batch has taken, this one included.
    attempt: u32,
    /// Names of the batch's statements, in order: their row counts are read by position.
    steps: Vec<String>,
}

enum Waited {
    Done(Described),
    TimedOut { status: String, waited: Duration },
}

/// Where a statement is, as far as polling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Finished,
    Failed,
    Aborted,
}

fn phase(status: Option<&StatusString>) -> Phase {
    match status {
        Some(StatusString::Finished) => Phase::Finished,
        Some(StatusString::Failed) => Phase::Failed,
        Some(StatusString::Aborted) => Phase::Aborted,
        // SUBMITTED, PICKED, STARTED, and any status newer than this SDK: keep polling (the
        // deadline bounds it).
        _ => Phase::Running,
    }
}

fn sub_phase(status: Option<&StatementStatusString>) -> Phase {
    match status {
        Some(StatementStatusString::Finished) => Phase::Finished,
        Some(StatementStatusString::Failed) => Phase::Failed,
        Some(StatementStatusString::Aborted) => Phase::Aborted,
        _ => Phase::Running,
    }
}

/// A `DescribeStatement` answer, reduced to what the executor acts on.
#[derive(Debug, Clone, PartialEq)]
struct Described {
    phase: Phase,
    /// The status as reported, for messages.
    status: String,
    error: Option<String>,
    /// `ResultRows` of a single statement (rows returned or affected).
    rows: Option<u64>,
    has_result_set: bool,
    subs: Vec<Sub>,
}

/// One sub-statement of a batch.
#[derive(Debug, Clone, PartialEq)]
struct Sub {
    /// Position in the batch (0-based).
    index: usize,
    phase: Phase,
    error: Option<String>,
    rows: Option<u64>,
    /// Redshift's query id (`sys_load_error_detail.query_id`), when reported.
    query_id: Option<i64>,
}

impl Described {
    fn from_output(o: &DescribeStatementOutput) -> Self {
        Described {
            phase: phase(o.status()),
            status: o
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
            error: non_empty(o.error()),
            rows: result_rows(o.result_rows()),
            has_result_set: o.has_result_set().unwrap_or(false),
            subs: o
                .sub_statements()
                .iter()
                .enumerate()
                .map(|(pos, s)| Sub {
                    index: sub_index(s.id(), pos),
                    phase: sub_phase(s.status()),
                    error: non_empty(s.error()),
                    rows: result_rows(s.result_rows()),
                    query_id: Some(s.redshift_query_id()).filter(|q| *q > 0),
                })
                .collect(),
        }
    }

    /// Rows per statement of a batch of `n`, by position.
    fn sub_rows(&self, n: usize) -> Vec<Option<u64>> {
        let mut rows = vec![None; n];
        for s in &self.subs {
            if let Some(r) = rows.get_mut(s.index) {
                *r = s.rows;
            }
        }
        rows
    }
}

/// `ResultRows`: −1 means "not reported" (DDL, or not yet known).
fn result_rows(n: i64) -> Option<u64> {
    u64::try_from(n).ok()
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty()).map(str::to_string)
}

/// A sub-statement's position from its id, `<batch id>:<n>` with n from 1; else its place in
/// the list.
fn sub_index(id: &str, pos: usize) -> usize {
    id.rsplit_once(':')
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .unwrap_or(pos)
}

/// Why a batch did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    /// Name of the step that failed ("batch" when no sub-statement says).
    statement: String,
    index: Option<usize>,
    error: String,
    query_id: Option<i64>,
    conflict: bool,
}

/// The failed sub-statement of a batch (the first FAILED one) named by its step.
fn failure(d: &Described, names: &[String]) -> Failure {
    let sub = d.subs.iter().find(|s| s.phase == Phase::Failed);
    let error = sub
        .and_then(|s| s.error.clone())
        .or_else(|| d.error.clone())
        .unwrap_or_else(|| no_error_text(d.phase));
    Failure {
        statement: sub
            .and_then(|s| names.get(s.index))
            .cloned()
            .unwrap_or_else(|| "batch".into()),
        index: sub.map(|s| s.index),
        query_id: sub.and_then(|s| s.query_id),
        conflict: is_conflict(&error),
        error,
    }
}

fn no_error_text(p: Phase) -> String {
    match p {
        Phase::Aborted => "the statement was aborted (cancelled) before it finished".into(),
        _ => "the statement failed without an error message".into(),
    }
}

/// Whether an error is another transaction winning, after which the same batch may commit.
///
/// - SERIALIZABLE isolation: `ERROR: 1023 DETAIL: Serializable isolation violation on table
///   …`, documented in the Redshift Database Developer Guide, "Isolation levels in Amazon
///   Redshift" → "Troubleshooting serializable isolation errors"
///   (https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html), whose first
///   remedy is to retry the transaction.
/// - SNAPSHOT isolation (the default for new clusters and workgroups, same page): concurrent
///   writes to the same table end one transaction with `ERROR: could not complete because of
///   conflict with concurrent transaction`. The AWS documentation we searched does not spell
///   this text out; it is the error users report from Redshift (aws/amazon-redshift-jdbc-driver
///   issue 147, dbt-labs/dbt-core issue 12596).
pub(crate) fn is_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("serializable isolation violation")
        || m.contains("conflict with concurrent transaction")
}

/// The counts of a committed batch, lined up with the steps being run now.
fn finished(rec: &StatementRecord, d: &Described, names: &[&str]) -> Executed {
    let rows = d.sub_rows(rec.steps.len());
    Executed {
        rows: align(&rec.steps, &rows, names),
        statement_id: Some(rec.statement_id.clone()),
        attempts: rec.attempt.max(1),
    }
}

/// Rows of the recorded steps, placed on the current steps by name in order. They differ when
/// a resumed batch was planned before something changed (an `add_column` step that has since
/// committed); a step without a recorded counterpart gets None.
fn align(recorded: &[String], rows: &[Option<u64>], current: &[&str]) -> Vec<Option<u64>> {
    if recorded
        .iter()
        .map(String::as_str)
        .eq(current.iter().copied())
    {
        return rows.to_vec();
    }
    let mut next = 0;
    current
        .iter()
        .map(|name| {
            let found = recorded[next..].iter().position(|r| r == name)?;
            next += found + 1;
            rows.get(next - 1).copied().flatten()
        })
        .collect()
}

/// The wait before resubmitting after conflict number `attempt` (from 1): doubled per attempt,
/// plus up to half again of jitter so concurrent loaders spread out.
fn jittered(first: Duration, attempt: u32) -> Duration {
    let base = first * 2u32.saturating_pow(attempt.saturating_sub(1).min(10));
    base + base * rand_ms(attempt) / 100
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn field_text(f: &Field) -> String {
    match f {
        Field::StringValue(s) => s.clone(),
        Field::LongValue(n) => n.to_string(),
        Field::DoubleValue(x) => x.to_string(),
        Field::BooleanValue(b) => b.to_string(),
        _ => String::new(),
    }
}

/// `sys_load_error_detail` rows (file, line, column, code, message) as one line.
fn format_load_errors(rows: &[Vec<String>]) -> Option<String> {
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            format!(
                "{} line {} column {}: {} (code {})",
                get(0),
                get(1),
                get(2),
                get(4),
                get(3)
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn sdk_error<E>(table: &str, op: &str, e: &SdkError<E>) -> LoadError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    sdk_failure(table, op, classify(e))
}

/// Throttling, 5xx and network failures may pass: retryable (`Connect`); anything else
/// (access denied, a bad parameter) is this load's error.
fn sdk_failure(table: &str, op: &str, f: SdkFailure) -> LoadError {
    let message = format!("Redshift Data API {op}: {}", f.message);
    if f.retryable {
        LoadError::Connect(message)
    } else {
        LoadError::Statement {
            table: table.to_string(),
            statement: op.to_string(),
            message,
            conflict: false,
        }
    }
}

fn lake_error(table: &str, key: &str, e: LakeError) -> LoadError {
    LoadError::Lake {
        table: table.to_string(),
        key: key.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_redshiftdata::types::SubStatementData;

    fn sub(id: &str, status: StatementStatusString, rows: i64) -> SubStatementData {
        SubStatementData::builder()
            .id(id)
            .status(status)
            .result_rows(rows)
            .build()
            .expect("id is set")
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn statuses_map_to_phases() {
        assert_eq!(phase(Some(&StatusString::Submitted)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Picked)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Started)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Finished)), Phase::Finished);
        assert_eq!(phase(Some(&StatusString::Failed)), Phase::Failed);
        assert_eq!(phase(Some(&StatusString::Aborted)), Phase::Aborted);
        assert_eq!(
            phase(Some(&StatusString::from("NEW_STATUS"))),
            Phase::Running
        );
        assert_eq!(phase(None), Phase::Running);
        assert_eq!(
            sub_phase(Some(&StatementStatusString::Failed)),
            Phase::Failed
        );
        assert_eq!(
            sub_phase(Some(&StatementStatusString::Started)),
            Phase::Running
        );
    }

    #[test]
    fn rows_by_sub_statement_position() {
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Finished)
            // Listed out of order: the id's suffix places them.
            .sub_statements(sub("b1:3", StatementStatusString::Finished, 7))
            .sub_statements(sub("b1:1", StatementStatusString::Finished, -1))
            .sub_statements(sub("b1:2", StatementStatusString::Finished, 0))
            .build()
            .expect("id is set");
        let d = Described::from_output(&o);
        assert_eq!(d.phase, Phase::Finished);
        assert_eq!(d.sub_rows(4), vec![None, Some(0), Some(7), None]);
        assert_eq!(sub_index("no-colon", 4), 4);
        assert_eq!(sub_index("x:0", 2), 2);
    }

    #[test]
    fn the_failed_sub_statement_names_its_step() {
        let failed = SubStatementData::builder()
            .id("b1:2")
            .status(StatementStatusString::Failed)
            .error("ERROR: Spectrum Scan Error")
            .redshift_query_id(4242)
            .build()
            .expect("id is set");
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Failed)
            .error("batch error")
            .sub_statements(sub("b1:1", StatementStatusString::Finished, 0))
            .sub_statements(failed)
            .sub_statements(sub("b1:3", StatementStatusString::Aborted, -1))
            .build()
            .expect("id is set");
        let f = failure(
            &Described::from_output(&o),
            &names(&["lock", "copy", "insert"]),
        );
        assert_eq!(
            f,
            Failure {
                statement: "copy".into(),
                index: Some(1),
                error: "ERROR: Spectrum Scan Error".into(),
                query_id: Some(4242),
                conflict: false,
            }
        );
    }

    #[test]
    fn a_failure_without_sub_statements_uses_the_batch_error() {
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Failed)
            .error("ERROR: 1023 DETAIL: Serializable isolation violation on table - 12345, transactions forming the cycle are: 1, 2 (pid:3)")
            .build()
            .expect("id is set");
        let f = failure(&Described::from_output(&o), &names(&["lock"]));
        assert_eq!(f.statement, "batch");
        assert!(f.conflict);
        let aborted = DescribeStatementOutput::builder()
            .id("b2")
            .status(StatusString::Aborted)
            .build()
            .expect("id is set");
        let f = failure(&Described::from_output(&aborted), &[]);
        assert!(f.error.contains("aborted"), "{}", f.error);
        assert!(!f.conflict);
    }

    #[test]
    fn conflicts_of_both_isolation_levels() {
        assert!(is_conflict(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 156221, transactions forming the cycle are: 123, 456"
        ));
        assert!(is_conflict(
            "ERROR: could not complete because of conflict with concurrent transaction"
        ));
        assert!(!is_conflict("ERROR: relation \"x\" does not exist"));
        assert!(!is_conflict(
            "ERROR: Load into table 'stage' failed. Check 'sys_load_error_detail' system table for details."
        ));
    }

    #[test]
    fn rows_follow_the_steps_by_name_when_the_plan_changed() {
        let recorded = names(&["lock", "add_column x", "copy", "insert", "drop_stage"]);
        let rows = [None, None, Some(10), Some(8), None];
        assert_eq!(
            align(&recorded, &rows, &["lock", "copy", "insert", "drop_stage"]),
            vec![None, Some(10), Some(8), None]
        );
        assert_eq!(
            align(
                &recorded,
                &rows,
                &["lock", "add_column x", "copy", "insert", "drop_stage"]
            ),
            rows.to_vec()
        );
        assert_eq!(align(&names(&["copy"]), &[Some(3)], &["other"]), vec![None]);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let first = Duration::from_millis(100);
        for attempt in 1..5 {
            let base = first * 2u32.pow(attempt - 1);
            let d = jittered(first, attempt);
            assert!(d >= base && d < base + base / 2, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn load_errors_read_as_one_line() {
        let rows = vec![vec![
            "s3://lake/curated/a.parquet".to_string(),
            "3".into(),
            "amount".into(),
            "1216".into(),
            "Invalid digit".into(),
        ]];
        assert_eq!(
            format_load_errors(&rows).as_deref(),
            Some("s3://lake/curated/a.parquet line 3 column amount: Invalid digit (code 1216)")
        );
        assert_eq!(format_load_errors(&[]), None);
    }

    #[test]
    fn statement_record_round_trips() {
        let rec = StatementRecord {
            statement_id: "d9b6c0c9-5a3b-4d0e-9d26-2f8a1c1e0f00".into(),
            submitted_at: "2024-05-01T00:00:00+00:00".into(),
            attempt: 2,
            steps: names(&["lock", "copy"]),
        };
        let json = serde_json::to_vec(&rec).expect("serializes");
        let back: StatementRecord = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, rec);
    }
}

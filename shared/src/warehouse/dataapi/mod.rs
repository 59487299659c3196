//! The Redshift executor: a load plan run through the Redshift Data API as ONE
//! `BatchExecuteStatement` (one transaction: all or nothing), polled with `DescribeStatement`.
//!
//! Order of effects, so that an invocation that runs out of time never loads a batch twice:
//! 1. On entry, a statement recorded for this batch (`load_statement_key`) is described:
//!    still SUBMITTED/PICKED/STARTED → polled again, never submitted twice; FINISHED → its
//!    counts are returned; FAILED/ABORTED → it rolled back, and the batch is submitted anew.
//! 2. Before any submission, the statement records of the table's OTHER batches are listed
//!    (`state/loads/<table>/`): SQS re-batches messages that come back after a time-out, so
//!    the statement an earlier invocation left running often belongs to another batch id. One
//!    still running is waited for (polled) until it ends, or the deadline ends this load
//!    without a submission. Records of other batches that ended stay for their own invocation
//!    (which reads the counts), unless older than the Data API keeps statements (24 h): those
//!    are orphans, deleted.
//! 3. Nothing is submitted with less than `min_time_left` before the deadline: such a
//!    statement would outlive its invocation for certain.
//! 4. The batch is submitted and its id recorded in the lake before the first poll.
//! 5. `DescribeStatement` is polled with backoff until a terminal state or the deadline (set
//!    below the Lambda timeout). At the deadline the record stays: the next invocation of the
//!    same manifests (the same batch id) resumes at 1.
//! 6. A terminal outcome deletes the record. A serialization or write conflict resubmits the
//!    whole batch (it rolled back) with backoff and jitter, up to `max_attempts` transactions.
//!
//! Statements outside a load (`Executor::execute`: the CREATEs before a first load, a stage's
//! TRUNCATE after one) go as one ExecuteStatement, or one BatchExecuteStatement when there are
//! several: one session, so a `SET` before them holds for them. They are idempotent (`CREATE …
//! IF NOT EXISTS`) and leave no record; conflicts are retried as a load's are.
//!
//! A crash between the submit and its record leaves a statement nobody tracks: the next
//! invocation submits again, the `LOCK` that opens a load queues it behind the first, and the
//! version guard counts its rows stale instead of merging them twice.
//!
//! The `ClientToken` is the SDK's own: one per `BatchExecuteStatement` call, reused by the
//! SDK's retries of that call, so a request retried after a lost response never runs twice. It
//! is not derived from the batch: a batch that FAILED is submitted again with the same
//! statements, and a token derived from them would hand back the failed statement for as long
//! as the Data API remembers tokens (it does not document how long). The record above covers
//! re-invocations instead.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_redshiftdata::error::SdkError;
use aws_sdk_redshiftdata::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;

use crate::aws::{classify, SdkFailure};
use crate::config::RedshiftConfig;
use crate::lake::layout::load_statement_key;
use crate::lake::LakeError;

use super::executor::{Executed, Executor, LoadError, RunContext};
use super::plan::{LoadPlan, Statement, Step};
use super::postgres::rand_ms;
use super::sql::{quote_literal, Dialect};

mod status;

use status::{
    failure, field_text, format_load_errors, is_conflict, no_error_text, Described, Phase,
};

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
/// Nothing is submitted with less than this left before the deadline: a load of a few files
/// commits in seconds, and one submitted later would outlive its invocation for certain.
const MIN_TIME_LEFT: Duration = Duration::from_secs(20);
/// The Data API answers about a statement for 24 hours; an ended statement's record older than
/// that can no longer give its counts to anyone: an orphan.
const ORPHAN_AGE_SECS: i64 = 24 * 60 * 60;

/// A request builder with the database, the cluster or workgroup and the sign-in set (the
/// builders of ExecuteStatement and BatchExecuteStatement share these methods, not a trait).
macro_rules! connect {
    ($target:expr, $builder:expr) => {{
        let b = $builder.database(&$target.database);
        let b = match &$target.warehouse {
            Warehouse::Workgroup(w) => b.workgroup_name(w),
            Warehouse::Cluster(c) => b.cluster_identifier(c),
        };
        match &$target.auth {
            Auth::Secret(s) => b.secret_arn(s),
            Auth::DbUser(u) => b.db_user(u),
            Auth::Iam => b,
        }
    }};
}

// After the macro: the record code submits with it.
mod record;

use record::{finished, Resume, StatementRecord};

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
    min_time_left: Duration,
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
            min_time_left: MIN_TIME_LEFT,
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

    /// Submits nothing with less than `left` before the deadline (default 20 s): a
    /// `LoadError::Timeout` instead, and the next invocation starts afresh.
    pub fn with_min_time_left(mut self, left: Duration) -> Self {
        self.min_time_left = left;
        self
    }

    fn until(&self) -> Instant {
        match self.deadline {
            Deadline::After(d) => Instant::now() + d,
            Deadline::At(at) => at,
        }
    }

    /// A `LoadError::Timeout` when less than `min_time_left` is left before `until`.
    fn time_to_submit(&self, table: &str, what: &str, until: Instant) -> Result<(), LoadError> {
        let left = until.saturating_duration_since(Instant::now());
        if left < self.min_time_left {
            return Err(LoadError::Timeout {
                table: table.to_string(),
                message: format!(
                    "{what} not submitted: {} s left before the deadline, under the {} s a statement is given to finish",
                    left.as_secs(),
                    self.min_time_left.as_secs()
                ),
            });
        }
        Ok(())
    }

    /// Whether a conflict may be retried: attempts remain and, after the backoff, time to
    /// submit again.
    fn may_retry(&self, attempt: u32, backoff: Duration, until: Instant) -> bool {
        attempt < self.max_attempts && Instant::now() + backoff + self.min_time_left < until
    }

    /// Submits `statements` in one session and transaction (one ExecuteStatement, or one
    /// BatchExecuteStatement for several) and polls them to a terminal state. A failure names
    /// the statement that failed.
    async fn run_statements(
        &self,
        table: &str,
        statements: &[Statement],
        until: Instant,
    ) -> Result<(String, Described), LoadError> {
        let names: Vec<String> = statements.iter().map(|s| s.name.clone()).collect();
        let id = match statements {
            [] => {
                return Err(LoadError::Config {
                    table: table.to_string(),
                    message: "no statement to run".into(),
                })
            }
            [one] => connect!(self, self.client.execute_statement().sql(&one.sql))
                .statement_name(format!("sluice {table} {}", one.name))
                .send()
                .await
                .map_err(|e| sdk_error(table, "ExecuteStatement", &e))?
                .id()
                .unwrap_or_default()
                .to_string(),
            [first, ..] => {
                let sqls = statements.iter().map(|s| s.sql.clone()).collect();
                connect!(
                    self,
                    self.client.batch_execute_statement().set_sqls(Some(sqls))
                )
                .statement_name(format!(
                    "sluice {table} {} +{}",
                    first.name,
                    statements.len() - 1
                ))
                .send()
                .await
                .map_err(|e| sdk_error(table, "BatchExecuteStatement", &e))?
                .id()
                .unwrap_or_default()
                .to_string()
            }
        };
        match self.wait(table, &id, until).await? {
            Waited::Done(d) if d.phase == Phase::Finished => Ok((id, d)),
            Waited::Done(d) if names.len() == 1 => {
                let error = d.error.clone().unwrap_or_else(|| no_error_text(d.phase));
                Err(LoadError::Statement {
                    table: table.to_string(),
                    statement: names[0].clone(),
                    conflict: is_conflict(&error),
                    message: format!("{error} (Data API statement {id})"),
                })
            }
            Waited::Done(d) => {
                let f = failure(&d, &names);
                let at = f
                    .index
                    .map(|i| format!(", sub-statement {} of {}", i + 1, names.len()))
                    .unwrap_or_default();
                Err(LoadError::Statement {
                    table: table.to_string(),
                    statement: f.statement,
                    conflict: f.conflict,
                    message: format!("{} (Data API statement {id}{at})", f.error),
                })
            }
            Waited::TimedOut { status, waited } => Err(LoadError::Timeout {
                table: table.to_string(),
                message: format!(
                    "statement {} (Data API statement {id}) is still {status} after {waited:?}; it keeps running in Redshift",
                    names.join(", ")
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
        let statement = Statement {
            name: name.to_string(),
            sql: sql.to_string(),
        };
        let (id, d) = self
            .run_statements(table, std::slice::from_ref(&statement), until)
            .await?;
        if !d.has_result_set || d.rows == Some(0) {
            return Ok(Vec::new());
        }
        self.result_rows(table, &id).await
    }

    /// The rows of a finished statement or sub-statement (`<id>:<n>`), all pages.
    async fn result_rows(&self, table: &str, id: &str) -> Result<Vec<Vec<String>>, LoadError> {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .get_statement_result()
                .id(id)
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

    /// The rows of the batch's queries (`Step::Query`) that returned any, read by their
    /// sub-statement ids (`<id>:<n>`, from 1) once the batch committed.
    async fn read_results(
        &self,
        table: &str,
        rec: &StatementRecord,
        steps: &[Step],
        mut done: Executed,
    ) -> Result<Executed, LoadError> {
        for (pos, step) in steps.iter().enumerate() {
            let Step::Query(q) = step else { continue };
            if done.rows.get(pos).copied().flatten() == Some(0) {
                continue;
            }
            let Some(sub) = rec.steps.iter().position(|n| n == &q.name) else {
                tracing::warn!(table, step = %q.name, statement_id = %rec.statement_id, "the committed batch has no such query; its rows are not read");
                continue;
            };
            let id = format!("{}:{}", rec.statement_id, sub + 1);
            let rows = self.result_rows(table, &id).await?;
            if !rows.is_empty() {
                done.results.insert(pos, rows);
            }
        }
        Ok(done)
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
                tracing::info!(table, statement_id = %rec.statement_id, "the batch an earlier invocation submitted has committed");
                // A failed read keeps the record: the next invocation finds the batch
                // FINISHED and reads its rows again.
                let done = self.read_results(table, &rec, steps, finished(&rec, &d, &names));
                let done = done.await?;
                self.forget(ctx, &key).await;
                return Ok(done);
            }
            Resume::Failed(rec) => (None, rec.attempt),
        };
        loop {
            let rec = match pending.take() {
                Some(rec) => rec,
                None => {
                    self.wait_for_other_batches(ctx, until).await?;
                    self.time_to_submit(table, &format!("batch {}", ctx.batch), until)?;
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
                // A failed read keeps the record: the next invocation finds the batch
                // FINISHED and reads its rows again.
                let done = self.read_results(table, &rec, steps, finished(&rec, &d, &names));
                let done = done.await?;
                self.forget(ctx, &key).await;
                return Ok(done);
            }
            let f = failure(&d, &rec.steps);
            let backoff = jittered(self.conflict_backoff, attempt);
            if f.conflict && self.may_retry(attempt, backoff, until) {
                tracing::warn!(table = %plan.table, attempt, statement_id = %rec.statement_id, step = %f.statement, error = %f.error, "serialization conflict; the batch rolled back and is submitted again");
                tokio::time::sleep(backoff).await;
                continue;
            }
            let err = self.failure_error(table, &rec, steps, &d, until).await;
            self.forget(ctx, &key).await;
            return Err(err);
        }
    }

    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError> {
        if statements.is_empty() {
            return Ok(());
        }
        let until = self.until();
        let what = statements
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut attempt = 0;
        loop {
            self.time_to_submit(table, &format!("statements {what}"), until)?;
            attempt += 1;
            match self.run_statements(table, statements, until).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => {
                    let backoff = jittered(self.conflict_backoff, attempt);
                    if !self.may_retry(attempt, backoff, until) {
                        return Err(e);
                    }
                    tracing::warn!(table, attempt, statements = %what, error = %e, "serialization conflict; the statements rolled back and are submitted again");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum Waited {
    Done(Described),
    TimedOut { status: String, waited: Duration },
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

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let first = Duration::from_millis(100);
        for attempt in 1..5 {
            let base = first * 2u32.pow(attempt - 1);
            let d = jittered(first, attempt);
            assert!(d >= base && d < base + base / 2, "{attempt}: {d:?}");
        }
    }
}

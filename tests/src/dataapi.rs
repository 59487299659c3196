//! A test-only Redshift Data API endpoint on loopback, backed by the test PostgreSQL.
//!
//! moto_server has ExecuteStatement and DescribeStatement but no BatchExecuteStatement, and
//! runs no SQL; the warehouse executor needs both. This server speaks the Data API's wire
//! protocol (awsJson1_1: `POST /`, `X-Amz-Target: RedshiftData.<Operation>`, JSON bodies,
//! errors as `{"__type": "...", "Message": "..."}` with status 400), so the real
//! `aws-sdk-redshiftdata` client is pointed at it with an endpoint override.
//!
//! # Public API
//!
//! ```ignore
//! let sdk = sluice_tests::moto_sdk_config().await;          // S3 for COPY goes to moto
//! let api = DataApi::start(&sluice_tests::pg_url(), &sdk).await;
//! let client = api.client(&sdk);                            // or endpoint_url(api.url())
//! api.set_fail(FailAt::Sql("INSERT".into()), "ERROR: 1023 DETAIL: Serializable isolation violation on table - 1");
//! api.set_fail_times(FailAt::Index(2), "ERROR: boom", 1);  // only the next matching batch
//! api.clear_fail();
//! api.stay_started(1);        // the next batch stays STARTED forever (until cancelled)
//! api.batch_calls();          // BatchExecuteStatement calls received, refused ones included
//! api.submitted_sql();        // SQL of every accepted submission (batch or single), as sent
//! api.submissions();          // the same with the statement id and the whole request JSON
//! // The next failed statement matching `at` gets these sys_load_error_detail rows:
//! api.set_load_error_detail(FailAt::Sql("FORMAT AS PARQUET".into()), vec![LoadErrorDetail {
//!     file_name: "s3://lake/curated/t/x.parquet".into(), line_number: 3,
//!     column_name: "amount".into(), error_code: 1207, error_message: "Invalid digit".into() }]);
//! api.load_error_details();   // (query id, row) of every row recorded so far
//! wait_done(&client, &id).await;  // polls DescribeStatement until FINISHED/FAILED/ABORTED
//! ```
//!
//! # Operations and semantics
//!
//! - **BatchExecuteStatement**: up to 40 `Sqls` (more: `ValidationException`, as Redshift); a
//!   `TRUNCATE` among them is refused with a `ValidationException` (Redshift commits it
//!   implicitly, which would break the batch's single transaction). `Database` and one of
//!   `ClusterIdentifier` / `WorkgroupName` are required. A repeated `ClientToken` returns the
//!   first statement's id without running anything again (the API's idempotency). Accepted
//!   batches run in a spawned task, all statements in ONE transaction at SERIALIZABLE on a fresh
//!   connection: `SUBMITTED` → `STARTED` → `FINISHED`, or `FAILED` with the failing
//!   sub-statement `FAILED` (with `Error`), the earlier ones `FINISHED` (rolled back all the
//!   same), the later ones `ABORTED`, and the top-level `Error` reading
//!   `Query #<n> failed with <error>`. Each sub-statement's `ResultRows` is its rows affected
//!   (rows returned for a SELECT, rows copied for a COPY); the top level has `ResultRows` and
//!   `ResultSize` -1, as the API reports for batches.
//! - **ExecuteStatement**: one `Sql` (its `:name` placeholders bound from `Parameters` as
//!   string literals), run the same way; a result set is kept for
//!   **GetStatementResult** (`Records` of `stringValue` / `longValue` / `doubleValue` /
//!   `booleanValue` / `isNull`, `ColumnMetadata`, `TotalNumRows`; one page). A batch
//!   sub-statement's result is read with its `<id>:<n>` id.
//! - **DescribeStatement**: status, timings, `SubStatements` (`<id>:1`, `<id>:2`, …) for batches.
//! - **CancelStatement**: a statement not yet finished becomes `ABORTED` (its task is dropped,
//!   so PostgreSQL rolls it back) and the answer is `{"Status": true}`; one already finished,
//!   failed or aborted gets a `ValidationException`, as the API does.
//! - Redshift-only SQL is rewritten for PostgreSQL by [`translate`]; `COPY … FROM
//!   's3://…manifest' … FORMAT AS PARQUET MANIFEST` reads the COPY manifest and its Parquet
//!   files from S3 and streams them into `COPY <target> FROM STDIN` by column position, as
//!   Redshift maps Parquet columns, refusing a file whose column count differs from the table's.
//! - Every statement, and every sub-statement of a batch, gets a positive `RedshiftQueryId`
//!   (a batch's top level reports -1). A statement that mentions `sys_load_error_detail` runs
//!   with a temporary table of that name (`query_id`, `start_time`, `file_name`,
//!   `line_number`, `column_name`, `error_code`, `error_message`, `raw_line`; Redshift's names
//!   and types, `CHAR` columns blank-padded) holding the rows recorded so far: those of
//!   [`DataApi::set_load_error_detail`], filed under the query id of the statement they were
//!   attached to, so the executor's own query runs as written.
//! - PostgreSQL errors read `ERROR: <message>`; serialization failures and deadlocks (SQLSTATE
//!   40001, 40P01) read `ERROR: 1023 DETAIL: Serializable isolation violation on table …`, the
//!   text Redshift gives, so the executor's conflict handling is exercised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Column, Connection, Either, Row, TypeInfo, ValueRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Most statements one BatchExecuteStatement takes (the API's limit).
pub const MAX_BATCH_STATEMENTS: usize = 40;

/// Which sub-statement an injected failure hits.
#[derive(Debug, Clone)]
pub enum FailAt {
    /// The sub-statement at this 0-based index of a batch's `Sqls` (batches only).
    Index(usize),
    /// The first statement whose SQL contains this text (batches and single statements).
    Sql(String),
}

/// One accepted submission, as the endpoint received it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The statement id returned to the caller.
    pub id: String,
    /// BatchExecuteStatement (true) or ExecuteStatement (false).
    pub batch: bool,
    /// The SQL as sent, before translation.
    pub sqls: Vec<String>,
    /// The whole request body (Database, WorkgroupName, SecretArn, ClientToken, …).
    pub request: Value,
    /// The `RedshiftQueryId` of each statement of `sqls`, in order.
    pub query_ids: Vec<i64>,
}

/// One `sys_load_error_detail` row: what Redshift records of a row a COPY could not load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrorDetail {
    /// The file's `s3://` URL.
    pub file_name: String,
    pub line_number: i64,
    pub column_name: String,
    pub error_code: i32,
    pub error_message: String,
}

/// The running endpoint; the server stops when this is dropped.
pub struct DataApi {
    url: String,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for DataApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl DataApi {
    /// Starts the endpoint on 127.0.0.1 (a free port). Statements run on `pg_url`; COPY reads
    /// its manifests and files through S3 as configured by `sdk` (moto in the tests).
    pub async fn start(pg_url: &str, sdk: &aws_config::SdkConfig) -> DataApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Data API endpoint on loopback");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            pg_url: pg_url.to_string(),
            s3: aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(sdk)),
            inner: Mutex::new(Inner::default()),
        });
        let accept = tokio::spawn(serve(listener, state.clone()));
        DataApi {
            url: format!("http://{addr}"),
            state,
            accept,
        }
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A real SDK client for this endpoint: `sdk`'s region and credentials, this endpoint.
    pub fn client(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_redshiftdata::Client {
        let conf = aws_sdk_redshiftdata::config::Builder::from(sdk)
            .endpoint_url(&self.url)
            .build();
        aws_sdk_redshiftdata::Client::from_conf(conf)
    }

    /// Every later submission with a statement matching `at` fails there with `error` (the
    /// statement's `Error` text, verbatim) until [`DataApi::clear_fail`].
    pub fn set_fail(&self, at: FailAt, error: impl Into<String>) {
        self.state.lock().fault = Some(Fault {
            at,
            error: error.into(),
            remaining: None,
        });
    }

    /// As [`DataApi::set_fail`], for the next `times` matching submissions only.
    pub fn set_fail_times(&self, at: FailAt, error: impl Into<String>, times: usize) {
        self.state.lock().fault = Some(Fault {
            at,
            error: error.into(),
            remaining: Some(times),
        });
    }

    /// Removes the injected failure.
    pub fn clear_fail(&self) {
        self.state.lock().fault = None;
    }

    /// The next statement that fails (injected or for real) and matches `at` (its index in a
    /// batch, or text in its SQL) gets `rows` in `sys_load_error_detail`, under its query id;
    /// once, then this is cleared. A later call replaces one not yet used.
    pub fn set_load_error_detail(&self, at: FailAt, rows: Vec<LoadErrorDetail>) {
        self.state.lock().pending_load_errors = Some((at, rows));
    }

    /// Every `sys_load_error_detail` row recorded so far, with its query id, in order.
    pub fn load_error_details(&self) -> Vec<(i64, LoadErrorDetail)> {
        self.state
            .lock()
            .load_errors
            .iter()
            .map(|e| (e.query_id, e.row.clone()))
            .collect()
    }

    /// The next `n` accepted batches stay STARTED and never run (until cancelled).
    pub fn stay_started(&self, n: usize) {
        self.state.lock().stay_started = n;
    }

    /// BatchExecuteStatement calls received, refused ones and idempotent repeats included.
    pub fn batch_calls(&self) -> usize {
        self.state.lock().batch_calls
    }

    /// The SQL of every accepted submission (batches and single statements), in order.
    pub fn submitted_sql(&self) -> Vec<Vec<String>> {
        self.state
            .lock()
            .submissions
            .iter()
            .map(|s| s.sqls.clone())
            .collect()
    }

    /// Every accepted submission, in order.
    pub fn submissions(&self) -> Vec<Submission> {
        self.state.lock().submissions.clone()
    }
}

/// Polls DescribeStatement every 20 ms until the statement is FINISHED, FAILED or ABORTED, for
/// at most 30 s (then panics).
pub async fn wait_done(
    client: &aws_sdk_redshiftdata::Client,
    id: &str,
) -> aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput {
    use aws_sdk_redshiftdata::types::StatusString;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = client
            .describe_statement()
            .id(id)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "DescribeStatement {id}: {}",
                    aws_sdk_redshiftdata::error::DisplayErrorContext(e)
                )
            });
        if matches!(
            d.status(),
            Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
        ) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "statement {id} still {:?} after 30 s",
            d.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// State

struct State {
    pg_url: String,
    s3: aws_sdk_s3::Client,
    inner: Mutex<Inner>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide its own message behind
        // poisoning errors in every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Inner {
    statements: HashMap<String, Stmt>,
    /// ClientToken → statement id.
    tokens: HashMap<String, String>,
    submissions: Vec<Submission>,
    batch_calls: usize,
    fault: Option<Fault>,
    stay_started: usize,
    /// Rows for the next failed statement matching the `FailAt`.
    pending_load_errors: Option<(FailAt, Vec<LoadErrorDetail>)>,
    /// `sys_load_error_detail`, in the order recorded.
    load_errors: Vec<RecordedLoadError>,
}

struct RecordedLoadError {
    query_id: i64,
    /// Seconds since the epoch (`start_time`).
    at: f64,
    row: LoadErrorDetail,
}

struct Fault {
    at: FailAt,
    error: String,
    remaining: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Submitted,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    fn done(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

struct Stmt {
    batch: bool,
    request: Value,
    created: f64,
    updated: f64,
    status: Status,
    error: Option<String>,
    subs: Vec<Sub>,
    task: Option<tokio::task::AbortHandle>,
}

struct Sub {
    sql: String,
    status: Status,
    error: Option<String>,
    /// Rows affected, returned or copied; -1 until the statement has run.
    rows: i64,
    has_result_set: bool,
    duration_ns: i64,
    updated: f64,
    result: Option<ResultSet>,
    /// `RedshiftQueryId`: positive, unique in the process.
    query_id: i64,
}

/// A result set as text, PostgreSQL's text form of each value.
#[derive(Debug, Clone, Default)]
struct ResultSet {
    /// (name, PostgreSQL type name in lower case).
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Option<String>>>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A UUID-shaped id (lower-case hex, 8-4-4-4-12), unique per process and call.
fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos ^ (u64::from(std::process::id()) << 40) ^ N.fetch_add(1, Ordering::SeqCst);
    let (a, b) = (splitmix(seed), splitmix(seed ^ 0x5851_f42d_4c95_7f2d));
    let h = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A Redshift query id: positive, increasing, unique per process.
fn new_query_id() -> i64 {
    static N: AtomicI64 = AtomicI64::new(1000);
    N.fetch_add(1, Ordering::SeqCst)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 on a bare TcpStream: Content-Length bodies, keep-alive.

async fn serve(listener: TcpListener, state: Arc<State>) {
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(connection(sock, state.clone()));
    }
}

async fn connection(mut sock: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(()); // the client closed the connection
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut target = None;
        let mut length = 0usize;
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "x-amz-target" => target = Some(v.to_string()),
                "content-length" => length = v.parse().unwrap_or(0),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        while buf.len() < head_end + length {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);

        let (code, reply) = match dispatch(&state, target.as_deref(), &body) {
            Ok(v) => (200, v),
            Err(e) => (e.status, e.body()),
        };
        let reply = reply.to_string();
        let reason = match code {
            200 => "OK",
            400 => "Bad Request",
            _ => "Internal Server Error",
        };
        let response = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: {}\r\nContent-Length: {}\r\n\r\n{reply}",
            new_id(),
            reply.len()
        );
        sock.write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

/// An error answer: `{"__type": kind, "Message": message, …}`.
struct ApiError {
    status: u16,
    kind: &'static str,
    message: String,
    extra: Option<(&'static str, String)>,
}

impl ApiError {
    fn validation(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            kind: "ValidationException",
            message: message.into(),
            extra: None,
        }
    }

    fn not_found(id: &str) -> Self {
        ApiError {
            status: 400,
            kind: "ResourceNotFoundException",
            message: "Query does not exist.".into(),
            extra: Some(("ResourceId", id.to_string())),
        }
    }

    fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("__type".into(), self.kind.into());
        m.insert("Message".into(), self.message.clone().into());
        if let Some((k, v)) = &self.extra {
            m.insert((*k).into(), v.clone().into());
        }
        Value::Object(m)
    }
}

fn dispatch(state: &Arc<State>, target: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let req: Value = serde_json::from_slice(body).map_err(|e| ApiError {
        status: 400,
        kind: "SerializationException",
        message: format!("request body is not JSON: {e}"),
        extra: None,
    })?;
    match target.and_then(|t| t.strip_prefix("RedshiftData.")) {
        Some("BatchExecuteStatement") => batch_execute(state, req),
        Some("ExecuteStatement") => execute(state, req),
        Some("DescribeStatement") => describe(state, &req),
        Some("GetStatementResult") => get_result(state, &req),
        Some("CancelStatement") => cancel(state, &req),
        other => Err(ApiError {
            status: 400,
            kind: "UnknownOperationException",
            message: format!("operation {other:?} is not implemented by the test endpoint"),
            extra: None,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

fn batch_execute(state: &Arc<State>, req: Value) -> Result<Value, ApiError> {
    state.lock().batch_calls += 1;
    let sqls: Vec<String> = match req.get("Sqls").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::validation("Sqls must be a list of strings"))?,
        None => return Err(ApiError::validation("Sqls is required")),
    };
    if sqls.is_empty() || sqls.len() > MAX_BATCH_STATEMENTS {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at 'sqls' failed to satisfy constraint: Member \
             must have length less than or equal to {MAX_BATCH_STATEMENTS} and greater than or \
             equal to 1 (got {})",
            sqls.len()
        )));
    }
    if let Some(i) = sqls.iter().position(|s| first_word(s) == "TRUNCATE") {
        return Err(ApiError::validation(format!(
            "statement {} of the batch is a TRUNCATE: Redshift commits TRUNCATE implicitly, which \
             would end the batch's single transaction (the test endpoint refuses it): {}",
            i + 1,
            sqls[i]
        )));
    }
    check_target(&req)?;
    Ok(submit(state, req, sqls, true))
}

fn execute(state: &Arc<State>, req: Value) -> Result<Value, ApiError> {
    let sql = req
        .get("Sql")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::validation("Sql is required"))?
        .to_string();
    check_target(&req)?;
    Ok(submit(state, req, vec![sql], false))
}

/// `Database`, and exactly one of `ClusterIdentifier` and `WorkgroupName`, as the API requires.
fn check_target(req: &Value) -> Result<(), ApiError> {
    let has = |k: &str| req.get(k).and_then(Value::as_str).is_some();
    if !has("Database") {
        return Err(ApiError::validation("Database is required"));
    }
    if has("ClusterIdentifier") == has("WorkgroupName") {
        return Err(ApiError::validation(
            "Either ClusterIdentifier or WorkgroupName must be specified, not both",
        ));
    }
    Ok(())
}

/// Records a submission and starts it (or leaves it STARTED); the operation's answer.
fn submit(state: &Arc<State>, req: Value, sqls: Vec<String>, batch: bool) -> Value {
    let token = req
        .get("ClientToken")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut inner = state.lock();
    if let Some(id) = token.as_ref().and_then(|t| inner.tokens.get(t)) {
        if let Some(s) = inner.statements.get(id) {
            return submit_answer(id, s);
        }
    }
    let id = new_id();
    let injected = inner.fault.as_mut().and_then(|f| {
        let i = match &f.at {
            FailAt::Index(i) if batch && *i < sqls.len() => Some(*i),
            FailAt::Index(_) => None,
            FailAt::Sql(text) => sqls.iter().position(|s| s.contains(text.as_str())),
        }?;
        match &mut f.remaining {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        Some((i, f.error.clone()))
    });
    let hang = batch && inner.stay_started > 0;
    if hang {
        inner.stay_started -= 1;
    }
    let now = now_secs();
    let stmt = Stmt {
        batch,
        request: req.clone(),
        created: now,
        updated: now,
        status: if hang {
            Status::Started
        } else {
            Status::Submitted
        },
        error: None,
        subs: sqls
            .iter()
            .map(|s| Sub {
                sql: s.clone(),
                status: if hang {
                    Status::Started
                } else {
                    Status::Submitted
                },
                error: None,
                rows: -1,
                has_result_set: false,
                duration_ns: -1,
                updated: now,
                result: None,
                query_id: new_query_id(),
            })
            .collect(),
        task: None,
    };
    let query_ids = stmt.subs.iter().map(|x| x.query_id).collect();
    let answer = submit_answer(&id, &stmt);
    inner.statements.insert(id.clone(), stmt);
    if let Some(t) = token {
        inner.tokens.insert(t, id.clone());
    }
    inner.submissions.push(Submission {
        id: id.clone(),
        batch,
        sqls: sqls.clone(),
        request: req,
        query_ids,
    });
    if !hang {
        let params = parameters(&inner.submissions[inner.submissions.len() - 1].request);
        let task = tokio::spawn(run(state.clone(), id.clone(), sqls, params, injected));
        if let Some(s) = inner.statements.get_mut(&id) {
            s.task = Some(task.abort_handle());
        }
    }
    answer
}

/// The Batch/ExecuteStatement answer: the id and the request's connection fields echoed.
fn submit_answer(id: &str, s: &Stmt) -> Value {
    let mut m = Map::new();
    m.insert("Id".into(), id.into());
    m.insert("CreatedAt".into(), s.created.into());
    echo_target(&s.request, &mut m);
    Value::Object(m)
}

fn echo_target(req: &Value, m: &mut Map<String, Value>) {
    for k in [
        "Database",
        "ClusterIdentifier",
        "WorkgroupName",
        "SecretArn",
        "DbUser",
    ] {
        if let Some(v) = req.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
}

fn describe(state: &Arc<State>, req: &Value) -> Result<Value, ApiError> {
    let id = req_id(req)?;
    let inner = state.lock();
    let s = inner
        .statements
        .get(id)
        .ok_or_else(|| ApiError::not_found(id))?;
    let mut m = Map::new();
    m.insert("Id".into(), id.into());
    m.insert("Status".into(), s.status.as_str().into());
    if let Some(e) = &s.error {
        m.insert("Error".into(), e.clone().into());
    }
    m.insert("CreatedAt".into(), s.created.into());
    m.insert("UpdatedAt".into(), s.updated.into());
    let duration = if s.status.done() {
        ((s.updated - s.created) * 1e9) as i64
    } else {
        -1
    };
    m.insert("Duration".into(), duration.into());
    m.insert("RedshiftPid".into(), 1.into());
    let top_query_id = match (s.batch, s.subs.first()) {
        (false, Some(x)) => x.query_id,
        _ => -1,
    };
    m.insert("RedshiftQueryId".into(), top_query_id.into());
    echo_target(&s.request, &mut m);
    if s.batch {
        let q: Vec<&str> = s.subs.iter().map(|x| x.sql.as_str()).collect();
        m.insert("QueryString".into(), q.join("; ").into());
        m.insert(
            "HasResultSet".into(),
            s.subs.iter().any(|x| x.has_result_set).into(),
        );
        m.insert("ResultRows".into(), (-1).into());
        m.insert("ResultSize".into(), (-1).into());
        let subs: Vec<Value> = s
            .subs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let mut o = Map::new();
                o.insert("Id".into(), format!("{id}:{}", i + 1).into());
                o.insert("Status".into(), x.status.as_str().into());
                if let Some(e) = &x.error {
                    o.insert("Error".into(), e.clone().into());
                }
                o.insert("CreatedAt".into(), s.created.into());
                o.insert("UpdatedAt".into(), x.updated.into());
                o.insert("Duration".into(), x.duration_ns.into());
                o.insert("QueryString".into(), x.sql.clone().into());
                o.insert("HasResultSet".into(), x.has_result_set.into());
                o.insert("ResultRows".into(), x.rows.into());
                o.insert("ResultSize".into(), result_size(x).into());
                o.insert("RedshiftQueryId".into(), x.query_id.into());
                Value::Object(o)
            })
            .collect();
        m.insert("SubStatements".into(), subs.into());
    } else if let Some(x) = s.subs.first() {
        m.insert("QueryString".into(), x.sql.clone().into());
        m.insert("HasResultSet".into(), x.has_result_set.into());
        m.insert("ResultRows".into(), x.rows.into());
        m.insert("ResultSize".into(), result_size(x).into());
    }
    Ok(Value::Object(m))
}

/// Bytes of the result's text, roughly what the API reports; -1 without a result.
fn result_size(x: &Sub) -> i64 {
    x.result.as_ref().map_or(-1, |r| {
        r.rows
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(0, |s| s.len() as i64))
            .sum()
    })
}

fn get_result(state: &Arc<State>, req: &Value) -> Result<Value, ApiError> {
    let id = req_id(req)?;
    let (base, sub) = match id.rsplit_once(':') {
        Some((b, n)) => {
            let n: usize = n
                .parse()
                .map_err(|_| ApiError::validation(format!("bad statement id {id}")))?;
            (b, Some(n))
        }
        None => (id, None),
    };
    let no_result = || {
        ApiError::validation(
            "Query does not have result. Please check query status with DescribeStatement.",
        )
    };
    let inner = state.lock();
    let s = inner
        .statements
        .get(base)
        .ok_or_else(|| ApiError::not_found(id))?;
    let x = match (s.batch, sub) {
        (_, Some(n)) if n >= 1 => s.subs.get(n - 1).ok_or_else(|| ApiError::not_found(id))?,
        (false, None) => s.subs.first().ok_or_else(no_result)?,
        _ => return Err(no_result()),
    };
    if x.status != Status::Finished {
        return Err(no_result());
    }
    let r = x.result.as_ref().ok_or_else(no_result)?;
    let records: Vec<Value> = r
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&r.columns)
                .map(|(v, (_, ty))| field(v.as_deref(), ty))
                .collect()
        })
        .collect();
    let meta: Vec<Value> = r
        .columns
        .iter()
        .map(|(name, ty)| json!({"name": name, "label": name, "typeName": ty, "nullable": 1}))
        .collect();
    Ok(json!({
        "Records": records,
        "ColumnMetadata": meta,
        "TotalNumRows": r.rows.len(),
    }))
}

/// One value as the API's `Field` union, by the column's PostgreSQL type.
fn field(v: Option<&str>, ty: &str) -> Value {
    let Some(v) = v else {
        return json!({"isNull": true});
    };
    match ty {
        "int2" | "int4" | "int8" => match v.parse::<i64>() {
            Ok(n) => json!({ "longValue": n }),
            Err(_) => json!({ "stringValue": v }),
        },
        "float4" | "float8" => match v.parse::<f64>() {
            Ok(n) => json!({ "doubleValue": n }),
            Err(_) => json!({ "stringValue": v }),
        },
        "bool" => json!({ "booleanValue": v == "t" }),
        _ => json!({ "stringValue": v }),
    }
}

fn cancel(state: &Arc<State>, req: &Value) -> Result<Value, ApiError> {
    let id = req_id(req)?;
    let mut inner = state.lock();
    let s = inner
        .statements
        .get_mut(id)
        .ok_or_else(|| ApiError::not_found(id))?;
    if s.status.done() {
        return Err(ApiError::validation(format!(
            "Could not cancel a query that is already in {} status",
            s.status.as_str()
        )));
    }
    if let Some(t) = s.task.take() {
        t.abort(); // drops the connection mid-transaction: PostgreSQL rolls it back
    }
    let now = now_secs();
    s.status = Status::Aborted;
    s.updated = now;
    for x in s.subs.iter_mut().filter(|x| !x.status.done()) {
        x.status = Status::Aborted;
        x.updated = now;
    }
    Ok(json!({ "Status": true }))
}

fn req_id(req: &Value) -> Result<&str, ApiError> {
    req.get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::validation("Id is required"))
}

// ---------------------------------------------------------------------------------------------
// Running statements

/// What one statement did.
struct Done {
    rows: i64,
    has_result_set: bool,
    duration_ns: i64,
    result: Option<ResultSet>,
}

/// Runs a submission and records its outcome, unless it was cancelled meanwhile.
async fn run(
    state: Arc<State>,
    id: String,
    sqls: Vec<String>,
    params: Vec<(String, String)>,
    injected: Option<(usize, String)>,
) {
    {
        let mut inner = state.lock();
        let Some(s) = inner.statements.get_mut(&id) else {
            return;
        };
        if s.status != Status::Submitted {
            return; // cancelled before it started
        }
        s.status = Status::Started;
        s.updated = now_secs();
        for x in &mut s.subs {
            x.status = Status::Started;
        }
    }
    let (done, failure) = run_all(&state, &sqls, &params, injected).await;
    let mut inner = state.lock();
    let Some(s) = inner.statements.get_mut(&id) else {
        return;
    };
    if s.status == Status::Aborted {
        return;
    }
    let now = now_secs();
    s.updated = now;
    for (x, d) in s.subs.iter_mut().zip(done) {
        x.status = Status::Finished;
        x.rows = d.rows;
        x.has_result_set = d.has_result_set;
        x.duration_ns = d.duration_ns;
        x.result = d.result;
        x.updated = now;
    }
    match failure {
        None => s.status = Status::Finished,
        Some((i, error)) => {
            s.status = Status::Failed;
            s.error = Some(if s.batch {
                format!("Query #{} failed with {error}", i + 1)
            } else {
                error.clone()
            });
            for (j, x) in s.subs.iter_mut().enumerate() {
                x.updated = now;
                if j == i {
                    x.status = Status::Failed;
                    x.error = Some(error.clone());
                } else if j > i {
                    x.status = Status::Aborted;
                }
            }
            let failed = s.subs.get(i).map(|x| (x.query_id, x.sql.clone()));
            let batch = s.batch;
            if let Some((query_id, sql)) = failed {
                record_load_errors(&mut inner, batch, i, &sql, query_id, now);
            }
        }
    }
}

/// Files the pending `sys_load_error_detail` rows under the failed statement's query id, when
/// the pending `FailAt` matches it.
fn record_load_errors(
    inner: &mut Inner,
    batch: bool,
    index: usize,
    sql: &str,
    query_id: i64,
    now: f64,
) {
    let matches = match &inner.pending_load_errors {
        Some((FailAt::Index(at), _)) => batch && *at == index,
        Some((FailAt::Sql(text), _)) => sql.contains(text.as_str()),
        None => false,
    };
    if !matches {
        return;
    }
    let Some((_, rows)) = inner.pending_load_errors.take() else {
        return;
    };
    for (n, row) in rows.into_iter().enumerate() {
        inner.load_errors.push(RecordedLoadError {
            query_id,
            // Distinct start times, so `ORDER BY start_time` keeps the given order.
            at: now + n as f64 * 0.001,
            row,
        });
    }
}

/// Runs `sqls` in one SERIALIZABLE transaction on a fresh connection: what each statement did,
/// and the failing statement's index and Redshift-like error text, if one failed.
async fn run_all(
    state: &State,
    sqls: &[String],
    params: &[(String, String)],
    injected: Option<(usize, String)>,
) -> (Vec<Done>, Option<(usize, String)>) {
    let mut done = Vec::with_capacity(sqls.len());
    let mut c = match PgConnection::connect(&state.pg_url).await {
        Ok(c) => c,
        Err(e) => return (done, Some((0, pg_error_text(&e)))),
    };
    let mut tx = match c.begin().await {
        Ok(t) => t,
        Err(e) => return (done, Some((0, pg_error_text(&e)))),
    };
    if let Err(e) = sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *tx)
        .await
    {
        return (done, Some((0, pg_error_text(&e))));
    }
    for (i, sql) in sqls.iter().enumerate() {
        if let Some((_, error)) = injected.as_ref().filter(|(at, _)| *at == i) {
            return (done, Some((i, error.clone())));
        }
        let started = Instant::now();
        if sql.to_ascii_lowercase().contains("sys_load_error_detail") {
            if let Err(e) = load_error_table(state, &mut tx).await {
                return (done, Some((i, e)));
            }
        }
        let outcome = match bind_parameters(sql, params).and_then(|s| translate(&s)) {
            Ok(Translated::Noop) => Ok(Done {
                rows: 0,
                has_result_set: false,
                duration_ns: 0,
                result: None,
            }),
            Ok(Translated::Sql(pg)) => run_sql(&mut tx, &pg).await,
            Ok(Translated::Copy { target, manifest }) => copy(state, &mut tx, &target, &manifest)
                .await
                .map(|rows| Done {
                    rows: rows as i64,
                    has_result_set: false,
                    duration_ns: 0,
                    result: None,
                }),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mut d) => {
                d.duration_ns = started.elapsed().as_nanos() as i64;
                done.push(d);
            }
            Err(e) => return (done, Some((i, e))),
        }
    }
    if let Err(e) = tx.commit().await {
        let last = sqls.len().saturating_sub(1);
        done.truncate(last);
        return (done, Some((last, pg_error_text(&e))));
    }
    (done, None)
}

/// Creates `sys_load_error_detail` as a temporary table of the rows recorded so far (PostgreSQL
/// has no such table; a temporary one is found first on the search path).
async fn load_error_table(state: &State, c: &mut PgConnection) -> Result<(), String> {
    let rows: Vec<(i64, f64, LoadErrorDetail)> = state
        .lock()
        .load_errors
        .iter()
        .map(|e| (e.query_id, e.at, e.row.clone()))
        .collect();
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS sys_load_error_detail (query_id BIGINT, \
         start_time TIMESTAMP, file_name CHAR(256), line_number BIGINT, column_name CHAR(127), \
         error_code INTEGER, error_message CHAR(512), raw_line CHAR(1024)) ON COMMIT DROP; \
         DELETE FROM sys_load_error_detail",
    )
    .execute(&mut *c)
    .await
    .map_err(|e| pg_error_text(&e))?;
    for (query_id, at, r) in rows {
        sqlx::query(
            "INSERT INTO sys_load_error_detail (query_id, start_time, file_name, line_number, \
             column_name, error_code, error_message, raw_line) \
             VALUES ($1, to_timestamp($2) AT TIME ZONE 'UTC', $3, $4, $5, $6, $7, '')",
        )
        .bind(query_id)
        .bind(at)
        .bind(&r.file_name)
        .bind(r.line_number)
        .bind(&r.column_name)
        .bind(r.error_code)
        .bind(&r.error_message)
        .execute(&mut *c)
        .await
        .map_err(|e| pg_error_text(&e))?;
    }
    Ok(())
}

/// One statement over the simple query protocol, so every value comes back as text.
async fn run_sql(c: &mut PgConnection, sql: &str) -> Result<Done, String> {
    let mut stream = sqlx::raw_sql(AssertSqlSafe(sql.to_string())).fetch_many(&mut *c);
    let mut affected = 0u64;
    let mut result: Option<ResultSet> = None;
    while let Some(item) = stream.try_next().await.map_err(|e| pg_error_text(&e))? {
        match item {
            Either::Left(done) => affected += done.rows_affected(),
            Either::Right(row) => {
                let r = result.get_or_insert_with(|| ResultSet {
                    columns: row
                        .columns()
                        .iter()
                        .map(|c| {
                            (
                                c.name().to_string(),
                                c.type_info().name().to_ascii_lowercase(),
                            )
                        })
                        .collect(),
                    rows: Vec::new(),
                });
                let mut values = Vec::with_capacity(row.len());
                for i in 0..row.len() {
                    let v = row.try_get_raw(i).map_err(|e| pg_error_text(&e))?;
                    values.push(if v.is_null() {
                        None
                    } else {
                        Some(v.as_str().map_err(|e| format!("ERROR: {e}"))?.to_string())
                    });
                }
                r.rows.push(values);
            }
        }
    }
    let has_result_set = result.is_some() || returns_rows(sql);
    if has_result_set && result.is_none() {
        result = Some(ResultSet::default());
    }
    let rows = match &result {
        Some(r) => r.rows.len() as i64,
        None => affected as i64,
    };
    Ok(Done {
        rows,
        has_result_set,
        duration_ns: 0,
        result,
    })
}

/// The request's `Parameters` (`[{"name": …, "value": …}]`), as (name, value).
fn parameters(req: &Value) -> Vec<(String, String)> {
    req.get("Parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let value = p.get("value")?.as_str()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// `:name` placeholders (outside quotes, not `::` casts) replaced by their values as SQL string
/// literals, which PostgreSQL casts as the context needs, as Redshift does with the API's
/// string-valued parameters.
fn bind_parameters(sql: &str, params: &[(String, String)]) -> Result<String, String> {
    if params.is_empty() {
        return Ok(sql.to_string());
    }
    let missing = std::cell::RefCell::new(None);
    let out = outside_quotes(sql, &|part: &str| {
        let mut out = String::with_capacity(part.len());
        let b = part.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let (mut copied, mut i) = (0, 0); // `part[..copied]` is in `out`
        while i < b.len() {
            let is_param = b[i] == b':'
                && (i == 0 || b[i - 1] != b':')
                && b.get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
            if !is_param {
                i += 1;
                continue;
            }
            let end = (i + 1..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
            let name = &part[i + 1..end];
            match params.iter().find(|(n, _)| n == name) {
                Some((_, v)) => {
                    out.push_str(&part[copied..i]);
                    out.push_str(&format!("'{}'", v.replace('\'', "''")));
                    copied = end;
                }
                None => *missing.borrow_mut() = Some(name.to_string()),
            }
            i = end;
        }
        out.push_str(&part[copied..]);
        out
    });
    match missing.into_inner() {
        Some(name) => Err(format!(
            "ERROR: parameter :{name} has no value in Parameters"
        )),
        None => Ok(out),
    }
}

/// Whether a statement is a query (its result set may be empty).
fn returns_rows(sql: &str) -> bool {
    matches!(
        first_word(sql).as_str(),
        "SELECT" | "WITH" | "VALUES" | "SHOW" | "TABLE"
    )
}

/// The statement's first keyword, upper case.
fn first_word(sql: &str) -> String {
    sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Redshift-like error text for a PostgreSQL error: `ERROR: <message>`, and for serialization
/// failures and deadlocks the text of Redshift's error 1023.
fn pg_error_text(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => match d.code().as_deref() {
            Some(code @ ("40001" | "40P01")) => format!(
                "ERROR: 1023 DETAIL: Serializable isolation violation on table - 0, transactions \
                 forming the cycle are: (PostgreSQL {code}: {})",
                d.message()
            ),
            _ => format!("ERROR: {}", d.message()),
        },
        None => format!("ERROR: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Redshift SQL on PostgreSQL

/// A statement as the endpoint runs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Translated {
    /// Nothing to run (a Redshift session setting PostgreSQL lacks).
    Noop,
    /// This PostgreSQL statement.
    Sql(String),
    /// A Redshift `COPY … FORMAT AS PARQUET MANIFEST`: the endpoint streams the manifest's files.
    Copy { target: String, manifest: String },
}

/// Rewrites the Redshift SQL the loader generates (shared/src/warehouse/golden/*.redshift.sql)
/// into PostgreSQL with the same effect in a test:
///
/// - `SET enable_case_sensitive_identifier TO true` → nothing: PostgreSQL identifiers in double
///   quotes are always case-sensitive.
/// - `LOCK t` → `LOCK TABLE t IN EXCLUSIVE MODE`: Redshift's LOCK blocks writers and lets
///   readers in, which is EXCLUSIVE in PostgreSQL (its bare LOCK would take ACCESS EXCLUSIVE).
/// - `CREATE TEMP TABLE x (…)` → `… ON COMMIT DROP`: a Redshift temp table lives as long as the
///   Data API session, which ends with the batch.
/// - `DATEADD(unit, n, e)` → `(e + (n) * INTERVAL '1 unit')`, `GETDATE()` → `LOCALTIMESTAMP`
///   (Redshift's GETDATE is the transaction's start in UTC, without time zone).
/// - `VARBYTE[(n)]` → `BYTEA`.
/// - `COPY … FROM 's3://…' … FORMAT AS PARQUET MANIFEST` → [`Translated::Copy`]; any other
///   COPY form is an error (the loader generates no other).
///
/// Function and type names are rewritten outside quoted identifiers and string literals only.
pub fn translate(sql: &str) -> Result<Translated, String> {
    let s = sql.trim().trim_end_matches(';').trim_end();
    let upper = s.to_ascii_uppercase(); // same byte offsets as `s`
    if upper.starts_with("SET ENABLE_CASE_SENSITIVE_IDENTIFIER") {
        return Ok(Translated::Noop);
    }
    if first_word(s) == "COPY" {
        return parse_copy(s, &upper);
    }
    if first_word(s) == "LOCK" && !upper.contains(" IN ") {
        let rest = s[4..].trim_start();
        let rest = if rest.to_ascii_uppercase().starts_with("TABLE ") {
            rest[6..].trim_start()
        } else {
            rest
        };
        return Ok(Translated::Sql(format!(
            "LOCK TABLE {rest} IN EXCLUSIVE MODE"
        )));
    }
    let mut out = outside_quotes(s, &redshift_functions);
    let temp = ["CREATE TEMP TABLE ", "CREATE TEMPORARY TABLE "];
    if temp.iter().any(|p| upper.starts_with(p)) && out.ends_with(')') {
        out.push_str(" ON COMMIT DROP");
    }
    Ok(Translated::Sql(out))
}

/// `COPY <target> FROM '<manifest url>' … FORMAT AS PARQUET MANIFEST`.
fn parse_copy(s: &str, upper: &str) -> Result<Translated, String> {
    let unsupported = || {
        format!(
            "ERROR: the test endpoint runs only COPY <table> FROM 's3://…' … FORMAT AS PARQUET \
             MANIFEST, not: {s}"
        )
    };
    let from = upper.find(" FROM '").ok_or_else(unsupported)?;
    let target = s[4..from].trim().to_string();
    let url_start = from + " FROM '".len();
    let url_len = s[url_start..].find('\'').ok_or_else(unsupported)?;
    let manifest = s[url_start..url_start + url_len].to_string();
    let options = &upper[url_start + url_len..];
    if !options.contains("FORMAT AS PARQUET") || !options.trim_end().ends_with("MANIFEST") {
        return Err(unsupported());
    }
    Ok(Translated::Copy { target, manifest })
}

/// Applies `f` to the parts of `s` outside '…' literals and "…" identifiers.
fn outside_quotes(s: &str, f: &dyn Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(s.len() + 32);
    let b = s.as_bytes();
    let mut start = 0; // start of the current unquoted part
    let mut i = 0;
    while i < b.len() {
        let q = b[i];
        if q != b'\'' && q != b'"' {
            i += 1;
            continue;
        }
        out.push_str(&f(&s[start..i]));
        let open = i;
        i += 1;
        // A doubled quote inside is an escaped quote.
        while i < b.len() {
            if b[i] == q {
                if b.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                break;
            }
            i += 1;
        }
        i = (i + 1).min(b.len());
        out.push_str(&s[open..i]);
        start = i;
    }
    out.push_str(&f(&s[start..]));
    out
}

/// DATEADD, GETDATE and VARBYTE in unquoted SQL.
fn redshift_functions(part: &str) -> String {
    let mut s = part.to_string();
    // DATEADD(unit, n, expr): innermost last, so nested calls are rewritten too.
    while let Some(at) = find_word(&s, "DATEADD(") {
        let open = at + "DATEADD".len();
        let Some(close) = matching_paren(&s, open) else {
            break;
        };
        let args = split_top_level(&s[open + 1..close]);
        let [unit, n, expr] = args.as_slice() else {
            break;
        };
        let replacement = format!(
            "({} + ({}) * INTERVAL '1 {}')",
            expr.trim(),
            n.trim(),
            unit.trim()
        );
        s.replace_range(at..=close, &replacement);
    }
    while let Some(at) = find_word(&s, "GETDATE()") {
        s.replace_range(at..at + "GETDATE()".len(), "LOCALTIMESTAMP");
    }
    while let Some(at) = find_word(&s, "VARBYTE") {
        let mut end = at + "VARBYTE".len();
        if s[end..].starts_with('(') {
            if let Some(close) = matching_paren(&s, end) {
                end = close + 1;
            }
        }
        s.replace_range(at..end, "BYTEA");
    }
    s
}

/// The byte offset of `word` (ASCII, case-insensitive) not preceded by an identifier character.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let hay = s.to_ascii_uppercase();
    let mut from = 0;
    while let Some(p) = hay[from..].find(word) {
        let at = from + p;
        let before = hay[..at].chars().next_back();
        let after = hay[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !ident(before) && (word.ends_with(['(', ')']) || !ident(after)) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The offset of the `)` closing the `(` at `open`.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `a, f(b, c), d` → `["a", " f(b, c)", " d"]`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

// ---------------------------------------------------------------------------------------------
// COPY from a manifest of Parquet files

/// Streams the manifest's Parquet files into `target` by column position; the rows copied.
async fn copy(
    state: &State,
    c: &mut PgConnection,
    target: &str,
    manifest_url: &str,
) -> Result<u64, String> {
    let manifest = match get_s3(&state.s3, manifest_url).await? {
        Some(b) => b,
        None => {
            return Err(format!(
                "ERROR: Problem reading manifest file - S3ServiceException:The specified key does \
                 not exist.,Status 404,Error NoSuchKey File: {manifest_url}"
            ))
        }
    };
    let manifest: Value = serde_json::from_slice(&manifest).map_err(|e| {
        format!("ERROR: Manifest file is not in correct json format ({e}): {manifest_url}")
    })?;
    let entries = manifest
        .get("entries")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("ERROR: Manifest file has no entries array: {manifest_url}"))?;

    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .bind(target)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| pg_error_text(&e))?;

    let sql = format!("COPY {target} FROM STDIN WITH (FORMAT csv)");
    let mut total = 0;
    for entry in entries {
        let url = entry
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("ERROR: Manifest entry without url: {manifest_url}"))?;
        let mandatory = entry
            .get("mandatory")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Some(bytes) = get_s3(&state.s3, url).await? else {
            if mandatory {
                return Err(format!(
                    "ERROR: Load into table '{target}' failed. DETAIL: mandatory file in the \
                     manifest does not exist: S3ServiceException:The specified key does not \
                     exist.,Status 404,Error NoSuchKey File: {url}"
                ));
            }
            continue;
        };
        let file_err = |e: String| format!("ERROR: Spectrum Scan Error. File '{url}': {e}");
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| file_err(e.to_string()))?;
        let file_columns = builder.schema().fields().len() as i64;
        if file_columns != columns {
            return Err(file_err(format!(
                "has an incompatible Parquet schema: the file has {file_columns} columns, table \
                 {target} has {columns} (COPY maps Parquet columns by position)"
            )));
        }
        let reader = builder.build().map_err(|e| file_err(e.to_string()))?;
        let mut w = c.copy_in_raw(&sql).await.map_err(|e| pg_error_text(&e))?;
        let mut csv = Vec::new();
        for batch in reader {
            let sent = match batch {
                Ok(b) => {
                    csv.clear();
                    sluice::warehouse::append_csv(&b, &mut csv).map_err(&file_err)
                }
                Err(e) => Err(file_err(e.to_string())),
            };
            if let Err(e) = sent {
                // The transaction fails with this error; the abort's own result adds nothing.
                let _ = w.abort(e.clone()).await;
                return Err(e);
            }
            w.send(csv.as_slice())
                .await
                .map_err(|e| pg_error_text(&e))?;
        }
        total += w.finish().await.map_err(|e| pg_error_text(&e))?;
    }
    Ok(total)
}

/// An object's bytes, or None when it does not exist.
async fn get_s3(s3: &aws_sdk_s3::Client, url: &str) -> Result<Option<bytes::Bytes>, String> {
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| format!("ERROR: not an s3:// URL: {url}"))?;
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => o
            .body
            .collect()
            .await
            .map(|b| Some(b.into_bytes()))
            .map_err(|e| format!("ERROR: reading {url}: {e}")),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
        Err(e) => Err(format!(
            "ERROR: S3ServiceException reading {url}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> String {
        match translate(s) {
            Ok(Translated::Sql(t)) => t,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn translates_redshift_isms() {
        assert_eq!(
            translate("SET enable_case_sensitive_identifier TO true;"),
            Ok(Translated::Noop)
        );
        assert_eq!(
            sql(r#"LOCK "lake"."customers";"#),
            r#"LOCK TABLE "lake"."customers" IN EXCLUSIVE MODE"#
        );
        assert_eq!(
            sql(r#"CREATE TEMP TABLE "s" ("a" BIGINT, "b" VARBYTE(100));"#),
            r#"CREATE TEMP TABLE "s" ("a" BIGINT, "b" BYTEA) ON COMMIT DROP"#
        );
        assert_eq!(
            sql("DELETE FROM t WHERE sluice_at < DATEADD(day, -30, GETDATE());"),
            "DELETE FROM t WHERE sluice_at < (LOCALTIMESTAMP + (-30) * INTERVAL '1 day')"
        );
        assert_eq!(
            sql(r#"SELECT 'GETDATE()', "getdate()", getdate() FROM x"#),
            r#"SELECT 'GETDATE()', "getdate()", LOCALTIMESTAMP FROM x"#
        );
        assert_eq!(
            translate(
                r#"COPY "stg"."Order Stage" FROM 's3://lake/m.manifest' IAM_ROLE 'arn:x' FORMAT AS PARQUET MANIFEST;"#
            ),
            Ok(Translated::Copy {
                target: r#""stg"."Order Stage""#.into(),
                manifest: "s3://lake/m.manifest".into()
            })
        );
        assert!(translate("COPY t FROM 's3://b/k' IAM_ROLE 'r' CSV").is_err());
    }

    #[test]
    fn binds_parameters_outside_quotes() {
        let p = vec![("schema".to_string(), "l'ake".to_string())];
        assert_eq!(
            bind_parameters("SELECT ':schema', x::text FROM t WHERE s = :schema", &p),
            Ok("SELECT ':schema', x::text FROM t WHERE s = 'l''ake'".to_string())
        );
        assert!(bind_parameters("SELECT :other", &p).is_err());
        assert_eq!(
            bind_parameters("SELECT :x", &[]),
            Ok("SELECT :x".to_string())
        );
    }

    #[test]
    fn ids_look_like_uuids() {
        let a = new_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, new_id());
    }
}

//! The PostgreSQL executor: a load plan run on PostgreSQL (local runs and tests), in one
//! SERIALIZABLE transaction, with each COPY step fed by `COPY … FROM STDIN` from the batch's
//! Parquet files, read through the object store. PostgreSQL maps the files' columns by name.
//!
//! A serialization failure (SQLSTATE 40001) or deadlock (40P01) rolls the whole load back;
//! it is retried with backoff and jitter, from the start, up to `MAX_ATTEMPTS` times.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::lake::ObjectStore;

use super::executor::{Executed, Executor, LoadError, RunContext};
use super::plan::{CopyStep, LoadPlan, Statement, Step};
use super::sql::{quote_ident, Dialect};

/// Attempts of one load when PostgreSQL reports a serialization conflict.
const MAX_ATTEMPTS: u32 = 5;
/// First back-off; doubled per attempt, with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// A PostgreSQL database as a load target.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pool: PgPool,
}

impl PgTarget {
    pub async fn connect(url: &str) -> Result<Self, LoadError> {
        PgPool::connect(url)
            .await
            .map(|pool| Self { pool })
            .map_err(|e| LoadError::Connect(e.to_string()))
    }

    /// Creates the schema, final table, side table and persistent stage when missing.
    pub async fn create_tables(&self, plan: &LoadPlan) -> Result<(), LoadError> {
        let mut c = self.conn().await?;
        for s in plan.create_tables(Dialect::Postgres) {
            exec(&mut c, &plan.table, &s).await?;
        }
        Ok(())
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, LoadError> {
        self.pool
            .acquire()
            .await
            .map_err(|e| LoadError::Connect(e.to_string()))
    }
}

#[async_trait]
impl Executor for PgTarget {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn table_columns(
        &self,
        table: &str,
        schema: &str,
        name: &str,
    ) -> Result<Option<Vec<String>>, LoadError> {
        let mut c = self.conn().await?;
        let rows = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| statement_error(table, "table_columns", &e))?;
        let cols: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        Ok((!cols.is_empty()).then_some(cols))
    }

    async fn run(
        &self,
        plan: &LoadPlan,
        steps: &[Step],
        ctx: &RunContext<'_>,
    ) -> Result<Executed, LoadError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = self.conn().await?;
            match run_once(&mut c, plan, steps, ctx.store).await {
                Ok(ran) => {
                    return Ok(Executed {
                        rows: ran.rows,
                        millis: ran.millis,
                        statement_id: None,
                        attempts: attempt,
                        results: ran.results,
                    })
                }
                Err(e) if e.is_conflict() && attempt < MAX_ATTEMPTS => {
                    let backoff = FIRST_BACKOFF * 2u32.pow(attempt - 1);
                    let jitter = Duration::from_millis(u64::from(rand_ms(attempt)));
                    tracing::warn!(table = %plan.table, attempt, error = %e, "serialization conflict; retrying the load");
                    tokio::time::sleep(backoff + jitter).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn execute(&self, table: &str, statements: &[Statement]) -> Result<(), LoadError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = self.conn().await?;
            let result = async {
                let mut tx = c
                    .begin()
                    .await
                    .map_err(|e| statement_error(table, "begin", &e))?;
                for s in statements {
                    exec(&mut tx, table, s).await?;
                }
                tx.commit()
                    .await
                    .map_err(|e| statement_error(table, "commit", &e))
            }
            .await;
            match result {
                Err(e) if e.is_conflict() && attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(FIRST_BACKOFF * attempt).await;
                }
                other => return other,
            }
        }
    }
}

/// A few milliseconds of jitter, different per process and attempt.
pub(crate) fn rand_ms(attempt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (std::process::id() << 8) ^ attempt) % 50
}

async fn exec(c: &mut PgConnection, table: &str, s: &Statement) -> Result<u64, LoadError> {
    sqlx::query(AssertSqlSafe(s.sql.clone()))
        .execute(&mut *c)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| statement_error(table, &s.name, &e))
}

fn statement_error(table: &str, statement: &str, e: &sqlx::Error) -> LoadError {
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()));
    // Two first loads creating the same schema or table at once: PostgreSQL's `IF NOT EXISTS`
    // is not atomic against a concurrent create and reports a duplicate; the retry finds it.
    let lost_create_race = statement.starts_with("create")
        && matches!(code.as_deref(), Some("23505" | "42P06" | "42P07"));
    LoadError::Statement {
        table: table.to_string(),
        statement: statement.to_string(),
        message: e.to_string(),
        conflict: matches!(code.as_deref(), Some("40001" | "40P01")) || lost_create_race,
    }
}

/// What one committed transaction of a load reports (see `Executed`).
#[derive(Default)]
struct Ran {
    rows: Vec<Option<u64>>,
    millis: Vec<Option<u64>>,
    results: BTreeMap<usize, Vec<Vec<String>>>,
}

async fn run_once(
    c: &mut PgConnection,
    plan: &LoadPlan,
    steps: &[Step],
    store: &dyn ObjectStore,
) -> Result<Ran, LoadError> {
    let mut tx = c
        .begin()
        .await
        .map_err(|e| statement_error(&plan.table, "begin", &e))?;
    exec(
        &mut tx,
        &plan.table,
        &Statement {
            name: "isolation".into(),
            sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE".into(),
        },
    )
    .await?;
    let mut ran = Ran::default();
    for (i, step) in steps.iter().enumerate() {
        let started = std::time::Instant::now();
        let n = match step {
            Step::Sql(s) => exec(&mut tx, &plan.table, s).await?,
            Step::Query(s) => {
                let rows = query(&mut tx, &plan.table, s).await?;
                let n = rows.len() as u64;
                if !rows.is_empty() {
                    ran.results.insert(i, rows);
                }
                n
            }
            Step::Copy(copy) => {
                let mut n = 0;
                for key in &copy.files {
                    n += copy_file(&mut tx, plan, copy, store, key).await?;
                }
                n
            }
        };
        ran.rows.push(Some(n));
        ran.millis.push(Some(started.elapsed().as_millis() as u64));
    }
    tx.commit()
        .await
        .map_err(|e| statement_error(&plan.table, "commit", &e))?;
    Ok(ran)
}

/// A query's rows, every column read as text (the plan's queries select text; NULL as empty).
async fn query(
    c: &mut PgConnection,
    table: &str,
    s: &Statement,
) -> Result<Vec<Vec<String>>, LoadError> {
    let rows = sqlx::query(AssertSqlSafe(s.sql.clone()))
        .fetch_all(&mut *c)
        .await
        .map_err(|e| statement_error(table, &s.name, &e))?;
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<Option<String>, _>(i)
                        .map(Option::unwrap_or_default)
                        .map_err(|e| statement_error(table, &s.name, &e))
                })
                .collect()
        })
        .collect()
}

/// COPYs one Parquet file into the step's table, by column name; the rows COPYed.
async fn copy_file(
    c: &mut PgConnection,
    plan: &LoadPlan,
    step: &CopyStep,
    store: &dyn ObjectStore,
    key: &str,
) -> Result<u64, LoadError> {
    let file_err = |message: String| LoadError::File {
        table: plan.table.clone(),
        key: key.to_string(),
        message,
    };
    // Whole file in memory: the local executor's files are the transform's (≤ its target size).
    let bytes = store
        .get_bytes(key)
        .await
        .map_err(|e| file_err(e.to_string()))?;
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| file_err(e.to_string()))?;
    let Some(first) = reader.next() else {
        return Ok(0); // a file without rows
    };
    let first = first.map_err(|e| file_err(e.to_string()))?;
    let sql = copy_statement(plan, step, &first).map_err(file_err)?;
    let copy_err = |e: sqlx::Error| statement_error(&plan.table, &step.name, &e);
    let mut w = c.copy_in_raw(&sql).await.map_err(copy_err)?;
    let mut batch = Some(first);
    let mut csv = Vec::new();
    while let Some(b) = batch.take() {
        csv.clear();
        append_csv(&b, &mut csv).map_err(file_err)?;
        w.send(csv.as_slice()).await.map_err(copy_err)?;
        batch = reader
            .next()
            .transpose()
            .map_err(|e| file_err(e.to_string()))?;
    }
    w.finish().await.map_err(copy_err)
}

/// `COPY <target> ("wh1", "wh2", …) FROM STDIN WITH (FORMAT csv)` for the file's columns.
fn copy_statement(plan: &LoadPlan, step: &CopyStep, batch: &RecordBatch) -> Result<String, String> {
    let mut cols = Vec::new();
    for f in batch.schema().fields() {
        let c = plan
            .columns
            .iter()
            .find(|c| &c.lake == f.name())
            .ok_or_else(|| format!("column {} is not an output column of the table", f.name()))?;
        cols.push(quote_ident(&c.warehouse));
    }
    Ok(format!(
        "COPY {} ({}) FROM STDIN WITH (FORMAT csv)",
        step.target,
        cols.join(", ")
    ))
}

/// A batch as CSV for COPY (NULL unquoted and empty, every value quoted), appended to `out`.
/// Also what the test Data API endpoint streams, so both COPY the same text.
pub fn append_csv(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), String> {
    let opts = FormatOptions::default();
    let fmts: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    out.reserve(batch.num_rows() * 64);
    let mut text = String::new();
    for r in 0..batch.num_rows() {
        for (i, a) in batch.columns().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if a.is_null(r) {
                continue;
            }
            // One reused buffer per value: this loop runs for every value of the load.
            text.clear();
            let written = match a.data_type() {
                // bytea's text form.
                DataType::Binary => {
                    text.push_str("\\x");
                    text.push_str(&hex::encode(a.as_binary::<i32>().value(r)));
                    Ok(())
                }
                _ => write!(text, "{}", fmts[i].value(r)),
            };
            written.map_err(|e| e.to_string())?;
            out.push(b'"');
            for b in text.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
        out.push(b'\n');
    }
    Ok(())
}

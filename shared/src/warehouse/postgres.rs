//! The PostgreSQL executor: a load plan run on PostgreSQL (local runs and tests), in one
//! SERIALIZABLE transaction, with the stage filled by `COPY … FROM STDIN` from the batch's
//! Parquet files. PostgreSQL maps the files' columns by name: a file written before an additive
//! column change simply lacks the column, which stays NULL.
//!
//! A serialization failure (SQLSTATE 40001) or deadlock (40P01) rolls the whole load back;
//! it is retried with backoff and jitter, from the start, up to `MAX_ATTEMPTS` times.

use std::fmt::Write as _;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection};

use crate::lake::layout::load_quarantine_key;
use crate::lake::manifest::Manifest;
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::{ObjectStore, PutMode};

use super::plan::{LoadPlan, Statement};
use super::sql::{quote_ident, Dialect};

/// Attempts of one load when PostgreSQL reports a serialization conflict.
const MAX_ATTEMPTS: u32 = 5;
/// First back-off; doubled per attempt, with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Why a load failed. The transaction was rolled back: the final table is as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("connecting to the warehouse: {0}")]
    Connect(String),
    #[error("load of {table}: statement {statement} failed: {message}")]
    Statement {
        table: String,
        statement: &'static str,
        message: String,
        /// SQLSTATE 40001 / 40P01: another transaction won; the same load may succeed.
        conflict: bool,
    },
    #[error("load of {table}: writing quarantine {key}: {message}")]
    Quarantine {
        table: String,
        key: String,
        message: String,
    },
    #[error("load of {table}: file {key}: {message}")]
    File {
        table: String,
        key: String,
        message: String,
    },
}

impl LoadError {
    fn is_conflict(&self) -> bool {
        matches!(self, LoadError::Statement { conflict: true, .. })
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    /// Rows COPYed into the stage.
    pub rows_staged: u64,
    /// Rows left out because a merge key was NULL (they cannot match any row); each is in a
    /// quarantine object with the reason.
    pub rows_null_key: u64,
    /// The quarantine objects written for them, one per file that had any.
    pub quarantine_keys: Vec<String>,
    /// Transactions it took (more than one after serialization conflicts).
    pub attempts: u32,
}

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

    /// Loads the files of `manifests` into the plan's table, retrying conflicts.
    pub async fn load(
        &self,
        plan: &LoadPlan,
        store: &dyn ObjectStore,
        manifests: &[Manifest],
    ) -> Result<LoadReport, LoadError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = self.conn().await?;
            let mut quarantine = Vec::new();
            match load_once(&mut c, plan, store, manifests, &mut quarantine).await {
                Ok(mut r) => {
                    r.attempts = attempt;
                    // After the commit: these rows are out of the load whatever happens next,
                    // and a re-run writes the same objects again.
                    r.quarantine_keys = write_quarantine(plan, store, quarantine).await?;
                    return Ok(r);
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
}

/// A few milliseconds of jitter, different per process and attempt.
fn rand_ms(attempt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (std::process::id() << 8) ^ attempt) % 50
}

/// Rows of one file left out of a load, with the reason.
struct FileQuarantine {
    file_key: String,
    records: Vec<QuarantineRecord>,
}

async fn write_quarantine(
    plan: &LoadPlan,
    store: &dyn ObjectStore,
    files: Vec<FileQuarantine>,
) -> Result<Vec<String>, LoadError> {
    let mut keys = Vec::new();
    for f in files.into_iter().filter(|f| !f.records.is_empty()) {
        let key = load_quarantine_key(&plan.table, &f.file_key);
        let err = |message: String| LoadError::Quarantine {
            table: plan.table.clone(),
            key: key.clone(),
            message,
        };
        let mut body = Vec::new();
        for r in &f.records {
            body.extend(r.to_json_line().map_err(|e| err(e.to_string()))?);
        }
        store
            .put(&key, body.into(), PutMode::Overwrite)
            .await
            .map_err(|e| err(e.to_string()))?;
        tracing::warn!(table = %plan.table, file = %f.file_key, quarantine = %key, rows = f.records.len(), "rows with a NULL merge key quarantined");
        keys.push(key);
    }
    Ok(keys)
}

async fn exec(c: &mut PgConnection, table: &str, s: &Statement) -> Result<(), LoadError> {
    sqlx::query(AssertSqlSafe(s.sql.clone()))
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(|e| statement_error(table, s.name, &e))
}

fn statement_error(table: &str, statement: &'static str, e: &sqlx::Error) -> LoadError {
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()));
    LoadError::Statement {
        table: table.to_string(),
        statement,
        message: e.to_string(),
        conflict: matches!(code.as_deref(), Some("40001" | "40P01")),
    }
}

async fn load_once(
    c: &mut PgConnection,
    plan: &LoadPlan,
    store: &dyn ObjectStore,
    manifests: &[Manifest],
    quarantine: &mut Vec<FileQuarantine>,
) -> Result<LoadReport, LoadError> {
    let mut tx = c
        .begin()
        .await
        .map_err(|e| statement_error(&plan.table, "begin", &e))?;
    exec(
        &mut tx,
        &plan.table,
        &Statement {
            name: "isolation",
            sql: "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE".into(),
        },
    )
    .await?;
    for s in plan.before_copy(Dialect::Postgres) {
        exec(&mut tx, &plan.table, &s).await?;
    }
    let mut report = LoadReport::default();
    for m in manifests {
        for f in &m.files {
            let mut q = FileQuarantine {
                file_key: f.key.clone(),
                records: Vec::new(),
            };
            copy_file(&mut tx, plan, store, &f.key, &mut report, &mut q).await?;
            quarantine.push(q);
            report.files += 1;
        }
    }
    for s in plan.after_copy(Dialect::Postgres) {
        exec(&mut tx, &plan.table, &s).await?;
    }
    tx.commit()
        .await
        .map_err(|e| statement_error(&plan.table, "commit", &e))?;
    Ok(report)
}

/// COPYs one Parquet file into the stage, by column name.
async fn copy_file(
    c: &mut PgConnection,
    plan: &LoadPlan,
    store: &dyn ObjectStore,
    key: &str,
    report: &mut LoadReport,
    quarantine: &mut FileQuarantine,
) -> Result<(), LoadError> {
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
        return Ok(()); // a file without rows
    };
    let first = first.map_err(|e| file_err(e.to_string()))?;
    let sql = copy_statement(plan, &first).map_err(file_err)?;
    let copy_err = |e: sqlx::Error| statement_error(&plan.table, "copy", &e);
    let mut w = c.copy_in_raw(&sql).await.map_err(copy_err)?;
    let mut batch = Some(first);
    let mut row_base = 0u64;
    while let Some(b) = batch.take() {
        let CsvBatch { csv, null_key_rows } = to_csv(plan, &b).map_err(file_err)?;
        report.rows_null_key += null_key_rows.len() as u64;
        for NullKeyRow { index, raw } in null_key_rows {
            quarantine.records.push(QuarantineRecord {
                object: key.to_string(),
                line: row_base + index as u64 + 1,
                column: Some(plan.keys.join(",")),
                reason: "a merge key is NULL: the row cannot match or be matched".into(),
                raw,
                raw_truncated: false,
            });
        }
        row_base += b.num_rows() as u64;
        w.send(csv).await.map_err(copy_err)?;
        batch = reader
            .next()
            .transpose()
            .map_err(|e| file_err(e.to_string()))?;
    }
    report.rows_staged += w.finish().await.map_err(copy_err)?;
    Ok(())
}

/// `COPY <stage> ("wh1", "wh2", …) FROM STDIN WITH (FORMAT csv)` for the file's columns.
fn copy_statement(plan: &LoadPlan, batch: &RecordBatch) -> Result<String, String> {
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
        plan.stage_table(),
        cols.join(", ")
    ))
}

/// A row left out of the COPY: its index in the batch, and the row as `col=value|…`.
struct NullKeyRow {
    index: usize,
    raw: String,
}

/// A batch as COPY's CSV, and the rows left out of it.
struct CsvBatch {
    csv: Vec<u8>,
    null_key_rows: Vec<NullKeyRow>,
}

/// The batch as CSV for COPY (NULL unquoted and empty, every value quoted), without the rows
/// whose merge key is NULL.
fn to_csv(plan: &LoadPlan, batch: &RecordBatch) -> Result<CsvBatch, String> {
    let schema = batch.schema();
    let key_idx: Vec<usize> = plan
        .columns
        .iter()
        .filter(|c| plan.keys.contains(&c.warehouse))
        .filter_map(|c| schema.index_of(&c.lake).ok())
        .collect();
    let opts = FormatOptions::default();
    let fmts: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows() * 64);
    let mut null_keys = Vec::new();
    let mut text = String::new();
    for r in 0..batch.num_rows() {
        if key_idx.iter().any(|&i| batch.column(i).is_null(r)) {
            let raw = schema
                .fields()
                .iter()
                .zip(&fmts)
                .map(|(f, x)| format!("{}={}", f.name(), x.value(r)))
                .collect::<Vec<_>>()
                .join("|");
            null_keys.push(NullKeyRow { index: r, raw });
            continue;
        }
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
    Ok(CsvBatch {
        csv: out,
        null_key_rows: null_keys,
    })
}

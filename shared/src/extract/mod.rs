//! Extract: a table's rows from MySQL/MariaDB/Aurora shards and PostgreSQL (replicas) into
//! `raw/` as gzip JSON lines, incrementally by `updated_at` or as a full dump, with no row
//! version lost and none written twice. docs/EXTRACT.md is the reference.
//!
//! The order of effects of one shard's run, and why a crash anywhere loses nothing and
//! repeats nothing:
//! 1. The lease (`state/extract/<table>/<shard>/lease`, `state.rs`) is taken with a
//!    create-if-absent write, its expiry in its body. A run that finds it held backs off
//!    before it connects to anything. Scheduled runs never overlap anyway (reserved
//!    concurrency 1); the lease covers a CLI run beside them.
//! 2. The state (`state.json`) is read: the watermark (the last extracted position) and the
//!    unfinished run, if any. Then the shard is connected (`source.rs`), its clock and replica
//!    delay read, and the SELECT described (`columns.rs`): nothing is read from the table yet.
//! 3. An unfinished run continues with its recorded range. Otherwise a new range is chosen,
//!    from the watermark to the upper bound (the source's clock less the safety lag and the
//!    replica delay), and RECORDED in the state (if-match) before any part is written. Its
//!    id (the bound and a hash of the range) names its folder of parts.
//! 4. The run continues after the last row of the last part already in that folder (none on
//!    a first attempt) and pages through the range in `(updated_at, key)` order (`query.rs`,
//!    `pages.rs`), rows streamed into parts of `part_rows` rows (`writer.rs`), each uploaded
//!    whole under `part-<index>`. A part once written is never rewritten: a crash after part
//!    k means the re-run writes parts k+1… from the row after part k's last, with the same
//!    range, so the same keys as the first attempt would have; no row is in two parts. A row
//!    updated meanwhile has a new `updated_at` past the range's bound: it moves to a later
//!    range, so each version is extracted once.
//! 5. Before the deadline, after a whole page, the run stops: the part in progress is
//!    uploaded and the state keeps the unfinished range; the next run continues (step 4).
//! 6. When a page comes back short the range is done: the last part is uploaded, then the
//!    watermark is set to the last row's position and the range cleared, in one conditional
//!    write of the state (after every part, so a watermark never passes an unwritten row).
//!    A lost condition (another run took over an expired lease) commits nothing.
//! 7. The lease is released (an expired body written over our own version).
//!
//! Historical dumps follow the same steps in key order (`historical.rs`).

mod columns;
pub mod error;
mod historical;
mod pages;
mod query;
mod run;
mod source;
pub mod state;
mod values;
mod writer;
mod zone;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

pub use error::{ExtractError, ShardError};
pub use pages::Limits;
pub use state::{Cursor, RunKind, RunRecord, ShardState};
pub use writer::read_part;

use crate::config::{Pipeline, SourceConfig, TableConfig};
use crate::lake::ObjectStore;
use crate::metrics::{Emf, Unit};

/// Shards of one table read at once: each is its own database and connection; four keeps a
/// Lambda's memory and network busy without a dozen parts staged at once.
const SHARDS_AT_ONCE: usize = 4;

/// Incremental (scheduled) or historical (a full dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Incremental,
    Historical,
}

/// Which shards of a table a run reads.
#[derive(Debug, Clone, Copy)]
pub enum Shards<'a> {
    All,
    Only(&'a [String]),
}

/// What one shard's run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStats {
    /// The run worked on (None: nothing new since the watermark).
    pub run: Option<RunRecord>,
    /// Whether it continued a run an earlier invocation began.
    pub resumed: bool,
    /// Whether the range (or dump) is finished and the watermark committed.
    pub complete: bool,
    pub rows: u64,
    /// Compressed bytes uploaded.
    pub bytes: u64,
    /// Keys of the parts this invocation wrote.
    pub parts: Vec<String>,
    pub pages: u64,
    /// The source's clock at the start.
    pub source_now: String,
    pub replica_delay: Duration,
    /// The newest `updated_at` extracted so far (this run's rows, else the watermark's).
    pub newest_updated_at: Option<String>,
    /// How far that is behind the source's clock, in seconds.
    pub lag_secs: Option<f64>,
}

impl ShardStats {
    fn new(source_now: &str, replica_delay: Duration) -> Self {
        Self {
            run: None,
            resumed: false,
            complete: false,
            rows: 0,
            bytes: 0,
            parts: Vec::new(),
            pages: 0,
            source_now: source_now.to_string(),
            replica_delay,
            newest_updated_at: None,
            lag_secs: None,
        }
    }

    fn record_run(
        &mut self,
        run: &RunRecord,
        resumed: bool,
        sink: &writer::PartSink<'_>,
        pages: u64,
    ) {
        self.run = Some(run.clone());
        self.resumed = resumed;
        self.rows = sink.rows;
        self.bytes = sink.bytes;
        self.parts = sink.parts.clone();
        self.pages = pages;
    }

    fn finish(
        &mut self,
        newest: Option<String>,
        watermark: Option<&Cursor>,
        clock: &source::Clock,
    ) {
        self.newest_updated_at =
            newest.or_else(|| watermark.and_then(Cursor::updated_at).map(str::to_string));
        self.lag_secs = self
            .newest_updated_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                (clock.now - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0
            });
    }
}

/// How one shard's run ended.
#[derive(Debug)]
pub enum ShardOutcome {
    Extracted(ShardStats),
    /// Another run holds the shard's lease (`owner`, until `until_ms` since the epoch):
    /// nothing was read.
    Busy {
        owner: String,
        until_ms: u64,
    },
    /// The shard failed (the error names table and shard); other shards are unaffected.
    Failed(ExtractError),
}

/// One shard's result.
#[derive(Debug)]
pub struct ShardReport {
    pub table: String,
    pub shard: String,
    pub outcome: ShardOutcome,
}

impl ShardReport {
    /// The shard's EMF line data: rows, bytes, lag, and a count of failures and back-offs.
    pub fn emf(&self, function: &str) -> Emf {
        let e = Emf::new(function)
            .dimension("Table", &self.table)
            .dimension("Shard", &self.shard);
        match &self.outcome {
            ShardOutcome::Extracted(s) => {
                let e = e
                    .count("RowsExtracted", s.rows)
                    .bytes("BytesExtracted", s.bytes)
                    .count("ExtractFailed", 0)
                    .property("Complete", s.complete);
                match s.lag_secs {
                    Some(l) => e.metric("ExtractLagSeconds", Unit::Seconds, l),
                    None => e,
                }
            }
            ShardOutcome::Busy { .. } => e.count("ExtractBusy", 1),
            ShardOutcome::Failed(err) => e
                .count("ExtractFailed", 1)
                .property("Error", err.to_string()),
        }
    }
}

/// Runs extract for the tables of a pipeline, into one lake.
#[derive(Debug, Clone)]
pub struct Extractor {
    pipeline: Arc<Pipeline>,
    lake: Arc<dyn ObjectStore>,
    secrets: Option<aws_sdk_secretsmanager::Client>,
    owner: String,
}

impl Extractor {
    /// An extractor whose lease owner is this process (pid and start time).
    pub fn new(pipeline: Arc<Pipeline>, lake: Arc<dyn ObjectStore>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let owner = format!("extract-{}-{nanos:x}", std::process::id());
        Self {
            pipeline,
            lake,
            secrets: None,
            owner,
        }
    }

    /// The Secrets Manager client for shards with a `secret` (built once at start-up).
    pub fn with_secrets(mut self, client: aws_sdk_secretsmanager::Client) -> Self {
        self.secrets = Some(client);
        self
    }

    /// Names the lease holder (a Lambda request id, a host name) in back-off messages.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// The tables with a `[tables.source]`, in file order.
    pub fn tables(&self) -> impl Iterator<Item = &TableConfig> {
        self.pipeline.tables.iter().filter(|t| t.source.is_some())
    }

    /// Extracts `table` from its shards (`shards`), each under its own lease; one report per
    /// shard in the pipeline's order. One shard's failure is its report's, never the others';
    /// the error is only for a table or shard the pipeline does not have.
    pub async fn run_table(
        &self,
        table: &str,
        shards: Shards<'_>,
        mode: Mode,
        limits: Limits,
    ) -> Result<Vec<ShardReport>, ExtractError> {
        let (t, source) = self.source_of(table)?;
        let chosen = match shards {
            Shards::All => source.shards.iter().collect::<Vec<_>>(),
            Shards::Only(ids) => ids
                .iter()
                .map(|id| {
                    source.shard(id).ok_or_else(|| ExtractError::UnknownShard {
                        table: table.to_string(),
                        shard: id.clone(),
                        known: source
                            .shards
                            .iter()
                            .map(|s| s.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        // The futures are made before the stream (not by a closure inside it), so the whole
        // run stays `Send` for a spawned task or a Lambda handler.
        let runs: Vec<_> = chosen
            .into_iter()
            .map(|shard| self.run_shard(t, source, shard, mode, limits))
            .collect();
        let reports = futures::stream::iter(runs)
            .buffered(SHARDS_AT_ONCE)
            .collect()
            .await;
        Ok(reports)
    }

    async fn run_shard(
        &self,
        t: &TableConfig,
        source: &SourceConfig,
        shard: &crate::config::ShardConfig,
        mode: Mode,
        limits: Limits,
    ) -> ShardReport {
        let job = run::ShardJob {
            table: t,
            source,
            shard,
            store: self.lake.as_ref(),
            secrets: self.secrets.as_ref(),
            owner: &self.owner,
            mode,
            limits,
        };
        let outcome = match run::run_shard(&job).await {
            Ok(o) => o,
            Err(error) => ShardOutcome::Failed(ExtractError::Shard {
                table: t.name.clone(),
                shard: shard.id.clone(),
                error: Box::new(error),
            }),
        };
        log_outcome(&t.name, &shard.id, &outcome);
        ShardReport {
            table: t.name.clone(),
            shard: shard.id.clone(),
            outcome,
        }
    }

    fn source_of(&self, table: &str) -> Result<(&TableConfig, &SourceConfig), ExtractError> {
        let t = self
            .pipeline
            .table(table)
            .ok_or_else(|| ExtractError::UnknownTable {
                table: table.to_string(),
            })?;
        let s = t.source.as_ref().ok_or_else(|| ExtractError::NoSource {
            table: table.to_string(),
        })?;
        Ok((t, s))
    }
}

fn log_outcome(table: &str, shard: &str, outcome: &ShardOutcome) {
    match outcome {
        ShardOutcome::Extracted(s) => tracing::info!(
            table,
            shard,
            rows = s.rows,
            bytes = s.bytes,
            parts = s.parts.len(),
            complete = s.complete,
            "extract shard done"
        ),
        ShardOutcome::Busy { owner, until_ms } => {
            tracing::info!(table, shard, holder = %owner, until_ms, "extract shard busy")
        }
        ShardOutcome::Failed(e) => {
            tracing::error!(table, shard, error = %e, "extract shard failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_become_emf_lines_per_shard() {
        let mut stats = ShardStats::new("2024-01-01T00:00:00.000000Z", Duration::ZERO);
        stats.rows = 7;
        stats.bytes = 300;
        stats.lag_secs = Some(12.5);
        let ok = ShardReport {
            table: "orders".into(),
            shard: "eu1".into(),
            outcome: ShardOutcome::Extracted(stats),
        };
        let v: serde_json::Value = serde_json::from_str(&ok.emf("extract").line()).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Function", "Table", "Shard"]])
        );
        assert_eq!(
            (
                v["RowsExtracted"].as_u64(),
                v["BytesExtracted"].as_u64(),
                v["ExtractLagSeconds"].as_f64()
            ),
            (Some(7), Some(300), Some(12.5))
        );
        let error = ExtractError::Shard {
            table: "orders".into(),
            shard: "us1".into(),
            error: Box::new(ShardError::config("the URL variable $X is not set")),
        };
        assert!(error.to_string().contains(
            "table `orders`, shard `us1`: configuration: the URL variable $X is not set"
        ));
        let failed = ShardReport {
            table: "orders".into(),
            shard: "us1".into(),
            outcome: ShardOutcome::Failed(error),
        };
        let v: serde_json::Value = serde_json::from_str(&failed.emf("extract").line()).unwrap();
        assert_eq!(
            (v["ExtractFailed"].as_u64(), v["Shard"].as_str()),
            (Some(1), Some("us1"))
        );
    }
}

//! `sluice cdc`: change data capture from PostgreSQL, on the code the wal-decoder Lambda runs.
//! `setup` checks the source and creates the publication, replica identities and slot, and
//! records where the decoder starts (`state/cdc/<slot>.json`); `snapshot` copies the tables'
//! current rows; `run` is one wal-decoder run (slot → Kinesis → slot advanced); `peek` prints
//! the slot's pending changes as events without moving it (debugging, the benchmark).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Subcommand};
use sqlx::postgres::PgConnectOptions;

use sluice::aws::Clients;
use sluice::cdc::setup::{self, SetupError, SetupOutcome, SetupSpec};
use sluice::cdc::snapshot::{self, SnapshotSpec, SnapshotTable, TableStatus};
use sluice::cdc::wal::peek::{self, PeekError, PrimaryKeys};
use sluice::cdc::wal::source::lsn_text;
use sluice::cdc::wal::state::{self, state_key, Stored};
use sluice::cdc::wal::{
    self, KinesisSink, Publisher, RunLimits, RunReport, SourceLocation, Stop, WalSettings, WalState,
};
use sluice::config::Pipeline;
use sluice::lake::ObjectStore;

use crate::BoxError;

/// Overrides the pipeline's `[cdc] stream`, as for the Lambda.
const STREAM_ENV: &str = "SLUICE_CDC_STREAM";
/// A run from the command line stops taking changes after this long, then acknowledges and
/// advances as usual: run it again to go on.
const CLI_RUN_LIMIT: Duration = Duration::from_secs(60 * 60);
/// The peek's output buffer: large writes, few system calls.
const PEEK_BUFFER_BYTES: usize = 1 << 20;

#[derive(Subcommand)]
pub(crate) enum CdcCommand {
    /// Check the source for change data capture, then create what is missing (publication,
    /// REPLICA IDENTITY FULL, pgoutput slot) and record the decoder's start in the lake.
    Setup {
        /// The pipeline file (its [cdc] section and format = "cdc" tables).
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake: a local directory or s3://BUCKET (the decoder state goes to
        /// state/cdc/<slot>.json).
        #[arg(long, required_unless_present = "check")]
        lake: Option<String>,
        /// Only report what stands in the way (and what setup would change); change nothing.
        #[arg(long)]
        check: bool,
    },
    /// Copy every change table's current rows to raw/cdc/<table>/snapshot/ as `r` events at
    /// the decoder's position; running it again resumes an unfinished copy.
    Snapshot {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake `sluice cdc setup` wrote the decoder state to.
        #[arg(long)]
        lake: String,
        /// Rows per page (one object per page).
        #[arg(long, default_value_t = 20_000)]
        page_rows: u64,
    },
    /// One wal-decoder run: the slot's changes onto the Kinesis stream, then the slot advanced.
    Run {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// The lake with the decoder state (oversized changes are spilled there too).
        #[arg(long)]
        lake: String,
        /// The Kinesis stream (name or ARN); default $SLUICE_CDC_STREAM, then [cdc] stream.
        #[arg(long)]
        stream: Option<String>,
        /// Stop after about this many changes (at a commit, or inside a transaction larger
        /// than that, which the next run finishes).
        #[arg(long)]
        max_changes: Option<u64>,
    },
    /// Print the slot's pending changes as change events, one JSON line each, without
    /// advancing the slot and without Kinesis.
    #[command(group(ArgGroup::new("from").required(true).args(["pipeline", "source_url"])))]
    Peek {
        /// The pipeline file (source, slot, publication and keys from its [cdc] section).
        #[arg(long, conflicts_with_all = ["slot", "publication"])]
        pipeline: Option<PathBuf>,
        /// Instead of --pipeline: the source database (postgres://USER@HOST:PORT/DB).
        #[arg(long, requires_all = ["slot", "publication"])]
        source_url: Option<String>,
        /// With --source-url: the pgoutput slot.
        #[arg(long, requires = "source_url")]
        slot: Option<String>,
        /// With --source-url: the publication (repeat for several).
        #[arg(long, requires = "source_url")]
        publication: Vec<String>,
        /// Write the events to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop at the first commit after this many rows of the slot (a transaction is never
        /// cut); default: everything pending.
        #[arg(long)]
        max_changes: Option<u64>,
    },
}

pub(crate) async fn run(command: CdcCommand) -> Result<(), BoxError> {
    match command {
        CdcCommand::Setup {
            pipeline,
            lake,
            check,
        } => match (check, lake) {
            (true, _) => setup_check(&pipeline).await,
            (false, Some(lake)) => setup_apply(&pipeline, &lake).await,
            (false, None) => Err("--lake is required (or give --check)".into()),
        },
        CdcCommand::Snapshot {
            pipeline,
            lake,
            page_rows,
        } => snapshot(&pipeline, &lake, page_rows).await,
        CdcCommand::Run {
            pipeline,
            lake,
            stream,
            max_changes,
        } => run_once(&pipeline, &lake, stream, max_changes).await,
        CdcCommand::Peek {
            pipeline,
            source_url,
            slot,
            publication,
            out,
            max_changes,
        } => {
            let target = match (pipeline, source_url, slot) {
                (Some(p), _, _) => PeekSource::Pipeline(p),
                (None, Some(url), Some(slot)) => PeekSource::Url {
                    url,
                    slot,
                    publications: publication,
                },
                _ => {
                    return Err(
                        "give --pipeline, or --source-url with --slot and --publication".into(),
                    )
                }
            };
            peek(target, out.as_deref(), max_changes).await
        }
    }
}

/// The pipeline's CDC settings and the source's connection options.
struct Source {
    pipeline: Pipeline,
    settings: WalSettings,
    options: PgConnectOptions,
    /// Built when the source or the command needs AWS.
    clients: Option<Clients>,
}

impl Source {
    async fn load(path: &Path, need_aws: bool) -> Result<Source, BoxError> {
        let pipeline = Pipeline::from_path(path)?;
        let settings = wal::settings_from_pipeline(&pipeline)
            .map_err(|e| format!("--pipeline {}: {e}", path.display()))?;
        // A source URL from the environment needs no AWS: local runs work without credentials.
        let clients = match (&settings.source, need_aws) {
            (SourceLocation::Secret(_), _) | (_, true) => Some(Clients::from_env().await),
            _ => None,
        };
        let options = wal::connect_options(&settings.source, clients.as_ref()).await?;
        Ok(Source {
            pipeline,
            settings,
            options,
            clients,
        })
    }

    fn slot(&self) -> &str {
        &self.settings.run.slot
    }

    fn setup_spec(&self) -> SetupSpec {
        SetupSpec {
            slot: self.slot().to_string(),
            publication: self
                .settings
                .run
                .publications
                .first()
                .cloned()
                .unwrap_or_default(),
            tables: self
                .pipeline
                .cdc_tables()
                .filter_map(|t| t.cdc.as_ref())
                .map(|r| (r.schema.clone(), r.table.clone()))
                .collect(),
            replica_identity_full: self.settings.replica_identity_full,
        }
    }
}

/// The lake; a local one must exist unless `create` (only `setup` starts one).
async fn open_store(lake: &str, create: bool) -> Result<Arc<dyn ObjectStore>, BoxError> {
    if !create && !lake.starts_with("s3://") && !Path::new(lake).is_dir() {
        return Err(format!("--lake {lake}: no such directory").into());
    }
    Ok(crate::open_lake(lake).await?.0)
}

async fn setup_check(pipeline: &Path) -> Result<(), BoxError> {
    let src = Source::load(pipeline, false).await?;
    let spec = src.setup_spec();
    let mut conn = wal::connect(&src.options).await?;
    let problems = setup::check(&mut conn, &spec).await?;
    let blocking = print_problems(&problems);
    if blocking > 0 {
        return Err(format!(
            "{blocking} problem(s) stand in the way of slot {}: fix them, then run `sluice cdc setup` without --check",
            spec.slot
        )
        .into());
    }
    println!(
        "ok: the source is ready for slot {} and publication {} ({} tables)",
        spec.slot,
        spec.publication,
        spec.tables.len()
    );
    Ok(())
}

/// Prints one line per problem; returns how many are blocking.
fn print_problems(problems: &[setup::Problem]) -> usize {
    let mut blocking = 0;
    for p in problems {
        if p.is_blocking() {
            blocking += 1;
            println!("problem: {p}");
        } else {
            println!("will change: {p}");
        }
    }
    blocking
}

async fn setup_apply(pipeline: &Path, lake: &str) -> Result<(), BoxError> {
    let src = Source::load(pipeline, false).await?;
    let spec = src.setup_spec();
    let store = open_store(lake, true).await?;
    // Read the state before touching the source: an unreachable lake fails here, not after the
    // slot was created.
    let existing = state::load(store.as_ref(), &spec.slot).await?;
    let mut conn = wal::connect(&src.options).await?;
    let outcome = match setup::apply(&mut conn, &spec).await {
        Ok(o) => o,
        Err(SetupError::Refused { problems }) => {
            let blocking = print_problems(&problems);
            return Err(format!(
                "cdc setup refused, nothing was changed: {blocking} problem(s) above (`sluice cdc setup --check` lists them)"
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    for a in &outcome.actions {
        println!("{a}");
    }
    record_start(store.as_ref(), &spec.slot, &outcome, existing).await
}

/// Writes the decoder state for a new slot, or for an existing slot that has none; keeps an
/// existing slot's state.
async fn record_start(
    store: &dyn ObjectStore,
    slot: &str,
    outcome: &SetupOutcome,
    existing: Option<Stored>,
) -> Result<(), BoxError> {
    let key = state_key(slot);
    let lsn = lsn_text(outcome.slot_lsn);
    match (outcome.slot_existed, existing) {
        (false, old) => {
            state::reset(store, WalState::new(slot, outcome.slot_lsn)).await?;
            let verb = if old.is_some() { "replaced" } else { "wrote" };
            println!("{verb} decoder state {key}: slot {slot} starts at {lsn}; next: `sluice cdc snapshot`");
        }
        (true, Some(stored)) => {
            let s = &stored.state;
            println!(
                "kept decoder state {key}: confirmed at {}",
                lsn_text(s.confirmed_lsn)
            );
            if outcome.slot_lsn != s.confirmed_lsn && outcome.slot_lsn != s.previous_lsn {
                eprintln!(
                    "warning: slot {slot} is at {lsn} but {key} says {}: the next run will refuse (the slot was moved or recreated); drop the slot, run setup again, then `sluice cdc snapshot`",
                    lsn_text(s.confirmed_lsn)
                );
            }
        }
        (true, None) => {
            state::reset(store, WalState::new(slot, outcome.slot_lsn)).await?;
            println!(
                "slot {slot} existed without a decoder state: wrote {key} at the slot's confirmed position {lsn}; changes before it will not reach the stream, so run `sluice cdc snapshot`"
            );
        }
    }
    Ok(())
}

async fn snapshot(pipeline: &Path, lake: &str, page_rows: u64) -> Result<(), BoxError> {
    let src = Source::load(pipeline, false).await?;
    let store = open_store(lake, false).await?;
    let slot = src.slot();
    let stored = state::load(store.as_ref(), slot).await?.ok_or_else(|| {
        format!(
            "no decoder state {} in {lake}: run `sluice cdc setup` first",
            state_key(slot)
        )
    })?;
    let tables: Vec<SnapshotTable> = src
        .pipeline
        .cdc_tables()
        .filter_map(|t| {
            let rel = t.cdc.as_ref()?;
            Some(SnapshotTable {
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                lake_table: t.name.clone(),
                key_columns: t.dedup.as_ref().map(|d| d.key.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let mut conn = wal::connect(&src.options).await?;
    let spec = SnapshotSpec {
        db_name: wal::source::database_name(&mut conn).await?,
        tables,
        // Every change after this position reaches the stream with a higher LSN and wins.
        consistent_lsn: stored.state.snapshot_lsn(),
        page_rows,
    };
    let report = snapshot::snapshot(&mut conn, store.as_ref(), &spec, None).await?;
    for t in &report.tables {
        let status = match t.status {
            TableStatus::Done => "done",
            TableStatus::AlreadyDone => "already-done",
            _ => "stopped",
        };
        println!(
            "table={} status={status} rows_written={} pages_written={} pages={} lsn={} prefix={}",
            t.lake_table,
            t.rows_written,
            t.pages_written,
            t.next_page,
            spec.consistent_lsn,
            sluice::lake::layout::cdc_snapshot_key(&t.lake_table, spec.consistent_lsn, 0)
                .trim_end_matches("00000000.jsonl"),
        );
    }
    if !report.is_complete() {
        return Err(
            "the snapshot is not complete: run `sluice cdc snapshot` again to go on".into(),
        );
    }
    Ok(())
}

async fn run_once(
    pipeline: &Path,
    lake: &str,
    stream: Option<String>,
    max_changes: Option<u64>,
) -> Result<(), BoxError> {
    let src = Source::load(pipeline, true).await?;
    let store = open_store(lake, false).await?;
    let stream = stream
        .or_else(|| std::env::var(STREAM_ENV).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| src.settings.stream.clone());
    let kinesis = match &src.clients {
        Some(c) => c.kinesis.clone(),
        None => Clients::from_env().await.kinesis,
    };
    let sink = Arc::new(KinesisSink::new(kinesis, stream.clone()));
    let mut publisher = Publisher::new(sink, store.clone());
    let mut cfg = src.settings.run.clone();
    cfg.limits = RunLimits {
        deadline: Instant::now() + CLI_RUN_LIMIT,
        max_changes,
    };
    let report = wal::run(&src.options, store.as_ref(), &mut publisher, &cfg).await?;
    println!(
        "{}",
        run_line(&cfg.slot, &stream, &report, publisher.counters().spilled)
    );
    for (table, columns) in &report.undeclared {
        let list: Vec<&str> = columns.iter().map(String::as_str).collect();
        eprintln!(
            "warning: table {table}: source columns the pipeline does not declare (sent, not in the lake's columns): {}",
            list.join(", ")
        );
    }
    Ok(())
}

/// One line per run, `key=value` pairs (greppable by scripts, readable by people).
fn run_line(slot: &str, stream: &str, r: &RunReport, spilled: u64) -> String {
    let stop = match r.stop {
        Stop::Drained => "drained",
        Stop::Budget => "budget",
        Stop::InsideTransaction => "inside-transaction",
    };
    let partial = match &r.partial {
        Some(p) => format!("{}:{}", lsn_text(p.commit_lsn), p.acked_changes),
        None => "-".into(),
    };
    let undeclared: usize = r.undeclared.values().map(|c| c.len()).sum();
    format!(
        "slot={slot} stream={stream} stop={stop} changes={} transactions={} skipped={} confirmed={} lag_bytes={} partial={partial} heartbeat={} spilled={spilled} unrouted={} undeclared_columns={undeclared}",
        r.changes,
        r.transactions,
        r.skipped,
        lsn_text(r.confirmed_lsn),
        r.lag_bytes,
        r.heartbeat_lsn.map(lsn_text).unwrap_or_else(|| "-".into()),
        r.unrouted,
    )
}

/// Where `peek` reads.
enum PeekSource {
    Pipeline(PathBuf),
    Url {
        url: String,
        slot: String,
        publications: Vec<String>,
    },
}

async fn peek(
    source: PeekSource,
    out: Option<&Path>,
    max_changes: Option<u64>,
) -> Result<(), BoxError> {
    let (options, slot, publications, keys) = match source {
        PeekSource::Pipeline(path) => {
            let src = Source::load(&path, false).await?;
            let run = src.settings.run;
            // The pipeline's keys, as a run uses them.
            let keys: PrimaryKeys = run
                .tables
                .into_iter()
                .map(|(rel, t)| (rel, t.key_columns))
                .collect();
            (src.options, run.slot, run.publications, Some(keys))
        }
        PeekSource::Url {
            url,
            slot,
            publications,
        } => (peek::url_options(&url)?, slot, publications, None),
    };
    let target: Box<dyn Write> = match out {
        Some(path) => {
            Box::new(File::create(path).map_err(|e| format!("--out {}: {e}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = BufWriter::with_capacity(PEEK_BUFFER_BYTES, target);
    let result = peek::peek_to(
        &options,
        &slot,
        &publications,
        keys,
        max_changes,
        &mut writer,
    )
    .await;
    let stats = match result {
        Ok(s) => s,
        // `sluice cdc peek | head`: the reader has seen enough.
        Err(PeekError::Write(e)) if out.is_none() && e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(())
        }
        Err(PeekError::Write(e)) => {
            let to = out.map_or("stdout".to_string(), |p| p.display().to_string());
            return Err(format!("writing the events of slot {slot} to {to}: {e}").into());
        }
        Err(e) => return Err(e.into()),
    };
    let line = format!(
        "slot={slot} from={} changes={} transactions={} messages={} up_to={} out={}",
        lsn_text(stats.from_lsn),
        stats.changes,
        stats.transactions,
        stats.messages,
        stats
            .last_commit_end
            .map(lsn_text)
            .unwrap_or_else(|| "-".into()),
        out.map_or("-".to_string(), |p| p.display().to_string()),
    );
    // The events own stdout when no --out is given.
    if out.is_some() {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
    Ok(())
}

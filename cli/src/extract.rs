//! `sluice extract`: one extract run of a pipeline's tables with a `[tables.source]`, on the
//! code the extract Lambda runs (the same checks of tables and shards, the same leases, so it
//! backs off from a shard the deployed schedule is reading, and the schedule from it). One
//! `key=value` line per shard; exit 1 when any shard failed, after every shard ran.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::aws::Clients;
use sluice::config::{Pipeline, ShardLocation};
use sluice::extract::{Extractor, Limits, ShardOutcome, ShardReport, Shards};
use sluice::lake::{LocalStore, ObjectStore};
use sluice_extract::{error_kind, mode_name, Request};

use crate::BoxError;

/// A run from the command line stops after a whole page past this long, its range left in
/// the state: run it again to go on. The shards' leases last as long (and a minute), so a
/// run killed with ^C holds them that long at most.
const CLI_RUN_LIMIT: Duration = Duration::from_secs(60 * 60);

pub(crate) struct ExtractArgs<'a> {
    pub pipeline: &'a Path,
    pub lake: &'a str,
    pub tables: Vec<String>,
    pub shards: Vec<String>,
    pub historical: bool,
    pub max_pages: Option<u64>,
}

pub(crate) async fn run(a: ExtractArgs<'_>) -> Result<(), BoxError> {
    let pipeline = Arc::new(Pipeline::from_path(a.pipeline)?);
    let request = Request {
        tables: a.tables,
        shards: a.shards,
        historical: a.historical,
    };
    let tables = request.plan(&pipeline)?;
    if tables.is_empty() {
        return Err("no table of the pipeline has a [tables.source] section".into());
    }
    // AWS only when something is there: a local lake with `url_env` shards needs none.
    let clients = if a.lake.starts_with("s3://") || uses_secrets(&pipeline, &tables) {
        Some(Clients::from_env().await)
    } else {
        None
    };
    let store = open_store(a.lake, clients.as_ref())?;
    let mut extractor = Extractor::new(pipeline, store).with_owner(owner());
    if let Some(c) = &clients {
        extractor = extractor.with_secrets(c.secrets.clone());
    }
    let limits = Limits {
        deadline: Instant::now() + CLI_RUN_LIMIT,
        max_pages: a.max_pages,
    };
    let shards = if request.shards.is_empty() {
        Shards::All
    } else {
        Shards::Only(&request.shards)
    };
    let (mut total, mut failed) = (0, 0);
    for table in &tables {
        let reports = extractor
            .run_table(table, shards, request.mode(), limits)
            .await?;
        for r in &reports {
            println!("{}", shard_line(mode_name(request.mode()), r));
            failed += usize::from(matches!(r.outcome, ShardOutcome::Failed(_)));
        }
        total += reports.len();
    }
    if failed > 0 {
        return Err(format!("{failed} of {total} shards failed").into());
    }
    Ok(())
}

fn uses_secrets(pipeline: &Pipeline, tables: &[String]) -> bool {
    tables
        .iter()
        .filter_map(|t| pipeline.table(t).and_then(|t| t.source.as_ref()))
        .flat_map(|s| &s.shards)
        .any(|s| matches!(s.location(), Some(ShardLocation::Secret(_))))
}

fn open_store(lake: &str, clients: Option<&Clients>) -> Result<Arc<dyn ObjectStore>, BoxError> {
    match clients {
        Some(c) if lake.starts_with("s3://") => Ok(sluice::lake::open_with_client(lake, &c.s3)?),
        _ => {
            std::fs::create_dir_all(lake)?;
            Ok(Arc::new(LocalStore::new(lake)?))
        }
    }
}

/// The lease holder's name, shown to a run that backs off.
fn owner() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("sluice-cli:{user}:pid-{}", std::process::id())
}

/// One shard, `key=value` pairs: greppable by scripts, readable by people.
fn shard_line(mode: &str, r: &ShardReport) -> String {
    let head = format!("table={} shard={} mode={mode}", r.table, r.shard);
    match &r.outcome {
        ShardOutcome::Extracted(s) => format!(
            "{head} outcome=extracted rows={} bytes={} parts={} pages={} complete={} resumed={} run={} newest_updated_at={} lag_secs={}",
            s.rows,
            s.bytes,
            s.parts.len(),
            s.pages,
            s.complete,
            s.resumed,
            s.run.as_ref().map_or("-", |run| run.id.as_str()),
            s.newest_updated_at.as_deref().unwrap_or("-"),
            s.lag_secs.map_or("-".to_string(), |l| format!("{l:.3}")),
        ),
        ShardOutcome::Busy { owner, until_ms } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let secs = until_ms.saturating_sub(now_ms).div_ceil(1000);
            format!("{head} outcome=busy holder={owner} expires_in_secs={secs}")
        }
        ShardOutcome::Failed(e) => format!(
            "{head} outcome=failed kind={} error={e}",
            error_kind(e).as_str()
        ),
    }
}

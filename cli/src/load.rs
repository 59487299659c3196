//! `sluice load`: one table's manifests loaded into the warehouse by the same loader the
//! `redshift-loader` Lambda runs (backfills, DLQ replays, local runs against PostgreSQL).

use std::path::Path;
use std::time::Duration;

use sluice::config::Pipeline;
use sluice::lake::{layout, ObjectStore};
use sluice::warehouse::{open_target, Executor, LoadOutcome, LoadSummary, Loader, TargetError};

use crate::BoxError;

/// How long the CLI holds a table's lease. Longer than the Lambda's 15 minutes: a backfill from
/// a laptop may take a while, and a crashed run blocks the table for this long at most.
const CLI_LEASE_TTL: Duration = Duration::from_secs(60 * 60);

pub(crate) struct LoadArgs<'a> {
    pub pipeline: &'a Path,
    pub lake: &'a str,
    pub table: &'a str,
    pub target: Option<&'a str>,
    pub manifests: Vec<String>,
}

pub(crate) async fn run(a: LoadArgs<'_>) -> Result<(), BoxError> {
    let p = Pipeline::from_path(a.pipeline)?;
    check_table(&p, a.table)?;
    if !a.lake.starts_with("s3://") && !Path::new(a.lake).is_dir() {
        return Err(format!("--lake {}: no such directory", a.lake).into());
    }
    let (store, _) = crate::open_lake(a.lake).await?;
    let keys = if a.manifests.is_empty() {
        table_manifests(store.as_ref(), a.table).await?
    } else {
        check_keys(a.table, &a.manifests)?;
        a.manifests
    };
    // AWS clients only for the Data API; a PostgreSQL target needs none.
    let clients = match a.target {
        Some(_) => None,
        None => Some(sluice::aws::Clients::from_env().await),
    };
    let target = open_target(a.target, &p, clients.as_ref())
        .await
        .map_err(|e| match e {
            TargetError::NoTarget => {
                "the pipeline has no [redshift] section: give --target postgres://USER@HOST:PORT/DB"
                    .into()
            }
            e => BoxError::from(e),
        })?;
    let executor = target.executor(None);
    let s = load_table(&p, store.as_ref(), executor.as_ref(), a.table, &keys).await?;
    println!("{}", summary_line(&s));
    if let Some(m) = &s.mismatch {
        return Err(format!("reconciliation mismatch for {}: {m}", s.table).into());
    }
    Ok(())
}

/// The table must exist and have a warehouse section.
pub(crate) fn check_table(p: &Pipeline, table: &str) -> Result<(), BoxError> {
    match p.table(table) {
        None => Err(format!("--table {table}: not a table of the pipeline").into()),
        Some(t) if t.warehouse.is_none() => Err(format!(
            "--table {table}: the table has no [tables.warehouse] section (it stays in the lake)"
        )
        .into()),
        Some(_) => Ok(()),
    }
}

fn check_keys(table: &str, keys: &[String]) -> Result<(), BoxError> {
    let wrong: Vec<&str> = keys
        .iter()
        .filter(|k| layout::manifest_table(k) != Some(table))
        .map(String::as_str)
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "--manifest: not manifests of table {table} ({}<hash>.json): {}",
            layout::manifests_prefix(table),
            wrong.join(", ")
        )
        .into())
    }
}

/// Every manifest under `manifests/<table>/`, sorted.
async fn table_manifests(store: &dyn ObjectStore, table: &str) -> Result<Vec<String>, BoxError> {
    let prefix = layout::manifests_prefix(table);
    let mut keys: Vec<String> = store
        .list(&prefix)
        .await?
        .into_iter()
        .map(|m| m.key)
        .filter(|k| layout::manifest_table(k) == Some(table))
        .collect();
    keys.sort();
    if keys.is_empty() {
        return Err(
            format!("no manifests under {prefix}: transform the table's objects first").into(),
        );
    }
    Ok(keys)
}

/// One load, the table's lease held by this process.
pub(crate) async fn load_table(
    p: &Pipeline,
    store: &dyn ObjectStore,
    executor: &dyn Executor,
    table: &str,
    keys: &[String],
) -> Result<LoadSummary, BoxError> {
    let loader = Loader {
        pipeline: p,
        store,
        executor,
        iam_role: p
            .redshift
            .as_ref()
            .map(|r| r.copy_iam_role.clone())
            .unwrap_or_default(),
        lease_ttl: CLI_LEASE_TTL,
        owner: owner(),
        use_lease: true,
    };
    match loader.load(table, keys).await? {
        LoadOutcome::Loaded(s) => Ok(*s),
        LoadOutcome::Busy {
            owner, until_ms, ..
        } => Err(format!(
            "table {table} is being loaded by {owner} (its lease expires in {} s): try again later",
            until_ms.saturating_sub(sluice::warehouse::lease::now_ms()) / 1000
        )
        .into()),
    }
}

/// Who holds the lease: this command on this machine.
fn owner() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("sluice-cli:{user}:pid-{}", std::process::id())
}

/// One line per load, `key=value` pairs (greppable by scripts, readable by people).
pub(crate) fn summary_line(s: &LoadSummary) -> String {
    let c = s.counts;
    format!(
        "table={} batch={} manifests={} files={} expected={} staged={} merged={} stale={} deleted={} duplicates={} null_keys={} mismatch={} record={} quarantine={}",
        s.table,
        s.batch,
        s.manifests.len(),
        s.files,
        c.expected,
        c.staged,
        c.merged,
        c.stale,
        c.deleted,
        c.duplicates,
        c.null_keys,
        s.mismatch.as_deref().map(|m| format!("{m:?}")).unwrap_or_else(|| "none".into()),
        s.record_key,
        if s.quarantine_keys.is_empty() {
            "-".to_string()
        } else {
            s.quarantine_keys.join(",")
        }
    )
}

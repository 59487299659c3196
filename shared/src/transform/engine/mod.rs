//! The synchronous core: one source file in, partitioned Parquet files and a quarantine file
//! out, in bounded memory. Runs on a blocking thread.
//!
//! The parts, in the order a row meets them:
//! - `input.rs`: the file opened (gzip or not), progress counted;
//! - `scan.rs`: one pass over the file, batches from the decoder's pull reader
//!   (`decode::RawBatches`), each row counted as written, duplicate or quarantined;
//! - `header.rs`: the CSV header mapped to the declared columns;
//! - `row.rs`: a record's cells to typed values, checked;
//! - `change.rs`: a change event's envelope and the rules of its kind (cdc tables);
//! - `dedup.rs`: the dedup index (one pass, or two with an ordering column);
//! - `toast.rs`: TOAST values a kept change left out, from the versions it supersedes (a
//!   third pass, only when needed);
//! - `pii.rs`: output values after the PII rules;
//! - `writer/`: column builders and one Parquet file per open partition;
//! - `quarantine.rs`: the rejected rows.

mod change;
mod dedup;
mod header;
mod input;
mod pii;
mod quarantine;
mod row;
mod scan;
mod toast;
mod writer;

use std::path::{Path, PathBuf};

use crate::config::TableConfig;
use crate::secrets::HashKey;

use super::plan::Plan;
use super::TransformError;

use dedup::Dedup;
use scan::{Pass, Scan};

pub(crate) use input::ProgressFn;
pub(crate) use writer::LocalFile;

/// Row counts: the manifest's type, so what the engine counts is what the loader reconciles.
pub use crate::lake::manifest::RowCounts as Counts;

#[derive(Debug)]
pub(crate) struct EngineOutput {
    pub files: Vec<LocalFile>,
    pub quarantine: Option<PathBuf>,
    pub counts: Counts,
    /// Input columns the header did not have (nulls were written).
    pub missing_columns: Vec<String>,
    /// Header columns the pipeline does not declare (ignored; a drift signal).
    pub unknown_columns: Vec<String>,
}

/// What the engine needs besides the file.
pub(crate) struct EngineJob<'a> {
    pub table: &'a TableConfig,
    pub plan: &'a Plan,
    pub source_key: &'a str,
    pub hash_key: Option<&'a HashKey>,
    pub work_dir: &'a Path,
    pub progress: Option<ProgressFn<'a>>,
}

/// Transforms the file at `path`: an index pass first when dedup keeps the latest version,
/// a fill pass when kept changes left TOAST values out that dropped ones have, then the pass
/// that writes.
pub(crate) fn run(job: &EngineJob<'_>, path: &Path) -> Result<EngineOutput, TransformError> {
    let mut dedup = Dedup::new(job.table);
    if dedup.needs_index_pass() {
        let mut scan = Scan::new(job, Pass::Index)?;
        scan.run(path, &mut dedup)?;
    }
    if dedup.needs_fill_pass() {
        let mut scan = Scan::new(job, Pass::Fill)?;
        scan.run(path, &mut dedup)?;
        dedup.finish_fill_pass();
    }
    let mut scan = Scan::new(job, Pass::Write)?;
    scan.run(path, &mut dedup)?;
    scan.finish()
}

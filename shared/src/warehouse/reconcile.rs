//! Reconciliation: a load's rows by what became of them, each counted by the statement that
//! acted on them, checked against the manifests; the per-load record and its EMF line.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::metrics::Emf;

use super::executor::Executed;
use super::plan::{step_names, Step};

/// Rows of a load, by what became of them, each counted by the statement that acted on them.
/// They balance:
/// `staged = merged + stale + deleted + duplicates + null_keys + truncates + unresolved`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    /// Σ `rows_written` of the manifests: what the lake says the batch holds.
    pub expected: u64,
    /// Rows COPYed into the stage.
    pub staged: u64,
    /// Rows inserted into the final table.
    pub merged: u64,
    /// Rows not newer than the final row, a tombstone or a TRUNCATE.
    pub stale: u64,
    /// Deletes applied (tombstones recorded).
    pub deleted: u64,
    /// Older versions of a key twice in the batch.
    pub duplicates: u64,
    /// Rows with a NULL merge key (or version), quarantined.
    pub null_keys: u64,
    /// TRUNCATE change rows (their version recorded; they are no row of the table).
    pub truncates: u64,
    /// Change rows with an unchanged-TOAST marker no earlier version resolved: not loaded,
    /// quarantined.
    pub unresolved: u64,
}

impl LoadCounts {
    /// Why the counts do not add up, if they do not.
    pub fn mismatch(&self) -> Option<String> {
        if self.staged != self.expected {
            return Some(format!(
                "the stage holds {} rows but the manifests list {}",
                self.staged, self.expected
            ));
        }
        let accounted = self.merged
            + self.stale
            + self.deleted
            + self.duplicates
            + self.null_keys
            + self.truncates
            + self.unresolved;
        (accounted != self.staged).then(|| {
            format!(
                "{} rows staged but {accounted} accounted for (merged {} + stale {} + deleted {} + duplicates {} + NULL keys {} + truncates {} + unresolved {})",
                self.staged, self.merged, self.stale, self.deleted, self.duplicates, self.null_keys, self.truncates, self.unresolved
            )
        })
    }
}

/// What one load did; also the per-load record written to `loads/<table>/<batch>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub table: String,
    pub batch: String,
    pub manifests: Vec<String>,
    pub files: usize,
    pub statement_id: Option<String>,
    pub attempts: u32,
    pub counts: LoadCounts,
    /// None when the counts balance; else what does not add up.
    pub mismatch: Option<String>,
    #[serde(skip)]
    pub(super) quarantine_mismatch: Option<String>,
    pub quarantine_keys: Vec<String>,
    pub record_key: String,
    /// Wall time of the load transaction (all attempts), and of its COPY steps in the attempt
    /// that committed (where the executor measures steps).
    pub run_ms: u64,
    pub copy_ms: u64,
    pub finished_at_ms: u64,
}

impl LoadSummary {
    /// The EMF line: CloudWatch metrics per table, `ReconciliationMismatch` 1 when rows went
    /// missing (the alarm watches it).
    pub fn emf_line(&self, function: &str) -> String {
        let c = &self.counts;
        Emf::new(function)
            .dimension("Table", &self.table)
            .count("RowsExpected", c.expected)
            .count("RowsStaged", c.staged)
            .count("RowsMerged", c.merged)
            .count("RowsStale", c.stale)
            .count("RowsDeleted", c.deleted)
            .count("RowsDuplicate", c.duplicates)
            .count("RowsNullKey", c.null_keys)
            .count("RowsUnresolved", c.unresolved)
            .count("ReconciliationMismatch", u64::from(self.mismatch.is_some()))
            .count("Attempts", u64::from(self.attempts))
            .property("batch", self.batch.clone())
            .property("manifests", self.manifests.clone())
            .line()
    }
}

/// The counts, from the rows each named step affected.
pub(super) fn counts(steps: &[Step], executed: &Executed, expected: u64) -> LoadCounts {
    let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, rows) in steps.iter().zip(&executed.rows) {
        *sum.entry(s.name()).or_default() += rows.unwrap_or(0);
    }
    let get = |n: &str| sum.get(n).copied().unwrap_or(0);
    LoadCounts {
        expected,
        staged: get(step_names::COPY) + get(step_names::STAGE_GROUP),
        merged: get(step_names::INSERT),
        stale: step_names::STALE.iter().map(|n| get(n)).sum(),
        deleted: get(step_names::TOMBSTONES),
        duplicates: get(step_names::DUPLICATES),
        null_keys: get(step_names::DROP_NULL_KEYS),
        truncates: get(step_names::TRUNCATES),
        unresolved: get(step_names::UNRESOLVED),
    }
}

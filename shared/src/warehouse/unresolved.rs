//! Change rows whose unchanged-TOAST markers the merge could not resolve (`plan/unchanged.rs`).
//! The load's query `unresolved_changes` returns their merge keys, version and missing
//! columns; after the commit the loader finds the rows in the batch's files (rows carrying
//! `_unchanged`, matched on key and version) and quarantines them with the reason, beside the
//! NULL-key rows. A row not found in the files (a key whose text the warehouse spells another
//! way) is quarantined from what the warehouse returned: never dropped.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::lake::manifest::Manifest;
use crate::lake::quarantine::QuarantineRecord;

use super::executor::LoadError;
use super::load::Loader;
use super::null_keys::{pick_rows, records_at, Picked};
use super::plan::LoadPlan;

/// A row's identity: its merge keys and version, as comparable text.
type Identity = (Vec<String>, String);

/// The identifying columns of the table, by lake name, with their Glue types.
struct Columns {
    /// Merge keys, then the version.
    ids: Vec<(String, String)>,
    unchanged: String,
}

impl Loader<'_> {
    /// Quarantine records of the rows `unresolved_changes` returned (merge keys, version,
    /// missing columns per row), by file; the ones not found in a file under `group`.
    pub(super) async fn unresolved_records(
        &self,
        plan: &LoadPlan,
        manifests: &[(String, Manifest)],
        rows: &[Vec<String>],
        group: &str,
    ) -> Result<Vec<(String, Vec<QuarantineRecord>)>, LoadError> {
        let Some(cols) = columns(plan) else {
            return Ok(Vec::new());
        };
        let n = cols.ids.len();
        let mut wanted: HashMap<Identity, (String, bool)> = HashMap::new();
        for r in rows.iter().filter(|r| r.len() == n + 1) {
            let id = identity(&cols, |i| r[i].as_str());
            wanted.insert(id, (r[n].clone(), false));
        }
        let mut out = Vec::new();
        for (_, m) in manifests {
            // Files written before the table had `_unchanged` hold no marked row.
            let has_marker =
                m.columns.is_empty() || m.columns.iter().any(|c| c.name == cols.unchanged);
            if !has_marker || wanted.is_empty() {
                continue;
            }
            for f in &m.files {
                let (_dir, path) = self.local_copy(&plan.table, &f.key).await?;
                let file_err = |message: String| LoadError::File {
                    table: plan.table.clone(),
                    key: f.key.clone(),
                    message,
                };
                let is_id = |n: &str| n == cols.unchanged || cols.ids.iter().any(|(c, _)| c == n);
                let picked = pick_rows(&path, &is_id, &mut |b, r| {
                    let id = file_identity(&cols, b, r)?;
                    let (missing, found) = wanted.get_mut(&id)?;
                    *found = true;
                    Some(Picked {
                        column: missing.clone(),
                        reason: reason(plan, missing),
                    })
                })
                .map_err(file_err)?;
                let records = records_at(&path, &f.key, picked).map_err(file_err)?;
                if !records.is_empty() {
                    out.push((f.key.clone(), records));
                }
            }
        }
        let lost = rows
            .iter()
            .filter(|r| {
                r.len() != n + 1
                    || !wanted
                        .get(&identity(&cols, |i| r[i].as_str()))
                        .is_some_and(|w| w.1)
            })
            .map(|r| warehouse_record(plan, &cols, r))
            .collect::<Vec<_>>();
        if !lost.is_empty() {
            tracing::warn!(table = %plan.table, rows = lost.len(), "unresolved change rows not found in the batch's files; quarantined as the warehouse returned them");
            out.push((group.to_string(), lost));
        }
        Ok(out)
    }
}

fn columns(plan: &LoadPlan) -> Option<Columns> {
    let u = plan.unchanged.as_deref()?;
    let lake = |w: &str| plan.columns.iter().find(|c| c.warehouse == w);
    let ids = plan
        .keys
        .iter()
        .chain(std::iter::once(&plan.version))
        .map(|w| lake(w).map(|c| (c.lake.clone(), c.glue_type.clone())))
        .collect::<Option<Vec<_>>>()?;
    Some(Columns {
        ids,
        unchanged: lake(u)?.lake.clone(),
    })
}

/// Why an unresolved row is quarantined.
fn reason(plan: &LoadPlan, missing: &str) -> String {
    format!(
        "the change left {missing} out as an unchanged TOASTed value and no earlier version of its key holds the value (none in the batch, none in {}): the row is not loaded, so no value is lost",
        plan.final_table()
    )
}

/// The identity of row `r` of a batch holding the identifying columns, when it carries
/// `_unchanged` (only such rows can be unresolved).
fn file_identity(cols: &Columns, b: &RecordBatch, r: usize) -> Option<Identity> {
    let col = |n: &str| b.schema().index_of(n).ok().map(|i| b.column(i).clone());
    if col(&cols.unchanged).is_none_or(|a| a.is_null(r)) {
        return None;
    }
    let opts = FormatOptions::default();
    let texts = cols
        .ids
        .iter()
        .map(|(name, _)| {
            let a = col(name)?;
            let f = ArrayFormatter::try_new(a.as_ref(), &opts).ok()?;
            Some(f.value(r).to_string())
        })
        .collect::<Option<Vec<_>>>()?;
    Some(identity(cols, |i| texts[i].as_str()))
}

/// An identity from the texts of the merge keys and the version (`text(i)`, in that order).
fn identity<'a>(cols: &Columns, text: impl Fn(usize) -> &'a str) -> Identity {
    let mut all: Vec<String> = cols
        .ids
        .iter()
        .enumerate()
        .map(|(i, (_, glue))| comparable(glue, text(i)))
        .collect();
    let version = all.pop().unwrap_or_default();
    (all, version)
}

/// A value's text as both sides compare it: strings as they are; other types without the
/// spellings that differ between Arrow's display and the warehouse's text (`T` or a space in
/// a timestamp, a `Z`, trailing zeros of a fraction).
fn comparable(glue: &str, text: &str) -> String {
    if glue.eq_ignore_ascii_case("string") {
        return text.to_string();
    }
    let mut t = text.trim().replacen('T', " ", 1);
    if let Some(s) = t.strip_suffix('Z') {
        t = s.to_string();
    }
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    t
}

/// A record of a row the files did not give back: what the warehouse returned.
fn warehouse_record(plan: &LoadPlan, cols: &Columns, row: &[String]) -> QuarantineRecord {
    let names = plan.keys.iter().chain(std::iter::once(&plan.version));
    let raw = names
        .chain(plan.unchanged.iter())
        .zip(row)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("|");
    let missing = row.get(cols.ids.len()).cloned().unwrap_or_default();
    QuarantineRecord {
        object: plan.final_table(),
        line: 0,
        column: Some(missing.clone()),
        reason: reason(plan, &missing),
        raw,
        raw_truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::comparable;

    #[test]
    fn values_compare_across_the_two_spellings() {
        assert_eq!(
            comparable("timestamp", "2024-03-01T10:00:00Z"),
            comparable("timestamp", "2024-03-01 10:00:00")
        );
        assert_eq!(
            comparable("timestamp", "2024-03-01T10:00:00.120000"),
            comparable("timestamp", "2024-03-01 10:00:00.12")
        );
        assert_eq!(comparable("decimal(12,2)", "12.50"), "12.5");
        assert_eq!(
            comparable("bigint", "120"),
            "120",
            "no fraction: zeros stay"
        );
        assert_eq!(comparable("string", "a T 1.0"), "a T 1.0");
    }
}

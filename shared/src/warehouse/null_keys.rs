//! Rows that cannot load: a NULL merge key (except on a TRUNCATE change row) or a NULL version.
//! Found by reading the key columns of the batch's files before the load (the load drops them
//! from the stage and counts them), written to `quarantine/<table>/load-<hash>.jsonl` after it.
//! `pick_rows` and `records_at` are how any loader quarantine reads a file (also
//! `unresolved.rs`): the few columns that decide first, then the whole rows picked.

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::lake::layout::load_quarantine_key;
use crate::lake::manifest::Manifest;
use crate::lake::quarantine::QuarantineRecord;
use crate::lake::PutMode;

use super::executor::LoadError;
use super::load::{lake_err, lake_err_msg, Loader};
use super::plan::LoadPlan;

impl Loader<'_> {
    /// Rows whose merge key is NULL, read from the files before the load (the load drops them
    /// from the stage and counts them). Files whose manifest says every key column is required
    /// are not read: the transform already quarantined such rows.
    pub(super) async fn scan_null_keys(
        &self,
        plan: &LoadPlan,
        manifests: &[(String, Manifest)],
    ) -> Result<Vec<(String, Vec<QuarantineRecord>)>, LoadError> {
        let key_lake: Vec<&str> = plan
            .columns
            .iter()
            .filter(|c| plan.keys.contains(&c.warehouse))
            .map(|c| c.lake.as_str())
            .collect();
        let lake_of = |w: &str| {
            plan.columns
                .iter()
                .find(|c| c.warehouse == w)
                .map(|c| c.lake.as_str())
        };
        let version_lake = lake_of(&plan.version).unwrap_or_default();
        let op_lake = plan.op.as_deref().and_then(lake_of);
        let must_have: Vec<&str> = key_lake
            .iter()
            .copied()
            .chain(std::iter::once(version_lake))
            .collect();
        let mut out = Vec::new();
        for (_, m) in manifests {
            let keys_required = !m.columns.is_empty()
                && must_have
                    .iter()
                    .all(|k| m.columns.iter().any(|c| c.name == *k && !c.nullable));
            if keys_required {
                continue;
            }
            for f in &m.files {
                let (_dir, path) = self.local_copy(&plan.table, &f.key).await?;
                let cols = NullCheck {
                    keys: &key_lake,
                    version: version_lake,
                    op: op_lake,
                };
                let records = null_key_rows(plan, &cols, &f.key, &path).map_err(|message| {
                    LoadError::File {
                        table: plan.table.clone(),
                        key: f.key.clone(),
                        message,
                    }
                })?;
                if !records.is_empty() {
                    out.push((f.key.clone(), records));
                }
            }
        }
        Ok(out)
    }

    /// A lake file in a local temporary file (removed with the returned directory): a Lambda
    /// then holds one row group at a time, however large the file.
    pub(super) async fn local_copy(
        &self,
        table: &str,
        key: &str,
    ) -> Result<(tempfile::TempDir, std::path::PathBuf), LoadError> {
        let dir = tempfile::tempdir().map_err(|e| lake_err_msg(table, key, e.to_string()))?;
        let path = dir.path().join("file.parquet");
        self.store
            .get_to_file(key, &path)
            .await
            .map_err(|e| lake_err(table, key, e))?;
        Ok((dir, path))
    }

    pub(super) async fn write_quarantine(
        &self,
        plan: &LoadPlan,
        files: Vec<(String, Vec<QuarantineRecord>)>,
    ) -> Result<Vec<String>, LoadError> {
        let mut keys = Vec::new();
        for (file_key, records) in files {
            let key = load_quarantine_key(&plan.table, &file_key);
            let mut body = Vec::new();
            for r in &records {
                body.extend(
                    r.to_json_line()
                        .map_err(|e| lake_err_msg(&plan.table, &key, e.to_string()))?,
                );
            }
            self.store
                .put(&key, body.into(), PutMode::Overwrite)
                .await
                .map_err(|e| lake_err(&plan.table, &key, e))?;
            tracing::warn!(table = %plan.table, file = %file_key, quarantine = %key, rows = records.len(), "rows the load could not take quarantined");
            keys.push(key);
        }
        Ok(keys)
    }
}

/// The columns a loadable row must have: the merge keys (except on a TRUNCATE change row,
/// which has none) and the version.
struct NullCheck<'a> {
    keys: &'a [&'a str],
    version: &'a str,
    op: Option<&'a str>,
}

/// The rows of one Parquet file that cannot load (a NULL merge key or version), as quarantine
/// records (the row as `col=value|…`, its 1-based position in the file).
fn null_key_rows(
    plan: &LoadPlan,
    check: &NullCheck<'_>,
    file_key: &str,
    path: &std::path::Path,
) -> Result<Vec<QuarantineRecord>, String> {
    let wanted = |n: &str| check.keys.contains(&n) || n == check.version || Some(n) == check.op;
    let reason = format!(
        "a merge key ({}) or the version ({}) is NULL: the row cannot match, be matched or be ordered in {}",
        check.keys.join(", "),
        check.version,
        plan.final_table()
    );
    let picked = pick_rows(path, &wanted, &mut |b, r| {
        let col = |n: &str| b.schema().index_of(n).ok().map(|i| b.column(i).clone());
        let truncate = check
            .op
            .and_then(col)
            .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
            .is_some_and(|o| o.is_valid(r) && o.value(r) == "t");
        let null = |n: &str| col(n).is_none_or(|a| a.is_null(r));
        let no_key = check.keys.iter().any(|k| null(k));
        if !null(check.version) && (!no_key || truncate) {
            return None;
        }
        let column = check
            .keys
            .iter()
            .chain(std::iter::once(&check.version))
            .filter(|n| null(n))
            .copied()
            .collect::<Vec<_>>()
            .join(",");
        Some(Picked {
            column,
            reason: reason.clone(),
        })
    })?;
    records_at(path, file_key, picked)
}

/// A row a quarantine picked: its 0-based position in the file, the column at fault, why.
pub(super) struct Picked {
    pub column: String,
    pub reason: String,
}

/// The rows of a Parquet file that `pick` chooses, looking only at the columns `wanted`
/// names (most files have no such row and are done after this pass).
pub(super) fn pick_rows(
    path: &std::path::Path,
    wanted: &dyn Fn(&str) -> bool,
    pick: &mut dyn FnMut(&RecordBatch, usize) -> Option<Picked>,
) -> Result<Vec<(usize, Picked)>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let schema = builder.parquet_schema();
    let idx: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| wanted(schema.column(i).name()))
        .collect();
    let mask = ProjectionMask::leaves(schema, idx);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut base = 0usize;
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        for r in 0..b.num_rows() {
            if let Some(p) = pick(&b, r) {
                out.push((base + r, p));
            }
        }
        base += b.num_rows();
    }
    Ok(out)
}

/// Quarantine records of the picked rows (ascending positions), each with the whole row as
/// `col=value|…` and its 1-based line in the file.
pub(super) fn records_at(
    path: &std::path::Path,
    file_key: &str,
    picked: Vec<(usize, Picked)>,
) -> Result<Vec<QuarantineRecord>, String> {
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut base = 0usize;
    let mut next = picked.into_iter().peekable();
    for b in reader {
        let b: RecordBatch = b.map_err(|e| e.to_string())?;
        let opts = FormatOptions::default();
        let fmts: Vec<ArrayFormatter<'_>> = b
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &opts).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        while let Some((r, _)) = next.peek() {
            if *r >= base + b.num_rows() {
                break;
            }
            let Some((r, p)) = next.next() else { break };
            let raw = b
                .schema()
                .fields()
                .iter()
                .zip(&fmts)
                .map(|(f, x)| format!("{}={}", f.name(), x.value(r - base)))
                .collect::<Vec<_>>()
                .join("|");
            out.push(QuarantineRecord {
                object: file_key.to_string(),
                line: r as u64 + 1,
                column: Some(p.column),
                reason: p.reason,
                raw,
                raw_truncated: false,
            });
        }
        base += b.num_rows();
    }
    Ok(out)
}

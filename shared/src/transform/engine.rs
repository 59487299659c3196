//! The synchronous core: one source file in, partitioned Parquet files and a quarantine file
//! out, in bounded memory. Runs on a blocking thread.
//!
//! Dedup without an ordering column keeps the first valid occurrence: one pass with a set of
//! 128-bit key hashes. With an ordering column, pass 1 reads the object and remembers, per key
//! hash, the winning version and row number (a compact table, `keyset.rs`); pass 2 reads it again and
//! writes only the winners. Either way memory grows with distinct keys, never with row width.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use hmac::{KeyInit, Mac};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::config::{InputFormat, TableConfig};
use crate::secrets::HashKey;

use super::decode::{Decoder, RawBatch, RawBatches, RawRec};
use super::keyset::KeyTable;
use super::plan::{OutKind, Plan};
use super::values::{self, parse_json, parse_text, Val};
use super::TransformError;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Row counts; they always balance: read = written + duplicates + quarantined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_duplicate: u64,
    pub rows_quarantined: u64,
}

/// One finished Parquet file, still local.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    pub path: PathBuf,
    pub year: String,
    pub month: String,
    pub part: u32,
    pub rows: u64,
    pub bytes: u64,
}

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
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// A quarantine record: enough to find, understand and replay the row.
#[derive(Debug, Serialize)]
struct QuarantineRecord<'a> {
    object: &'a str,
    line: u64,
    column: Option<&'a str>,
    reason: &'a str,
    raw: Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    raw_truncated: bool,
}

struct RowError {
    column: Option<String>,
    reason: String,
}

impl RowError {
    fn col(column: &str, reason: String) -> Self {
        Self {
            column: Some(column.to_string()),
            reason,
        }
    }
}

enum Dedup {
    None,
    First(KeyTable<()>),
    /// key hash → (version, winning row number)
    Latest(KeyTable<(i64, u64)>),
}

enum Pass {
    Index,
    Write,
}

pub(crate) fn run(job: &EngineJob<'_>, path: &Path) -> Result<EngineOutput, TransformError> {
    let mut dedup = match &job.table.dedup {
        None => Dedup::None,
        Some(d) if d.order_by.is_none() => Dedup::First(KeyTable::new()),
        Some(_) => Dedup::Latest(KeyTable::new()),
    };
    if matches!(dedup, Dedup::Latest(_)) {
        let mut scan = Scan::new(job, Pass::Index)?;
        scan.run(path, &mut dedup)?;
    }
    let mut scan = Scan::new(job, Pass::Write)?;
    scan.run(path, &mut dedup)?;
    scan.finish()
}

/// Opens the input: gzip by extension or magic bytes.
fn open_input<'p>(
    path: &Path,
    key: &str,
    progress: Option<&'p (dyn Fn(u64) + Sync)>,
) -> Result<Box<dyn Read + 'p>, TransformError> {
    let io = |e: std::io::Error| TransformError::Io {
        key: key.to_string(),
        source: e,
    };
    let f = File::open(path).map_err(io)?;
    let counted = Counting {
        inner: f,
        progress,
        n: 0,
    };
    let mut br = BufReader::with_capacity(1 << 20, counted);
    let head = br.fill_buf().map_err(io)?;
    let gz = key.ends_with(".gz") || head.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    })
}

struct Counting<'p, R> {
    inner: R,
    progress: Option<&'p (dyn Fn(u64) + Sync)>,
    n: u64,
}
impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        if let Some(p) = self.progress {
            p(n as u64);
        }
        Ok(n)
    }
}

struct Scan<'a> {
    job: &'a EngineJob<'a>,
    pass: Pass,
    /// Input column → field index in the CSV record (None: the header lacks it).
    field_of_input: Vec<Option<usize>>,
    expected_fields: Option<usize>,
    header_seen: bool,
    row_no: u64,
    counts: Counts,
    key_buf: Vec<u8>,
    /// Reused per row (no allocation on the hot path).
    cell_null: Vec<bool>,
    cells_store: Vec<Cell<'static>>,
    /// A write error met while handling a row; `batch` returns it.
    fatal: Option<TransformError>,
    vals_store: Vec<Val<'static>>,
    mac: Option<HmacSha256>,
    parts: Partitions,
    quarantine: Option<BufWriter<File>>,
    quarantine_path: PathBuf,
    missing_columns: Vec<String>,
    unknown_columns: Vec<String>,
}

impl<'a> Scan<'a> {
    fn new(job: &'a EngineJob<'a>, pass: Pass) -> Result<Self, TransformError> {
        let mac = match job.hash_key {
            Some(k) => Some(
                <HmacSha256 as KeyInit>::new_from_slice(k.bytes())
                    .map_err(|_| TransformError::HashKey)?,
            ),
            None => None,
        };
        if mac.is_none()
            && job
                .plan
                .outs
                .iter()
                .any(|o| matches!(o.kind, OutKind::Hash))
        {
            return Err(TransformError::HashKey);
        }
        let csv_positional = job.table.format == InputFormat::Csv && !job.table.csv.header;
        Ok(Self {
            job,
            pass,
            field_of_input: if csv_positional {
                (0..job.plan.inputs.len()).map(Some).collect()
            } else {
                Vec::new()
            },
            expected_fields: csv_positional.then_some(job.plan.inputs.len()),
            // JSON lines have no header; CSV without one maps fields by position.
            header_seen: csv_positional || job.table.format == InputFormat::Jsonl,
            row_no: 0,
            counts: Counts::default(),
            key_buf: Vec::with_capacity(128),
            cell_null: Vec::new(),
            cells_store: Vec::new(),
            fatal: None,
            vals_store: Vec::new(),
            mac,
            parts: Partitions::new(job)?,
            quarantine: None,
            quarantine_path: job.work_dir.join("quarantine.jsonl"),
            missing_columns: Vec::new(),
            unknown_columns: Vec::new(),
        })
    }

    fn run(&mut self, path: &Path, dedup: &mut Dedup) -> Result<(), TransformError> {
        let t = self.job.table;
        let key = self.job.source_key;
        // Progress is reported once, on the pass that writes.
        let progress = if matches!(self.pass, Pass::Write) {
            self.job.progress
        } else {
            None
        };
        let input = open_input(path, key, progress)?;
        let dec = Decoder::new(
            t.format,
            &t.csv,
            t.output.batch_rows,
            t.output.max_record_bytes,
        );
        let mut batches = RawBatches::new(input, dec, 1 << 20);
        while let Some(batch) = batches.next_batch().map_err(|e| TransformError::Io {
            key: key.to_string(),
            source: e,
        })? {
            self.batch(batch, dedup)?;
        }
        Ok(())
    }

    fn batch(&mut self, batch: &RawBatch, dedup: &mut Dedup) -> Result<(), TransformError> {
        for rec in &batch.recs {
            if !self.header_seen {
                self.header(batch, rec)?;
                continue;
            }
            let row_no = self.row_no;
            self.row_no += 1;
            self.counts.rows_read += 1;
            let outcome = self.row(batch, rec, row_no, dedup);
            // A write failure (disk full, Parquet error) stops the object: rows already
            // buffered would otherwise be lost while counted as written.
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            match outcome {
                Ok(true) => self.counts.rows_written += 1,
                Ok(false) => self.counts.rows_duplicate += 1,
                Err(e) => {
                    self.counts.rows_quarantined += 1;
                    if matches!(self.pass, Pass::Write) {
                        self.quarantine(batch, rec, e)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, batch: &RawBatch, rec: &RawRec) -> Result<(), TransformError> {
        self.header_seen = true;
        let key = self.job.source_key;
        if self.job.table.format == InputFormat::Jsonl {
            return Ok(());
        }
        if rec.oversize {
            return Err(TransformError::Header {
                key: key.to_string(),
                message: "the header record is over max_record_bytes".into(),
            });
        }
        let names: Vec<String> = (0..rec.nfields)
            .map(|i| String::from_utf8_lossy(values::trim_ascii(batch.field(rec, i))).into_owned())
            .collect();
        let norm = |s: &str| crate::config::snake_case(s);
        self.field_of_input = self
            .job
            .plan
            .inputs
            .iter()
            .map(|inp| {
                names
                    .iter()
                    .position(|n| n == &inp.name)
                    .or_else(|| names.iter().position(|n| norm(n) == norm(&inp.name)))
            })
            .collect();
        for (i, f) in self.field_of_input.iter().enumerate() {
            if f.is_none() {
                let inp = &self.job.plan.inputs[i];
                let plan = self.job.plan;
                let slot = plan.slots.iter().position(|s| s.input == i);
                // Without its dedup key or ordering column an object would silently collapse
                // distinct rows; without its partition column no row has a place.
                let required = plan.slots.iter().any(|s| s.input == i && s.required)
                    || slot == Some(plan.partition_slot)
                    || slot
                        .is_some_and(|s| plan.key_slots.contains(&s) || plan.order_slot == Some(s));
                if required {
                    // Only counts: a headerless file's first row would be data (maybe PII),
                    // and this message reaches logs.
                    return Err(TransformError::Header {
                        key: key.to_string(),
                        message: format!(
                            "the header lacks required column `{}` ({} header fields; is the header row missing?)",
                            inp.name,
                            names.len()
                        ),
                    });
                }
                self.missing_columns.push(inp.name.clone());
            }
        }
        for (j, n) in names.iter().enumerate() {
            if !self.field_of_input.contains(&Some(j)) {
                self.unknown_columns.push(n.clone());
            }
        }
        self.expected_fields = Some(names.len());
        Ok(())
    }

    /// Parses, validates and (on the write pass) emits one row. Ok(true): written;
    /// Ok(false): a duplicate; Err: quarantined.
    fn row(
        &mut self,
        batch: &RawBatch,
        rec: &RawRec,
        row_no: u64,
        dedup: &mut Dedup,
    ) -> Result<bool, RowError> {
        let plan = self.job.plan;
        let t = self.job.table;
        let max_field = t.output.max_field_bytes;
        if rec.oversize {
            return Err(RowError {
                column: None,
                reason: format!(
                    "record is {} bytes, over max_record_bytes ({})",
                    rec.total_bytes, t.output.max_record_bytes
                ),
            });
        }
        // The row as JSON (JSON lines) and each JSON column's parsed document.
        let row_doc: Option<serde_json::Value> = match t.format {
            InputFormat::Jsonl => {
                let v: serde_json::Value =
                    serde_json::from_slice(batch.bytes(rec)).map_err(|e| RowError {
                        column: None,
                        reason: format!("bad JSON: {e}"),
                    })?;
                if !v.is_object() {
                    return Err(RowError {
                        column: None,
                        reason: format!(
                            "expected a JSON object, found a {}",
                            values::json_kind(&v)
                        ),
                    });
                }
                Some(v)
            }
            InputFormat::Csv => {
                if let Some(n) = self.expected_fields {
                    if rec.nfields != n {
                        return Err(RowError {
                            column: None,
                            reason: format!("expected {n} fields, found {}", rec.nfields),
                        });
                    }
                }
                None
            }
        };
        // Cells: raw text (CSV, or a JSON string) or a JSON value, per input column. The Vec's
        // allocation is reused across rows (taken here, handed back below).
        let mut cells: Vec<Cell<'_>> = std::mem::take(&mut self.cells_store);
        cells.clear();
        cells.extend(
            plan.inputs
                .iter()
                .enumerate()
                .map(|(i, inp)| match &row_doc {
                    Some(doc) => match doc.get(&inp.name) {
                        None | Some(serde_json::Value::Null) => Cell::Missing,
                        Some(serde_json::Value::String(s)) => Cell::Text(s.as_bytes()),
                        Some(v) => Cell::Json(v),
                    },
                    None => match self.field_of_input.get(i).copied().flatten() {
                        Some(j) => Cell::Text(batch.field(rec, j)),
                        None => Cell::Missing,
                    },
                }),
        );
        // Null tokens, size limits and JSON column parsing.
        let mut col_docs: Vec<Option<serde_json::Value>> = Vec::new();
        let mut cell_null = std::mem::take(&mut self.cell_null);
        cell_null.clear();
        cell_null.resize(cells.len(), false);
        for (i, (inp, cell)) in plan.inputs.iter().zip(&cells).enumerate() {
            match cell {
                Cell::Missing => cell_null[i] = true,
                Cell::Text(b) => {
                    if b.len() > max_field {
                        return Err(RowError::col(
                            &inp.name,
                            format!(
                                "field is {} bytes, over max_field_bytes ({max_field})",
                                b.len()
                            ),
                        ));
                    }
                    let tb = values::trim_ascii(b);
                    if inp.null_tokens.iter().any(|n| n.as_slice() == tb) {
                        cell_null[i] = true;
                    }
                }
                Cell::Json(_) => {}
            }
            if inp.is_json {
                let doc = match (cell, cell_null[i]) {
                    (_, true) => None,
                    (Cell::Text(b), false) => {
                        let v: serde_json::Value = serde_json::from_slice(b)
                            .map_err(|e| RowError::col(&inp.name, format!("bad JSON: {e}")))?;
                        Some(v)
                    }
                    (Cell::Json(v), false) => Some((*v).clone()),
                    (Cell::Missing, false) => None,
                };
                if let Some(d) = &doc {
                    if !d.is_object() {
                        return Err(RowError::col(
                            &inp.name,
                            format!("expected a JSON object, found a {}", values::json_kind(d)),
                        ));
                    }
                }
                col_docs.push(doc);
            }
        }
        // Typed values, one per slot.
        let mut vals: Vec<Val<'_>> = std::mem::take(&mut self.vals_store);
        vals.clear();
        for slot in &plan.slots {
            let inp = &plan.inputs[slot.input];
            let v = if cell_null[slot.input] {
                Val::Null
            } else if inp.is_json {
                let doc = col_docs[plan.inputs[slot.input].json_index].as_ref();
                let mut cur = doc;
                for p in &slot.json_path {
                    cur = cur.and_then(|c| c.get(p));
                }
                match cur {
                    None => Val::Null,
                    Some(serde_json::Value::String(s)) if s.len() > max_field => {
                        return Err(RowError::col(
                            &slot.name,
                            format!(
                                "field is {} bytes, over max_field_bytes ({max_field})",
                                s.len()
                            ),
                        ));
                    }
                    Some(v) => parse_json(v, slot.ty, &plan.parse)
                        .map_err(|r| RowError::col(&slot.name, r))?,
                }
            } else {
                match &cells[slot.input] {
                    Cell::Text(b) => {
                        let b = *b;
                        let b: &[u8] = if inp.trim { values::trim_ascii(b) } else { b };
                        parse_text(b, slot.ty, &plan.parse)
                            .map_err(|r| RowError::col(&slot.name, r))?
                    }
                    Cell::Json(v) => parse_json(v, slot.ty, &plan.parse)
                        .map_err(|r| RowError::col(&slot.name, r))?,
                    Cell::Missing => Val::Null,
                }
            };
            if matches!(v, Val::Null) && slot.required {
                return Err(RowError::col(
                    &slot.name,
                    "required value is missing".into(),
                ));
            }
            vals.push(v);
        }
        self.cell_null = cell_null;
        self.cells_store = recycle_cells(cells);
        let (year, month) = match &vals[plan.partition_slot] {
            Val::Ts(us) => values::ts_year_month(*us),
            Val::Date(d) => {
                let (y, m, _) = values::date_ymd(i64::from(*d));
                (y, m)
            }
            _ => {
                return Err(RowError::col(
                    &plan.slots[plan.partition_slot].name,
                    "partition column is missing, so the row has no year/month".into(),
                ))
            }
        };
        if !(1..=9999).contains(&year) {
            return Err(RowError::col(
                &plan.slots[plan.partition_slot].name,
                format!("year {year} is outside 0001-9999"),
            ));
        }
        if let Some(o) = plan.order_slot {
            if matches!(vals[o], Val::Null) {
                return Err(RowError::col(
                    &plan.slots[o].name,
                    "the dedup ordering value is missing, so the row's version is unknown".into(),
                ));
            }
        }
        // Dedup.
        if !plan.key_slots.is_empty() {
            self.key_buf.clear();
            for &s in &plan.key_slots {
                canonical_bytes(&vals[s], &mut self.key_buf);
                self.key_buf.push(0x1f);
            }
            let h = xxhash_rust::xxh3::xxh3_128(&self.key_buf);
            match (dedup, &self.pass) {
                (Dedup::First(seen), _) => {
                    if seen.entry(h).1 {
                        return Ok(false);
                    }
                }
                (Dedup::Latest(map), Pass::Index) => {
                    let version = match plan.order_slot.map(|s| &vals[s]) {
                        Some(Val::I64(v)) | Some(Val::Ts(v)) => *v,
                        Some(Val::Date(d)) => i64::from(*d),
                        _ => i64::MIN,
                    };
                    let (e, present) = map.entry(h);
                    if !present {
                        *e = (version, row_no);
                    }
                    // Ties go to the later row: a re-sent change supersedes the earlier copy.
                    if version >= e.0 {
                        *e = (version, row_no);
                    }
                    return Ok(true);
                }
                (Dedup::Latest(map), Pass::Write) => {
                    if map.get(h).map(|w| w.1) != Some(row_no) {
                        return Ok(false);
                    }
                }
                (Dedup::None, _) => {}
            }
        }
        if matches!(self.pass, Pass::Index) {
            return Ok(true);
        }
        let part = match self.parts.get(year, month) {
            Ok(p) => p,
            Err(e) => {
                self.fatal = Some(e);
                return Ok(true);
            }
        };
        for (o, b) in plan.outs.iter().zip(part.builders.iter_mut()) {
            let v = &vals[o.slot];
            match o.kind {
                OutKind::Plain => b.append(v),
                OutKind::Hash => match v {
                    Val::Null => b.append(&Val::Null),
                    v => {
                        self.key_buf.clear();
                        canonical_text(v, &mut self.key_buf);
                        let mut m = self.mac.clone().ok_or_else(|| RowError {
                            column: None,
                            reason: "no hash key".into(),
                        })?;
                        m.update(&self.key_buf);
                        let digest = m.finalize().into_bytes();
                        let mut hex_buf = [0u8; 64];
                        let hex_str = hex::encode_to_slice(digest, &mut hex_buf)
                            .ok()
                            .and_then(|()| std::str::from_utf8(&hex_buf).ok())
                            .unwrap_or_default();
                        b.append(&Val::Str(Cow::Borrowed(hex_str)));
                    }
                },
                OutKind::Year => match v {
                    Val::Ts(us) => b.append(&Val::I64(values::ts_year_month(*us).0)),
                    Val::Date(d) => b.append(&Val::I64(values::date_ymd(i64::from(*d)).0)),
                    _ => b.append(&Val::Null),
                },
                OutKind::AgeBand {
                    as_of_slot,
                    band_years,
                } => {
                    let band = match (ymd_of(v), ymd_of(&vals[as_of_slot])) {
                        (Some(dob), Some(at)) => {
                            let mut age = at.0 - dob.0;
                            if (at.1, at.2) < (dob.1, dob.2) {
                                age -= 1;
                            }
                            (age >= 0).then(|| {
                                let w = i64::from(band_years.max(1));
                                let lo = age / w * w;
                                if w == 1 {
                                    format!("{lo}")
                                } else {
                                    format!("{lo}-{}", lo + w - 1)
                                }
                            })
                        }
                        _ => None,
                    };
                    match band {
                        Some(s) => b.append(&Val::Str(Cow::Owned(s))),
                        None => b.append(&Val::Null),
                    }
                }
            }
        }
        part.rows += 1;
        let flush = part.rows >= self.job.table.output.batch_rows;
        self.vals_store = recycle_vals(vals);
        self.parts.buffered += 1;
        let res = if flush {
            self.parts.flush_current()
        } else if self.parts.buffered > self.job.table.output.batch_rows.saturating_mul(8) {
            // Rows spread over many partitions: bound the builders by flushing the fullest.
            self.parts.flush_largest()
        } else {
            Ok(())
        };
        if let Err(e) = res {
            self.fatal = Some(e);
        }
        Ok(true)
    }

    fn quarantine(
        &mut self,
        batch: &RawBatch,
        rec: &RawRec,
        e: RowError,
    ) -> Result<(), TransformError> {
        let key = self.job.source_key;
        let io = |e: std::io::Error| TransformError::Io {
            key: key.to_string(),
            source: e,
        };
        if self.quarantine.is_none() {
            self.quarantine = Some(BufWriter::new(
                File::create(&self.quarantine_path).map_err(io)?,
            ));
        }
        let raw: Cow<'_, str> = match self.job.table.format {
            InputFormat::Jsonl => String::from_utf8_lossy(batch.bytes(rec)),
            InputFormat::Csv if rec.oversize => String::from_utf8_lossy(batch.bytes(rec)),
            InputFormat::Csv => Cow::Owned(reencode_csv(
                batch,
                rec,
                self.job.table.csv.delimiter as u8,
                self.job.table.csv.quote as u8,
            )),
        };
        let q = QuarantineRecord {
            object: key,
            line: batch.start_line(rec, self.job.table.format),
            column: e.column.as_deref(),
            reason: &e.reason,
            raw,
            raw_truncated: rec.oversize,
        };
        let w = self
            .quarantine
            .as_mut()
            .ok_or(TransformError::Internal("quarantine writer".into()))?;
        serde_json::to_writer(&mut *w, &q).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        Ok(())
    }

    fn finish(mut self) -> Result<EngineOutput, TransformError> {
        let files = self.parts.finish()?;
        let quarantine = match self.quarantine.take() {
            Some(mut w) => {
                w.flush().map_err(|e| TransformError::Io {
                    key: self.job.source_key.to_string(),
                    source: e,
                })?;
                Some(self.quarantine_path.clone())
            }
            None => None,
        };
        Ok(EngineOutput {
            files,
            quarantine,
            counts: self.counts,
            missing_columns: self.missing_columns,
            unknown_columns: self.unknown_columns,
        })
    }
}

fn ymd_of(v: &Val<'_>) -> Option<(i64, u32, u32)> {
    match v {
        Val::Date(d) => Some(values::date_ymd(i64::from(*d))),
        Val::Ts(us) => Some(values::date_ymd(us.div_euclid(86_400_000_000))),
        _ => None,
    }
}

/// Bytes that identify a value for the dedup key (type-tagged, so `1` and `"1"` differ).
fn canonical_bytes(v: &Val<'_>, out: &mut Vec<u8>) {
    match v {
        Val::Null => out.push(0),
        Val::I64(x) | Val::Ts(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Val::F64(x) => {
            out.push(2);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Val::Dec(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Val::Bool(b) => out.extend_from_slice(&[4, u8::from(*b)]),
        Val::Str(s) => {
            out.push(5);
            out.extend_from_slice(s.as_bytes());
        }
        Val::Bin(b) => {
            out.push(6);
            out.extend_from_slice(b);
        }
        Val::Date(d) => {
            out.push(7);
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// Cells or values of one row borrow from that row's batch; their empty Vecs go back into
/// the scanner so the next row reuses the allocation (collecting an emptied `IntoIter` into a
/// Vec of the same layout reuses the buffer).
fn recycle_cells(mut v: Vec<Cell<'_>>) -> Vec<Cell<'static>> {
    v.clear();
    v.into_iter().map(|_| Cell::Missing).collect()
}

fn recycle_vals(mut v: Vec<Val<'_>>) -> Vec<Val<'static>> {
    v.clear();
    v.into_iter().map(|_| Val::Null).collect()
}

/// One input field of a row: text (CSV, or a JSON string), a JSON value, or nothing.
enum Cell<'c> {
    Missing,
    Text(&'c [u8]),
    Json(&'c serde_json::Value),
}

/// Decimal text of an integer without `core::fmt` (the hot path of hashing id columns).
fn push_i64(x: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = x.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if x < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// The text a value is hashed as: what a user would type to look it up (`123`, `a@b.c`).
fn canonical_text(v: &Val<'_>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = match v {
        Val::Null => Ok(()),
        Val::I64(x) => {
            push_i64(*x, out);
            Ok(())
        }
        Val::F64(x) => write!(out, "{x}"),
        Val::Dec(x) => write!(out, "{x}"),
        Val::Bool(b) => write!(out, "{b}"),
        Val::Str(s) => out.write_all(s.as_bytes()),
        Val::Bin(b) => out.write_all(b),
        Val::Date(d) => {
            let (y, m, dd) = values::date_ymd(i64::from(*d));
            write!(out, "{y:04}-{m:02}-{dd:02}")
        }
        Val::Ts(us) => {
            let (y, m, dd) = values::date_ymd(us.div_euclid(86_400_000_000));
            let s = us.rem_euclid(86_400_000_000);
            write!(
                out,
                "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
                s / 3_600_000_000,
                s / 60_000_000 % 60,
                s / 1_000_000 % 60,
                s % 1_000_000
            )
        }
    };
}

/// A CSV record written back as one CSV line (quoting where needed), for quarantine.
#[cfg(test)]
#[test]
fn push_i64_matches_display() {
    for x in [0i64, 7, -7, 10, 599_999_999, i64::MAX, i64::MIN] {
        let mut v = Vec::new();
        push_i64(x, &mut v);
        assert_eq!(String::from_utf8(v).as_deref(), Ok(x.to_string().as_str()));
    }
}

fn reencode_csv(batch: &RawBatch, rec: &RawRec, delim: u8, quote: u8) -> String {
    let mut out = Vec::with_capacity(rec.end - rec.start + rec.nfields * 3);
    for i in 0..rec.nfields {
        if i > 0 {
            out.push(delim);
        }
        let f = batch.field(rec, i);
        if f.iter()
            .any(|&c| c == delim || c == quote || c == b'\n' || c == b'\r')
        {
            out.push(quote);
            for &c in f {
                if c == quote {
                    out.push(quote);
                }
                out.push(c);
            }
            out.push(quote);
        } else {
            out.extend_from_slice(f);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Column builders for one partition's rows in progress.
enum ColBuilder {
    I64(Int64Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl ColBuilder {
    fn new(dt: &DataType) -> Self {
        match dt {
            DataType::Int64 => ColBuilder::I64(Int64Builder::new()),
            DataType::Float64 => ColBuilder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => ColBuilder::Dec(
                Decimal128Builder::new()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Builder::new()),
            ),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::new()),
            DataType::Binary => ColBuilder::Bin(BinaryBuilder::new()),
            DataType::Date32 => ColBuilder::Date(Date32Builder::new()),
            DataType::Timestamp(_, _) => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            _ => ColBuilder::Str(StringBuilder::new()),
        }
    }

    /// Appends a value already checked against the column's type by the parser.
    fn append(&mut self, v: &Val<'_>) {
        match (self, v) {
            (ColBuilder::I64(b), Val::I64(x)) => b.append_value(*x),
            (ColBuilder::F64(b), Val::F64(x)) => b.append_value(*x),
            (ColBuilder::Dec(b), Val::Dec(x)) => b.append_value(*x),
            (ColBuilder::Bool(b), Val::Bool(x)) => b.append_value(*x),
            (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
            (ColBuilder::Bin(b), Val::Bin(x)) => b.append_value(x),
            (ColBuilder::Date(b), Val::Date(x)) => b.append_value(*x),
            (ColBuilder::Ts(b), Val::Ts(x)) => b.append_value(*x),
            (b, _) => b.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Dec(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::Date(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::Dec(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Bin(b) => Arc::new(b.finish()),
            ColBuilder::Date(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

struct PartState {
    year: i64,
    month: u32,
    builders: Vec<ColBuilder>,
    rows: usize,
    writer: Option<(ArrowWriter<BufWriter<File>>, PathBuf, u32, u64)>,
    next_part: u32,
    last_used: u64,
}

/// The open partitions: builders and a Parquet writer each, at most `max_open_partitions`
/// writers at once (least recently used closed first).
struct Partitions {
    schema: arrow::datatypes::SchemaRef,
    props: WriterProperties,
    work_dir: PathBuf,
    target_file_bytes: u64,
    row_group_bytes: usize,
    buffer_budget_bytes: usize,
    max_open: usize,
    map: HashMap<(i64, u32), PartState>,
    current: Option<(i64, u32)>,
    tick: u64,
    files: Vec<LocalFile>,
    file_seq: u64,
    /// Rows in builders across all partitions, not yet handed to a writer.
    buffered: usize,
    dtypes: Vec<DataType>,
}

impl Partitions {
    fn new(job: &EngineJob<'_>) -> Result<Self, TransformError> {
        let o = &job.table.output;
        let level = ZstdLevel::try_new(o.zstd_level)
            .map_err(|e| TransformError::Internal(format!("zstd level: {e}")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(Some(1 << 20))
            // Row-group (chunk) statistics are what Athena and Spark prune on; page-level
            // statistics and the page index cost time on every page for little use there.
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk);
        // Keyed hashes are random, and numbers and timestamps from OLTP tables are mostly ids,
        // amounts and instants, nearly unique per row: a dictionary rarely pays off there (ZSTD
        // still catches repeats) and interning costs time on every value. Strings, dates and
        // booleans keep dictionaries.
        let props = job
            .plan
            .outs
            .iter()
            .filter(|o| {
                matches!(o.kind, OutKind::Hash)
                    || matches!(o.data_type, DataType::Timestamp(_, _) | DataType::Float64)
            })
            .fold(props, |p, o| {
                let path = parquet::schema::types::ColumnPath::from(o.name.as_str());
                let p = p.set_column_dictionary_enabled(path.clone(), false);
                if matches!(o.kind, OutKind::Hash) {
                    // Min/max of random hex prune nothing; comparing every value costs time.
                    p.set_column_statistics_enabled(
                        path,
                        parquet::file::properties::EnabledStatistics::None,
                    )
                } else {
                    p
                }
            })
            .build();
        Ok(Self {
            schema: job.plan.schema.clone(),
            props,
            work_dir: job.work_dir.to_path_buf(),
            target_file_bytes: o.target_file_size_bytes,
            row_group_bytes: o.row_group_bytes,
            buffer_budget_bytes: o.buffer_budget_bytes,
            max_open: o.max_open_partitions,
            map: HashMap::new(),
            current: None,
            tick: 0,
            files: Vec::new(),
            file_seq: 0,
            buffered: 0,
            dtypes: job.plan.outs.iter().map(|o| o.data_type.clone()).collect(),
        })
    }

    fn get(&mut self, year: i64, month: u32) -> Result<&mut PartState, TransformError> {
        if !(1..=9999).contains(&year) {
            return Err(TransformError::Internal(format!(
                "year {year} outside 0001-9999"
            )));
        }
        self.tick += 1;
        let k = (year, month);
        if self.current != Some(k) {
            self.current = Some(k);
            if !self.map.contains_key(&k) {
                let builders = self.dtypes.iter().map(ColBuilder::new).collect();
                self.map.insert(
                    k,
                    PartState {
                        year,
                        month,
                        builders,
                        rows: 0,
                        writer: None,
                        next_part: 0,
                        last_used: 0,
                    },
                );
            }
        }
        let tick = self.tick;
        let p = self
            .map
            .get_mut(&k)
            .ok_or_else(|| TransformError::Internal("partition vanished".into()))?;
        p.last_used = tick;
        Ok(p)
    }

    /// Writes the rows of the partition holding the most.
    fn flush_largest(&mut self) -> Result<(), TransformError> {
        let k = self.map.iter().max_by_key(|(_, p)| p.rows).map(|(k, _)| *k);
        match k {
            Some(k) => self.flush(k),
            None => Ok(()),
        }
    }

    /// Writes the current partition's buffered rows as a record batch.
    fn flush_current(&mut self) -> Result<(), TransformError> {
        if let Some(k) = self.current {
            self.flush(k)?;
        }
        Ok(())
    }

    fn flush(&mut self, k: (i64, u32)) -> Result<(), TransformError> {
        let open = self.map.values().filter(|p| p.writer.is_some()).count();
        let needs_open = self
            .map
            .get(&k)
            .is_some_and(|p| p.rows > 0 && p.writer.is_none());
        if needs_open && open >= self.max_open {
            // Close the least recently used open partition's file.
            let victim = self
                .map
                .iter()
                .filter(|(kk, p)| p.writer.is_some() && **kk != k)
                .min_by_key(|(_, p)| p.last_used)
                .map(|(kk, _)| *kk);
            if let Some(v) = victim {
                self.close_file(v)?;
            }
        }
        let schema = self.schema.clone();
        let Some(p) = self.map.get_mut(&k) else {
            return Ok(());
        };
        if p.rows == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = p.builders.iter_mut().map(ColBuilder::finish).collect();
        let n = p.rows as u64;
        self.buffered = self.buffered.saturating_sub(p.rows);
        p.rows = 0;
        let batch = RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| TransformError::Internal(format!("record batch: {e}")))?;
        if p.writer.is_none() {
            self.file_seq += 1;
            let path = self
                .work_dir
                .join(format!("part-{}.parquet", self.file_seq));
            let f = File::create(&path).map_err(|e| TransformError::Io {
                key: path.display().to_string(),
                source: e,
            })?;
            let w = ArrowWriter::try_new(
                BufWriter::with_capacity(1 << 20, f),
                schema,
                Some(self.props.clone()),
            )
            .map_err(|e| TransformError::Parquet(e.to_string()))?;
            let part = p.next_part;
            p.next_part += 1;
            p.writer = Some((w, path, part, 0));
        }
        let mut roll = false;
        if let Some((w, _, _, rows)) = p.writer.as_mut() {
            w.write(&batch)
                .map_err(|e| TransformError::Parquet(e.to_string()))?;
            *rows += n;
            if w.in_progress_size() >= self.row_group_bytes {
                w.flush()
                    .map_err(|e| TransformError::Parquet(e.to_string()))?;
            }
            roll = w.bytes_written() as u64 + w.in_progress_size() as u64 >= self.target_file_bytes;
        }
        if roll {
            self.close_file(k)?;
        }
        // All open partitions together stay within the buffer budget: when over, the largest
        // row group in progress is flushed (writers hold about twice their encoded size).
        let total: usize = self
            .map
            .values()
            .filter_map(|p| p.writer.as_ref())
            .map(|w| w.0.in_progress_size())
            .sum();
        if total > self.buffer_budget_bytes {
            if let Some(w) = self
                .map
                .values_mut()
                .filter_map(|p| p.writer.as_mut())
                .max_by_key(|w| w.0.in_progress_size())
            {
                w.0.flush()
                    .map_err(|e| TransformError::Parquet(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn close_file(&mut self, k: (i64, u32)) -> Result<(), TransformError> {
        let Some(p) = self.map.get_mut(&k) else {
            return Ok(());
        };
        let Some((w, path, part, rows)) = p.writer.take() else {
            return Ok(());
        };
        let inner = w
            .into_inner()
            .map_err(|e| TransformError::Parquet(e.to_string()))?;
        let f = inner.into_inner().map_err(|e| TransformError::Io {
            key: path.display().to_string(),
            source: e.into_error(),
        })?;
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        self.files.push(LocalFile {
            path,
            year: format!("{:04}", p.year),
            month: format!("{:02}", p.month),
            part,
            rows,
            bytes,
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<LocalFile>, TransformError> {
        let mut keys: Vec<(i64, u32)> = self.map.keys().copied().collect();
        keys.sort();
        for k in keys {
            self.flush(k)?;
            self.close_file(k)?;
        }
        self.files
            .sort_by(|a, b| (&a.year, &a.month, a.part).cmp(&(&b.year, &b.month, b.part)));
        Ok(self.files)
    }
}

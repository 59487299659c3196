//! One record to typed values, in four steps: the record's own checks (size; a JSON object
//! per line, or the header's number of CSV fields); one cell per input column (a CSV field or
//! a JSON key); null tokens, size limits and JSON columns parsed; then one typed value per
//! plan slot, with what the row must have (required values, a partition year and month, a
//! dedup version, and for tables that load into Redshift, output strings and binary values
//! that fit its VARCHAR and VARBYTE). Anything wrong is a `RowError`, and the row goes to quarantine.
//!
//! The hot path: the buffers are reused across rows (no allocation per row for CSV input
//! beyond what the values themselves need).

use arrow::datatypes::DataType;

use crate::config::InputFormat;
use crate::transform::decode::{RawBatch, RawRec};
use crate::transform::plan::{OutKind, Plan};
use crate::transform::values::{self, parse_json, parse_text, Val};
use crate::warehouse::{
    REDSHIFT_COPY_MAX_ROW_BYTES, REDSHIFT_VARBYTE_MAX_BYTES, REDSHIFT_VARCHAR_MAX_BYTES,
};

use super::change::{self, Change};
use super::writer::PartitionKey;
use super::EngineJob;

/// What became of one row.
pub(crate) enum RowOutcome {
    /// Written to its partition (on the index pass: valid, and its version recorded).
    Written,
    /// Another row of the object has the same key and wins.
    Duplicate,
    /// Rejected: it goes to the quarantine file.
    Quarantined(RowError),
}

/// Why a row was rejected.
#[derive(Debug)]
pub(crate) struct RowError {
    /// The column at fault, if one is.
    pub column: Option<String>,
    pub reason: String,
}

impl RowError {
    pub(crate) fn row(reason: String) -> Self {
        Self {
            column: None,
            reason,
        }
    }

    pub(crate) fn col(column: &str, reason: String) -> Self {
        Self {
            column: Some(column.to_string()),
            reason,
        }
    }
}

/// Where each input column is in a CSV record, from the header (or by position).
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldMap {
    /// Input column → field index in the CSV record (None: the header lacks it).
    pub field_of_input: Vec<Option<usize>>,
    /// Fields every CSV record must have.
    pub expected_fields: Option<usize>,
}

/// The JSON documents a row owns: the JSON-lines object, and the parsed object of each JSON
/// column. The row's values borrow from them.
#[derive(Default)]
pub(crate) struct RowDocs {
    row: Option<serde_json::Value>,
    cols: Vec<Option<serde_json::Value>>,
}

/// One input field of a row: text (CSV, or a JSON string), a JSON value, or nothing.
enum Cell<'c> {
    Missing,
    Text(&'c [u8]),
    Json(&'c serde_json::Value),
}

/// A valid row: one value per plan slot, the partition it belongs to, and for a cdc table the
/// change it records.
pub(crate) struct Row<'r> {
    pub vals: Vec<Val<'r>>,
    pub partition: PartitionKey,
    pub change: Option<Change>,
}

/// Reads records into `Row`s, reusing its buffers from row to row.
pub(crate) struct RowReader<'a> {
    plan: &'a Plan,
    format: InputFormat,
    max_field_bytes: usize,
    max_record_bytes: usize,
    /// Output columns (indices into `Plan::outs`) whose values must fit Redshift's VARCHAR or
    /// VARBYTE: the plain string and binary outputs of a table with a warehouse section, empty
    /// otherwise.
    sized_outs: Vec<usize>,
    pub fields: FieldMap,
    cells: Vec<Cell<'static>>,
    cell_null: Vec<bool>,
    vals: Vec<Val<'static>>,
}

impl<'a> RowReader<'a> {
    pub(crate) fn new(job: &'a EngineJob<'a>, fields: FieldMap) -> Self {
        let o = &job.table.output;
        Self {
            plan: job.plan,
            format: job.table.format,
            max_field_bytes: o.max_field_bytes,
            max_record_bytes: o.max_record_bytes,
            sized_outs: sized_outs(job),
            fields,
            cells: Vec::new(),
            cell_null: Vec::new(),
            vals: Vec::new(),
        }
    }

    /// Reads one record. `docs` holds the JSON the values may borrow.
    pub(crate) fn read<'r>(
        &mut self,
        batch: &'r RawBatch,
        rec: &'r RawRec,
        docs: &'r mut RowDocs,
    ) -> Result<Row<'r>, RowError> {
        let mut vals = recycle_vals(std::mem::take(&mut self.vals));
        match self.read_into(batch, rec, docs, &mut vals) {
            Ok((partition, change)) => Ok(Row {
                vals,
                partition,
                change,
            }),
            Err(e) => {
                self.vals = recycle_vals(vals);
                Err(e)
            }
        }
    }

    /// Hands a row's buffer back for the next row.
    pub(crate) fn recycle(&mut self, row: Row<'_>) {
        self.vals = recycle_vals(row.vals);
    }

    fn read_into<'r>(
        &mut self,
        batch: &'r RawBatch,
        rec: &'r RawRec,
        docs: &'r mut RowDocs,
        vals: &mut Vec<Val<'r>>,
    ) -> Result<(PartitionKey, Option<Change>), RowError> {
        if rec.oversize {
            return Err(RowError::row(format!(
                "record is {} bytes, over max_record_bytes ({})",
                rec.total_bytes, self.max_record_bytes
            )));
        }
        let RowDocs { row, cols } = docs;
        *row = self.row_doc(batch, rec)?;
        let row: &'r Option<serde_json::Value> = row;
        // A change event: its envelope first; the values come from its row image.
        let (change, image) = match (&self.plan.cdc, row) {
            (Some(cdc), Some(doc)) => {
                let e = change::read_event(cdc, self.plan, doc)?;
                (Some(e.change), e.image)
            }
            _ => (None, row.as_ref().and_then(serde_json::Value::as_object)),
        };
        // The Vecs' allocations are reused across rows (taken here, handed back below).
        let mut cells = recycle_cells(std::mem::take(&mut self.cells));
        let mut cell_null = std::mem::take(&mut self.cell_null);
        self.fill_cells(batch, rec, image, &mut cells);
        let res = match self.nulls_and_json_columns(&cells, &mut cell_null, cols) {
            Ok(()) => self.typed_values(&cells, &cell_null, cols, vals),
            Err(e) => Err(e),
        };
        self.cells = recycle_cells(cells);
        self.cell_null = cell_null;
        res?;
        if let (Some(cdc), Some(c)) = (&self.plan.cdc, &change) {
            change::finish_row(cdc, self.plan, c, vals)?;
        }
        let partition = partition_of(self.plan, vals)?;
        check_order_value(self.plan, vals)?;
        self.check_warehouse_sizes(vals)?;
        Ok((partition, change))
    }

    /// JSON lines: the row's object. CSV: checks the number of fields.
    fn row_doc(
        &self,
        batch: &RawBatch,
        rec: &RawRec,
    ) -> Result<Option<serde_json::Value>, RowError> {
        match self.format {
            InputFormat::Jsonl | InputFormat::Cdc => {
                let v: serde_json::Value = serde_json::from_slice(batch.bytes(rec))
                    .map_err(|e| RowError::row(format!("bad JSON: {e}")))?;
                if !v.is_object() {
                    return Err(RowError::row(format!(
                        "expected a JSON object, found a {}",
                        values::json_kind(&v)
                    )));
                }
                Ok(Some(v))
            }
            InputFormat::Csv => match self.fields.expected_fields {
                Some(n) if rec.nfields != n => Err(RowError::row(format!(
                    "expected {n} fields, found {}",
                    rec.nfields
                ))),
                _ => Ok(None),
            },
        }
    }

    /// One cell per input column: raw text (CSV, or a JSON string) or a JSON value. JSON
    /// input reads the object (a change event's row image; none for a TRUNCATE), where a
    /// change's built-in columns are never looked up: its envelope fills them.
    fn fill_cells<'r>(
        &self,
        batch: &'r RawBatch,
        rec: &'r RawRec,
        object: Option<&'r serde_json::Map<String, serde_json::Value>>,
        cells: &mut Vec<Cell<'r>>,
    ) {
        let builtin = |i: usize| self.plan.cdc.as_ref().is_some_and(|c| c.builtin_input[i]);
        cells.extend(self.plan.inputs.iter().enumerate().map(|(i, inp)| {
            if self.format == InputFormat::Csv {
                return match self.fields.field_of_input.get(i).copied().flatten() {
                    Some(j) => Cell::Text(batch.field(rec, j)),
                    None => Cell::Missing,
                };
            }
            match object
                .filter(|_| !builtin(i))
                .and_then(|o| o.get(&inp.name))
            {
                None | Some(serde_json::Value::Null) => Cell::Missing,
                Some(serde_json::Value::String(s)) => Cell::Text(s.as_bytes()),
                Some(v) => Cell::Json(v),
            }
        }));
    }

    /// Marks null cells (missing, or a null token), refuses oversize fields, and parses each
    /// JSON column's object into `cols`.
    fn nulls_and_json_columns(
        &self,
        cells: &[Cell<'_>],
        cell_null: &mut Vec<bool>,
        cols: &mut Vec<Option<serde_json::Value>>,
    ) -> Result<(), RowError> {
        let max_field = self.max_field_bytes;
        cell_null.clear();
        cell_null.resize(cells.len(), false);
        for (i, (inp, cell)) in self.plan.inputs.iter().zip(cells).enumerate() {
            match cell {
                Cell::Missing => cell_null[i] = true,
                Cell::Text(b) => {
                    if b.len() > max_field {
                        return Err(too_big(&inp.name, b.len(), max_field));
                    }
                    let tb = values::trim_ascii(b);
                    if inp.null_tokens.iter().any(|n| n.as_slice() == tb) {
                        cell_null[i] = true;
                    }
                }
                Cell::Json(_) => {}
            }
            if inp.is_json {
                cols.push(json_column(&inp.name, cell, cell_null[i])?);
            }
        }
        Ok(())
    }

    /// One typed value per slot. The hottest loop of the engine: kept in one piece, with the
    /// per-slot lookups inline.
    fn typed_values<'r>(
        &self,
        cells: &[Cell<'r>],
        cell_null: &[bool],
        cols: &'r [Option<serde_json::Value>],
        vals: &mut Vec<Val<'r>>,
    ) -> Result<(), RowError> {
        let plan = self.plan;
        let max_field = self.max_field_bytes;
        for slot in &plan.slots {
            let inp = &plan.inputs[slot.input];
            let v = if cell_null[slot.input] {
                Val::Null
            } else if inp.is_json {
                let mut cur = cols[inp.json_index].as_ref();
                for p in &slot.json_path {
                    cur = cur.and_then(|c| c.get(p));
                }
                match cur {
                    None => Val::Null,
                    Some(serde_json::Value::String(s)) if s.len() > max_field => {
                        return Err(too_big(&slot.name, s.len(), max_field));
                    }
                    Some(v) => parse_json(v, slot.ty, &plan.parse)
                        .map_err(|r| RowError::col(&slot.name, r))?,
                }
            } else {
                match &cells[slot.input] {
                    Cell::Text(b) => {
                        let b: &'r [u8] = b;
                        let b = if inp.trim { values::trim_ascii(b) } else { b };
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
        Ok(())
    }

    /// Refuses a row with an output string longer than Redshift's VARCHAR holds, or a binary
    /// value longer than its VARBYTE holds: the COPY would fail the whole load on it. Checked
    /// here, before the row is deduplicated or written, so both passes agree and no builder
    /// holds half a row. A length compare per string or binary output, nothing when the table
    /// does not load into Redshift.
    fn check_warehouse_sizes(&self, vals: &[Val<'_>]) -> Result<(), RowError> {
        // The other outputs are numbers, dates and short derived strings: 64 bytes each is
        // more than any of them takes.
        let mut row = 64 * (self.plan.outs.len() - self.sized_outs.len());
        for &o in &self.sized_outs {
            let out = &self.plan.outs[o];
            let (len, ty, max) = match &vals[out.slot] {
                Val::Str(s) => (s.len(), "VARCHAR", REDSHIFT_VARCHAR_MAX_BYTES),
                Val::Bin(b) => (b.len(), "VARBYTE", REDSHIFT_VARBYTE_MAX_BYTES),
                _ => continue,
            };
            if len > max {
                return Err(RowError::col(
                    &out.name,
                    format!("value is {len} bytes; Redshift {ty} holds at most {max} bytes"),
                ));
            }
            row += len;
        }
        if !self.sized_outs.is_empty() && row > REDSHIFT_COPY_MAX_ROW_BYTES {
            return Err(RowError::row(format!(
                "the row's values add up to about {row} bytes; Redshift's COPY takes rows of at most {REDSHIFT_COPY_MAX_ROW_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// The outputs `check_warehouse_sizes` looks at. Only plain outputs can be long: the value is
/// the slot's value as parsed (a cleaned field, a JSON field's text, which can be longer than
/// the input's bytes once re-serialized, or the bytes of a base64 field). Derived strings are
/// short by construction (a keyed hash is 64 hex digits, an age band a few), so they are not
/// checked.
fn sized_outs(job: &EngineJob<'_>) -> Vec<usize> {
    if job.table.warehouse.is_none() {
        return Vec::new();
    }
    job.plan
        .outs
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            matches!(o.kind, OutKind::Plain)
                && matches!(
                    o.data_type,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
                )
        })
        .map(|(i, _)| i)
        .collect()
}

fn too_big(column: &str, len: usize, max_field: usize) -> RowError {
    RowError::col(
        column,
        format!("field is {len} bytes, over max_field_bytes ({max_field})"),
    )
}

/// A JSON column's object: parsed from text, or the JSON-lines value itself.
fn json_column(
    name: &str,
    cell: &Cell<'_>,
    null: bool,
) -> Result<Option<serde_json::Value>, RowError> {
    let doc = match (cell, null) {
        (_, true) => None,
        (Cell::Text(b), false) => Some(
            serde_json::from_slice::<serde_json::Value>(b)
                .map_err(|e| RowError::col(name, format!("bad JSON: {e}")))?,
        ),
        (Cell::Json(v), false) => Some((*v).clone()),
        (Cell::Missing, false) => None,
    };
    match &doc {
        Some(d) if !d.is_object() => Err(RowError::col(
            name,
            format!("expected a JSON object, found a {}", values::json_kind(d)),
        )),
        _ => Ok(doc),
    }
}

/// The row's partition, from its partition column.
fn partition_of(plan: &Plan, vals: &[Val<'_>]) -> Result<PartitionKey, RowError> {
    let column = || &plan.slots[plan.partition_slot].name;
    let (year, month) = match &vals[plan.partition_slot] {
        Val::Ts(us) => values::ts_year_month(*us),
        Val::Date(d) => {
            let (y, m, _) = values::date_ymd(i64::from(*d));
            (y, m)
        }
        _ => {
            return Err(RowError::col(
                column(),
                "partition column is missing, so the row has no year/month".into(),
            ))
        }
    };
    if !(1..=9999).contains(&year) {
        return Err(RowError::col(
            column(),
            format!("year {year} is outside 0001-9999"),
        ));
    }
    Ok(PartitionKey { year, month })
}

/// With a dedup ordering column, a row without a version cannot be placed.
fn check_order_value(plan: &Plan, vals: &[Val<'_>]) -> Result<(), RowError> {
    match plan.order_slot {
        Some(o) if matches!(vals[o], Val::Null) => Err(RowError::col(
            &plan.slots[o].name,
            "the dedup ordering value is missing, so the row's version is unknown".into(),
        )),
        _ => Ok(()),
    }
}

/// Cells or values of one row borrow from that row's batch; their empty Vecs go back into
/// the reader so the next row reuses the allocation (collecting an emptied `IntoIter` into a
/// Vec of the same layout reuses the buffer).
fn recycle_cells<'b>(mut v: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    v.clear();
    v.into_iter().map(|_| Cell::Missing).collect()
}

fn recycle_vals<'b>(mut v: Vec<Val<'_>>) -> Vec<Val<'b>> {
    v.clear();
    v.into_iter().map(|_| Val::Null).collect()
}

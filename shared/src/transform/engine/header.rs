//! The CSV header: where each declared column is among the record's fields, which declared
//! columns the header lacks (written as nulls, unless the object cannot do without them) and
//! which header columns the table does not declare (ignored; a drift signal).

use crate::config::{is_builtin_column, snake_case, InputFormat, TableConfig};
use crate::transform::decode::{RawBatch, RawRec};
use crate::transform::plan::Plan;
use crate::transform::values;
use crate::transform::TransformError;

use super::row::FieldMap;
use super::EngineJob;

/// What the header said.
pub(crate) struct Header {
    pub fields: FieldMap,
    /// Declared columns the header lacks.
    pub missing_columns: Vec<String>,
    /// Header columns the table does not declare.
    pub unknown_columns: Vec<String>,
}

/// The field map before any record is read: JSON lines have no header (`Some`, empty), CSV
/// without one maps fields by position, and CSV with one must read it first (`None`).
pub(crate) fn fields_without_header(table: &TableConfig, plan: &Plan) -> Option<FieldMap> {
    match table.format {
        InputFormat::Jsonl | InputFormat::Cdc => Some(FieldMap::default()),
        InputFormat::Csv if !table.csv.header => Some(FieldMap {
            field_of_input: (0..plan.inputs.len()).map(Some).collect(),
            expected_fields: Some(plan.inputs.len()),
        }),
        InputFormat::Csv => None,
    }
}

/// Maps the header record. Columns match by exact name, else by their snake_case forms
/// (`UserID` finds `user_id`); a built-in column (`_op`, …) only by its exact name.
pub(crate) fn read_header(
    job: &EngineJob<'_>,
    batch: &RawBatch,
    rec: &RawRec,
) -> Result<Header, TransformError> {
    if rec.oversize {
        return Err(TransformError::Header {
            key: job.source_key.to_string(),
            message: "the header record is over max_record_bytes".into(),
        });
    }
    let names: Vec<String> = (0..rec.nfields)
        .map(|i| String::from_utf8_lossy(values::trim_ascii(batch.field(rec, i))).into_owned())
        .collect();
    let field_of_input: Vec<Option<usize>> = job
        .plan
        .inputs
        .iter()
        .map(|inp| find_field(&names, &inp.name))
        .collect();
    let missing_columns = missing_columns(job, &field_of_input, names.len())?;
    let unknown_columns = names
        .iter()
        .enumerate()
        .filter(|(j, _)| !field_of_input.contains(&Some(*j)))
        .map(|(_, n)| n.clone())
        .collect();
    Ok(Header {
        fields: FieldMap {
            field_of_input,
            expected_fields: Some(names.len()),
        },
        missing_columns,
        unknown_columns,
    })
}

/// The declared columns the header lacks; an error when the object cannot do without one.
fn missing_columns(
    job: &EngineJob<'_>,
    field_of_input: &[Option<usize>],
    header_fields: usize,
) -> Result<Vec<String>, TransformError> {
    let mut missing = Vec::new();
    for (i, _) in field_of_input
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_none())
    {
        let inp = &job.plan.inputs[i];
        if object_needs(job.plan, i) {
            // Only counts: a headerless file's first row would be data (maybe PII),
            // and this message reaches logs.
            return Err(TransformError::Header {
                key: job.source_key.to_string(),
                message: format!(
                    "the header lacks required column `{}` ({header_fields} header fields; is the header row missing?)",
                    inp.name
                ),
            });
        }
        missing.push(inp.name.clone());
    }
    Ok(missing)
}

/// The header field of input column `name`.
fn find_field(names: &[String], name: &str) -> Option<usize> {
    let exact = names.iter().position(|n| n == name);
    if exact.is_some() || is_builtin_column(name) {
        return exact;
    }
    // A reserved `_` field belongs to its built-in column alone: a user column `lsn` must not
    // read `_lsn` through the snake_case fallback.
    let norm = snake_case(name);
    names
        .iter()
        .position(|n| !n.starts_with('_') && snake_case(n) == norm)
}

/// Whether the object cannot be read without input column `input`: a required value, or the
/// partition, dedup key or ordering column. Without its dedup key or ordering column an
/// object would silently collapse distinct rows; without its partition column no row has a
/// place.
fn object_needs(plan: &Plan, input: usize) -> bool {
    let slot = plan.slots.iter().position(|s| s.input == input);
    plan.slots.iter().any(|s| s.input == input && s.required)
        || slot == Some(plan.partition_slot)
        || slot.is_some_and(|s| plan.key_slots.contains(&s) || plan.order_slot == Some(s))
}

//! A table's config compiled once into what the row loop needs: value slots (one per plain
//! column, one per extracted JSON field), output columns (after PII rules), the Arrow schema
//! and the catalog definition.

use arrow::datatypes::{DataType, SchemaRef};

use crate::catalog::{CatalogColumn, TableDef};
use crate::config::{is_builtin_column, ColumnType, InputFormat, TableConfig};
use crate::lake::layout::PARTITION_KEYS;
use crate::schema::{self, Derive, OutputColumn};

use super::values::ParseOptions;

/// Where a slot's value comes from.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Input column (index into `Plan::inputs`).
    pub input: usize,
    /// Path inside a JSON column; empty for plain columns.
    pub json_path: Vec<String>,
    pub ty: ColumnType,
    pub required: bool,
    /// Name used in error messages and as the output base name.
    pub name: String,
}

/// One input column (CSV header name / JSON key).
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub name: String,
    pub is_json: bool,
    /// For JSON columns: index among the table's JSON columns (their parsed documents).
    pub json_index: usize,
    pub null_tokens: Vec<Vec<u8>>,
    /// Trim strings (other types are always trimmed).
    pub trim: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum OutKind {
    Plain,
    Hash,
    Year,
    AgeBand { as_of_slot: usize, band_years: u32 },
}

/// One output column.
#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub name: String,
    pub slot: usize,
    pub kind: OutKind,
    pub data_type: DataType,
    pub glue_type: String,
}

/// The compiled table.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub inputs: Vec<Input>,
    pub slots: Vec<Slot>,
    pub outs: Vec<Out>,
    /// The output schema the outputs were compiled from (names, types, nullability).
    pub columns: Vec<OutputColumn>,
    pub key_slots: Vec<usize>,
    pub order_slot: Option<usize>,
    pub partition_slot: usize,
    pub schema: SchemaRef,
    pub parse: ParseOptions,
    /// For `cdc` tables: where the change event's parts go.
    pub cdc: Option<CdcPlan>,
}

/// A cdc table's change rows: the built-in slots the event's envelope fills, and the rules
/// that depend on the change's kind.
#[derive(Debug, Clone)]
pub(crate) struct CdcPlan {
    pub op_slot: usize,
    pub lsn_slot: usize,
    pub commit_ts_slot: usize,
    pub unchanged_slot: usize,
    /// Per input: whether it is a built-in column (filled from the envelope, never read from
    /// the row image).
    pub builtin_input: Vec<bool>,
    /// The slots inserts, updates and snapshot reads must have (the declared `required`); the
    /// plan's own `Slot::required` is off for every slot of a cdc table.
    pub required_slots: Vec<usize>,
    /// The slots of each input, in slot order.
    pub slots_of_input: Vec<Vec<usize>>,
    /// Output columns as (input, output name), in output order: `_unchanged` lists the outputs
    /// of the inputs a change left out.
    pub output_inputs: Vec<(usize, String)>,
    /// The source relation (schema, table).
    pub relation: (String, String),
}

impl Plan {
    /// Compiles a table: value slots from the declared columns, outputs from the one output
    /// schema (`crate::schema`), so the plan and every reader of the schema agree.
    pub fn compile(t: &TableConfig) -> Result<Plan, String> {
        let (inputs, mut slots, slot_of) = inputs_and_slots(t);
        let columns = schema::output_columns(t)?;
        let slot_of_input = |name: &str| -> Result<usize, String> {
            let i = inputs
                .iter()
                .position(|x| x.name == name)
                .ok_or_else(|| format!("no column `{name}`"))?;
            slots
                .iter()
                .position(|s| s.input == i && s.json_path.is_empty())
                .ok_or_else(|| format!("`{name}` is a json column"))
        };
        let mut outs = Vec::with_capacity(columns.len());
        for c in &columns {
            let slot = slot_of(c.origin.column, c.origin.field)
                .ok_or_else(|| format!("output column `{}` has no input value", c.name))?;
            let kind = match &c.origin.derive {
                Derive::Value => OutKind::Plain,
                Derive::Hash => OutKind::Hash,
                Derive::Year => OutKind::Year,
                Derive::AgeBand { as_of, band_years } => OutKind::AgeBand {
                    as_of_slot: slot_of_input(as_of)?,
                    band_years: *band_years,
                },
            };
            outs.push(Out {
                name: c.name.clone(),
                slot,
                kind,
                data_type: c.arrow_type.clone(),
                glue_type: c.glue_type.clone(),
            });
        }
        let key_slots = match &t.dedup {
            Some(d) => d
                .key
                .iter()
                .map(|k| slot_of_input(k))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let order_slot = match t.dedup.as_ref().and_then(|d| d.order_by.as_deref()) {
            Some(o) => Some(slot_of_input(o)?),
            None => None,
        };
        let partition_slot = slot_of_input(&t.partition_by)?;
        let cdc = match t.format {
            InputFormat::Cdc => Some(CdcPlan::compile(t, &inputs, &mut slots, &columns)?),
            _ => None,
        };
        Ok(Plan {
            inputs,
            slots,
            outs,
            schema: schema::arrow_schema(&columns),
            columns,
            key_slots,
            order_slot,
            partition_slot,
            parse: ParseOptions {
                epoch_unit: t.epoch_unit,
                timestamp_formats: t.timestamp_formats.clone(),
            },
            cdc,
        })
    }

    /// The catalog definition of the table at `location` (ending in `/`).
    pub fn table_def(&self, t: &TableConfig, location: String) -> TableDef {
        TableDef {
            database: t.catalog.database.clone(),
            table: t.catalog_table().to_string(),
            location,
            columns: self
                .outs
                .iter()
                .map(|o| CatalogColumn {
                    name: o.name.clone(),
                    glue_type: o.glue_type.clone(),
                })
                .collect(),
            partition_keys: PARTITION_KEYS.iter().map(|k| k.to_string()).collect(),
            projection_years: t.catalog.partition_projection_years.map(|[a, b]| (a, b)),
        }
    }
}

impl CdcPlan {
    /// Takes the `required` rules out of `slots` (the change's kind decides them) into the
    /// plan's own list.
    fn compile(
        t: &TableConfig,
        inputs: &[Input],
        slots: &mut [Slot],
        columns: &[OutputColumn],
    ) -> Result<CdcPlan, String> {
        let builtin = |name: &str| -> Result<usize, String> {
            slots
                .iter()
                .position(|s| inputs[s.input].name == name)
                .ok_or_else(|| format!("cdc table without its built-in column `{name}`"))
        };
        let (op_slot, lsn_slot) = (builtin("_op")?, builtin("_lsn")?);
        let (commit_ts_slot, unchanged_slot) = (builtin("_commit_ts")?, builtin("_unchanged")?);
        let builtin_input: Vec<bool> = inputs.iter().map(|i| is_builtin_column(&i.name)).collect();
        let mut required_slots = Vec::new();
        for (i, s) in slots.iter_mut().enumerate() {
            if s.required && !builtin_input[s.input] {
                required_slots.push(i);
            }
            s.required = false;
        }
        let slots_of_input = (0..inputs.len())
            .map(|i| (0..slots.len()).filter(|&s| slots[s].input == i).collect())
            .collect();
        // Inputs are the declared columns one to one, so an output's column is its input.
        let output_inputs = columns
            .iter()
            .filter(|c| !builtin_input[c.origin.column])
            .map(|c| (c.origin.column, c.name.clone()))
            .collect();
        let relation = t
            .cdc
            .as_ref()
            .map(|r| (r.schema.clone(), r.table.clone()))
            .ok_or("cdc table without its source relation")?;
        Ok(CdcPlan {
            op_slot,
            lsn_slot,
            commit_ts_slot,
            unchanged_slot,
            builtin_input,
            required_slots,
            slots_of_input,
            output_inputs,
            relation,
        })
    }
}

/// The slot of a (column, JSON field) pair: plain columns have one slot, JSON columns one per
/// extracted field.
type SlotOf = Box<dyn Fn(usize, Option<usize>) -> Option<usize>>;

/// Input columns (one per declared column) and value slots (one per plain column, one per
/// extracted JSON field), in declaration order.
fn inputs_and_slots(t: &TableConfig) -> (Vec<Input>, Vec<Slot>, SlotOf) {
    let table_tokens: Vec<Vec<u8>> = t
        .null_tokens()
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let mut inputs: Vec<Input> = Vec::new();
    let mut slots = Vec::new();
    // (column index, field index) of each slot.
    let mut origin_of_slot: Vec<(usize, Option<usize>)> = Vec::new();
    for (ci, c) in t.columns.iter().enumerate() {
        let input = inputs.len();
        let json_index = inputs.iter().filter(|i| i.is_json).count();
        inputs.push(Input {
            name: c.name.clone(),
            is_json: c.ty == ColumnType::Json,
            json_index,
            null_tokens: c
                .null_tokens
                .as_ref()
                .map(|v| v.iter().map(|s| s.as_bytes().to_vec()).collect())
                .unwrap_or_else(|| table_tokens.clone()),
            trim: t.trim(),
        });
        let base = c.output_name();
        if c.ty == ColumnType::Json {
            for (fi, f) in c.fields.iter().enumerate() {
                slots.push(Slot {
                    input,
                    json_path: f.path.split('.').map(String::from).collect(),
                    ty: f.ty,
                    required: f.required,
                    name: schema::json_field_name(&base, &f.path),
                });
                origin_of_slot.push((ci, Some(fi)));
            }
        } else {
            slots.push(Slot {
                input,
                json_path: Vec::new(),
                ty: c.ty,
                required: c.required,
                name: base,
            });
            origin_of_slot.push((ci, None));
        }
    }
    let slot_of: SlotOf = Box::new(move |column, field| {
        origin_of_slot
            .iter()
            .position(|&(c, f)| c == column && f == field)
    });
    (inputs, slots, slot_of)
}

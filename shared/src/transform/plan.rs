//! A table's config compiled once into what the row loop needs: value slots (one per plain
//! column, one per extracted JSON field), output columns (after PII rules), the Arrow schema
//! and the catalog definition.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::catalog::{CatalogColumn, TableDef};
use crate::config::{snake_case, ColumnType, PiiAction, PiiRule, TableConfig};

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
    pub key_slots: Vec<usize>,
    pub order_slot: Option<usize>,
    pub partition_slot: usize,
    pub schema: SchemaRef,
    pub parse: ParseOptions,
}

pub(crate) fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        ColumnType::Bool => DataType::Boolean,
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Binary => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        // Microseconds with the UTC logical type: nanoseconds and INT96 read wrong in Athena/Spark.
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

impl Plan {
    pub fn compile(t: &TableConfig) -> Result<Plan, String> {
        let mut inputs = Vec::new();
        let mut slots = Vec::new();
        let mut rules: Vec<Option<PiiRule>> = Vec::new();
        let table_tokens: Vec<Vec<u8>> = t
            .null_tokens
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        for c in &t.columns {
            let input = inputs.len();
            let json_index = inputs.iter().filter(|i: &&Input| i.is_json).count();
            inputs.push(Input {
                name: c.name.clone(),
                is_json: c.ty == ColumnType::Json,
                json_index,
                null_tokens: c
                    .null_tokens
                    .as_ref()
                    .map(|v| v.iter().map(|s| s.as_bytes().to_vec()).collect())
                    .unwrap_or_else(|| table_tokens.clone()),
                trim: t.trim,
            });
            let base = c.output_name();
            if c.ty == ColumnType::Json {
                for f in &c.fields {
                    slots.push(Slot {
                        input,
                        json_path: f.path.split('.').map(String::from).collect(),
                        ty: f.ty,
                        required: f.required,
                        name: format!("{base}_{}", snake_case(&f.path)),
                    });
                    rules.push(f.pii.clone());
                }
            } else {
                slots.push(Slot {
                    input,
                    json_path: Vec::new(),
                    ty: c.ty,
                    required: c.required,
                    name: base,
                });
                rules.push(c.pii.clone());
            }
        }
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
        let mut outs = Vec::new();
        for (i, (slot, rule)) in slots.iter().zip(&rules).enumerate() {
            let plain = |name: String, ty: ColumnType, kind| Out {
                name,
                slot: i,
                kind,
                data_type: arrow_type(ty),
                glue_type: ty.glue_type(),
            };
            match rule.as_ref().map(|r| r.action) {
                None => outs.push(plain(slot.name.clone(), slot.ty, OutKind::Plain)),
                Some(PiiAction::Drop) => {}
                Some(PiiAction::Hash) => outs.push(plain(
                    format!("{}_hash", slot.name),
                    ColumnType::String,
                    OutKind::Hash,
                )),
                Some(PiiAction::Year) => outs.push(plain(
                    format!("{}_year", slot.name),
                    ColumnType::Int,
                    OutKind::Year,
                )),
                Some(PiiAction::AgeBand) => {
                    let r = rule.as_ref().ok_or("age_band rule missing")?;
                    let as_of = r.as_of.as_deref().ok_or("age_band needs as_of")?;
                    outs.push(plain(
                        format!("{}_age_band", slot.name),
                        ColumnType::String,
                        OutKind::AgeBand {
                            as_of_slot: slot_of_input(as_of)?,
                            band_years: r.band_years.unwrap_or(10),
                        },
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for o in &outs {
            if !seen.insert(o.name.as_str()) {
                return Err(format!(
                    "two output columns are both named `{}` (use `rename`)",
                    o.name
                ));
            }
            if o.name == "year" || o.name == "month" {
                return Err(format!(
                    "output column `{}` clashes with a partition key (use `rename`)",
                    o.name
                ));
            }
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
        let schema = Arc::new(Schema::new(
            outs.iter()
                .map(|o| Field::new(&o.name, o.data_type.clone(), true))
                .collect::<Vec<_>>(),
        ));
        Ok(Plan {
            inputs,
            slots,
            outs,
            key_slots,
            order_slot,
            partition_slot,
            schema,
            parse: ParseOptions {
                epoch_unit: t.epoch_unit,
                timestamp_formats: t.timestamp_formats.clone(),
            },
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
            partition_keys: vec!["year".into(), "month".into()],
            projection_years: t.catalog.partition_projection_years.map(|[a, b]| (a, b)),
        }
    }
}

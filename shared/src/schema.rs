//! A table's output schema: the columns its Parquet files hold, in file order, with their
//! Arrow type, Glue type and nullability, derived from the pipeline file alone. The transform
//! plan, the catalog definition, the manifest and (next) the loader's DDL all read it, so the
//! rules that turn declared columns into output columns live here once:
//! - a plain column keeps its value under its output name (`rename`, else snake_case);
//! - a `json` column is replaced by its fields, `<column>_<path in snake_case>`;
//! - PII: `drop` removes the column, `hash` gives `<name>_hash` (string), `year` gives
//!   `<name>_year` (int), `age_band` gives `<name>_age_band` (string);
//! - two output columns may not share a name, and none may be a partition key;
//! - a `cdc` table's source columns are all nullable, whatever `required` says (a delete
//!   carries only its key, a TRUNCATE no source value at all), and its `_op`, `_lsn` and
//!   `_commit_ts` never null (every change has them).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::config::{snake_case, ColumnType, InputFormat, PiiAction, PiiRule, TableConfig};
use crate::lake::layout::PARTITION_KEYS;
use crate::lake::manifest::ManifestColumn;

/// Width of an age band when the rule does not say.
pub const DEFAULT_BAND_YEARS: u32 = 10;

/// How an output column's value is derived from its input value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derive {
    /// The typed value itself.
    Value,
    /// Hex HMAC-SHA256 of the value's text.
    Hash,
    /// The year of a date or timestamp.
    Year,
    /// The age band of a date of birth as of another column of the row (input name).
    AgeBand { as_of: String, band_years: u32 },
}

/// Where an output column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Index into the table's `columns`.
    pub column: usize,
    /// For `json` columns: index into that column's `fields`.
    pub field: Option<usize>,
    pub derive: Derive,
}

/// One column of a table's output files.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub arrow_type: DataType,
    /// Hive/Glue type name, as the catalog and the manifest carry it.
    pub glue_type: String,
    /// False when every written row has a value (the input is required: a null goes to
    /// quarantine). The Parquet fields themselves are always declared optional.
    pub nullable: bool,
    pub origin: Origin,
}

/// Arrow type of a declared type. Timestamps are microseconds with the UTC logical type:
/// nanoseconds and INT96 read wrong in Athena and Spark.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        ColumnType::Bool => DataType::Boolean,
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Binary => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The output name of a field extracted from a JSON column: `<column>_<path in snake_case>`.
pub fn json_field_name(column_output_name: &str, path: &str) -> String {
    format!("{column_output_name}_{}", snake_case(path))
}

/// One input value before PII rules: a plain column or one field of a JSON column.
struct Value<'a> {
    name: String,
    ty: ColumnType,
    required: bool,
    pii: Option<&'a PiiRule>,
    column: usize,
    field: Option<usize>,
}

/// Built-in columns every change row has a value in.
const CDC_NEVER_NULL: [&str; 3] = ["_op", "_lsn", "_commit_ts"];

fn values(t: &TableConfig) -> Vec<Value<'_>> {
    let cdc = t.format == InputFormat::Cdc;
    // The value a written row always has: `required` as declared, or a change row's rule.
    let always = |name: &str, required: bool| {
        if cdc {
            CDC_NEVER_NULL.contains(&name)
        } else {
            required
        }
    };
    let mut out = Vec::new();
    for (ci, c) in t.columns.iter().enumerate() {
        let base = c.output_name();
        if c.ty == ColumnType::Json {
            for (fi, f) in c.fields.iter().enumerate() {
                out.push(Value {
                    name: json_field_name(&base, &f.path),
                    ty: f.ty,
                    required: always(&c.name, f.required),
                    pii: f.pii.as_ref(),
                    column: ci,
                    field: Some(fi),
                });
            }
        } else {
            out.push(Value {
                name: base,
                ty: c.ty,
                required: always(&c.name, c.required),
                pii: c.pii.as_ref(),
                column: ci,
                field: None,
            });
        }
    }
    out
}

/// The output columns of a table, in file order. Fails when two share a name or one clashes
/// with a partition key; the message says which and what to do.
pub fn output_columns(t: &TableConfig) -> Result<Vec<OutputColumn>, String> {
    let mut outs = Vec::new();
    for v in values(t) {
        let (name, ty, derive) = match v.pii.map(|r| (r.action, r)) {
            None => (v.name.clone(), v.ty, Derive::Value),
            Some((PiiAction::Drop, _)) => continue,
            Some((PiiAction::Hash, _)) => {
                (format!("{}_hash", v.name), ColumnType::String, Derive::Hash)
            }
            Some((PiiAction::Year, _)) => {
                (format!("{}_year", v.name), ColumnType::Int, Derive::Year)
            }
            Some((PiiAction::AgeBand, r)) => {
                let as_of = r
                    .as_of
                    .clone()
                    .ok_or_else(|| format!("`{}`: age_band needs as_of", v.name))?;
                // Always nullable: a date of birth after its `as_of` date has no age and is
                // written as null, even when both columns are required.
                let nullable = true;
                let derive = Derive::AgeBand {
                    as_of,
                    band_years: r.band_years.unwrap_or(DEFAULT_BAND_YEARS),
                };
                outs.push(column(
                    format!("{}_age_band", v.name),
                    ColumnType::String,
                    nullable,
                    &v,
                    derive,
                ));
                continue;
            }
        };
        outs.push(column(name, ty, !v.required, &v, derive));
    }
    check_names(&outs)?;
    Ok(outs)
}

fn column(
    name: String,
    ty: ColumnType,
    nullable: bool,
    v: &Value<'_>,
    derive: Derive,
) -> OutputColumn {
    OutputColumn {
        name,
        arrow_type: arrow_type(ty),
        glue_type: ty.glue_type(),
        nullable,
        origin: Origin {
            column: v.column,
            field: v.field,
            derive,
        },
    }
}

fn check_names(outs: &[OutputColumn]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for o in outs {
        if !seen.insert(o.name.as_str()) {
            return Err(format!(
                "two output columns are both named `{}` (use `rename`)",
                o.name
            ));
        }
        if PARTITION_KEYS.contains(&o.name.as_str()) {
            return Err(format!(
                "output column `{}` clashes with a partition key (use `rename`)",
                o.name
            ));
        }
    }
    Ok(())
}

/// The Arrow schema of the output files. Every field is declared nullable, whatever the
/// column's `nullable`: the files' shape stays the same when a column stops being required.
pub fn arrow_schema(cols: &[OutputColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, c.arrow_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The columns as the manifest lists them.
pub fn manifest_columns(cols: &[OutputColumn]) -> Vec<ManifestColumn> {
    cols.iter()
        .map(|c| ManifestColumn {
            name: c.name.clone(),
            glue_type: c.glue_type.clone(),
            nullable: c.nullable,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;

    const PIPELINE: &str = r#"
[hash_key]
file = "k"

[[tables]]
name = "people"
raw_prefix = "raw/people/"
format = "jsonl"
partition_by = "seen_at"
catalog = { database = "db" }

[[tables.columns]]
name = "PersonID"
type = "int"
required = true

[[tables.columns]]
name = "email"
type = "string"
pii = { action = "hash" }

[[tables.columns]]
name = "born"
type = "date"
required = true
pii = { action = "age_band", as_of = "seen_at", band_years = 5 }

[[tables.columns]]
name = "seen_at"
type = "timestamp"
required = true

[[tables.columns]]
name = "address"
type = "json"
fields = [
  { path = "geo.lat", type = "float" },
  { path = "street", type = "string", pii = { action = "drop" } },
]
"#;

    #[test]
    fn columns_in_file_order_with_types_and_nullability() {
        let p = Pipeline::parse(PIPELINE, "p.toml").unwrap();
        let cols = output_columns(&p.tables[0]).unwrap();
        let shown: Vec<(String, String, bool)> = cols
            .iter()
            .map(|c| (c.name.clone(), c.glue_type.clone(), c.nullable))
            .collect();
        let expect = [
            ("person_id", "bigint", false),
            ("email_hash", "string", true),
            ("born_age_band", "string", true),
            ("seen_at", "timestamp", false),
            ("address_geo_lat", "double", true),
        ];
        let expect: Vec<(String, String, bool)> = expect
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
            .collect();
        assert_eq!(shown, expect);
        assert_eq!(
            cols[3].arrow_type,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            cols[2].origin.derive,
            Derive::AgeBand {
                as_of: "seen_at".into(),
                band_years: 5
            }
        );
        assert_eq!(cols[4].origin.column, 4);
        assert_eq!(cols[4].origin.field, Some(0));
        let schema = arrow_schema(&cols);
        assert!(schema.fields().iter().all(|f| f.is_nullable()));
        assert_eq!(manifest_columns(&cols)[0].name, "person_id");
    }
}

//! `[[tables.columns]]`: one declared column, and the fields extracted from a JSON column.

use serde::Deserialize;

use super::builtin::{check_builtin, is_builtin_column};
use super::error::Invalid;
use super::names::{is_snake_identifier, snake_case};
use super::pii::PiiRule;
use super::types::ColumnType;
use super::TableConfig;

/// One column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Name in the input (CSV header or JSON key). Only the built-in columns
    /// (`BUILTIN_COLUMNS`: `_op`, `_lsn`, …) may start with `_`.
    pub name: String,
    /// `int`, `float`, `decimal(p,s)`, `bool`, `string`, `binary` (base64), `date`,
    /// `timestamp`, or `json` (parsed and flattened into `fields`).
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// A null (missing, or a null token) sends the row to quarantine.
    #[serde(default)]
    pub required: bool,
    /// Output name; default: `name` in lower-case snake_case. Not for built-in columns,
    /// which keep their names.
    #[serde(default)]
    pub rename: Option<String>,
    /// Per-column null tokens, replacing the table's.
    #[serde(default)]
    pub null_tokens: Option<Vec<String>>,
    /// For `json` columns: the fields to extract; each becomes a column `<column>_<path
    /// joined by _>`. Objects and arrays extracted into a `string` field stay JSON text.
    #[serde(default)]
    pub fields: Vec<JsonField>,
    /// What to do with personal data in this column.
    #[serde(default)]
    pub pii: Option<PiiRule>,
}

/// A field extracted from a JSON column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonField {
    /// Dotted path into the object, e.g. `city` or `geo.lat`.
    pub path: String,
    /// Type of the extracted value (not `json`).
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// A missing or null value sends the row to quarantine.
    #[serde(default)]
    pub required: bool,
    /// Personal-data rule for the extracted value.
    #[serde(default)]
    pub pii: Option<PiiRule>,
}

impl ColumnConfig {
    /// The column's name in the lake: `rename`, else `name` in snake_case; a built-in
    /// column's own name.
    pub fn output_name(&self) -> String {
        if is_builtin_column(&self.name) {
            return self.name.clone();
        }
        self.rename
            .clone()
            .unwrap_or_else(|| snake_case(&self.name))
    }

    /// The column's own rules (names, types, fields, PII); `t` for the columns a PII rule
    /// refers to.
    pub(crate) fn validate(&self, t: &TableConfig) -> Result<(), Invalid> {
        if self.name.is_empty() {
            return Err(Invalid::at("name", "must not be empty"));
        }
        if self.name.starts_with('_') {
            check_builtin(self)?;
        }
        if let Some(r) = &self.rename {
            if !is_snake_identifier(r) {
                return Err(Invalid::at(
                    "rename",
                    format!("`{r}` must be lower-case snake_case"),
                ));
            }
        }
        if self.ty == ColumnType::Json {
            self.validate_json(t)?;
        } else if !self.fields.is_empty() {
            return Err(Invalid::at("fields", "only json columns have fields"));
        }
        if let Some(rule) = &self.pii {
            rule.validate(self.ty, t)
                .map_err(|r| Invalid::at("pii", r))?;
        }
        Ok(())
    }

    /// A JSON column: fields to extract, with their own PII rules (none on the column).
    fn validate_json(&self, t: &TableConfig) -> Result<(), Invalid> {
        if self.fields.is_empty() {
            return Err(Invalid::at(
                "fields",
                "a json column needs at least one field to extract",
            ));
        }
        if self.pii.is_some() {
            return Err(Invalid::at(
                "pii",
                "set pii on the extracted fields of a json column",
            ));
        }
        for (k, f) in self.fields.iter().enumerate() {
            f.validate(t)
                .map_err(|e| e.within(&format!("fields[{k}]")))?;
        }
        Ok(())
    }
}

impl JsonField {
    fn validate(&self, t: &TableConfig) -> Result<(), Invalid> {
        if self.ty == ColumnType::Json {
            return Err(Invalid::at(
                "type",
                "an extracted field cannot be json itself; use string to keep JSON text",
            ));
        }
        if self.path.is_empty() || self.path.split('.').any(str::is_empty) {
            return Err(Invalid::at(
                "path",
                format!("`{}` must be dotted names like `geo.lat`", self.path),
            ));
        }
        if let Some(rule) = &self.pii {
            rule.validate(self.ty, t)
                .map_err(|r| Invalid::at("pii", r))?;
        }
        Ok(())
    }
}

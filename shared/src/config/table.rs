//! `[[tables]]`: one table of the pipeline, its input dialect, and the rules that tie its
//! sections together (partitioning, output column names).

use std::collections::HashSet;

use serde::Deserialize;

use super::catalog::CatalogConfig;
use super::cdc::{self, CdcRelation};
use super::column::ColumnConfig;
use super::dedup::DedupConfig;
use super::error::Invalid;
use super::names::is_snake_identifier;
use super::output::OutputConfig;
use super::source::SourceConfig;
use super::types::ColumnType;
use super::warehouse::WarehouseConfig;

/// Default null tokens of `csv` and `jsonl` tables: an empty field means "no value". `NULL`
/// and `\N` are what MySQL and PostgreSQL dumps write; tables add them explicitly so a literal
/// string "NULL" survives where it is data.
static DEFAULT_NULL_TOKENS: [String; 1] = [String::new()];
fn yes() -> bool {
    true
}
fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}

/// Input format of a table's raw objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Comma- (or `delimiter`-) separated values with a header row by default.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Change events of a PostgreSQL table, one JSON object per line as cdc-sink writes them
    /// (docs/CDC.md): one row per change, with the built-in columns `_op`, `_lsn`,
    /// `_commit_ts` and `_unchanged`.
    Cdc,
}

impl InputFormat {
    /// Whether the Glue Spark job (`infra/glue/`) can transform objects of this format: it
    /// reads CSV and JSON lines, not change events.
    pub fn glue_supported(self) -> bool {
        matches!(self, InputFormat::Csv | InputFormat::Jsonl)
    }
}

/// CSV dialect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Quote character, one ASCII character.
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Whether the first record names the columns (matched to `columns` by name, in any order).
    /// Without a header, fields map to `columns` by position.
    #[serde(default = "yes")]
    pub header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: default_delimiter(),
            quote: default_quote(),
            header: true,
        }
    }
}

/// How bare epoch numbers in timestamp columns are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// Magnitude decides: below 10^11 seconds (before year 5138), else milliseconds.
    #[default]
    Auto,
    Seconds,
    Millis,
}

/// One table of the pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name: lower-case snake_case; names the `curated/`, `quarantine/` and
    /// `manifests/` prefixes.
    pub name: String,
    /// The `raw/` key prefix this table owns, e.g. `raw/funnel/`; the longest matching prefix
    /// among all tables picks the table for an object.
    pub raw_prefix: String,
    /// Input format: `csv`, `jsonl` or `cdc`.
    pub format: InputFormat,
    /// The source relation of a `cdc` table (required for it, refused for others):
    /// `{ schema = "public", table = "orders" }`.
    #[serde(default)]
    pub cdc: Option<CdcRelation>,
    /// CSV dialect (ignored for JSON lines).
    #[serde(default)]
    pub csv: CsvOptions,
    /// Field values that mean null, compared after trimming. Default: the empty string. Not
    /// for `cdc` tables, whose only null is JSON null (read it with [`Self::null_tokens`]).
    #[serde(default)]
    pub null_tokens: Option<Vec<String>>,
    /// Trim ASCII whitespace around string values (other types are always trimmed). Default
    /// true. Not for `cdc` tables, whose strings are exact (read it with [`Self::trim`]).
    #[serde(default)]
    pub trim: Option<bool>,
    /// Extra chrono formats for timestamps, tried after the built-in shapes
    /// (`2019-10-01 00:00:00 UTC`, ISO-8601 with offset or `Z`, epoch seconds/millis).
    /// Values without an offset are UTC.
    #[serde(default)]
    pub timestamp_formats: Vec<String>,
    /// How bare epoch numbers are read.
    #[serde(default)]
    pub epoch_unit: EpochUnit,
    /// The columns, in output order.
    pub columns: Vec<ColumnConfig>,
    /// Deduplication within each source object.
    #[serde(default)]
    pub dedup: Option<DedupConfig>,
    /// The timestamp or date column whose year and month name the partitions. Required, but
    /// for `cdc` tables, which partition by `_commit_ts` (filled in when left out).
    #[serde(default)]
    pub partition_by: String,
    /// Output layout.
    #[serde(default)]
    pub output: OutputConfig,
    /// Glue Data Catalog registration.
    pub catalog: CatalogConfig,
    /// Redshift target (used by the loader; parsed and validated here).
    #[serde(default)]
    pub warehouse: Option<WarehouseConfig>,
    /// Where `extract` reads the table (used by the extractor; parsed and validated here).
    #[serde(default)]
    pub source: Option<SourceConfig>,
}

impl TableConfig {
    /// The Glue table name.
    pub fn catalog_table(&self) -> &str {
        self.catalog.table.as_deref().unwrap_or(&self.name)
    }

    /// The declared column called `name` (input name).
    pub fn column(&self, name: &str) -> Option<&ColumnConfig> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The values that mean null: the table's `null_tokens`, else the empty string; none for
    /// a `cdc` table.
    pub fn null_tokens(&self) -> &[String] {
        match (&self.null_tokens, self.format) {
            (Some(t), _) => t,
            (None, InputFormat::Cdc) => &[],
            (None, _) => &DEFAULT_NULL_TOKENS,
        }
    }

    /// Whether string values are trimmed: `trim`, else true; never for a `cdc` table.
    pub fn trim(&self) -> bool {
        self.trim.unwrap_or(self.format != InputFormat::Cdc)
    }

    /// The columns that hold source values: every column but the built-in ones (`_op`, …).
    pub fn source_columns(&self) -> impl Iterator<Item = &ColumnConfig> {
        self.columns
            .iter()
            .filter(|c| !super::is_builtin_column(&c.name))
    }

    /// The table's rules, its sections' included. Paths in errors are relative to the table.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if !is_snake_identifier(&self.name) {
            return Err(Invalid::at("name", format!("`{}` must be lower-case snake_case (letters, digits, _), starting with a letter", self.name)));
        }
        if !self.raw_prefix.starts_with(crate::lake::layout::RAW) || !self.raw_prefix.ends_with('/')
        {
            return Err(Invalid::at(
                "raw_prefix",
                format!(
                    "`{}` must start with `raw/` and end with `/`",
                    self.raw_prefix
                ),
            ));
        }
        cdc::validate_table(self)?;
        self.csv.validate().map_err(|e| e.within("csv"))?;
        self.validate_timestamp_formats()?;
        self.validate_columns()?;
        check_output_columns(self).map_err(|r| Invalid::at("columns", r))?;
        self.validate_partition_by()?;
        if let Some(d) = &self.dedup {
            d.validate(self).map_err(|e| e.within("dedup"))?;
        }
        self.output.validate().map_err(|e| e.within("output"))?;
        self.catalog.validate().map_err(|e| e.within("catalog"))?;
        if let Some(w) = &self.warehouse {
            let outputs: Vec<String> = crate::schema::output_columns(self)
                .map_err(|r| Invalid::at("columns", r))?
                .into_iter()
                .map(|c| c.name)
                .collect();
            w.validate(self, &outputs)
                .map_err(|e| e.within("warehouse"))?;
        }
        if let Some(s) = &self.source {
            s.validate(self).map_err(|e| e.within("source"))?;
        }
        Ok(())
    }

    fn validate_timestamp_formats(&self) -> Result<(), Invalid> {
        for (j, f) in self.timestamp_formats.iter().enumerate() {
            if chrono::format::StrftimeItems::new(f)
                .any(|it| matches!(it, chrono::format::Item::Error))
            {
                return Err(Invalid::at(
                    format!("timestamp_formats[{j}]"),
                    format!("`{f}` is not a valid chrono format"),
                ));
            }
        }
        Ok(())
    }

    fn validate_columns(&self) -> Result<(), Invalid> {
        if self.columns.is_empty() {
            return Err(Invalid::at("columns", "at least one column is required"));
        }
        let mut inputs = HashSet::new();
        for (j, c) in self.columns.iter().enumerate() {
            let within = |e: Invalid| e.within(&format!("columns[{j}]"));
            if !c.name.is_empty() && !inputs.insert(c.name.as_str()) {
                return Err(within(Invalid::at(
                    "name",
                    format!("column `{}` is listed twice", c.name),
                )));
            }
            c.validate(self).map_err(within)?;
        }
        Ok(())
    }

    fn validate_partition_by(&self) -> Result<(), Invalid> {
        if self.partition_by.is_empty() {
            return Err(Invalid::at(
                "partition_by",
                "is required: the timestamp or date column whose year and month name the partitions (only cdc tables leave it out, for `_commit_ts`)",
            ));
        }
        let reason = match self.column(&self.partition_by) {
            Some(c) if matches!(c.ty, ColumnType::Timestamp | ColumnType::Date) => return Ok(()),
            Some(_) => "must be a timestamp or date column",
            None => "is not a column of the table",
        };
        Err(Invalid::at(
            "partition_by",
            format!("`{}` {reason}", self.partition_by),
        ))
    }
}

impl CsvOptions {
    fn validate(&self) -> Result<(), Invalid> {
        for (field, c) in [("delimiter", self.delimiter), ("quote", self.quote)] {
            if !c.is_ascii() || c == '\n' || c == '\r' {
                return Err(Invalid::at(
                    field,
                    format!("{c:?} must be one ASCII character other than a line break"),
                ));
            }
        }
        if self.delimiter == self.quote {
            return Err(Invalid::at("quote", "must differ from the delimiter"));
        }
        Ok(())
    }
}

/// The output-column rules: no two output columns with the same name, and none named like a
/// partition key (`year`, `month`). The reason on failure.
fn check_output_columns(t: &TableConfig) -> Result<(), String> {
    // The rules live with the output schema, which the plan, the catalog and the manifest
    // also read: one copy.
    crate::schema::output_columns(t).map(|_| ())
}

//! The pipeline file: one declarative TOML file that describes every table once.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) so a misspelled key is an error with
//! its key path and line, never a silently ignored setting. `validate()` checks what serde
//! cannot (references between fields, limits) and names the offending key path.

mod error;
mod types;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use error::ConfigError;
pub use types::ColumnType;

/// Default null tokens: an empty field means "no value". `NULL` and `\N` are what MySQL and
/// PostgreSQL dumps write; tables add them explicitly so a literal string "NULL" survives
/// where it is data.
fn default_null_tokens() -> Vec<String> {
    vec![String::new()]
}
fn yes() -> bool {
    true
}
/// 128 MiB: large enough for efficient Athena scans, small enough that one Lambda writes
/// several files in parallel-friendly sizes (AWS guidance: 128 MiB–1 GiB Parquet files).
const fn default_target_file_size_bytes() -> u64 {
    128 * 1024 * 1024
}
/// Rows per Arrow record batch: arrow's own default; memory per batch stays in the low MiBs.
const fn default_batch_rows() -> usize {
    8192
}
/// Bytes buffered per open partition before a Parquet row group is flushed. 8 MiB keeps a
/// dozen open partitions well under a 256 MB Lambda while row groups stay scan-efficient.
const fn default_row_group_bytes() -> usize {
    8 * 1024 * 1024
}
/// Encoded bytes buffered across all open partitions before the largest row group is
/// flushed: the main lever on peak memory (writers hold about twice their encoded size; see
/// docs/BENCHMARKS.md for peak RSS at this default).
const fn default_buffer_budget_bytes() -> usize {
    12 * 1024 * 1024
}
/// More open partitions than this and the least recently used one is closed (its file
/// finished); memory stays bounded however scattered the timestamps are.
const fn default_max_open_partitions() -> usize {
    16
}
/// ZSTD level 1: most of the size win at a fraction of level 3's CPU.
const fn default_zstd_level() -> i32 {
    1
}
/// A field over this size is quarantined: Redshift's VARCHAR(MAX) is 64 KiB and Athena
/// rows over a few MiB fail; 1 MiB keeps real payloads and catches runaway quoting.
const fn default_max_field_bytes() -> usize {
    1024 * 1024
}
/// A record over this size is quarantined without being kept whole in memory.
const fn default_max_record_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Where the key for keyed hashing (PII `hash`) comes from.
    #[serde(default)]
    pub hash_key: Option<HashKeySource>,
    /// One entry per table.
    pub tables: Vec<TableConfig>,
    /// Directory of the pipeline file, to resolve relative paths (key file). Not in TOML.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// Source of the HMAC key. Exactly one of `secret` or `file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashKeySource {
    /// Secrets Manager secret ARN or name; its SecretString (or SecretBinary) is the key.
    pub secret: Option<String>,
    /// A local key file (local runs and the demo), relative to the pipeline file.
    pub file: Option<PathBuf>,
}

/// Input format of a table's raw objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Comma- (or `delimiter`-) separated values with a header row by default.
    Csv,
    /// One JSON object per line.
    Jsonl,
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
    /// Input format.
    pub format: InputFormat,
    /// CSV dialect (ignored for JSON lines).
    #[serde(default)]
    pub csv: CsvOptions,
    /// Field values that mean null, compared after trimming. Default: the empty string.
    #[serde(default = "default_null_tokens")]
    pub null_tokens: Vec<String>,
    /// Trim ASCII whitespace around string values (other types are always trimmed).
    #[serde(default = "yes")]
    pub trim: bool,
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
    /// The timestamp or date column whose year and month name the partitions.
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

/// One column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Name in the input (CSV header or JSON key).
    pub name: String,
    /// `int`, `float`, `decimal(p,s)`, `bool`, `string`, `binary` (base64), `date`,
    /// `timestamp`, or `json` (parsed and flattened into `fields`).
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// A null (missing, or a null token) sends the row to quarantine.
    #[serde(default)]
    pub required: bool,
    /// Output name; default: `name` in lower-case snake_case.
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

/// What happens to a personal-data column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// The column never reaches the lake.
    Drop,
    /// Replaced by `<name>_hash`: hex HMAC-SHA256 of the value's text under the pipeline's
    /// hash key (joinable across tables, not reversible without the key).
    Hash,
    /// A date/timestamp replaced by `<name>_year` (int).
    Year,
    /// A date of birth replaced by `<name>_age_band` (e.g. `30-39`), the age as of the row's
    /// own `as_of` date, so output never drifts with the day the pipeline ran.
    AgeBand,
}

/// A PII rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiRule {
    /// What to do.
    pub action: PiiAction,
    /// For `age_band`: the date/timestamp column (input name) the age is computed at.
    #[serde(default)]
    pub as_of: Option<String>,
    /// For `age_band`: width of a band in years (default 10).
    #[serde(default)]
    pub band_years: Option<u32>,
}

/// Deduplication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Columns (input names) that identify a row.
    pub key: Vec<String>,
    /// Optional int/date/timestamp column: the greatest value wins (ties: the later row).
    /// Without it, the first occurrence in the object wins.
    #[serde(default)]
    pub order_by: Option<String>,
}

/// Output layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Roll to a new Parquet file when one reaches this size.
    #[serde(default = "default_target_file_size_bytes")]
    pub target_file_size_bytes: u64,
    /// Flush a row group when a partition's buffered data reaches this size.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// Flush the largest row group when all open partitions together buffer more than this.
    #[serde(default = "default_buffer_budget_bytes")]
    pub buffer_budget_bytes: usize,
    /// Rows per record batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Cap on partitions with an open file at once.
    #[serde(default = "default_max_open_partitions")]
    pub max_open_partitions: usize,
    /// ZSTD compression level (1–22).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Fields larger than this go to quarantine.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// Records larger than this go to quarantine (truncated in the quarantine object).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            target_file_size_bytes: default_target_file_size_bytes(),
            row_group_bytes: default_row_group_bytes(),
            buffer_budget_bytes: default_buffer_budget_bytes(),
            batch_rows: default_batch_rows(),
            max_open_partitions: default_max_open_partitions(),
            zstd_level: default_zstd_level(),
            max_field_bytes: default_max_field_bytes(),
            max_record_bytes: default_max_record_bytes(),
        }
    }
}

/// Glue Data Catalog registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Glue database (created when missing).
    pub database: String,
    /// Glue table (default: the table name).
    #[serde(default)]
    pub table: Option<String>,
    /// `[first_year, last_year]`: use Athena partition projection instead of registering
    /// partitions.
    #[serde(default)]
    pub partition_projection_years: Option<[i32; 2]>,
}

/// Redshift target (for the loader).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Target schema.
    pub schema: String,
    /// Target table (default: the table name).
    #[serde(default)]
    pub table: Option<String>,
    /// Columns (output names) the merge matches on.
    pub merge_keys: Vec<String>,
    /// Column (output name) whose greater value is the newer version.
    #[serde(default)]
    pub version_column: Option<String>,
}

/// Source database (for extract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql` or `postgres`.
    pub engine: String,
    /// Secrets Manager ids of the shards' connection secrets.
    pub shard_secrets: Vec<String>,
    /// Table or view to read (mutually exclusive with `query`).
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT to read instead of a table.
    #[serde(default)]
    pub query: Option<String>,
    /// Primary-key columns (the keyset tiebreaker).
    pub key_columns: Vec<String>,
    /// The watermark column.
    pub updated_at_column: String,
}

impl Pipeline {
    /// Parses and validates a pipeline file's text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::from_toml(origin, text, "", e))?;
        let pipeline: Pipeline = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::from_toml(origin, text, &path, e.into_inner())
        })?;
        pipeline.validate(origin)?;
        Ok(pipeline)
    }

    /// Reads, parses and validates a pipeline file from disk.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut p = Self::parse(&text, &path.display().to_string())?;
        p.base_dir = path.parent().map(Path::to_path_buf);
        Ok(p)
    }

    /// The table whose `raw_prefix` is the longest prefix of `key`.
    pub fn table_for_key(&self, key: &str) -> Option<&TableConfig> {
        self.tables
            .iter()
            .filter(|t| key.starts_with(&t.raw_prefix))
            .max_by_key(|t| t.raw_prefix.len())
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The key file's path, resolved against the pipeline file's directory.
    pub fn hash_key_file(&self) -> Option<PathBuf> {
        let f = self.hash_key.as_ref()?.file.as_ref()?;
        Some(match &self.base_dir {
            Some(base) if f.is_relative() => base.join(f),
            _ => f.clone(),
        })
    }

    /// Whether any table hashes a column (and so needs the hash key).
    pub fn needs_hash_key(&self) -> bool {
        self.tables.iter().any(|t| {
            t.columns.iter().any(|c| {
                c.pii.as_ref().is_some_and(|p| p.action == PiiAction::Hash)
                    || c.fields
                        .iter()
                        .any(|f| f.pii.as_ref().is_some_and(|p| p.action == PiiAction::Hash))
            })
        })
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |path: String, reason: String| ConfigError::Invalid {
            origin: origin.to_string(),
            path,
            reason,
        };
        if self.tables.is_empty() {
            return Err(bad(
                "tables".into(),
                "at least one table is required".into(),
            ));
        }
        if let Some(h) = &self.hash_key {
            if h.secret.is_some() == h.file.is_some() {
                return Err(bad(
                    "hash_key".into(),
                    "set exactly one of `secret` or `file`".into(),
                ));
            }
        } else if self.needs_hash_key() {
            return Err(bad("hash_key".into(), "a column uses pii action `hash`, so a [hash_key] with `secret` or `file` is required".into()));
        }
        let mut names = std::collections::HashSet::new();
        let mut prefixes = std::collections::HashSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            let p = |k: &str| format!("tables[{i}].{k}");
            if !is_snake_identifier(&t.name) {
                return Err(bad(p("name"), format!("`{}` must be lower-case snake_case (letters, digits, _), starting with a letter", t.name)));
            }
            if !names.insert(t.name.as_str()) {
                return Err(bad(
                    p("name"),
                    format!("table `{}` is defined twice", t.name),
                ));
            }
            if !t.raw_prefix.starts_with("raw/") || !t.raw_prefix.ends_with('/') {
                return Err(bad(
                    p("raw_prefix"),
                    format!("`{}` must start with `raw/` and end with `/`", t.raw_prefix),
                ));
            }
            if !prefixes.insert(t.raw_prefix.as_str()) {
                return Err(bad(
                    p("raw_prefix"),
                    format!("`{}` is owned by two tables", t.raw_prefix),
                ));
            }
            for (field, c) in [
                ("csv.delimiter", t.csv.delimiter),
                ("csv.quote", t.csv.quote),
            ] {
                if !c.is_ascii() || c == '\n' || c == '\r' {
                    return Err(bad(
                        p(field),
                        format!("{c:?} must be one ASCII character other than a line break"),
                    ));
                }
            }
            if t.csv.delimiter == t.csv.quote {
                return Err(bad(p("csv.quote"), "must differ from the delimiter".into()));
            }
            for (j, f) in t.timestamp_formats.iter().enumerate() {
                if chrono::format::StrftimeItems::new(f)
                    .any(|it| matches!(it, chrono::format::Item::Error))
                {
                    return Err(bad(
                        p(&format!("timestamp_formats[{j}]")),
                        format!("`{f}` is not a valid chrono format"),
                    ));
                }
            }
            if t.columns.is_empty() {
                return Err(bad(p("columns"), "at least one column is required".into()));
            }
            let mut inputs = std::collections::HashSet::new();
            for (j, c) in t.columns.iter().enumerate() {
                let cp = |k: &str| p(&format!("columns[{j}].{k}"));
                if c.name.is_empty() {
                    return Err(bad(cp("name"), "must not be empty".into()));
                }
                if !inputs.insert(c.name.as_str()) {
                    return Err(bad(
                        cp("name"),
                        format!("column `{}` is listed twice", c.name),
                    ));
                }
                if let Some(r) = &c.rename {
                    if !is_snake_identifier(r) {
                        return Err(bad(
                            cp("rename"),
                            format!("`{r}` must be lower-case snake_case"),
                        ));
                    }
                }
                if c.ty == ColumnType::Json {
                    if c.fields.is_empty() {
                        return Err(bad(
                            cp("fields"),
                            "a json column needs at least one field to extract".into(),
                        ));
                    }
                    if c.pii.is_some() {
                        return Err(bad(
                            cp("pii"),
                            "set pii on the extracted fields of a json column".into(),
                        ));
                    }
                    for (k, f) in c.fields.iter().enumerate() {
                        if f.ty == ColumnType::Json {
                            return Err(bad(cp(&format!("fields[{k}].type")), "an extracted field cannot be json itself; use string to keep JSON text".into()));
                        }
                        if f.path.is_empty() || f.path.split('.').any(str::is_empty) {
                            return Err(bad(
                                cp(&format!("fields[{k}].path")),
                                format!("`{}` must be dotted names like `geo.lat`", f.path),
                            ));
                        }
                        if let Some(rule) = &f.pii {
                            check_pii(rule, f.ty, t)
                                .map_err(|r| bad(cp(&format!("fields[{k}].pii")), r))?;
                        }
                    }
                } else if !c.fields.is_empty() {
                    return Err(bad(cp("fields"), "only json columns have fields".into()));
                }
                if let Some(rule) = &c.pii {
                    check_pii(rule, c.ty, t).map_err(|r| bad(cp("pii"), r))?;
                }
            }
            let col = |name: &str| t.columns.iter().find(|c| c.name == name);
            match col(&t.partition_by) {
                Some(c) if matches!(c.ty, ColumnType::Timestamp | ColumnType::Date) => {}
                Some(_) => {
                    return Err(bad(
                        p("partition_by"),
                        format!("`{}` must be a timestamp or date column", t.partition_by),
                    ))
                }
                None => {
                    return Err(bad(
                        p("partition_by"),
                        format!("`{}` is not a column of the table", t.partition_by),
                    ))
                }
            }
            if let Some(d) = &t.dedup {
                if d.key.is_empty() {
                    return Err(bad(
                        p("dedup.key"),
                        "at least one key column is required".into(),
                    ));
                }
                for (k, name) in d.key.iter().enumerate() {
                    match col(name) {
                        Some(c) if c.ty != ColumnType::Json => {}
                        Some(_) => {
                            return Err(bad(
                                p(&format!("dedup.key[{k}]")),
                                format!("`{name}` is a json column"),
                            ))
                        }
                        None => {
                            return Err(bad(
                                p(&format!("dedup.key[{k}]")),
                                format!("`{name}` is not a column of the table"),
                            ))
                        }
                    }
                }
                if let Some(o) = &d.order_by {
                    match col(o) {
                        Some(c)
                            if matches!(
                                c.ty,
                                ColumnType::Int | ColumnType::Timestamp | ColumnType::Date
                            ) => {}
                        Some(_) => {
                            return Err(bad(
                                p("dedup.order_by"),
                                format!("`{o}` must be an int, date or timestamp column"),
                            ))
                        }
                        None => {
                            return Err(bad(
                                p("dedup.order_by"),
                                format!("`{o}` is not a column of the table"),
                            ))
                        }
                    }
                }
            }
            let o = &t.output;
            if o.batch_rows == 0 || o.batch_rows > 1_000_000 {
                return Err(bad(
                    p("output.batch_rows"),
                    "must be between 1 and 1000000".into(),
                ));
            }
            if o.target_file_size_bytes < 1024 * 1024 {
                return Err(bad(
                    p("output.target_file_size_bytes"),
                    "must be at least 1 MiB".into(),
                ));
            }
            if o.row_group_bytes < 64 * 1024 {
                return Err(bad(
                    p("output.row_group_bytes"),
                    "must be at least 64 KiB".into(),
                ));
            }
            if o.buffer_budget_bytes < o.row_group_bytes {
                return Err(bad(
                    p("output.buffer_budget_bytes"),
                    "must be at least row_group_bytes".into(),
                ));
            }
            if o.max_open_partitions == 0 {
                return Err(bad(
                    p("output.max_open_partitions"),
                    "must be at least 1".into(),
                ));
            }
            if !(1..=22).contains(&o.zstd_level) {
                return Err(bad(
                    p("output.zstd_level"),
                    "must be between 1 and 22".into(),
                ));
            }
            if o.max_field_bytes == 0 || o.max_record_bytes < o.max_field_bytes {
                return Err(bad(
                    p("output.max_record_bytes"),
                    "must be at least max_field_bytes, which must be positive".into(),
                ));
            }
            if !is_glue_name(&t.catalog.database) {
                return Err(bad(
                    p("catalog.database"),
                    format!(
                        "`{}` must be lower-case letters, digits and _",
                        t.catalog.database
                    ),
                ));
            }
            if let Some(tn) = &t.catalog.table {
                if !is_glue_name(tn) {
                    return Err(bad(
                        p("catalog.table"),
                        format!("`{tn}` must be lower-case letters, digits and _"),
                    ));
                }
            }
            if let Some([a, b]) = t.catalog.partition_projection_years {
                if a > b || a < 1 {
                    return Err(bad(
                        p("catalog.partition_projection_years"),
                        "must be [first, last] with first <= last".into(),
                    ));
                }
            }
            if let Some(w) = &t.warehouse {
                if w.merge_keys.is_empty() {
                    return Err(bad(
                        p("warehouse.merge_keys"),
                        "at least one merge key is required".into(),
                    ));
                }
            }
            if let Some(s) = &t.source {
                if !matches!(s.engine.as_str(), "mysql" | "postgres") {
                    return Err(bad(
                        p("source.engine"),
                        format!("`{}` must be mysql or postgres", s.engine),
                    ));
                }
                if s.table.is_some() == s.query.is_some() {
                    return Err(bad(
                        p("source"),
                        "set exactly one of `table` or `query`".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl TableConfig {
    /// The Glue table name.
    pub fn catalog_table(&self) -> &str {
        self.catalog.table.as_deref().unwrap_or(&self.name)
    }
}

impl ColumnConfig {
    /// The column's name in the lake.
    pub fn output_name(&self) -> String {
        self.rename
            .clone()
            .unwrap_or_else(|| snake_case(&self.name))
    }
}

fn check_pii(rule: &PiiRule, ty: ColumnType, t: &TableConfig) -> Result<(), String> {
    match rule.action {
        PiiAction::Drop | PiiAction::Hash => {
            if rule.as_of.is_some() || rule.band_years.is_some() {
                return Err("`as_of` and `band_years` apply to age_band only".into());
            }
        }
        PiiAction::Year => {
            if !matches!(ty, ColumnType::Date | ColumnType::Timestamp) {
                return Err("`year` applies to date and timestamp columns".into());
            }
        }
        PiiAction::AgeBand => {
            if !matches!(ty, ColumnType::Date | ColumnType::Timestamp) {
                return Err("`age_band` applies to date and timestamp columns".into());
            }
            let Some(as_of) = &rule.as_of else {
                return Err(
                    "`age_band` needs `as_of`: the row's own date column the age is computed at"
                        .into(),
                );
            };
            match t.columns.iter().find(|c| &c.name == as_of) {
                Some(c) if matches!(c.ty, ColumnType::Date | ColumnType::Timestamp) => {}
                _ => {
                    return Err(format!(
                        "as_of `{as_of}` must name a date or timestamp column of the table"
                    ))
                }
            }
            if rule.band_years == Some(0) {
                return Err("`band_years` must be positive".into());
            }
        }
    }
    Ok(())
}

/// Lower-case snake_case, as Glue and Athena fold names: `UserID` → `user_id`,
/// `event-time` → `event_time`, `geo.lat` → `geo_lat`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() {
                let prev = i.checked_sub(1).map(|j| chars[j]);
                let next = chars.get(i + 1);
                let boundary = match prev {
                    Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                    Some(p) if p.is_ascii_uppercase() => {
                        next.is_some_and(|n| n.is_ascii_lowercase())
                    }
                    _ => false,
                };
                if boundary && !out.ends_with('_') && !out.is_empty() {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "c_");
    }
    out
}

fn is_snake_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 128
}

fn is_glue_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests;

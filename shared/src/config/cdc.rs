//! `[cdc]`: change data capture from PostgreSQL (the wal-decoder's source, slot, publication and
//! stream), and the rules of change tables (`format = "cdc"`): their source relation, their
//! `raw/cdc/<name>/` prefix, the built-in columns every change row carries and the defaults
//! that follow from them (partition by `_commit_ts`, dedup and warehouse version by `_lsn`).
//! docs/CDC.md ("The pipeline file", "Change rows") is the reference.

use serde::Deserialize;

use super::builtin::builtin_column;
use super::error::Invalid;
use super::table::{InputFormat, TableConfig};
use super::ColumnConfig;

/// The built-in columns a change row carries, in the order they are appended to a cdc table's
/// columns when it does not declare them. `_shard` is not among them: a change event has none.
pub const CDC_BUILTIN_COLUMNS: [&str; 4] = ["_op", "_lsn", "_commit_ts", "_unchanged"];

/// The column a cdc table partitions by: a TRUNCATE row has only the built-in columns, so
/// only a built-in can place every row.
pub const CDC_PARTITION_BY: &str = "_commit_ts";

/// The column that orders the changes of a key (dedup) and versions the warehouse row.
pub const CDC_VERSION_COLUMN: &str = "_lsn";

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes); longer names are truncated by the
/// server, so a longer slot or publication name would not be the one that exists.
const MAX_PG_IDENTIFIER_BYTES: usize = 63;

/// A heartbeat every 5 minutes: often enough that an idle or filtered database releases WAL
/// long before a disk fills, rare enough to add nothing measurable to the stream.
const fn default_heartbeat_interval_secs() -> u64 {
    300
}
/// Longest heartbeat interval accepted (one day): a longer one would let an idle database
/// hold a day of WAL, which is what the heartbeat is there to prevent.
const MAX_HEARTBEAT_INTERVAL_SECS: u64 = 86_400;

/// Changes asked of one `pg_logical_slot_peek_binary_changes` call (its `upto_nchanges`).
/// 20,000 keeps a peek well inside a one-minute schedule while transactions of typical size
/// pass whole; the rows are streamed, so memory does not grow with it.
const fn default_max_changes_per_peek() -> u32 {
    20_000
}
/// `upto_nchanges` is an `int4`.
const MAX_CHANGES_PER_PEEK: u32 = i32::MAX as u32;

fn yes() -> bool {
    true
}

/// The top-level `[cdc]` section: where the wal-decoder reads changes and where it puts them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcConfig {
    /// Secrets Manager id (ARN or name) of the source database's secret, in the RDS layout: a
    /// JSON SecretString with `host`, `port`, `username`, `password` and `dbname`. Exactly one
    /// of `source_secret` or `source_url_env`.
    #[serde(default)]
    pub source_secret: Option<String>,
    /// Name of an environment variable that holds a `postgres://` URL of the source (local
    /// runs and tests; the URL itself never appears in the pipeline file).
    #[serde(default)]
    pub source_url_env: Option<String>,
    /// The logical replication slot (`pgoutput` plugin): lower-case letters, digits and `_`,
    /// at most 63 bytes.
    pub slot: String,
    /// The publication of the change tables' source relations: lower-case letters, digits and
    /// `_`, at most 63 bytes.
    pub publication: String,
    /// The Kinesis stream the change events are put on: its name or its ARN.
    pub stream: String,
    /// Seconds between heartbeats (`pg_logical_emit_message`) that let the slot advance while
    /// no published table changes. Default 300, at most 86400.
    #[serde(default = "default_heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u64,
    /// Changes read per peek of the slot (`upto_nchanges`). Default 20000.
    #[serde(default = "default_max_changes_per_peek")]
    pub max_changes_per_peek: u32,
    /// Whether `sluice cdc setup` sets `REPLICA IDENTITY FULL` on published tables that have
    /// TOAST-able columns, so the decoder can fill an unchanged TOASTed value from the old row.
    /// Default true.
    #[serde(default = "yes")]
    pub replica_identity_full: bool,
}

/// Where the wal-decoder finds the source database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdcSource<'a> {
    /// A Secrets Manager secret in the RDS layout.
    Secret(&'a str),
    /// An environment variable holding a `postgres://` URL.
    UrlEnv(&'a str),
}

impl CdcConfig {
    /// The source, as `validate` guarantees: exactly one of the two ways.
    pub fn source(&self) -> Option<CdcSource<'_>> {
        match (&self.source_secret, &self.source_url_env) {
            (Some(s), None) => Some(CdcSource::Secret(s)),
            (None, Some(v)) => Some(CdcSource::UrlEnv(v)),
            _ => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        match (&self.source_secret, &self.source_url_env) {
            (Some(s), None) => check_secret_id(s).map_err(|r| Invalid::at("source_secret", r))?,
            (None, Some(v)) => check_env_name(v).map_err(|r| Invalid::at("source_url_env", r))?,
            _ => {
                return Err(Invalid::at(
                    "source_secret",
                    "set exactly one of `source_secret` (a Secrets Manager secret) or `source_url_env` (an environment variable holding a postgres:// URL, local runs)",
                ))
            }
        }
        check_pg_name(&self.slot).map_err(|r| Invalid::at("slot", r))?;
        check_pg_name(&self.publication).map_err(|r| Invalid::at("publication", r))?;
        check_stream(&self.stream).map_err(|r| Invalid::at("stream", r))?;
        if !(1..=MAX_HEARTBEAT_INTERVAL_SECS).contains(&self.heartbeat_interval_secs) {
            return Err(Invalid::at(
                "heartbeat_interval_secs",
                format!("must be between 1 and {MAX_HEARTBEAT_INTERVAL_SECS} (an idle database holds WAL until the next heartbeat)"),
            ));
        }
        if !(1..=MAX_CHANGES_PER_PEEK).contains(&self.max_changes_per_peek) {
            return Err(Invalid::at(
                "max_changes_per_peek",
                format!("must be between 1 and {MAX_CHANGES_PER_PEEK} (PostgreSQL's upto_nchanges is an int4)"),
            ));
        }
        Ok(())
    }
}

/// The source relation of a cdc table: `cdc = { schema = "public", table = "orders" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcRelation {
    /// The source schema, exactly as PostgreSQL names it (case matters; set-up quotes it).
    pub schema: String,
    /// The source table, exactly as PostgreSQL names it.
    pub table: String,
}

impl CdcRelation {
    fn validate(&self) -> Result<(), Invalid> {
        check_relation_part(&self.schema).map_err(|r| Invalid::at("schema", r))?;
        check_relation_part(&self.table).map_err(|r| Invalid::at("table", r))
    }
}

/// A replication slot or publication name: what PostgreSQL accepts for a slot (lower-case
/// letters, digits, `_`), which is also an identifier that needs no quoting.
pub(crate) fn check_pg_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PG_IDENTIFIER_BYTES {
        return Err(format!(
            "`{name}` must be 1 to {MAX_PG_IDENTIFIER_BYTES} bytes"
        ));
    }
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(format!(
            "`{name}` must be lower-case letters, digits and `_`, starting with a letter or `_`"
        ));
    }
    Ok(())
}

/// A source schema or table name: any PostgreSQL identifier (set-up quotes it), so only what
/// no identifier can hold is refused.
fn check_relation_part(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_PG_IDENTIFIER_BYTES {
        return Err(format!(
            "`{name}` must be 1 to {MAX_PG_IDENTIFIER_BYTES} bytes (PostgreSQL's identifier limit)"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} holds a control character"));
    }
    Ok(())
}

fn check_secret_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() || id.trim() != id || id.chars().any(char::is_control) {
        return Err(format!(
            "{id:?} is not a Secrets Manager secret name or ARN"
        ));
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "`{name}` is not an environment variable name (letters, digits, `_`; name the variable, not the URL)"
        ));
    }
    Ok(())
}

/// A Kinesis stream name (1–128 of `a-zA-Z0-9_.-`) or a stream ARN
/// (`arn:<partition>:kinesis:<region>:<account>:stream/<name>`).
fn check_stream(s: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        (1..=128).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if s.starts_with("arn:") {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[2] == "kinesis"
            && parts[5].strip_prefix("stream/").is_some_and(name_ok);
        if !ok {
            return Err(format!(
                "`{s}` is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
            ));
        }
        return Ok(());
    }
    if !name_ok(s) {
        return Err(format!(
            "`{s}` is not a Kinesis stream name (1 to 128 letters, digits, `_`, `.`, `-`) or ARN"
        ));
    }
    Ok(())
}

/// Fills in what a cdc table leaves out, before validation, so every reader of the table (the
/// output schema, the transform plan, the loader) sees one complete table: the built-in
/// columns it does not declare (appended in [`CDC_BUILTIN_COLUMNS`] order), `partition_by`
/// (`_commit_ts`), `dedup.order_by` and `warehouse.version_column` (`_lsn`). A value the table
/// sets is kept, and validation judges it.
pub(crate) fn complete_table(t: &mut TableConfig) {
    if t.format != InputFormat::Cdc {
        return;
    }
    for name in CDC_BUILTIN_COLUMNS {
        if t.column(name).is_some() {
            continue;
        }
        let Some(b) = builtin_column(name) else {
            continue;
        };
        t.columns.push(ColumnConfig {
            name: b.name.to_string(),
            ty: b.ty,
            required: false,
            rename: None,
            null_tokens: None,
            fields: Vec::new(),
            pii: None,
        });
    }
    if t.partition_by.is_empty() {
        t.partition_by = CDC_PARTITION_BY.to_string();
    }
    if let Some(d) = t.dedup.as_mut() {
        d.order_by
            .get_or_insert_with(|| CDC_VERSION_COLUMN.to_string());
    }
    if let Some(w) = t.warehouse.as_mut() {
        w.version_column
            .get_or_insert_with(|| CDC_VERSION_COLUMN.to_string());
    }
}

/// The rules of one table that tie it to change data capture: a cdc table has its source
/// relation, its `raw/cdc/<name>/` prefix, a dedup key, exact values, and the built-in
/// ordering and partitioning; any other table has no relation. (A `jsonl` table may still read
/// hand-made change files under `raw/cdc/`, as the loader's tests do.)
pub(crate) fn validate_table(t: &TableConfig) -> Result<(), Invalid> {
    if t.format != InputFormat::Cdc {
        if t.cdc.is_some() {
            return Err(Invalid::at(
                "cdc",
                "only tables with format = \"cdc\" have a source relation",
            ));
        }
        return Ok(());
    }
    let Some(rel) = &t.cdc else {
        return Err(Invalid::at(
            "cdc",
            "a format = \"cdc\" table needs its source relation, e.g. cdc = { schema = \"public\", table = \"orders\" }",
        ));
    };
    rel.validate().map_err(|e| e.within("cdc"))?;
    let prefix = crate::lake::layout::raw_cdc_prefix(&t.name);
    if t.raw_prefix != prefix {
        return Err(Invalid::at(
            "raw_prefix",
            format!(
                "`{}` must be `{prefix}` for a cdc table: cdc-sink writes table `{}`'s changes there",
                t.raw_prefix, t.name
            ),
        ));
    }
    validate_exact_values(t)?;
    validate_builtins(t)?;
    validate_ordering(t)
}

/// A change event's values are exact: JSON null is the only null and strings keep their
/// spaces (a `char(n)` keeps its padding, an empty string stays empty), so the settings that
/// clean text input have no place here.
fn validate_exact_values(t: &TableConfig) -> Result<(), Invalid> {
    let exact =
        "change events carry exact values (JSON null is the only null, strings are never trimmed)";
    if t.null_tokens.is_some() {
        return Err(Invalid::at(
            "null_tokens",
            format!("not for cdc tables: {exact}"),
        ));
    }
    if t.trim.is_some() {
        return Err(Invalid::at("trim", format!("not for cdc tables: {exact}")));
    }
    for (j, c) in t.columns.iter().enumerate() {
        if c.null_tokens.is_some() {
            return Err(Invalid::at(
                format!("columns[{j}].null_tokens"),
                format!("not for cdc tables: {exact}"),
            ));
        }
    }
    Ok(())
}

/// `_shard` has no source in a change event (the other built-ins come from its envelope).
fn validate_builtins(t: &TableConfig) -> Result<(), Invalid> {
    for (j, c) in t.columns.iter().enumerate() {
        if builtin_column(&c.name).is_some() && !CDC_BUILTIN_COLUMNS.contains(&c.name.as_str()) {
            return Err(Invalid::at(
                format!("columns[{j}].name"),
                format!(
                    "`{}` has no value in a change event; a cdc table's built-in columns are {}",
                    c.name,
                    CDC_BUILTIN_COLUMNS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Partition by `_commit_ts`, dedup by the key ordered by `_lsn`, version the warehouse row by
/// `_lsn`: a TRUNCATE row has no source values to place or order it by, and the loader orders
/// changes (and a TRUNCATE against them) by `_lsn`.
fn validate_ordering(t: &TableConfig) -> Result<(), Invalid> {
    if t.partition_by != CDC_PARTITION_BY {
        return Err(Invalid::at(
            "partition_by",
            format!("a cdc table partitions by `{CDC_PARTITION_BY}` (leave it out): a TRUNCATE row has no other value to place it by"),
        ));
    }
    let Some(d) = &t.dedup else {
        return Err(Invalid::at(
            "dedup",
            "a cdc table needs `dedup = { key = [...] }` with the source's primary key: the latest change of each key wins",
        ));
    };
    if d.order_by.as_deref() != Some(CDC_VERSION_COLUMN) {
        return Err(Invalid::at(
            "dedup.order_by",
            format!(
                "a cdc table orders the changes of a key by `{CDC_VERSION_COLUMN}` (leave it out)"
            ),
        ));
    }
    if let Some(w) = &t.warehouse {
        if w.version_column.as_deref() != Some(CDC_VERSION_COLUMN) {
            return Err(Invalid::at(
                "warehouse.version_column",
                format!("a cdc table's warehouse version is `{CDC_VERSION_COLUMN}` (leave it out)"),
            ));
        }
    }
    Ok(())
}

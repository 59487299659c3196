//! `[tables.source]`: where `extract` reads a table, one database per shard, and how it pages
//! through it (docs/EXTRACT.md is the reference). Parsed and validated here; `crate::extract`
//! does the reading.
//!
//! ```toml
//! [tables.source]
//! engine = "mysql"
//! shards = [{ id = "eu1", secret = "sluice/shard-eu1" }, { id = "local", url_env = "SHARD_URL" }]
//! table = "shop.orders"            # or: query = "SELECT … AS updated_at FROM … JOIN …"
//! key_columns = ["order_id"]
//! updated_at_column = "updated_at"
//! soft_delete_column = "deleted_at"
//! ```

use std::collections::HashSet;

use serde::Deserialize;

use super::error::Invalid;
use super::table::{InputFormat, TableConfig};

/// 10,000 rows a page: one keyset query returns at most this many. Small enough that a page
/// takes seconds (the run checks its deadline between pages, and a long statement holds the
/// source's undo/snapshot), large enough that the per-query cost is noise.
const fn default_page_rows() -> u32 {
    10_000
}
/// 100,000 rows a part: a few MB of gzip JSON lines, one transform invocation each.
const fn default_part_rows() -> u32 {
    100_000
}
/// Five minutes: a transaction that sets `updated_at` and commits later than this is the
/// only one a run can miss; hourly runs lose nothing measurable by lagging five minutes.
const fn default_safety_lag_secs() -> u32 {
    300
}
/// Longest page accepted: a bigger one is a whole-table read in all but name.
const MAX_PAGE_ROWS: u32 = 1_000_000;
/// Longest part accepted (the transform reads a part in one invocation).
const MAX_PART_ROWS: u32 = 10_000_000;
/// A day: a longer lag is a misconfiguration (the data would be a day old at best).
const MAX_SAFETY_LAG_SECS: u32 = 86_400;
/// A shard id names a lake folder (`shard=<id>/`) and fills `_shard`: short and plain.
const MAX_SHARD_ID_CHARS: usize = 64;

/// The source database's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceEngine {
    /// MySQL, MariaDB, Aurora MySQL.
    Mysql,
    /// PostgreSQL, Aurora PostgreSQL.
    Postgres,
}

/// One shard: a database holding a slice of the table's rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The shard's name: lower-case letters, digits, `_` and `-`, at most 64; it names the
    /// lake folder `<raw_prefix>shard=<id>/` and is the `_shard` value of its rows.
    pub id: String,
    /// Secrets Manager id (name or ARN) of an RDS connection secret: a JSON SecretString with
    /// `host`, `port`, `username`, `password`, `dbname`, optionally `engine`, `sslmode`
    /// (disable, prefer, require, verify-ca, verify-full) and `sslrootcert` (a CA file path).
    #[serde(default)]
    pub secret: Option<String>,
    /// Name of an environment variable holding a `mysql://` or `postgres://` URL (local runs
    /// and tests; the URL itself never appears in the pipeline file).
    #[serde(default)]
    pub url_env: Option<String>,
}

/// Where a shard's connection comes from, as `validate` guarantees: exactly one of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardLocation<'a> {
    /// A Secrets Manager secret in the RDS layout.
    Secret(&'a str),
    /// An environment variable holding a URL.
    UrlEnv(&'a str),
}

impl ShardConfig {
    /// The shard's connection source; `None` only for a config that failed validation.
    pub fn location(&self) -> Option<ShardLocation<'_>> {
        match (&self.secret, &self.url_env) {
            (Some(s), None) => Some(ShardLocation::Secret(s)),
            (None, Some(v)) => Some(ShardLocation::UrlEnv(v)),
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_shard_id(&self.id).map_err(|r| Invalid::at("id", r))?;
        match (&self.secret, &self.url_env) {
            (Some(s), None) => check_secret_id(s).map_err(|r| Invalid::at("secret", r)),
            (None, Some(v)) => check_env_name(v).map_err(|r| Invalid::at("url_env", r)),
            _ => Err(Invalid::at(
                "secret",
                format!("shard `{}`: set exactly one of `secret` (a Secrets Manager secret) or `url_env` (an environment variable holding a URL, local runs)", self.id),
            )),
        }
    }
}

/// `[tables.source]`: the source of a table extracted by `extract`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql` (MySQL, MariaDB, Aurora MySQL) or `postgres`.
    pub engine: SourceEngine,
    /// The shards, each read on its own connection into `<raw_prefix>shard=<id>/`.
    pub shards: Vec<ShardConfig>,
    /// Table (or view) to read, `name` or `schema.name`; quoted as given (case matters).
    /// Exactly one of `table` or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A SELECT to read instead (a join, so that the warehouse needs none). Its result must
    /// have the key columns and `updated_at_column`; for a join, compute that as the greatest
    /// of the joined tables' (`GREATEST(o.updated_at, c.updated_at) AS updated_at`) so a
    /// change on either side is seen.
    #[serde(default)]
    pub query: Option<String>,
    /// The columns that identify a row, in keyset order (the tiebreaker after `updated_at`).
    pub key_columns: Vec<String>,
    /// The timestamp column (of the table or the query's result) that every insert and update
    /// sets: the watermark.
    pub updated_at_column: String,
    /// A column whose non-NULL, non-false, non-zero value marks a row deleted: such rows are
    /// written with `_op = "d"` (the table must declare `_op`), others with `_op = "u"`.
    #[serde(default)]
    pub soft_delete_column: Option<String>,
    /// Rows per keyset query. Default 10000.
    #[serde(default = "default_page_rows")]
    pub page_rows: u32,
    /// Rows per part (one gzip JSON lines object). Default 100000.
    #[serde(default = "default_part_rows")]
    pub part_rows: u32,
    /// Seconds the upper bound of a run stays behind the source's clock, for transactions
    /// that set `updated_at` and commit later. Default 300.
    #[serde(default = "default_safety_lag_secs")]
    pub safety_lag_secs: u32,
    /// Whether the key columns alone identify a row across all shards. When false (default)
    /// the warehouse merge key must include `_shard`.
    #[serde(default)]
    pub keys_unique_across_shards: bool,
}

impl SourceConfig {
    /// The shard called `id`.
    pub fn shard(&self, id: &str) -> Option<&ShardConfig> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The section's rules and its ties to the table (`t`). Paths are relative to `source`.
    pub(crate) fn validate(&self, t: &TableConfig) -> Result<(), Invalid> {
        self.validate_shards()?;
        self.validate_relation()?;
        self.validate_columns()?;
        self.validate_limits()?;
        self.validate_table(t)
    }

    fn validate_shards(&self) -> Result<(), Invalid> {
        if self.shards.is_empty() {
            return Err(Invalid::at("shards", "at least one shard is required"));
        }
        let mut ids = HashSet::new();
        for (i, s) in self.shards.iter().enumerate() {
            s.validate()
                .map_err(|e| e.within(&format!("shards[{i}]")))?;
            if !ids.insert(s.id.as_str()) {
                return Err(Invalid::at(
                    format!("shards[{i}].id"),
                    format!("shard `{}` is listed twice", s.id),
                ));
            }
        }
        Ok(())
    }

    fn validate_relation(&self) -> Result<(), Invalid> {
        match (&self.table, &self.query) {
            (Some(t), None) => check_table_name(t).map_err(|r| Invalid::at("table", r)),
            (None, Some(q)) => check_query(q).map_err(|r| Invalid::at("query", r)),
            _ => Err(Invalid::at("", "set exactly one of `table` or `query`")),
        }
    }

    fn validate_columns(&self) -> Result<(), Invalid> {
        if self.key_columns.is_empty() {
            return Err(Invalid::at(
                "key_columns",
                "at least one key column is required (the keyset tiebreaker)",
            ));
        }
        let mut seen = HashSet::new();
        for (j, k) in self.key_columns.iter().enumerate() {
            check_column_name(k).map_err(|r| Invalid::at(format!("key_columns[{j}]"), r))?;
            if !seen.insert(k.as_str()) {
                return Err(Invalid::at(
                    format!("key_columns[{j}]"),
                    format!("`{k}` is listed twice"),
                ));
            }
        }
        check_column_name(&self.updated_at_column)
            .map_err(|r| Invalid::at("updated_at_column", r))?;
        if seen.contains(self.updated_at_column.as_str()) {
            return Err(Invalid::at(
                "updated_at_column",
                format!(
                    "`{}` is a key column: the watermark must be another column",
                    self.updated_at_column
                ),
            ));
        }
        if let Some(d) = &self.soft_delete_column {
            check_column_name(d).map_err(|r| Invalid::at("soft_delete_column", r))?;
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), Invalid> {
        let range = |field: &str, v: u32, max: u32| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(Invalid::at(field, format!("must be between 1 and {max}")))
            }
        };
        range("page_rows", self.page_rows, MAX_PAGE_ROWS)?;
        range("part_rows", self.part_rows, MAX_PART_ROWS)?;
        if self.safety_lag_secs > MAX_SAFETY_LAG_SECS {
            return Err(Invalid::at(
                "safety_lag_secs",
                format!("must be at most {MAX_SAFETY_LAG_SECS} (a day)"),
            ));
        }
        Ok(())
    }

    /// What the table must have for extracted rows: JSON lines input, `_op` when deletes are
    /// marked, and `_shard` in the merge key unless keys are unique across shards (two shards'
    /// rows with one key would otherwise overwrite each other in the warehouse).
    fn validate_table(&self, t: &TableConfig) -> Result<(), Invalid> {
        if t.format != InputFormat::Jsonl {
            return Err(Invalid::at(
                "",
                "an extracted table has `format = \"jsonl\"`: extract writes gzip JSON lines",
            ));
        }
        if self.soft_delete_column.is_some() && t.column("_op").is_none() {
            return Err(Invalid::at(
                "soft_delete_column",
                "soft-deleted rows are written with `_op = \"d\"`: declare the column `_op` (type string) so the warehouse deletes them",
            ));
        }
        if self.keys_unique_across_shards {
            return Ok(());
        }
        if t.column("_shard").is_none() {
            return Err(Invalid::at(
                "keys_unique_across_shards",
                "is false, so rows are told apart by their shard: declare the column `_shard` (type string), or set keys_unique_across_shards = true",
            ));
        }
        if let Some(w) = &t.warehouse {
            if !w.merge_keys.iter().any(|k| k == "_shard") {
                return Err(Invalid::at(
                    "keys_unique_across_shards",
                    "is false, so `warehouse.merge_keys` must include `_shard` (two shards' rows with one key would overwrite each other), or set keys_unique_across_shards = true",
                ));
            }
        }
        Ok(())
    }
}

fn check_shard_id(id: &str) -> Result<(), String> {
    let ok = id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id.len() <= MAX_SHARD_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{id}` must be 1 to {MAX_SHARD_ID_CHARS} lower-case letters, digits, `_` or `-`, starting with a letter or digit"))
    }
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
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not an environment variable name (letters, digits, `_`; name the variable, not the URL)"))
    }
}

/// A column name of the source: quoted in SQL, so anything but what no quoting can carry.
fn check_column_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || name
            .chars()
            .any(|c| c.is_control() || matches!(c, '`' | '"'))
    {
        return Err(format!(
            "`{name}` must be 1 to 64 characters without quotes, backticks or control characters"
        ));
    }
    Ok(())
}

/// `name` or `schema.name`, each part a column-like name.
fn check_table_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| check_column_name(p).is_err()) {
        return Err(format!("`{name}` must be `name` or `schema.name`, each 1 to 64 characters without quotes, backticks or control characters"));
    }
    Ok(())
}

/// One SELECT (or WITH … SELECT): extract wraps it as a derived table, so a second statement
/// or a trailing semicolon would break the wrapper.
fn check_query(q: &str) -> Result<(), String> {
    let t = q.trim();
    let first = t
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if first != "SELECT" && first != "WITH" {
        return Err("must be one SELECT (or WITH … SELECT) statement".into());
    }
    if t.contains(';') {
        return Err(
            "must be one statement without `;` (extract wraps it in its keyset query)".into(),
        );
    }
    Ok(())
}

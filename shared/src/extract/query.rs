//! The keyset SQL, per engine. Identifiers from the pipeline file are quoted (backticks on
//! MySQL, double quotes on PostgreSQL, the quote character doubled inside); values are always
//! bound, never spliced in. A page is
//!
//! ```sql
//! SELECT <columns> FROM <table | (<query>) AS sluice_q>
//! WHERE (updated_at, k1, k2) > (:ts, :k1, :k2) AND updated_at <= :upper
//! ORDER BY updated_at, k1, k2 LIMIT <page_rows>
//! ```
//!
//! PostgreSQL compares row values natively (and pages an index on them); MySQL and MariaDB get
//! the expanded form `ts > :ts OR (ts = :ts AND (k1 > :k1 OR …))`, which their range
//! optimisers turn into index ranges where a row constructor may not be. A historical dump
//! orders by the key columns alone. Bound values are text cast to the column's type on
//! PostgreSQL, and typed on MySQL (which converts a string to the column's type).

use serde_json::Value;

use super::columns::{ColumnInfo, Described};
use super::error::ShardError;
use super::state::Cursor;
use super::values::Kind;
use crate::config::{SourceConfig, SourceEngine};

/// The derived table a custom query is wrapped in.
const WRAPPED: &str = "sluice_q";

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    I64(i64),
    U64(u64),
    F64(f64),
    Text(String),
}

/// A statement and its bound values, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// A quoted identifier.
pub(crate) fn quote(engine: SourceEngine, ident: &str) -> String {
    match engine {
        SourceEngine::Mysql => format!("`{}`", ident.replace('`', "``")),
        SourceEngine::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
    }
}

/// What the run selects from: the table (`schema.name` quoted part by part) or the wrapped
/// query; and which columns: the table's declared source columns, then the key, watermark and
/// soft-delete columns when not among them.
#[derive(Debug, Clone)]
pub(crate) struct Select {
    engine: SourceEngine,
    from: String,
    list: String,
}

impl Select {
    pub(crate) fn new(engine: SourceEngine, source: &SourceConfig, declared: &[&str]) -> Self {
        let from = match (&source.table, &source.query) {
            (Some(t), _) => t
                .split('.')
                .map(|p| quote(engine, p))
                .collect::<Vec<_>>()
                .join("."),
            (None, q) => format!("({}) AS {WRAPPED}", q.as_deref().unwrap_or("").trim()),
        };
        let mut names: Vec<&str> = Vec::new();
        let extra = source
            .key_columns
            .iter()
            .map(String::as_str)
            .chain([source.updated_at_column.as_str()])
            .chain(source.soft_delete_column.as_deref());
        for n in declared.iter().copied().chain(extra) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let list = names
            .iter()
            .map(|n| quote(engine, n))
            .collect::<Vec<_>>()
            .join(", ");
        Self { engine, from, list }
    }

    /// The SELECT without conditions: prepared to describe the columns, never executed.
    pub(crate) fn describe_sql(&self) -> String {
        format!("SELECT {} FROM {}", self.list, self.from)
    }

    /// Whether any row has a NULL `updated_at`: such a row is never inside a range's bound
    /// (`ua <= upper` is not true for NULL), so it would be skipped without a word.
    pub(crate) fn null_updated_at_sql(&self, d: &Described) -> String {
        format!(
            "SELECT 1 FROM {} WHERE {} IS NULL LIMIT 1",
            self.from,
            quote(self.engine, &d.columns[d.updated_at].name)
        )
    }

    /// One page after `cursor`, up to `upper` (an ISO-8601 UTC timestamp), in keyset order.
    pub(crate) fn page(
        &self,
        d: &Described,
        cursor: &Cursor,
        upper: &str,
        limit: u32,
    ) -> Result<PageQuery, ShardError> {
        let ua = &d.columns[d.updated_at];
        let keys: Vec<&ColumnInfo> = d.key_columns().collect();
        let mut p = Params {
            engine: self.engine,
            binds: Vec::new(),
        };
        let q = |c: &ColumnInfo| quote(self.engine, &c.name);
        let after = match cursor {
            Cursor::Start | Cursor::DumpStart => None,
            Cursor::After {
                updated_at,
                key: None,
            } => Some(format!("{} > {}", q(ua), p.ts(ua, updated_at)?)),
            Cursor::After {
                updated_at,
                key: Some(values),
            } => {
                let mut cols = vec![ua];
                cols.extend(keys.iter().copied());
                let mut vals = vec![Value::String(updated_at.clone())];
                vals.extend(values.iter().cloned());
                Some(p.greater(&cols, &vals)?)
            }
            Cursor::AfterKeys(values) => Some(p.greater(&keys, values)?),
        };
        let bound = format!("{} <= {}", q(ua), p.ts(ua, upper)?);
        let filter = match after {
            Some(a) => format!("({a}) AND {bound}"),
            None => bound,
        };
        let mut order: Vec<String> = keys.iter().map(|c| q(c)).collect();
        if !cursor.is_dump() {
            order.insert(0, q(ua));
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {filter} ORDER BY {} LIMIT {limit}",
            self.list,
            self.from,
            order.join(", ")
        );
        Ok(PageQuery {
            sql,
            binds: p.binds,
        })
    }
}

/// Placeholders and their values, in order.
struct Params {
    engine: SourceEngine,
    binds: Vec<Bind>,
}

impl Params {
    /// A placeholder for `value` compared with column `c`.
    fn push(&mut self, c: &ColumnInfo, value: &Value) -> Result<String, ShardError> {
        let bad = || {
            ShardError::column(
                &c.name,
                format!(
                    "cannot page by a JSON {} (a {} column)",
                    json_kind(value),
                    c.sql_type
                ),
            )
        };
        let bind = match (self.engine, value) {
            (SourceEngine::Mysql, Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Bind::I64(i),
                (None, Some(u)) => Bind::U64(u),
                _ => Bind::F64(n.as_f64().ok_or_else(bad)?),
            },
            (SourceEngine::Mysql, Value::String(s)) if c.kind == Kind::MyDateTime => {
                Bind::Text(mysql_ts(s).ok_or_else(bad)?)
            }
            (_, Value::String(s)) => Bind::Text(s.clone()),
            (SourceEngine::Postgres, Value::Number(n)) => Bind::Text(n.to_string()),
            _ => return Err(bad()),
        };
        self.binds.push(bind);
        Ok(match self.engine {
            SourceEngine::Mysql => "?".to_string(),
            SourceEngine::Postgres => format!("CAST(${} AS {})", self.binds.len(), c.sql_type),
        })
    }

    fn ts(&mut self, c: &ColumnInfo, iso: &str) -> Result<String, ShardError> {
        self.push(c, &Value::String(iso.to_string()))
    }

    /// `(c1, c2, …) > (v1, v2, …)` in the engine's form.
    fn greater(&mut self, cols: &[&ColumnInfo], vals: &[Value]) -> Result<String, ShardError> {
        if cols.len() != vals.len() || cols.is_empty() {
            return Err(ShardError::Corrupt {
                key: "cursor".into(),
                reason: format!(
                    "a position of {} values for {} columns",
                    vals.len(),
                    cols.len()
                ),
            });
        }
        let engine = self.engine;
        let q = |c: &ColumnInfo| quote(engine, &c.name);
        if engine == SourceEngine::Postgres {
            let names: Vec<String> = cols.iter().map(|c| q(c)).collect();
            let mut ps = Vec::new();
            for (c, v) in cols.iter().zip(vals) {
                ps.push(self.push(c, v)?);
            }
            return Ok(format!("({}) > ({})", names.join(", "), ps.join(", ")));
        }
        // c1 > v1 OR (c1 = v1 AND (c2 > v2 OR (c2 = v2 AND …)))
        let (c, v) = (cols[0], &vals[0]);
        let gt = format!("{} > {}", q(c), self.push(c, v)?);
        if cols.len() == 1 {
            return Ok(gt);
        }
        let eq = format!("{} = {}", q(c), self.push(c, v)?);
        let rest = self.greater(&cols[1..], &vals[1..])?;
        Ok(format!("{gt} OR ({eq} AND ({rest}))"))
    }
}

/// What a value is, for messages (never the value: it may be personal data).
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `2024-01-31T09:05:00.000000Z` → `2024-01-31 09:05:00.000000`, the literal MySQL and MariaDB
/// both read as a DATETIME (the session time zone is UTC).
fn mysql_ts(iso: &str) -> Option<String> {
    let body = iso.strip_suffix('Z')?;
    (body.len() >= 19 && body.as_bytes()[10] == b'T').then(|| body.replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(name: &str, kind: Kind, sql_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            kind,
            sql_type: sql_type.into(),
        }
    }

    fn described(engine: SourceEngine) -> Described {
        let (ts, int, text) = match engine {
            SourceEngine::Mysql => (
                Kind::MyDateTime,
                Kind::MyInt {
                    bytes: 8,
                    signed: true,
                },
                "VARCHAR",
            ),
            SourceEngine::Postgres => (
                Kind::PgTimestamp,
                Kind::PgInt {
                    bytes: 8,
                    signed: true,
                },
                "text",
            ),
        };
        Described {
            columns: vec![
                col("id", int, "int8"),
                col("re`gion\"", Kind::Text, text),
                col("updated_at", ts, "timestamptz"),
            ],
            updated_at: 2,
            keys: vec![1, 0],
            soft_delete: None,
        }
    }

    fn select(engine: SourceEngine, source: &str) -> Select {
        let text = format!("engine = \"mysql\"\nshards = [{{ id = \"a\", url_env = \"A\" }}]\nkey_columns = [\"id\"]\nupdated_at_column = \"updated_at\"\n{source}");
        let s: SourceConfig = toml::from_str(&text).unwrap();
        Select::new(engine, &s, &["id", "note"])
    }

    #[test]
    fn tables_are_quoted_and_columns_listed_once() {
        let s = select(SourceEngine::Mysql, "table = \"shop.or`ders\"");
        assert_eq!(
            s.describe_sql(),
            "SELECT `id`, `note`, `updated_at` FROM `shop`.`or``ders`"
        );
        let s = select(SourceEngine::Postgres, "query = \" SELECT * FROM x \"");
        assert_eq!(
            s.describe_sql(),
            "SELECT \"id\", \"note\", \"updated_at\" FROM (SELECT * FROM x) AS sluice_q"
        );
    }

    #[test]
    fn mysql_pages_expand_the_row_comparison() {
        let s = select(SourceEngine::Mysql, "table = \"t\"");
        let d = described(SourceEngine::Mysql);
        let first = s
            .page(&d, &Cursor::Start, "2024-01-02T00:00:00.000000Z", 7)
            .unwrap();
        assert_eq!(first.sql, "SELECT `id`, `note`, `updated_at` FROM `t` WHERE `updated_at` <= ? ORDER BY `updated_at`, `re``gion\"`, `id` LIMIT 7");
        assert_eq!(
            first.binds,
            vec![Bind::Text("2024-01-02 00:00:00.000000".into())]
        );
        let at = Cursor::After {
            updated_at: "2024-01-01T00:00:00.500000Z".into(),
            key: Some(vec![json!("eu"), json!(5)]),
        };
        let next = s.page(&d, &at, "2024-01-02T00:00:00.000000Z", 7).unwrap();
        assert!(next.sql.contains("WHERE (`updated_at` > ? OR (`updated_at` = ? AND (`re``gion\"` > ? OR (`re``gion\"` = ? AND (`id` > ?))))) AND `updated_at` <= ?"), "{}", next.sql);
        let ts = Bind::Text("2024-01-01 00:00:00.500000".into());
        assert_eq!(
            next.binds,
            vec![
                ts.clone(),
                ts,
                Bind::Text("eu".into()),
                Bind::Text("eu".into()),
                Bind::I64(5),
                Bind::Text("2024-01-02 00:00:00.000000".into())
            ]
        );
    }

    #[test]
    fn postgres_pages_compare_rows_with_casts() {
        let s = select(SourceEngine::Postgres, "table = \"t\"");
        let d = described(SourceEngine::Postgres);
        let at = Cursor::After {
            updated_at: "2024-01-01T00:00:00.500000Z".into(),
            key: Some(vec![json!("eu"), json!(5)]),
        };
        let p = s.page(&d, &at, "2024-01-02T00:00:00.000000Z", 7).unwrap();
        assert!(p.sql.contains("WHERE ((\"updated_at\", \"re`gion\"\"\", \"id\") > (CAST($1 AS timestamptz), CAST($2 AS text), CAST($3 AS int8))) AND \"updated_at\" <= CAST($4 AS timestamptz) ORDER BY \"updated_at\", \"re`gion\"\"\", \"id\" LIMIT 7"), "{}", p.sql);
        assert_eq!(p.binds[2], Bind::Text("5".into()));
        // After everything at one instant (a dump's end): the timestamp alone.
        let after = Cursor::After {
            updated_at: "2024-01-01T00:00:00.000000Z".into(),
            key: None,
        };
        let p = s
            .page(&d, &after, "2024-01-02T00:00:00.000000Z", 7)
            .unwrap();
        assert!(
            p.sql
                .contains("WHERE (\"updated_at\" > CAST($1 AS timestamptz)) AND"),
            "{}",
            p.sql
        );
    }

    #[test]
    fn dumps_order_by_key_alone() {
        let s = select(SourceEngine::Postgres, "table = \"t\"");
        let d = described(SourceEngine::Postgres);
        let p = s
            .page(
                &d,
                &Cursor::AfterKeys(vec![json!("eu"), json!(5)]),
                "2024-01-02T00:00:00.000000Z",
                3,
            )
            .unwrap();
        assert!(p.sql.ends_with("WHERE ((\"re`gion\"\"\", \"id\") > (CAST($1 AS text), CAST($2 AS int8))) AND \"updated_at\" <= CAST($3 AS timestamptz) ORDER BY \"re`gion\"\"\", \"id\" LIMIT 3"), "{}", p.sql);
        let p = s
            .page(&d, &Cursor::DumpStart, "2024-01-02T00:00:00.000000Z", 3)
            .unwrap();
        assert!(p.sql.ends_with("WHERE \"updated_at\" <= CAST($1 AS timestamptz) ORDER BY \"re`gion\"\"\", \"id\" LIMIT 3"), "{}", p.sql);
        let bad = s.page(
            &d,
            &Cursor::AfterKeys(vec![json!(5)]),
            "2024-01-02T00:00:00.000000Z",
            3,
        );
        assert!(bad.is_err());
    }
}

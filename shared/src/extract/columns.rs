//! The columns a run reads: their kinds from the source's own type information (described by
//! preparing the SELECT, before any row is read), and the checks that make the keyset safe: a
//! timestamp `updated_at`, key columns whose values bind back exactly.

use sqlx::mysql::{MySql, MySqlTypeInfo};
use sqlx::postgres::{PgTypeInfo, PgTypeKind};
use sqlx::{Column, Executor, Statement, TypeInfo};

use super::error::ShardError;
use super::source::Conn;
use super::values::Kind;

/// One column of the result, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    pub name: String,
    pub kind: Kind,
    /// The SQL type a bound text value is cast to on PostgreSQL (`int8`, `timestamptz`, …);
    /// the server's type name on MySQL (for messages).
    pub sql_type: String,
}

/// The described result: every column, and where the watermark and key columns are in it.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub columns: Vec<ColumnInfo>,
    pub updated_at: usize,
    pub keys: Vec<usize>,
    pub soft_delete: Option<usize>,
}

impl Described {
    pub(crate) fn key_columns(&self) -> impl Iterator<Item = &ColumnInfo> {
        self.keys.iter().map(|&i| &self.columns[i])
    }
}

/// Prepares `sql` (not executed) and checks its columns against the names the table pages by.
pub(crate) async fn describe(
    conn: &mut Conn,
    sql: &str,
    updated_at: &str,
    keys: &[String],
    soft_delete: Option<&str>,
) -> Result<Described, ShardError> {
    let what = "describing the query's columns";
    let columns: Vec<ColumnInfo> = match conn {
        Conn::My(c) => {
            let st = c
                .prepare(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(
                    sql.to_string(),
                )))
                .await
                .map_err(|e| ShardError::db(what, e))?;
            st.columns()
                .iter()
                .map(|col| mysql_column(col.name(), col.type_info()))
                .collect::<Result<_, _>>()?
        }
        Conn::Pg(c) => {
            let st = c
                .prepare(sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(
                    sql.to_string(),
                )))
                .await
                .map_err(|e| ShardError::db(what, e))?;
            st.columns()
                .iter()
                .map(|col| pg_column(col.name(), col.type_info()))
                .collect::<Result<_, _>>()?
        }
    };
    let find = |name: &str| -> Result<usize, ShardError> {
        columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ShardError::column(name, "is not a column of the source's result"))
    };
    let d = Described {
        updated_at: find(updated_at)?,
        keys: keys.iter().map(|k| find(k)).collect::<Result<_, _>>()?,
        soft_delete: soft_delete.map(find).transpose()?,
        columns: columns.clone(),
    };
    let ua = &d.columns[d.updated_at];
    if !ua.kind.is_timestamp() {
        return Err(ShardError::column(
            &ua.name,
            format!("is {}; updated_at_column must be a timestamp (DATETIME/TIMESTAMP, timestamp/timestamptz)", ua.sql_type),
        ));
    }
    for k in d.key_columns() {
        if !k.kind.keyable() {
            return Err(ShardError::column(
                &k.name,
                format!("is {}; a key column must be an integer, decimal, text, uuid, date or timestamp", k.sql_type),
            ));
        }
    }
    Ok(d)
}

/// The kinds of a result's columns, from its own type information (decoding uses the rows'
/// types, not the prepared statement's, which a server may approximate for expressions).
pub(crate) fn mysql_kinds<'a>(
    types: impl Iterator<Item = (&'a str, &'a MySqlTypeInfo)>,
) -> Result<Vec<Kind>, ShardError> {
    types
        .map(|(n, t)| mysql_column(n, t).map(|c| c.kind))
        .collect()
}

pub(crate) fn pg_kinds<'a>(
    types: impl Iterator<Item = (&'a str, &'a PgTypeInfo)>,
) -> Result<Vec<Kind>, ShardError> {
    types
        .map(|(n, t)| pg_column(n, t).map(|c| c.kind))
        .collect()
}

fn mysql_column(name: &str, t: &MySqlTypeInfo) -> Result<ColumnInfo, ShardError> {
    let ty = t.name();
    let int = |bytes, signed| Kind::MyInt { bytes, signed };
    let kind = match ty {
        "BOOLEAN" | "TINYINT" => int(1, true),
        "TINYINT UNSIGNED" => int(1, false),
        "SMALLINT" => int(2, true),
        "SMALLINT UNSIGNED" | "YEAR" => int(2, false),
        "INT" | "MEDIUMINT" => int(4, true),
        "INT UNSIGNED" | "MEDIUMINT UNSIGNED" => int(4, false),
        "BIGINT" => int(8, true),
        "BIGINT UNSIGNED" => int(8, false),
        "FLOAT" => Kind::Float {
            bytes: 4,
            big_endian: false,
        },
        "DOUBLE" => Kind::Float {
            bytes: 8,
            big_endian: false,
        },
        "DECIMAL" => Kind::DecimalText,
        "DATE" => Kind::MyDate,
        "DATETIME" | "TIMESTAMP" => Kind::MyDateTime,
        "TIME" => Kind::MyTime,
        "JSON" => Kind::Json,
        "BIT" => Kind::MyBit,
        "NULL" => Kind::Null,
        "SET" | "ENUM" => Kind::Text,
        "GEOMETRY" => Kind::Binary,
        // CHAR, VARCHAR, TEXT, BINARY, VARBINARY, BLOB and their sizes: text unless the
        // collation is `binary` (the test sqlx itself uses for strings).
        _ if <str as sqlx::Type<MySql>>::compatible(t) => Kind::Text,
        _ if <[u8] as sqlx::Type<MySql>>::compatible(t) => Kind::Binary,
        other => {
            return Err(ShardError::column(
                name,
                format!("has type {other}, which extract cannot read"),
            ))
        }
    };
    Ok(ColumnInfo {
        name: name.to_string(),
        kind,
        sql_type: ty.to_string(),
    })
}

/// PostgreSQL types by their built-in OIDs (stable across versions); enums as text, domains
/// as their base type. Anything else is refused with a way out: cast it in a `query`.
fn pg_column(name: &str, t: &PgTypeInfo) -> Result<ColumnInfo, ShardError> {
    match t.kind() {
        PgTypeKind::Domain(base) => return pg_column(name, base),
        PgTypeKind::Enum(_) => {
            return Ok(ColumnInfo {
                name: name.to_string(),
                kind: Kind::Text,
                sql_type: "text".into(),
            })
        }
        _ => {}
    }
    let int = |bytes, signed| Kind::PgInt { bytes, signed };
    let (kind, sql_type) = match t.oid().map(|o| o.0) {
        Some(16) => (Kind::PgBool, "bool"),
        Some(17) => (Kind::Binary, "bytea"),
        Some(18) => (Kind::Text, "char"),
        Some(19) => (Kind::Text, "name"),
        Some(20) => (int(8, true), "int8"),
        Some(21) => (int(2, true), "int2"),
        Some(23) => (int(4, true), "int4"),
        Some(25) => (Kind::Text, "text"),
        Some(26) => (int(4, false), "oid"),
        Some(114) => (Kind::Json, "json"),
        Some(700) => (Kind::Float { bytes: 4, big_endian: true }, "float4"),
        Some(701) => (Kind::Float { bytes: 8, big_endian: true }, "float8"),
        Some(705) => (Kind::Text, "text"),
        Some(1042) => (Kind::Text, "bpchar"),
        Some(1043) => (Kind::Text, "varchar"),
        Some(1082) => (Kind::PgDate, "date"),
        Some(1083) => (Kind::PgTime, "time"),
        Some(1114) => (Kind::PgTimestamp, "timestamp"),
        Some(1184) => (Kind::PgTimestamp, "timestamptz"),
        Some(1266) => (Kind::PgTimeTz, "timetz"),
        Some(1700) => (Kind::PgNumeric, "numeric"),
        Some(2950) => (Kind::PgUuid, "uuid"),
        Some(3802) => (Kind::PgJsonb, "jsonb"),
        _ => {
            return Err(ShardError::column(
                name,
                format!("has type {}, which extract cannot read: select it cast to text (`{name}::text`) in a `query`", t.name()),
            ))
        }
    };
    Ok(ColumnInfo {
        name: name.to_string(),
        kind,
        sql_type: sql_type.into(),
    })
}

//! Reading one table page by page: its columns and primary key from the catalogs, the keyset
//! page query, and each row turned into a snapshot event line.

use std::fmt::Write as _;

use futures::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};

use super::{query_error, Progress, SnapshotError, SnapshotTable};
use crate::cdc::event::{ChangeEvent, Op, Source};
use crate::cdc::value::text_to_json;
use crate::lake::layout;
use crate::warehouse::quote_ident;

/// A source column: name, type OID (the decoder's Relation carries the same), SQL type name.
pub(super) struct Column {
    name: String,
    type_oid: u32,
    sql_type: String,
}

/// The page query of one table and where its key columns sit in the select list.
pub(super) struct Pager {
    columns: Vec<Column>,
    /// Indexes into `columns`, in primary-key index order.
    key: Vec<usize>,
    first_sql: String,
    next_sql: String,
}

/// Reads the columns and primary key and builds the page queries.
pub(super) async fn pager(
    conn: &mut PgConnection,
    t: &SnapshotTable,
) -> Result<Pager, SnapshotError> {
    let lake_table = &t.lake_table;
    let err = |e: sqlx::Error| query_error(lake_table, "read columns", &e);
    // Generated columns are left out: pgoutput does not send them either.
    let rows = sqlx::query(
        "SELECT a.attname::text, a.atttypid::int8, format_type(a.atttypid, a.atttypmod), \
                array_position(i.indkey::int2[], a.attnum) \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
              JOIN pg_namespace n ON n.oid = c.relnamespace \
              LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r' \
           AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
         ORDER BY a.attnum",
    )
    .bind(&t.schema)
    .bind(&t.table)
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    if rows.is_empty() {
        let (schema, name) = (t.schema.clone(), t.table.clone());
        return Err(SnapshotError::TableMissing {
            table: lake_table.clone(),
            schema,
            name,
        });
    }
    let mut columns = Vec::with_capacity(rows.len());
    let mut key: Vec<(i32, usize)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let oid: i64 = r.try_get(1).map_err(err)?;
        columns.push(Column {
            name: r.try_get(0).map_err(err)?,
            type_oid: u32::try_from(oid).unwrap_or(0),
            sql_type: r.try_get(2).map_err(err)?,
        });
        if let Some(pos) = r.try_get::<Option<i32>, _>(3).map_err(err)? {
            key.push((pos, i));
        }
    }
    key.sort_unstable();
    let key: Vec<usize> = key.into_iter().map(|(_, i)| i).collect();
    check_key(t, &columns, &key)?;
    let (first_sql, next_sql) = page_sql(t, &columns, &key);
    Ok(Pager {
        columns,
        key,
        first_sql,
        next_sql,
    })
}

fn check_key(t: &SnapshotTable, columns: &[Column], key: &[usize]) -> Result<(), SnapshotError> {
    if key.is_empty() {
        return Err(SnapshotError::NoPrimaryKey {
            table: t.lake_table.clone(),
        });
    }
    if t.key_columns.is_empty() {
        return Ok(());
    }
    let mut primary: Vec<String> = key.iter().map(|&i| columns[i].name.clone()).collect();
    let mut given = t.key_columns.clone();
    primary.sort();
    given.sort();
    if primary != given {
        return Err(SnapshotError::KeyNotPrimary {
            table: t.lake_table.clone(),
            given,
            primary,
        });
    }
    Ok(())
}

/// `SELECT format('%s', c1), … FROM t AS src [WHERE (src.k1, src.k2) > ($1::text::T1, $2::text::T2)]
/// ORDER BY src.k1, src.k2 LIMIT $n`: the row comparison and the order follow the primary-key index, so each page is
/// an index range scan.
fn page_sql(t: &SnapshotTable, columns: &[Column], key: &[usize]) -> (String, String) {
    // format('%s', v) is the type's output function, as pgoutput sends it; a `::text` cast is
    // not always (bool gives `true`, char(n) loses its padding, inet gains a /32).
    let select = columns
        .iter()
        .map(|c| {
            let q = format!("src.{}", quote_ident(&c.name));
            format!("CASE WHEN {q} IS NULL THEN NULL ELSE format('%s', {q}) END")
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Qualified: a bare name in ORDER BY would mean the output column of that name, the text.
    let key_list = key
        .iter()
        .map(|&i| format!("src.{}", quote_ident(&columns[i].name)))
        .collect::<Vec<_>>()
        .join(", ");
    let from = format!(
        "{}.{} AS src",
        quote_ident(&t.schema),
        quote_ident(&t.table)
    );
    let mut params = String::new();
    for (n, &i) in key.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        // format_type gives a SQL type name, quoted where needed.
        let _ = write!(params, "{sep}${}::text::{}", n + 1, columns[i].sql_type);
    }
    let limit = key.len() + 1;
    let first = format!("SELECT {select} FROM {from} ORDER BY {key_list} LIMIT $1");
    let next = format!(
        "SELECT {select} FROM {from} WHERE ({key_list}) > ({params}) ORDER BY {key_list} LIMIT ${limit}"
    );
    (first, next)
}

/// A page stops early past this many bytes of JSON, so wide rows (large TOASTed values) cannot
/// exhaust a Lambda's memory; the next page goes on from its last row.
const PAGE_MAX_BYTES: usize = 64 << 20;

/// One page as JSON lines.
pub(super) struct Page {
    pub(super) body: Vec<u8>,
    pub(super) rows: u64,
    pub(super) last_key: Option<Vec<String>>,
    /// The query ran out of rows before its limit: the table is copied.
    pub(super) exhausted: bool,
}

/// Reads the page after `progress.last_key` (at most `page_rows` rows) as event lines.
pub(super) async fn read_page(
    conn: &mut PgConnection,
    pager: &Pager,
    lake_table: &str,
    source: &Source,
    progress: &Progress,
    page_rows: u64,
) -> Result<Page, SnapshotError> {
    let q = page_query(pager, lake_table, progress, page_rows)?;
    let mut stream = q.fetch(&mut *conn);
    let mut page = Page {
        body: Vec::new(),
        rows: 0,
        last_key: None,
        exhausted: false,
    };
    let mut values: Vec<Option<String>> = Vec::with_capacity(pager.columns.len());
    // One event reused for every row of the page: only `after` changes.
    let mut event = ChangeEvent {
        op: Op::Read,
        before: None,
        after: None,
        unchanged: Vec::new(),
        source: source.clone(),
    };
    let read_error = |e: sqlx::Error| query_error(lake_table, "read page", &e);
    while page.body.len() < PAGE_MAX_BYTES {
        let Some(row) = stream.try_next().await.map_err(read_error)? else {
            page.exhausted = page.rows < page_rows;
            break;
        };
        values.clear();
        for i in 0..pager.columns.len() {
            values.push(row.try_get(i).map_err(read_error)?);
        }
        event.after = Some(row_json(pager, lake_table, &values)?);
        write_event(&mut page.body, lake_table, &event)?;
        page.rows += 1;
        page.last_key = pager.key.iter().map(|&i| values[i].clone()).collect();
    }
    Ok(page)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The first page's query, or the next one's bound to the last key written.
fn page_query<'q>(
    pager: &'q Pager,
    lake_table: &str,
    progress: &'q Progress,
    page_rows: u64,
) -> Result<PgQuery<'q>, SnapshotError> {
    let limit = i64::try_from(page_rows).unwrap_or(i64::MAX);
    let Some(last) = &progress.last_key else {
        return Ok(sqlx::query(AssertSqlSafe(pager.first_sql.as_str())).bind(limit));
    };
    if last.len() != pager.key.len() {
        return Err(SnapshotError::Progress {
            key: layout::cdc_snapshot_progress_key(lake_table),
            reason: format!(
                "holds {} key values, the table's key has {}",
                last.len(),
                pager.key.len()
            ),
        });
    }
    let q = sqlx::query(AssertSqlSafe(pager.next_sql.as_str()));
    Ok(last.iter().fold(q, |q, v| q.bind(v.as_str())).bind(limit))
}

/// The row as `after`: each column typed from its text as the decoder types it.
fn row_json(
    pager: &Pager,
    lake_table: &str,
    values: &[Option<String>],
) -> Result<Map<String, Value>, SnapshotError> {
    let mut after = Map::new();
    for (c, v) in pager.columns.iter().zip(values) {
        let value = match v {
            None => Value::Null,
            Some(text) => {
                text_to_json(c.type_oid, text).map_err(|source| SnapshotError::Value {
                    table: lake_table.to_string(),
                    column: c.name.clone(),
                    type_oid: c.type_oid,
                    source,
                })?
            }
        };
        after.insert(c.name.clone(), value);
    }
    Ok(after)
}

/// Appends the event as one JSON line.
fn write_event(
    out: &mut Vec<u8>,
    lake_table: &str,
    event: &ChangeEvent,
) -> Result<(), SnapshotError> {
    serde_json::to_writer(&mut *out, event).map_err(|e| SnapshotError::Encode {
        table: lake_table.to_string(),
        reason: e.to_string(),
    })?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(key_columns: &[&str]) -> SnapshotTable {
        SnapshotTable {
            schema: "s".into(),
            table: "Orders".into(),
            lake_table: "orders".into(),
            key_columns: key_columns.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn columns() -> Vec<Column> {
        [
            ("id", "bigint"),
            ("note", "text"),
            ("region", "character varying(8)"),
        ]
        .iter()
        .map(|(n, t)| Column {
            name: n.to_string(),
            type_oid: 0,
            sql_type: t.to_string(),
        })
        .collect()
    }

    #[test]
    fn page_queries_follow_the_key() {
        let (first, next) = page_sql(&table(&[]), &columns(), &[2, 0]);
        assert_eq!(
            first,
            r#"SELECT CASE WHEN src."id" IS NULL THEN NULL ELSE format('%s', src."id") END, CASE WHEN src."note" IS NULL THEN NULL ELSE format('%s', src."note") END, CASE WHEN src."region" IS NULL THEN NULL ELSE format('%s', src."region") END FROM "s"."Orders" AS src ORDER BY src."region", src."id" LIMIT $1"#
        );
        assert!(next.ends_with(
            r#"WHERE (src."region", src."id") > ($1::text::character varying(8), $2::text::bigint) ORDER BY src."region", src."id" LIMIT $3"#
        ), "{next}");
    }

    #[test]
    fn the_key_must_be_the_primary_key() {
        assert!(check_key(&table(&["id", "region"]), &columns(), &[2, 0]).is_ok());
        assert!(check_key(&table(&[]), &columns(), &[0]).is_ok());
        let e = check_key(&table(&["id"]), &columns(), &[2, 0]).unwrap_err();
        assert!(e.to_string().contains("orders"), "{e}");
        assert!(matches!(
            check_key(&table(&[]), &columns(), &[]),
            Err(SnapshotError::NoPrimaryKey { .. })
        ));
    }

    #[test]
    fn rows_are_typed_and_written_as_the_stream_writes_events() {
        let typed = |name: &str, type_oid: u32| Column {
            name: name.into(),
            type_oid,
            sql_type: String::new(),
        };
        let pager = Pager {
            columns: vec![
                typed("id", 20),
                typed("tags", 1009),
                typed("doc", 3802),
                typed("raw", 17),
                typed("at", 1184),
                typed("gone", 25),
            ],
            key: vec![0],
            first_sql: String::new(),
            next_sql: String::new(),
        };
        let values = [
            Some("7"),
            Some(r#"{a,NULL,"b c"}"#),
            Some(r#"{"k": [1]}"#),
            Some("\\x00ff10"),
            Some("2026-11-26 09:00:00.12+00"),
            None,
        ]
        .map(|v| v.map(String::from));
        let mut event = ChangeEvent {
            op: Op::Read,
            before: None,
            after: None,
            unchanged: Vec::new(),
            source: Source {
                db: "shop".into(),
                schema: "public".into(),
                table: "orders".into(),
                lsn: 42,
                txid: 0,
                commit_ts: "2026-11-26T10:00:00.000000Z".into(),
            },
        };
        event.after = Some(row_json(&pager, "orders", &values).expect("typed"));
        let mut out = Vec::new();
        write_event(&mut out, "orders", &event).expect("written");
        assert_eq!(
            String::from_utf8(out.clone()).expect("utf-8"),
            concat!(
                r#"{"op":"r","before":null,"after":{"at":"2026-11-26T09:00:00.120000Z","doc":{"k":[1]},"gone":null,"id":7,"raw":"AP8Q","tags":["a",null,"b c"]},"#,
                r#""source":{"db":"shop","schema":"public","table":"orders","lsn":42,"txid":0,"commit_ts":"2026-11-26T10:00:00.000000Z"}}"#,
                "\n"
            )
        );
        // The line is a valid stream record: the sink and the transform read it as one.
        let back = crate::cdc::event::StreamRecord::from_slice(&out).expect("reads back");
        assert_eq!(back, crate::cdc::event::StreamRecord::Event(event));

        let bad = [Some("x".to_string()), None, None, None, None, None];
        let e = row_json(&pager, "orders", &bad).expect_err("not an int8");
        assert!(
            matches!(&e, SnapshotError::Value { column, type_oid: 20, .. } if column == "id"),
            "{e}"
        );
        assert!(!e.to_string().contains("\"x\""), "{e}");
    }
}

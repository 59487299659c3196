//! The page loop: keyset pages of `page_rows` rows, streamed row by row (sqlx `fetch`) into
//! the part sink, until a page comes back short (the range is done) or the time left would
//! not fit another page (the run stops after a whole page; the next run continues).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sqlx::mysql::MySql;
use sqlx::{Column, Decode, MySqlConnection, PgConnection, Row, ValueRef};

use super::columns::{self, Described};
use super::error::ShardError;
use super::query::{Bind, PageQuery, Select};
use super::source::Conn;
use super::state::Cursor;
use super::values::Kind;
use super::writer::{PartSink, RowEncoder};

/// Time kept for what follows the last page: the last part's upload and the state write.
const FINISH_RESERVE: Duration = Duration::from_secs(5);

/// When a run must stop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop before this instant (a Lambda's deadline less its own margin).
    pub deadline: Instant,
    /// Stop after this many pages (tests, and `sluice extract` runs that want a small step).
    pub max_pages: Option<u64>,
}

impl Limits {
    /// Until `deadline`, with no page limit.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            max_pages: None,
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoopEnd {
    /// The range (or dump) has no rows left.
    pub complete: bool,
    /// The position after the last row written (the start cursor when none was).
    pub cursor: Cursor,
    pub pages: u64,
}

/// What the loop reads with.
pub(crate) struct Pager<'a> {
    pub select: &'a Select,
    pub described: &'a Described,
    pub upper: &'a str,
    pub page_rows: u32,
    /// The lease's key and when it runs out (less a margin): no page starts that could end
    /// after it, since another run may then write this range's parts.
    pub lease: (&'a str, Instant),
}

impl Pager<'_> {
    /// Pages from `cursor` until the range ends or the limits say stop.
    pub(crate) async fn run(
        &self,
        conn: &mut Conn,
        enc: &mut RowEncoder,
        sink: &mut PartSink<'_>,
        mut cursor: Cursor,
        limits: &Limits,
    ) -> Result<LoopEnd, ShardError> {
        let dump = cursor.is_dump();
        enc.set_dump(dump);
        let timeout = StatementTimeout::for_session(conn).await?;
        timeout.set(conn, limits.deadline).await?;
        refuse_null_updated_at(conn, self.select, self.described).await?;
        let mut pages = 0;
        let mut longest = Duration::ZERO;
        loop {
            if limits.max_pages.is_some_and(|m| pages >= m)
                || Instant::now() + longest * 2 + FINISH_RESERVE > limits.deadline
            {
                return Ok(LoopEnd {
                    complete: false,
                    cursor,
                    pages,
                });
            }
            timeout.set(conn, limits.deadline).await?;
            let started = Instant::now();
            if started + longest > self.lease.1 {
                return Err(ShardError::LeaseExpiring {
                    key: self.lease.0.to_string(),
                });
            }
            // One row more than the page: checked against the page's last row (a twin of it
            // would be skipped by the next page's `>`), never written.
            let q = self.select.page(
                self.described,
                &cursor,
                self.upper,
                self.page_rows.saturating_add(1),
            )?;
            let page = u64::from(self.page_rows);
            let rows = match conn {
                Conn::My(c) => page_mysql(c, &q, page, enc, sink).await?,
                Conn::Pg(c) => page_pg(c, &q, page, enc, sink).await?,
            };
            pages += 1;
            longest = longest.max(started.elapsed());
            if rows > 0 {
                cursor = enc.cursor(dump)?;
            }
            if rows < u64::from(self.page_rows) {
                return Ok(LoopEnd {
                    complete: true,
                    cursor,
                    pages,
                });
            }
        }
    }
}

/// How a session's statements are held to the run's deadline, so that a slow page cannot
/// outlive the Lambda: PostgreSQL's `statement_timeout` (ms), MariaDB's `max_statement_time`
/// (seconds), MySQL's `max_execution_time` (ms, SELECT only: all extract runs).
#[derive(Debug, Clone, Copy)]
enum StatementTimeout {
    Postgres,
    MariaDb,
    MySql,
}

impl StatementTimeout {
    async fn for_session(conn: &mut Conn) -> Result<Self, ShardError> {
        let c = match conn {
            Conn::Pg(_) => return Ok(Self::Postgres),
            Conn::My(c) => c,
        };
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(c)
            .await
            .map_err(|e| ShardError::db("reading the server's version", e))?;
        Ok(if version.contains("MariaDB") {
            Self::MariaDb
        } else {
            Self::MySql
        })
    }

    /// Limits the next statements to the time left before `deadline`, less what the run
    /// needs after its last page (at least a second: a statement needs some time).
    async fn set(self, conn: &mut Conn, deadline: Instant) -> Result<(), ShardError> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(FINISH_RESERVE)
            .max(Duration::from_secs(1));
        let ms = left.as_millis();
        let sql = match self {
            Self::Postgres => format!("SET statement_timeout = {ms}"),
            Self::MariaDb => format!("SET SESSION max_statement_time = {}", left.as_secs_f64()),
            Self::MySql => format!("SET SESSION max_execution_time = {ms}"),
        };
        let what = "setting the statement timeout";
        match conn {
            Conn::My(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(|_| ()),
            Conn::Pg(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(c)
                .await
                .map(|_| ()),
        }
        .map_err(|e| ShardError::db(what, e))
    }
}

/// Fails when a row has a NULL `updated_at`: the range's bound would skip it silently.
async fn refuse_null_updated_at(
    conn: &mut Conn,
    select: &Select,
    d: &Described,
) -> Result<(), ShardError> {
    let sql = select.null_updated_at_sql(d);
    let what = "looking for rows with a NULL updated_at";
    let found = match conn {
        Conn::My(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(c)
            .await
            .map_err(|e| ShardError::db(what, e))?
            .is_some(),
        Conn::Pg(c) => sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(c)
            .await
            .map_err(|e| ShardError::db(what, e))?
            .is_some(),
    };
    if found {
        return Err(ShardError::column(
            &d.columns[d.updated_at].name,
            "has rows where it is NULL: extract could never read them (no range includes a NULL); set it on every row",
        ));
    }
    Ok(())
}

fn read_error(e: sqlx::Error) -> ShardError {
    ShardError::db("reading a page", e)
}

fn check_width(kinds: &[Kind], enc: &RowEncoder) -> Result<(), ShardError> {
    if kinds.len() == enc.columns() {
        return Ok(());
    }
    Err(ShardError::Query {
        what: "reading a page".into(),
        reason: format!(
            "the page has {} columns, the described query {}",
            kinds.len(),
            enc.columns()
        ),
        retryable: false,
    })
}

/// One MySQL page. The row's own column types decide the decoding (a server may describe an
/// expression's type differently when preparing).
async fn page_mysql(
    c: &mut MySqlConnection,
    q: &PageQuery,
    page: u64,
    enc: &mut RowEncoder,
    sink: &mut PartSink<'_>,
) -> Result<u64, ShardError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(q.sql.clone()));
    for b in &q.binds {
        query = match b {
            Bind::I64(v) => query.bind(*v),
            Bind::U64(v) => query.bind(*v),
            Bind::F64(v) => query.bind(*v),
            Bind::Text(s) => query.bind(s.clone()),
        };
    }
    let mut rows = query.fetch(c);
    let mut kinds: Option<Vec<Kind>> = None;
    let mut n = 0;
    while let Some(row) = rows.try_next().await.map_err(read_error)? {
        let kinds = match &kinds {
            Some(k) => k,
            None => {
                let k =
                    columns::mysql_kinds(row.columns().iter().map(|c| (c.name(), c.type_info())))?;
                check_width(&k, enc)?;
                kinds.insert(k)
            }
        };
        for (i, kind) in kinds.iter().enumerate() {
            let v = row.try_get_raw(i).map_err(read_error)?;
            let bytes = if v.is_null() {
                None
            } else {
                Some(
                    <&[u8] as Decode<MySql>>::decode(v)
                        .map_err(|e| ShardError::column(row.columns()[i].name(), e.to_string()))?,
                )
            };
            enc.value(i, *kind, bytes)?;
        }
        if n >= page {
            enc.check_distinct()?;
            continue;
        }
        sink.push(enc.finish()?).await?;
        n += 1;
    }
    Ok(n)
}

/// One PostgreSQL page; every value is bound as text and cast in the statement.
async fn page_pg(
    c: &mut PgConnection,
    q: &PageQuery,
    page: u64,
    enc: &mut RowEncoder,
    sink: &mut PartSink<'_>,
) -> Result<u64, ShardError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(q.sql.clone()));
    for b in &q.binds {
        query = match b {
            Bind::Text(s) => query.bind(s.clone()),
            Bind::I64(v) => query.bind(v.to_string()),
            Bind::U64(v) => query.bind(v.to_string()),
            Bind::F64(v) => query.bind(v.to_string()),
        };
    }
    let mut rows = query.fetch(c);
    let mut kinds: Option<Vec<Kind>> = None;
    let mut n = 0;
    while let Some(row) = rows.try_next().await.map_err(read_error)? {
        let kinds = match &kinds {
            Some(k) => k,
            None => {
                let k = columns::pg_kinds(row.columns().iter().map(|c| (c.name(), c.type_info())))?;
                check_width(&k, enc)?;
                kinds.insert(k)
            }
        };
        for (i, kind) in kinds.iter().enumerate() {
            let v = row.try_get_raw(i).map_err(read_error)?;
            let bytes = if v.is_null() {
                None
            } else {
                Some(
                    v.as_bytes()
                        .map_err(|e| ShardError::column(row.columns()[i].name(), e.to_string()))?,
                )
            };
            enc.value(i, *kind, bytes)?;
        }
        if n >= page {
            enc.check_distinct()?;
            continue;
        }
        sink.push(enc.finish()?).await?;
        n += 1;
    }
    Ok(n)
}

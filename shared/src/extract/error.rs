//! Errors of extract. A run of a table fails as a whole only for what concerns every shard
//! (an unknown table or shard); anything else fails one shard, reported with its name while
//! the other shards run.

use thiserror::Error;

use crate::lake::LakeError;

/// Why a table's run, or one shard of it, failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The pipeline has no table of that name.
    #[error("extract: the pipeline has no table `{table}`")]
    UnknownTable { table: String },
    /// The table has no `[tables.source]` section.
    #[error("extract: table `{table}` has no [tables.source] section")]
    NoSource { table: String },
    /// A shard filter names a shard the table does not have.
    #[error("extract: table `{table}` has no shard `{shard}` (it has: {known})")]
    UnknownShard {
        table: String,
        shard: String,
        known: String,
    },
    /// One shard failed; the table's other shards are unaffected.
    #[error("extract: table `{table}`, shard `{shard}`: {error}")]
    Shard {
        table: String,
        shard: String,
        /// Boxed: the shard's error is large, and most results carry none.
        #[source]
        error: Box<ShardError>,
    },
}

impl ExtractError {
    /// Whether the next scheduled run may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExtractError::Shard { error, .. } => error.is_retryable(),
            _ => false,
        }
    }
}

/// What went wrong on one shard. Messages name the secret, variable, column, object or
/// statement; never a password, a URL or a row value.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The shard's connection settings are unusable (variable unset, bad URL, wrong engine).
    #[error("configuration: {reason}")]
    Config { reason: String },
    /// The connection secret could not be read or is not an RDS connection secret.
    #[error("secret {secret_id}: {reason}")]
    Secret {
        secret_id: String,
        reason: String,
        retryable: bool,
    },
    /// The database could not be reached or refused the login.
    #[error("cannot connect: {reason}")]
    Connect { reason: String, retryable: bool },
    /// A statement failed.
    #[error("{what}: {reason}")]
    Query {
        what: String,
        reason: String,
        retryable: bool,
    },
    /// A column extract cannot read or page by (its type, a NULL key, a missing column).
    #[error("column `{column}`: {reason}")]
    Column { column: String, reason: String },
    /// A replica whose delay cannot be known: no safe upper bound.
    #[error("replica delay unknown: {reason}")]
    ReplicaDelay { reason: String },
    /// The lake failed.
    #[error("lake object {key}: {source}")]
    Lake {
        key: String,
        #[source]
        source: LakeError,
    },
    /// A part written earlier (read to resume after it) or the state object is unreadable.
    #[error("lake object {key} is not what extract wrote: {reason}")]
    Corrupt { key: String, reason: String },
    /// Another run wrote the state meanwhile: the lease was lost.
    #[error("state {key} was written by another run meanwhile (this run's lease expired?): nothing was committed; the next run resumes")]
    Concurrent { key: String },
    /// A part this run was about to write exists: another run took the shard over (this run's
    /// lease expired). Nothing of it was overwritten; the next run resumes after that part.
    #[error("part {key} was written by another run meanwhile (this run's lease expired?): this run stops; the next run resumes")]
    PartExists { key: String },
    /// The lease expires (less a margin) before another page could be read and written.
    #[error("the lease on {key} runs out before another page: this run stops so that no other run's parts are touched; the next run resumes")]
    LeaseExpiring { key: String },
    /// Two rows share a position in the keyset order: the key columns do not identify a row.
    #[error("two rows have the same {} ({columns}): the key columns do not identify a row, and a page boundary between such rows would skip one; set key_columns to columns that are unique{}", if *with_updated_at { "updated_at and key columns" } else { "key columns" }, if *with_updated_at { " together with updated_at" } else { "" })]
    DuplicateKey {
        columns: String,
        with_updated_at: bool,
    },
    /// A local temporary file failed.
    #[error("temporary part file: {reason}")]
    TempFile { reason: String },
}

impl ShardError {
    /// Whether trying again may succeed (network, throttling, a lost race).
    pub fn is_retryable(&self) -> bool {
        match self {
            ShardError::Secret { retryable, .. }
            | ShardError::Connect { retryable, .. }
            | ShardError::Query { retryable, .. } => *retryable,
            ShardError::Lake { source, .. } => source.is_retryable(),
            ShardError::Concurrent { .. }
            | ShardError::PartExists { .. }
            | ShardError::LeaseExpiring { .. }
            | ShardError::TempFile { .. } => true,
            _ => false,
        }
    }

    /// A failed statement. sqlx's database errors carry the server's message, never the
    /// bound parameter values; but a server's message about a value (a data exception, a
    /// constraint) may quote it, so for those only the codes are kept.
    pub(crate) fn db(what: &str, e: sqlx::Error) -> Self {
        ShardError::Query {
            what: what.to_string(),
            retryable: retryable(&e),
            reason: if is_statement_timeout(&e) {
                "stopped by the statement timeout extract sets to the time left before the run's deadline: the next run continues".into()
            } else {
                redacted(&e).unwrap_or_else(|| e.to_string())
            },
        }
    }

    pub(crate) fn lake(key: &str, source: LakeError) -> Self {
        ShardError::Lake {
            key: key.to_string(),
            source,
        }
    }

    pub(crate) fn column(column: &str, reason: impl Into<String>) -> Self {
        ShardError::Column {
            column: column.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        ShardError::Config {
            reason: reason.into(),
        }
    }
}

/// MySQL and MariaDB errors whose message quotes a value: duplicate entry (1062), out of range
/// (1264, 1690), truncated or incorrect values (1265, 1292, 1366, 1367, 1406, 1411), an
/// invalid character string (1300), invalid JSON (3140).
const MYSQL_VALUE_ERRORS: &[u16] = &[
    1062, 1264, 1265, 1292, 1300, 1366, 1367, 1406, 1411, 1690, 3140,
];

/// The codes alone, for a database error whose message may quote a row's value: SQLSTATE
/// class 22 (data exception) or 23 (integrity constraint), or a MySQL value error. `None`:
/// the message can be shown.
fn redacted(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let state = db.code().map(|c| c.to_string()).unwrap_or_default();
    let number = db
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(|m| m.number());
    let quotes_values = state.starts_with("22")
        || state.starts_with("23")
        || number.is_some_and(|n| MYSQL_VALUE_ERRORS.contains(&n));
    if !quotes_values {
        return None;
    }
    let mysql = number
        .map(|n| format!(", MySQL error {n}"))
        .unwrap_or_default();
    Some(format!(
        "the database refused a value (SQLSTATE {state}{mysql}); its message is not shown, as it may quote the row's data"
    ))
}

/// Network-level failures are worth a retry, and so is a statement stopped by the timeout
/// extract set (the next run has its own time); a database's refusal is not.
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    ) || is_statement_timeout(e)
}

/// PostgreSQL's query_canceled (57014), MariaDB's ER_STATEMENT_TIMEOUT (1969), MySQL's
/// ER_QUERY_TIMEOUT (3024).
pub(crate) fn is_statement_timeout(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code().as_deref() == Some("57014")
        || db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|m| matches!(m.number(), 1969 | 3024))
}

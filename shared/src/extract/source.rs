//! A shard's database: its connection (an RDS-style secret or a URL from the environment; TLS
//! as the secret asks; session time zone UTC; read-only) and its clock, from which a run's
//! upper bound follows: the source's own time, less the replica's replay delay.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, MySqlConnection, PgConnection, Row};

use super::error::{retryable, ShardError};
use crate::config::{ShardConfig, ShardLocation, SourceEngine};

/// An open connection to one shard.
pub(crate) enum Conn {
    My(MySqlConnection),
    Pg(PgConnection),
}

impl Conn {
    pub(crate) fn engine(&self) -> SourceEngine {
        match self {
            Conn::My(_) => SourceEngine::Mysql,
            Conn::Pg(_) => SourceEngine::Postgres,
        }
    }

    /// Closes politely; a failure to say goodbye changes nothing.
    pub(crate) async fn close(self) {
        let _ = match self {
            Conn::My(c) => c.close().await,
            Conn::Pg(c) => c.close().await,
        };
    }
}

/// An RDS connection secret. No `Debug`: it holds the password.
#[derive(Deserialize)]
struct RdsSecret {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    username: String,
    password: String,
    #[serde(default)]
    dbname: Option<String>,
    /// RDS writes `mysql`, `mariadb`, `aurora-mysql`, `postgres`, `aurora-postgresql`.
    #[serde(default)]
    engine: Option<String>,
    /// disable, prefer (default), require, verify-ca, verify-full.
    #[serde(default)]
    sslmode: Option<String>,
    /// A CA bundle file (the RDS one is not among the webpki roots).
    #[serde(default)]
    sslrootcert: Option<String>,
}

/// Opens a connection to `shard` of an `engine` source. Nothing is read from the shard yet.
pub(crate) async fn connect(
    engine: SourceEngine,
    shard: &ShardConfig,
    secrets: Option<&aws_sdk_secretsmanager::Client>,
) -> Result<Conn, ShardError> {
    let location = shard
        .location()
        .ok_or_else(|| ShardError::config("set exactly one of `secret` or `url_env`"))?;
    match (location, engine) {
        (ShardLocation::UrlEnv(var), SourceEngine::Mysql) => {
            let o = MySqlConnectOptions::from_str(&url_from_env(var)?)
                .map_err(|_| ShardError::config(format!("${var} is not a valid mysql:// URL")))?;
            connect_mysql(o).await
        }
        (ShardLocation::UrlEnv(var), SourceEngine::Postgres) => {
            let o = PgConnectOptions::from_str(&url_from_env(var)?).map_err(|_| {
                ShardError::config(format!("${var} is not a valid postgres:// URL"))
            })?;
            connect_pg(o).await
        }
        (ShardLocation::Secret(id), _) => {
            let client = secrets.ok_or_else(|| {
                ShardError::config(format!(
                    "the shard's secret {id} needs a Secrets Manager client"
                ))
            })?;
            let s = read_secret(client, id).await?;
            check_engine(id, &s, engine)?;
            match engine {
                SourceEngine::Mysql => connect_mysql(mysql_options(id, &s)?).await,
                SourceEngine::Postgres => connect_pg(pg_options(id, &s)?).await,
            }
        }
    }
}

fn url_from_env(var: &str) -> Result<String, ShardError> {
    std::env::var(var)
        .map_err(|_| ShardError::config(format!("the URL variable ${var} is not set")))
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> Result<RdsSecret, ShardError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            let f = crate::aws::error::classify(&e);
            ShardError::Secret {
                secret_id: id.to_string(),
                reason: f.message,
                retryable: f.retryable,
            }
        })?;
    let text = out.secret_string().ok_or_else(|| ShardError::Secret {
        secret_id: id.to_string(),
        reason: "no SecretString".into(),
        retryable: false,
    })?;
    serde_json::from_str(text).map_err(|e| ShardError::Secret {
        secret_id: id.to_string(),
        // serde_json names a missing key ("missing field `host`"); for anything else only the
        // kind and position, never the text around it (which may be the password).
        reason: if e.to_string().starts_with("missing field") {
            format!("not an RDS connection secret: {e}")
        } else {
            format!("not an RDS connection secret (host, port, username, password, dbname): {:?} error at line {} column {}", e.classify(), e.line(), e.column())
        },
        retryable: false,
    })
}

/// The secret's `engine`, when it has one, must be the pipeline's.
fn check_engine(id: &str, s: &RdsSecret, engine: SourceEngine) -> Result<(), ShardError> {
    let Some(e) = s.engine.as_deref() else {
        return Ok(());
    };
    let theirs = match e {
        "mysql" | "mariadb" | "aurora" | "aurora-mysql" => SourceEngine::Mysql,
        "postgres" | "postgresql" | "aurora-postgresql" => SourceEngine::Postgres,
        other => {
            return Err(ShardError::config(format!(
                "secret {id} names engine `{other}`, which extract does not read (mysql, mariadb, aurora-mysql, postgres, aurora-postgresql)"
            )))
        }
    };
    if theirs != engine {
        return Err(ShardError::config(format!(
            "secret {id} is for engine `{e}`, but the table's source engine is {engine:?}"
        )));
    }
    Ok(())
}

/// One TLS vocabulary for both engines, PostgreSQL's (RDS documents it for both).
fn sslmode(id: &str, s: &RdsSecret) -> Result<&'static str, ShardError> {
    match s.sslmode.as_deref().unwrap_or("prefer") {
        "disable" => Ok("disable"),
        "prefer" => Ok("prefer"),
        "require" => Ok("require"),
        "verify-ca" => Ok("verify-ca"),
        "verify-full" => Ok("verify-full"),
        other => Err(ShardError::config(format!(
            "secret {id}: sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
        ))),
    }
}

fn mysql_options(id: &str, s: &RdsSecret) -> Result<MySqlConnectOptions, ShardError> {
    let mode = match sslmode(id, s)? {
        "disable" => MySqlSslMode::Disabled,
        "prefer" => MySqlSslMode::Preferred,
        "require" => MySqlSslMode::Required,
        "verify-ca" => MySqlSslMode::VerifyCa,
        _ => MySqlSslMode::VerifyIdentity,
    };
    let mut o = MySqlConnectOptions::new()
        .host(&s.host)
        .port(s.port.unwrap_or(3306))
        .username(&s.username)
        .ssl_mode(mode);
    // An empty password is no password (a local server's root); MySQL tells the two apart.
    if !s.password.is_empty() {
        o = o.password(&s.password);
    }
    if let Some(db) = &s.dbname {
        o = o.database(db);
    }
    if let Some(ca) = &s.sslrootcert {
        o = o.ssl_ca(ca);
    }
    Ok(o)
}

fn pg_options(id: &str, s: &RdsSecret) -> Result<PgConnectOptions, ShardError> {
    let mode = PgSslMode::from_str(sslmode(id, s)?)
        .map_err(|_| ShardError::config(format!("secret {id}: bad sslmode")))?;
    let mut o = PgConnectOptions::new()
        .host(&s.host)
        .port(s.port.unwrap_or(5432))
        .username(&s.username)
        .database(s.dbname.as_deref().unwrap_or("postgres"))
        .ssl_mode(mode);
    if !s.password.is_empty() {
        o = o.password(&s.password);
    }
    if let Some(ca) = &s.sslrootcert {
        o = o.ssl_root_cert(ca);
    }
    Ok(o)
}

fn connect_error(e: sqlx::Error) -> ShardError {
    ShardError::Connect {
        retryable: retryable(&e),
        reason: e.to_string(),
    }
}

async fn connect_mysql(o: MySqlConnectOptions) -> Result<Conn, ShardError> {
    // UTC, so TIMESTAMP columns and the clock read as UTC; utf8mb4 so every text arrives as
    // UTF-8. DATETIME columns carry no zone: they are taken as UTC (docs/EXTRACT.md).
    let o = o
        .timezone(Some("+00:00".to_string()))
        .charset("utf8mb4")
        .log_statements(tracing::log::LevelFilter::Debug);
    let mut c = MySqlConnection::connect_with(&o)
        .await
        .map_err(connect_error)?;
    // A custom query can never write through extract's connection.
    sqlx::query("SET SESSION TRANSACTION READ ONLY")
        .execute(&mut c)
        .await
        .map_err(|e| ShardError::db("setting the session read-only", e))?;
    Ok(Conn::My(c))
}

async fn connect_pg(o: PgConnectOptions) -> Result<Conn, ShardError> {
    let o = o
        .application_name("sluice-extract")
        .options([("TimeZone", "UTC"), ("default_transaction_read_only", "on")])
        .log_statements(tracing::log::LevelFilter::Debug);
    let c = PgConnection::connect_with(&o)
        .await
        .map_err(connect_error)?;
    Ok(Conn::Pg(c))
}

/// The source's clock and how far its data lags the primary's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clock {
    pub now: DateTime<Utc>,
    /// Zero on a primary.
    pub replica_delay: Duration,
}

/// Reads the source's clock and replica delay.
pub(crate) async fn clock(conn: &mut Conn) -> Result<Clock, ShardError> {
    match conn {
        Conn::Pg(c) => pg_clock(c).await,
        Conn::My(c) => mysql_clock(c).await,
    }
}

fn parse_ts(what: &str, s: &str) -> Result<DateTime<Utc>, ShardError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ShardError::Query {
            what: format!("reading the source's {what}"),
            reason: format!("`{s}` is not a timestamp: {e}"),
            retryable: false,
        })
}

/// The delay between two instants, zero when `earlier` is later.
fn behind(now: DateTime<Utc>, earlier: DateTime<Utc>) -> Duration {
    (now - earlier).to_std().unwrap_or(Duration::ZERO)
}

/// On a standby, everything visible committed at or before the last replayed transaction:
/// the delay is measured to that commit (an idle primary makes it grow, which only holds the
/// bound back; a caught-up "receive = replay" check could not see WAL not yet received).
async fn pg_clock(c: &mut PgConnection) -> Result<Clock, ShardError> {
    const ISO: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'";
    let sql = format!(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', {ISO}), pg_is_in_recovery(), \
         to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', {ISO})"
    );
    let what = "reading the clock and replay position";
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *c)
        .await
        .map_err(|e| ShardError::db(what, e))?;
    let now: String = row.try_get(0).map_err(|e| ShardError::db(what, e))?;
    let standby: bool = row.try_get(1).map_err(|e| ShardError::db(what, e))?;
    let replayed: Option<String> = row.try_get(2).map_err(|e| ShardError::db(what, e))?;
    let now = parse_ts("clock", &now)?;
    let replica_delay = match (standby, replayed) {
        (false, _) => Duration::ZERO,
        (true, Some(r)) => behind(now, parse_ts("last replayed commit", &r)?),
        (true, None) => {
            return Err(ShardError::ReplicaDelay {
                reason: "the standby has replayed no transaction yet (pg_last_xact_replay_timestamp() is NULL)".into(),
            })
        }
    };
    Ok(Clock { now, replica_delay })
}

async fn mysql_clock(c: &mut MySqlConnection) -> Result<Clock, ShardError> {
    let what = "reading the clock";
    let row =
        sqlx::query("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%dT%H:%i:%s.%fZ'), VERSION()")
            .fetch_one(&mut *c)
            .await
            .map_err(|e| ShardError::db(what, e))?;
    let now: String = row.try_get(0).map_err(|e| ShardError::db(what, e))?;
    let version: String = row.try_get(1).map_err(|e| ShardError::db(what, e))?;
    let now = parse_ts("clock", &now)?;
    let replica_delay = match aurora_lag(c).await? {
        Some(d) => d,
        None => binlog_replica_delay(c, version.contains("MariaDB")).await?,
    };
    Ok(Clock { now, replica_delay })
}

/// Aurora MySQL readers replicate at the storage layer and show no replica status; their lag
/// is in `information_schema.replica_host_status`, on this instance's row. `None`: not Aurora.
async fn aurora_lag(c: &mut MySqlConnection) -> Result<Option<Duration>, ShardError> {
    let what = "reading Aurora's replica_host_status";
    let has: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'REPLICA_HOST_STATUS'",
    )
    .fetch_one(&mut *c)
    .await
    .map_err(|e| ShardError::db(what, e))?;
    if has == 0 {
        return Ok(None);
    }
    let lag: Option<String> = sqlx::query_scalar(
        "SELECT CAST(REPLICA_LAG_IN_MILLISECONDS AS CHAR) FROM information_schema.REPLICA_HOST_STATUS \
         WHERE SERVER_ID = @@aurora_server_id",
    )
    .fetch_optional(&mut *c)
    .await
    .map_err(|e| ShardError::db(what, e))?
    .flatten();
    let ms = match lag {
        Some(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| ShardError::ReplicaDelay {
                reason: format!("REPLICA_LAG_IN_MILLISECONDS is `{s}`"),
            })?,
        // This instance has no row: the writer sees its own writes.
        None => 0.0,
    };
    Ok(Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
}

/// A binlog replica's delay (MySQL `Seconds_Behind_Source`, MariaDB `Seconds_Behind_Master`);
/// zero on a server that replicates from nobody. NULL means the SQL thread is stopped: the
/// delay is unknown, so no bound is safe.
async fn binlog_replica_delay(
    c: &mut MySqlConnection,
    mariadb: bool,
) -> Result<Duration, ShardError> {
    let (sql, column) = if mariadb {
        ("SHOW SLAVE STATUS", "Seconds_Behind_Master")
    } else {
        ("SHOW REPLICA STATUS", "Seconds_Behind_Source")
    };
    let rows = match sqlx::query(sql).fetch_all(&mut *c).await {
        Ok(r) => r,
        Err(e) => {
            return Err(ShardError::ReplicaDelay {
                reason: format!("`{sql}` failed ({e}); the user needs REPLICATION CLIENT (MySQL) or SLAVE MONITOR (MariaDB) so extract can see whether the shard is a lagging replica"),
            })
        }
    };
    let mut delay = Duration::ZERO;
    for row in rows {
        // SHOW results come as text; the column's type varies between versions.
        let raw: Option<Vec<u8>> =
            row.try_get_unchecked(column)
                .map_err(|e| ShardError::ReplicaDelay {
                    reason: format!("`{sql}` has no column {column}: {e}"),
                })?;
        let secs = raw
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ShardError::ReplicaDelay {
                reason: format!("{column} is NULL: replication is stopped or broken"),
            })?;
        delay = delay.max(Duration::from_secs(secs));
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(json: &str) -> RdsSecret {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn secrets_name_engine_and_tls_problems() {
        let s =
            secret(r#"{"host":"h","username":"u","password":"p","engine":"aurora-postgresql"}"#);
        assert!(check_engine("id", &s, SourceEngine::Postgres).is_ok());
        let e = check_engine("id", &s, SourceEngine::Mysql)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret id is for engine `aurora-postgresql`"),
            "{e}"
        );
        let s = secret(r#"{"host":"h","username":"u","password":"p","engine":"oracle-ee"}"#);
        assert!(check_engine("id", &s, SourceEngine::Mysql)
            .unwrap_err()
            .to_string()
            .contains("oracle-ee"));
        let s = secret(r#"{"host":"h","username":"u","password":"p","sslmode":"sometimes"}"#);
        let e = mysql_options("id", &s).unwrap_err().to_string();
        assert!(e.contains("sslmode `sometimes`"), "{e}");
        let s = secret(
            r#"{"host":"h","port":3307,"username":"u","password":"p","sslmode":"verify-full"}"#,
        );
        let o = mysql_options("id", &s).unwrap();
        assert_eq!(o.get_port(), 3307);
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::VerifyIdentity));
        let o = pg_options("id", &s).unwrap();
        assert_eq!(o.get_port(), 3307);
    }

    #[test]
    fn delays_never_go_negative() {
        let t = |s| parse_ts("t", s).unwrap();
        let now = t("2024-01-01T00:00:10.000000Z");
        assert_eq!(
            behind(now, t("2024-01-01T00:00:04.500000Z")),
            Duration::from_millis(5_500)
        );
        assert_eq!(
            behind(now, t("2024-01-01T00:00:11.000000Z")),
            Duration::ZERO
        );
        assert!(parse_ts("clock", "yesterday").is_err());
    }
}

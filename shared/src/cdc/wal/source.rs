//! The source database of the WAL decoder: how to reach it (a Secrets Manager secret in RDS's
//! shape, or a URL from an environment variable for local runs), and the control statements a
//! run issues on it (slot state, advance, heartbeat, lag). The peek itself streams on a
//! connection of its own (`run.rs`), so a run stopped in the middle of a peek can drop that
//! connection and still advance the slot here.

use std::str::FromStr;

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};

use super::WalError;
use crate::aws::Clients;

/// Where the source is: exactly one of the two.
#[derive(Clone)]
pub enum SourceLocation {
    /// A Secrets Manager secret id with RDS's keys: host, port, username, password, dbname,
    /// and optionally `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert` (a path in the function's package, e.g. the RDS CA bundle).
    Secret(String),
    /// The name of an environment variable holding a `postgres://` URL (local runs, tests).
    UrlEnv(String),
}

impl std::fmt::Debug for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither form holds the credentials themselves, but say so plainly.
        match self {
            SourceLocation::Secret(id) => write!(f, "secret {id}"),
            SourceLocation::UrlEnv(var) => write!(f, "URL in ${var}"),
        }
    }
}

/// An RDS-style connection secret. `Debug` leaves the password out.
#[derive(Deserialize)]
struct RdsSecret {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    username: String,
    password: String,
    #[serde(default)]
    dbname: Option<String>,
    #[serde(default)]
    sslmode: Option<String>,
    #[serde(default)]
    sslrootcert: Option<String>,
}

fn default_port() -> u16 {
    5432
}

/// Connection options for the source, read from the secret or the environment.
pub async fn connect_options(
    location: &SourceLocation,
    clients: Option<&Clients>,
) -> Result<PgConnectOptions, WalError> {
    let options = match location {
        SourceLocation::UrlEnv(var) => {
            let url = std::env::var(var).map_err(|_| WalError::Config {
                reason: format!("the source URL variable ${var} is not set"),
            })?;
            // The URL may hold a password: the error must not repeat it.
            PgConnectOptions::from_str(&url).map_err(|_| WalError::Config {
                reason: format!("${var} is not a valid postgres:// URL"),
            })?
        }
        SourceLocation::Secret(id) => {
            let clients = clients.ok_or_else(|| WalError::Config {
                reason: format!("the source secret {id} needs AWS clients"),
            })?;
            let secret = read_secret(clients, id).await?;
            secret_options(id, secret)?
        }
    };
    // Logs of every statement would be noise at 3 a.m.; slow ones still show.
    Ok(options
        .application_name("sluice-wal-decoder")
        .log_statements(tracing::log::LevelFilter::Debug))
}

async fn read_secret(clients: &Clients, id: &str) -> Result<RdsSecret, WalError> {
    let out = clients
        .secrets
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            let f = crate::aws::error::classify(&e);
            WalError::Source {
                what: format!("reading the source secret {id}"),
                reason: f.message,
                retryable: f.retryable,
            }
        })?;
    let text = out.secret_string().ok_or_else(|| WalError::Config {
        reason: format!("secret {id} has no SecretString"),
    })?;
    // serde_json's message names the missing key, never the values.
    serde_json::from_str(text).map_err(|e| WalError::Config {
        reason: format!(
            "secret {id} is not an RDS connection secret (host, port, username, password, dbname): {}",
            e.classify_name()
        ),
    })
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    /// The kind of JSON failure and its position, without the text around it (which may be
    /// the password).
    fn classify_name(&self) -> String {
        let msg = self.to_string();
        if msg.starts_with("missing field") {
            // "missing field `host` at line 1 column 2": names a key, not a value.
            msg
        } else {
            format!(
                "{:?} error at line {} column {}",
                self.classify(),
                self.line(),
                self.column()
            )
        }
    }
}

fn secret_options(id: &str, s: RdsSecret) -> Result<PgConnectOptions, WalError> {
    let mut o = PgConnectOptions::new()
        .host(&s.host)
        .port(s.port)
        .username(&s.username)
        .password(&s.password)
        .database(s.dbname.as_deref().unwrap_or("postgres"));
    // RDS forces TLS by default: require it unless the secret says otherwise.
    let mode = s.sslmode.as_deref().unwrap_or("require");
    o = o.ssl_mode(PgSslMode::from_str(mode).map_err(|_| WalError::Config {
        reason: format!("secret {id}: sslmode `{mode}` is not one of disable, allow, prefer, require, verify-ca, verify-full"),
    })?);
    if let Some(cert) = &s.sslrootcert {
        o = o.ssl_root_cert(cert);
    }
    Ok(o)
}

/// Opens a connection with the session settings that make pgoutput's text values predictable
/// (UTC, ISO dates, hex bytea, round-trip floats).
pub async fn connect(options: &PgConnectOptions) -> Result<PgConnection, WalError> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(|e| WalError::db("connecting to the source", e))?;
    for set in crate::cdc::copy::SESSION_SETTINGS {
        sqlx::query(*set)
            .execute(&mut conn)
            .await
            .map_err(|e| WalError::db("setting up the session", e))?;
    }
    Ok(conn)
}

/// The slot as the source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    /// Everything before this LSN has been confirmed (the next peek starts after it).
    pub confirmed_flush_lsn: u64,
    /// The server's current WAL position.
    pub current_lsn: u64,
}

impl SlotInfo {
    /// WAL the slot holds back, in bytes.
    pub fn lag_bytes(&self) -> u64 {
        self.current_lsn.saturating_sub(self.confirmed_flush_lsn)
    }
}

/// The slot's state, or `SlotMissing` when it does not exist.
pub async fn slot_info(conn: &mut PgConnection, slot: &str) -> Result<SlotInfo, WalError> {
    let row = sqlx::query(
        "SELECT plugin::text, database::text, \
                (confirmed_flush_lsn - '0/0'::pg_lsn)::int8, \
                (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
    )
    .bind(slot)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| WalError::db("reading the slot", e))?
    .ok_or_else(|| WalError::SlotMissing {
        slot: slot.to_string(),
    })?;
    let lsn = |i: usize| -> Result<u64, WalError> {
        let v: Option<i64> = row
            .try_get(i)
            .map_err(|e| WalError::db("reading the slot", e))?;
        Ok(v.unwrap_or(0) as u64)
    };
    Ok(SlotInfo {
        plugin: row
            .try_get(0)
            .map_err(|e| WalError::db("reading the slot", e))?,
        database: row
            .try_get(1)
            .map_err(|e| WalError::db("reading the slot", e))?,
        confirmed_flush_lsn: lsn(2)?,
        current_lsn: lsn(3)?,
    })
}

/// `X/Y` text of a 64-bit LSN.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Moves the slot's confirmed position to `lsn`: every change committed before it is done.
/// Returns the slot's confirmed position afterwards.
pub async fn advance(conn: &mut PgConnection, slot: &str, lsn: u64) -> Result<u64, WalError> {
    let row = sqlx::query(
        "SELECT (end_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slot_advance($1, $2::pg_lsn)",
    )
    .bind(slot)
    .bind(lsn_text(lsn))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| WalError::db(&format!("advancing slot {slot} to {}", lsn_text(lsn)), e))?;
    let end: Option<i64> = row
        .try_get(0)
        .map_err(|e| WalError::db("advancing the slot", e))?;
    Ok(end.unwrap_or(0) as u64)
}

/// Writes a transactional logical message (`prefix` = `sluice`) to the WAL. The next peek
/// decodes it as a transaction of its own, so advancing past it moves the slot even when no
/// published table changed. Returns the message's LSN.
pub async fn emit_heartbeat(conn: &mut PgConnection, body: &str) -> Result<u64, WalError> {
    let row =
        sqlx::query("SELECT (pg_logical_emit_message(true, 'sluice', $1) - '0/0'::pg_lsn)::int8")
            .bind(body)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| WalError::db("emitting the heartbeat", e))?;
    let lsn: i64 = row
        .try_get(0)
        .map_err(|e| WalError::db("emitting the heartbeat", e))?;
    Ok(lsn as u64)
}

/// The current database's name (the events' `source.db`).
pub async fn database_name(conn: &mut PgConnection) -> Result<String, WalError> {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| WalError::db("reading the database name", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_is_postgres_form() {
        assert_eq!(lsn_text(0), "0/0");
        assert_eq!(lsn_text(0x1_6B37_4D48), "1/6B374D48");
        assert_eq!(lsn_text(u64::MAX), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn secret_errors_never_show_values() {
        let bad = r#"{"host": "h", "username": "u", "password": "hunter2" "dbname": "d"}"#;
        let e = serde_json::from_str::<RdsSecret>(bad)
            .err()
            .map(|e| e.classify_name());
        let msg = e.unwrap_or_default();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
        let missing = r#"{"host": "h", "password": "hunter2"}"#;
        let msg = serde_json::from_str::<RdsSecret>(missing)
            .err()
            .map(|e| e.classify_name())
            .unwrap_or_default();
        assert!(msg.contains("username"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn secret_sslmode_is_checked() {
        let s = RdsSecret {
            host: "h".into(),
            port: 5432,
            username: "u".into(),
            password: "p".into(),
            dbname: None,
            sslmode: Some("sometimes".into()),
            sslrootcert: None,
        };
        let err = secret_options("src", s).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("sslmode `sometimes`"));
    }
}

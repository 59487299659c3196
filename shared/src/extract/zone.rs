//! Zone-less timestamps (MySQL DATETIME, PostgreSQL `timestamp without time zone`) are read as
//! UTC. As the watermark, such a column is compared with a bound taken from the source's UTC
//! clock: if the application writes local time there, a bound ahead of or behind it skips or
//! delays rows. So a zone-less `updated_at` is refused unless the source's own default zone
//! (what an application's session writes in unless it says otherwise) is UTC.

use sqlx::Row;

use super::columns::Described;
use super::error::ShardError;
use super::source::Conn;

/// Names of UTC as MySQL, MariaDB and PostgreSQL spell it (offsets, IANA aliases and the
/// abbreviation a server's system zone shows).
const UTC_NAMES: &[&str] = &[
    "+00:00",
    "-00:00",
    "+0:00",
    "UTC",
    "UCT",
    "GMT",
    "GMT0",
    "Z",
    "ZULU",
    "UNIVERSAL",
    "ETC/UTC",
    "ETC/UCT",
    "ETC/GMT",
    "ETC/GMT0",
    "ETC/UNIVERSAL",
    "ETC/ZULU",
];

fn is_utc(zone: &str) -> bool {
    let z = zone.trim().to_ascii_uppercase();
    UTC_NAMES.contains(&z.as_str())
}

/// MySQL's `@@global.time_zone` is `SYSTEM` unless set; then the system's zone applies.
fn mysql_zone(global: &str, system: &str) -> String {
    if global.eq_ignore_ascii_case("SYSTEM") {
        system.to_string()
    } else {
        global.to_string()
    }
}

/// Whether the watermark column carries no zone.
fn zoneless(conn: &Conn, d: &Described) -> bool {
    let t = d.columns[d.updated_at].sql_type.as_str();
    match conn {
        Conn::My(_) => t.eq_ignore_ascii_case("DATETIME"),
        Conn::Pg(_) => t == "timestamp",
    }
}

/// PostgreSQL's default for a new session of this user in this database: the most specific
/// `ALTER ROLE/DATABASE … SET TimeZone`, else the server's configured zone. (The session's own
/// `TimeZone` cannot tell: the driver sets UTC when it connects. `log_timezone` is the server's
/// configured zone that is readable without privileges; initdb sets it with `timezone`.)
const PG_DEFAULT_ZONE: &str = "SELECT COALESCE(\
    (SELECT substring(c FROM position('=' IN c) + 1) \
       FROM pg_db_role_setting s, unnest(s.setconfig) AS c \
      WHERE lower(split_part(c, '=', 1)) = 'timezone' \
        AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) \
        AND s.setrole IN (0, (SELECT oid FROM pg_roles WHERE rolname = session_user)) \
      ORDER BY (s.setdatabase <> 0 AND s.setrole <> 0) DESC, (s.setrole <> 0) DESC LIMIT 1), \
    current_setting('log_timezone'))";

/// The zone a session of the source starts in.
async fn default_zone(conn: &mut Conn) -> Result<String, ShardError> {
    let what = "reading the source's default time zone";
    match conn {
        Conn::My(c) => {
            let row = sqlx::query(
                "SELECT CAST(@@global.time_zone AS CHAR), CAST(@@system_time_zone AS CHAR)",
            )
            .fetch_one(c)
            .await
            .map_err(|e| ShardError::db(what, e))?;
            let global: String = row.try_get(0).map_err(|e| ShardError::db(what, e))?;
            let system: String = row.try_get(1).map_err(|e| ShardError::db(what, e))?;
            Ok(mysql_zone(&global, &system))
        }
        Conn::Pg(c) => sqlx::query_scalar(PG_DEFAULT_ZONE)
            .fetch_one(c)
            .await
            .map_err(|e| ShardError::db(what, e)),
    }
}

/// Refuses a zone-less `updated_at` on a source whose default zone is not UTC.
pub(crate) async fn check_updated_at(conn: &mut Conn, d: &Described) -> Result<(), ShardError> {
    if !zoneless(conn, d) {
        return Ok(());
    }
    let zone = default_zone(conn).await?;
    if is_utc(&zone) {
        return Ok(());
    }
    let c = &d.columns[d.updated_at];
    Err(ShardError::column(
        &c.name,
        format!(
            "is a {} (no time zone) and the source's time zone is `{zone}`, not UTC: extract reads it as UTC and compares it with a UTC bound, which would skip or delay rows written in local time; use a zoned type (TIMESTAMP, timestamptz) or run the source in UTC",
            c.sql_type
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_recognised_in_its_spellings_and_system_is_resolved() {
        for z in ["+00:00", "UTC", "Etc/UTC", "utc", "GMT", "Universal"] {
            assert!(is_utc(z), "{z}");
        }
        for z in ["+01:00", "Europe/Paris", "CET", "EST", "SYSTEM", ""] {
            assert!(!is_utc(z), "{z}");
        }
        assert_eq!(mysql_zone("SYSTEM", "CET"), "CET");
        assert_eq!(mysql_zone("system", "UTC"), "UTC");
        assert_eq!(mysql_zone("+02:00", "UTC"), "+02:00");
    }
}

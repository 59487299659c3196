//! `sluice cdc setup`: checks that a PostgreSQL source can feed change data capture, then
//! creates what is missing — the publication (exactly the pipeline's tables), REPLICA
//! IDENTITY FULL on tables whose values may be TOASTed, and the logical replication slot with
//! the built-in `pgoutput` plugin (no extension, so it works on RDS).
//!
//! [`check`] only reads the catalogs and reports every problem at once, so a user fixes them
//! in one round. [`apply`] runs the same inspection and refuses while any blocking problem is
//! left (an existing publication that differs from the pipeline is not blocking: `apply` sets
//! it to the pipeline's tables). Then it acts in this order, each step idempotent, so a failed
//! run is simply run again:
//!
//! 1. publication and replica identities, in one transaction (both or neither);
//! 2. the slot, in its own statement: PostgreSQL refuses to create a logical slot inside a
//!    transaction that has written, and the slot must come after the publication, since
//!    `pgoutput` looks the publication up as of each decoded change and fails on changes
//!    older than it.

use std::collections::BTreeSet;

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};
use thiserror::Error;

use crate::warehouse::quote_ident;

mod inspect;
mod problem;

use inspect::{Found, PublicationFound};
pub use problem::{Action, Problem};

/// What the pipeline asks of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupSpec {
    /// Logical replication slot: `[a-z0-9_]`, at most 63 bytes (PostgreSQL's rule).
    pub slot: String,
    /// Publication holding exactly `tables`.
    pub publication: String,
    /// `(schema, table)` of each published table.
    pub tables: Vec<(String, String)>,
    /// Set REPLICA IDENTITY FULL on tables with TOAST-able columns, so an update that leaves
    /// a TOASTed value unchanged still carries it in `before`.
    pub replica_identity_full: bool,
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOutcome {
    /// In the order they were taken.
    pub actions: Vec<Action>,
    /// The slot's consistent point when created now, else its `confirmed_flush_lsn`: the
    /// position `sluice cdc snapshot` stamps on its rows.
    pub slot_lsn: u64,
    /// The slot was there already (and kept).
    pub slot_existed: bool,
    /// `(schema, table)` whose replica identity was set to FULL by this run.
    pub replica_identity_full_set: Vec<(String, String)>,
}

/// Errors of `check` and `apply`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("bad {what} name {name:?}: {reason}")]
    BadName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("no tables to publish")]
    NoTables,
    #[error("table {0} is listed twice")]
    DuplicateTable(String),
    /// `apply` found blocking problems; nothing was changed.
    #[error("cdc setup refused, fix these first: {}", join_problems(.problems))]
    Refused { problems: Vec<Problem> },
    #[error("{step} on {object} failed: {message}")]
    Query {
        step: &'static str,
        object: String,
        message: String,
    },
    #[error("{object} reported LSN {text:?}, not a 64-bit position")]
    BadLsn { object: String, text: String },
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An LSN as PostgreSQL writes it: `X/Y`, the high and low 32 bits in hex.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A PostgreSQL identifier (schema, table, publication, column): 1–63 bytes (longer ones are
/// silently truncated by PostgreSQL, so two names could meet), no control characters.
pub(crate) fn check_ident(what: &'static str, name: &str) -> Result<(), SetupError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.len() > 63 {
        "longer than 63 bytes"
    } else if name.chars().any(char::is_control) {
        "holds a control character"
    } else {
        return Ok(());
    };
    Err(SetupError::BadName {
        what,
        name: name.to_string(),
        reason: reason.into(),
    })
}

/// PostgreSQL's rule for slot names: lower-case letters, digits and `_`, 1–63 bytes.
fn check_slot_name(slot: &str) -> Result<(), SetupError> {
    let ok = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        return Ok(());
    }
    Err(SetupError::BadName {
        what: "slot",
        name: slot.to_string(),
        reason: "want 1-63 bytes of [a-z0-9_]".into(),
    })
}

fn validate(spec: &SetupSpec) -> Result<(), SetupError> {
    check_slot_name(&spec.slot)?;
    check_ident("publication", &spec.publication)?;
    if spec.tables.is_empty() {
        return Err(SetupError::NoTables);
    }
    let mut seen = BTreeSet::new();
    for (schema, table) in &spec.tables {
        check_ident("schema", schema)?;
        check_ident("table", table)?;
        if !seen.insert((schema, table)) {
            return Err(SetupError::DuplicateTable(format!("{schema}.{table}")));
        }
    }
    Ok(())
}

/// Reports everything that stands in the way of `apply`, and what it would change in an
/// existing publication (see [`Problem::is_blocking`]). Reads the catalogs only.
pub async fn check(conn: &mut PgConnection, spec: &SetupSpec) -> Result<Vec<Problem>, SetupError> {
    validate(spec)?;
    let found = inspect::inspect(conn, spec).await?;
    Ok(found.problems(spec))
}

/// Checks, then creates or brings up to date the publication, the replica identities and the
/// slot. Refuses, changing nothing, while a blocking problem is reported. Running it again
/// changes nothing and keeps the slot.
pub async fn apply(conn: &mut PgConnection, spec: &SetupSpec) -> Result<SetupOutcome, SetupError> {
    validate(spec)?;
    let found = inspect::inspect(conn, spec).await?;
    let blocking: Vec<Problem> = found
        .problems(spec)
        .into_iter()
        .filter(Problem::is_blocking)
        .collect();
    if !blocking.is_empty() {
        return Err(SetupError::Refused { problems: blocking });
    }
    let mut actions = Vec::new();
    let full_set = publish(conn, spec, &found, &mut actions).await?;
    let slot_existed = found.slot.is_some();
    let slot_lsn = ensure_slot(conn, spec, slot_existed).await?;
    actions.push(if slot_existed {
        Action::KeptSlot {
            slot: spec.slot.clone(),
            confirmed_flush_lsn: slot_lsn,
        }
    } else {
        Action::CreatedSlot {
            slot: spec.slot.clone(),
            consistent_lsn: slot_lsn,
        }
    });
    for a in &actions {
        tracing::info!(action = %a, "cdc setup");
    }
    Ok(SetupOutcome {
        actions,
        slot_lsn,
        slot_existed,
        replica_identity_full_set: full_set,
    })
}

/// One statement of the publish transaction and the action it stands for.
struct Step {
    name: &'static str,
    object: String,
    sql: String,
    action: Action,
}

/// The publication and the replica identities, in one transaction (both or neither). Returns
/// the tables set to FULL. `ALTER TABLE … REPLICA IDENTITY` takes an ACCESS EXCLUSIVE lock,
/// briefly.
async fn publish(
    conn: &mut PgConnection,
    spec: &SetupSpec,
    found: &Found,
    actions: &mut Vec<Action>,
) -> Result<Vec<(String, String)>, SetupError> {
    let mut steps = publication_steps(spec, found.publication.as_ref());
    if steps.is_empty() {
        let publication = spec.publication.clone();
        actions.push(Action::KeptPublication { publication });
    }
    if spec.replica_identity_full {
        steps.extend(
            found
                .tables
                .iter()
                .filter(|t| t.wants_full())
                .map(|t| Step {
                    name: "alter table replica identity",
                    object: format!("{}.{}", t.schema, t.table),
                    sql: format!(
                        "ALTER TABLE {}.{} REPLICA IDENTITY FULL",
                        quote_ident(&t.schema),
                        quote_ident(&t.table)
                    ),
                    action: Action::SetReplicaIdentityFull {
                        schema: t.schema.clone(),
                        table: t.table.clone(),
                    },
                }),
        );
    }
    let publication = &spec.publication;
    let mut tx = conn
        .begin()
        .await
        .map_err(query_error("begin", publication))?;
    let mut full_set = Vec::new();
    for step in steps {
        exec(&mut tx, step.name, &step.object, step.sql).await?;
        if let Action::SetReplicaIdentityFull { schema, table } = &step.action {
            full_set.push((schema.clone(), table.clone()));
        }
        actions.push(step.action);
    }
    tx.commit()
        .await
        .map_err(query_error("commit", publication))?;
    Ok(full_set)
}

/// What makes the publication hold exactly the spec's tables and publish every operation.
fn publication_steps(spec: &SetupSpec, existing: Option<&PublicationFound>) -> Vec<Step> {
    let publication = spec.publication.clone();
    let quoted = quote_ident(&publication);
    let list = spec
        .tables
        .iter()
        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect::<Vec<_>>()
        .join(", ");
    let step = |name, sql, action| Step {
        name,
        object: publication.clone(),
        sql,
        action,
    };
    let Some(p) = existing else {
        let tables = spec
            .tables
            .iter()
            .map(|(s, t)| format!("{s}.{t}"))
            .collect();
        let action = Action::CreatedPublication {
            publication: publication.clone(),
            tables,
        };
        return vec![step(
            "create publication",
            format!("CREATE PUBLICATION {quoted} FOR TABLE {list}"),
            action,
        )];
    };
    let mut steps = Vec::new();
    let (added, removed) = p.differences(spec);
    if !added.is_empty() || !removed.is_empty() {
        let action = Action::AlteredPublication {
            publication: publication.clone(),
            added,
            removed,
        };
        steps.push(step(
            "alter publication",
            format!("ALTER PUBLICATION {quoted} SET TABLE {list}"),
            action,
        ));
    }
    if !p.missing_operations().is_empty() {
        let sql = format!(
            "ALTER PUBLICATION {quoted} SET (publish = 'insert, update, delete, truncate')"
        );
        let action = Action::SetPublishedOperations {
            publication: publication.clone(),
        };
        steps.push(step("alter publication", sql, action));
    }
    steps
}

/// Creates the slot when missing (returning its consistent point) or reads the existing one's
/// confirmed position. Runs outside any transaction: see the module note.
async fn ensure_slot(
    conn: &mut PgConnection,
    spec: &SetupSpec,
    exists: bool,
) -> Result<u64, SetupError> {
    let slot = &spec.slot;
    let sql = if exists {
        "SELECT (coalesce(confirmed_flush_lsn, restart_lsn) - '0/0'::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $1"
    } else {
        "SELECT (lsn - '0/0'::pg_lsn)::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let step = if exists {
        "read slot position"
    } else {
        "create slot"
    };
    let row = sqlx::query(sql)
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_error(step, slot))?;
    let text: Option<String> = match row {
        Some(r) => r.try_get(0).map_err(query_error(step, slot))?,
        None => None,
    };
    let text = text.ok_or_else(|| SetupError::Query {
        step,
        object: slot.clone(),
        message: "the slot vanished or has no position".into(),
    })?;
    text.parse::<u64>().map_err(|_| SetupError::BadLsn {
        object: format!("slot {slot}"),
        text,
    })
}

async fn exec(
    c: &mut PgConnection,
    step: &'static str,
    object: &str,
    sql: String,
) -> Result<(), SetupError> {
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(query_error(step, object))
}

fn query_error<'a>(step: &'static str, object: &'a str) -> impl Fn(sqlx::Error) -> SetupError + 'a {
    move |e| SetupError::Query {
        step,
        object: object.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SetupSpec {
        SetupSpec {
            slot: "sluice_slot".into(),
            publication: "sluice pub".into(),
            tables: vec![("public".into(), "orders".into())],
            replica_identity_full: true,
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(validate(&spec()).is_ok());
        let bad = |f: fn(&mut SetupSpec)| {
            let mut s = spec();
            f(&mut s);
            validate(&s).unwrap_err().to_string()
        };
        assert!(bad(|s| s.slot = "Slot".into()).contains("slot"));
        assert!(bad(|s| s.slot = "a".repeat(64)).contains("slot"));
        assert!(bad(|s| s.publication = String::new()).contains("publication"));
        assert!(bad(|s| s.tables[0].1 = "x".repeat(64)).contains("63 bytes"));
        assert!(bad(|s| s.tables[0].0 = "a\nb".into()).contains("control"));
        assert!(bad(|s| s.tables.clear()).contains("no tables"));
        assert!(bad(|s| s.tables.push(s.tables[0].clone())).contains("public.orders"));
    }

    #[test]
    fn lsn_text_is_postgres_form() {
        assert_eq!(lsn_text(0), "0/0");
        assert_eq!(lsn_text(22_817_392), "0/15C2A70");
        assert_eq!(lsn_text((1 << 32) | 0xAB), "1/AB");
    }

    #[test]
    fn only_a_differing_publication_is_not_blocking() {
        let differs = Problem::PublicationDiffers {
            publication: "p".into(),
            missing: vec!["public.a".into()],
            extra: vec![],
            missing_operations: vec!["truncate".into()],
        };
        assert!(!differs.is_blocking());
        assert_eq!(
            differs.to_string(),
            "publication p will be changed: add public.a; publish truncate;"
        );
        assert!(Problem::NoPrimaryKey {
            schema: "s".into(),
            table: "t".into()
        }
        .is_blocking());
    }

    #[test]
    fn publication_steps_quote_names_and_converge_on_the_spec() {
        let mut wide = spec();
        wide.tables.push(("Sales".into(), "a\"b".into()));
        let create = publication_steps(&wide, None);
        assert_eq!(create.len(), 1);
        assert_eq!(
            create[0].sql,
            r#"CREATE PUBLICATION "sluice pub" FOR TABLE "public"."orders", "Sales"."a""b""#
        );
        let table = |s: &str, t: &str| (s.to_string(), t.to_string());
        let existing = PublicationFound {
            all_tables: false,
            owner: "o".into(),
            owned: true,
            operations: [true; 4],
            tables: [table("public", "orders"), table("public", "old")].into(),
        };
        let alter = publication_steps(&wide, Some(&existing));
        assert_eq!(alter.len(), 1);
        assert_eq!(
            alter[0].sql,
            r#"ALTER PUBLICATION "sluice pub" SET TABLE "public"."orders", "Sales"."a""b""#
        );
        let changed = Action::AlteredPublication {
            publication: "sluice pub".into(),
            added: vec!["Sales.a\"b".into()],
            removed: vec!["public.old".into()],
        };
        assert_eq!(alter[0].action, changed);
        let same = PublicationFound {
            tables: [table("public", "orders")].into(),
            ..existing
        };
        assert!(publication_steps(&spec(), Some(&same)).is_empty());
    }
}

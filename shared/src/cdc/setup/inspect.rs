//! The catalog reads behind `check` and `apply`, and the problems they reveal.

use std::collections::BTreeSet;

use sqlx::postgres::PgConnection;
use sqlx::Row;

use super::{query_error, Problem, SetupError, SetupSpec};

/// What the catalogs say, gathered once for `check` and `apply`.
pub(super) struct Found {
    pub(super) wal_level: String,
    pub(super) user: String,
    pub(super) database: String,
    pub(super) replication: bool,
    pub(super) can_create: bool,
    pub(super) tables: Vec<TableFound>,
    pub(super) slot: Option<SlotFound>,
    pub(super) publication: Option<PublicationFound>,
}

pub(super) struct TableFound {
    pub(super) schema: String,
    pub(super) table: String,
    /// `None` when no relation has that name.
    pub(super) rel: Option<Relation>,
}

pub(super) struct Relation {
    /// `pg_class.relkind`: `r` for a plain table.
    pub(super) kind: String,
    pub(super) owner: String,
    /// The user has the owner's rights (is it, a member of it, or superuser).
    pub(super) owned: bool,
    /// `pg_class.relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub(super) identity: String,
    pub(super) has_pk: bool,
    /// The REPLICA IDENTITY USING INDEX index and whether it is the primary key.
    pub(super) identity_index: Option<(String, bool)>,
    /// A variable-length column whose storage allows out-of-line (TOAST) values.
    pub(super) toastable: bool,
}

pub(super) struct SlotFound {
    pub(super) slot_type: String,
    pub(super) plugin: Option<String>,
    pub(super) database: Option<String>,
}

pub(super) struct PublicationFound {
    pub(super) all_tables: bool,
    pub(super) owner: String,
    pub(super) owned: bool,
    /// insert, update, delete, truncate.
    pub(super) operations: [bool; 4],
    pub(super) tables: BTreeSet<(String, String)>,
}

const OPERATIONS: [&str; 4] = ["insert", "update", "delete", "truncate"];

impl TableFound {
    /// Whether `apply` sets REPLICA IDENTITY FULL here (when asked to).
    pub(super) fn wants_full(&self) -> bool {
        self.rel
            .as_ref()
            .is_some_and(|r| r.toastable && r.identity != "f")
    }

    pub(super) fn problems(&self, user: &str, out: &mut Vec<Problem>) {
        let (schema, table) = (self.schema.clone(), self.table.clone());
        let Some(rel) = &self.rel else {
            return out.push(Problem::TableMissing { schema, table });
        };
        if rel.kind != "r" {
            return out.push(Problem::NotATable {
                schema,
                table,
                kind: relkind_name(&rel.kind).into(),
            });
        }
        if !rel.owned {
            let (owner, user) = (rel.owner.clone(), user.to_string());
            out.push(Problem::NotOwner {
                schema: schema.clone(),
                table: table.clone(),
                owner,
                user,
            });
        }
        if !rel.has_pk {
            out.push(Problem::NoPrimaryKey {
                schema: schema.clone(),
                table: table.clone(),
            });
        }
        match (rel.identity.as_str(), &rel.identity_index) {
            ("n", _) => out.push(Problem::ReplicaIdentityNothing { schema, table }),
            ("i", Some((index, false))) => out.push(Problem::ReplicaIdentityIndex {
                schema,
                table,
                index: index.clone(),
            }),
            _ => {}
        }
    }
}

fn relkind_name(kind: &str) -> &'static str {
    match kind {
        "v" => "view",
        "m" => "materialized view",
        "p" => "partitioned table",
        "f" => "foreign table",
        "S" => "sequence",
        "i" | "I" => "index",
        _ => "relation other than a table",
    }
}

impl PublicationFound {
    /// `schema.table` to add and to remove so the publication holds exactly the spec's tables.
    pub(super) fn differences(&self, spec: &SetupSpec) -> (Vec<String>, Vec<String>) {
        let wanted: BTreeSet<(String, String)> = spec.tables.iter().cloned().collect();
        let show = |(s, t): &(String, String)| format!("{s}.{t}");
        let added = wanted.difference(&self.tables).map(show).collect();
        let removed = self.tables.difference(&wanted).map(show).collect();
        (added, removed)
    }

    pub(super) fn missing_operations(&self) -> Vec<String> {
        OPERATIONS
            .iter()
            .zip(self.operations)
            .filter(|(_, on)| !on)
            .map(|(op, _)| (*op).to_string())
            .collect()
    }
}

impl Found {
    pub(super) fn problems(&self, spec: &SetupSpec) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.wal_level != "logical" {
            out.push(Problem::WalLevel {
                current: self.wal_level.clone(),
            });
        }
        if !self.replication {
            out.push(Problem::NoReplicationRights {
                user: self.user.clone(),
            });
        }
        if self.publication.is_none() && !self.can_create {
            out.push(Problem::NoCreateOnDatabase {
                user: self.user.clone(),
                database: self.database.clone(),
            });
        }
        for t in &self.tables {
            t.problems(&self.user, &mut out);
        }
        if let Some(s) = &self.slot {
            self.slot_problems(&spec.slot, s, &mut out);
        }
        if let Some(p) = &self.publication {
            self.publication_problems(spec, p, &mut out);
        }
        out
    }

    fn slot_problems(&self, slot: &str, s: &SlotFound, out: &mut Vec<Problem>) {
        let slot = slot.to_string();
        if s.slot_type != "logical" {
            out.push(Problem::SlotNotLogical { slot });
        } else if s.plugin.as_deref() != Some("pgoutput") {
            out.push(Problem::SlotOtherPlugin {
                slot,
                plugin: s.plugin.clone().unwrap_or_default(),
            });
        } else if s.database.as_deref() != Some(self.database.as_str()) {
            out.push(Problem::SlotOtherDatabase {
                slot,
                database: s.database.clone().unwrap_or_default(),
            });
        }
    }

    fn publication_problems(&self, spec: &SetupSpec, p: &PublicationFound, out: &mut Vec<Problem>) {
        let publication = spec.publication.clone();
        if p.all_tables {
            return out.push(Problem::PublicationAllTables { publication });
        }
        if !p.owned {
            let (owner, user) = (p.owner.clone(), self.user.clone());
            out.push(Problem::PublicationNotOwned {
                publication: publication.clone(),
                owner,
                user,
            });
        }
        let (missing, extra) = p.differences(spec);
        let missing_operations = p.missing_operations();
        if !missing.is_empty() || !extra.is_empty() || !missing_operations.is_empty() {
            out.push(Problem::PublicationDiffers {
                publication,
                missing,
                extra,
                missing_operations,
            });
        }
    }
}

pub(super) async fn inspect(
    conn: &mut PgConnection,
    spec: &SetupSpec,
) -> Result<Found, SetupError> {
    let row = sqlx::query(
        "SELECT current_setting('wal_level'), current_user::text, current_database()::text, \
                r.rolsuper OR r.rolreplication, has_database_privilege(current_database(), 'CREATE'), \
                EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(query_error("read settings and role", "the source"))?;
    let get = query_error("read settings and role", "the source");
    let (wal_level, user, database): (String, String, String) = (
        row.try_get(0).map_err(&get)?,
        row.try_get(1).map_err(&get)?,
        row.try_get(2).map_err(&get)?,
    );
    let (mut replication, can_create, rds): (bool, bool, bool) = (
        row.try_get(3).map_err(&get)?,
        row.try_get(4).map_err(&get)?,
        row.try_get(5).map_err(&get)?,
    );
    // pg_has_role fails on a role that does not exist: only asked where RDS defines it.
    if !replication && rds {
        replication = scalar(
            conn,
            "SELECT pg_has_role(current_user, 'rds_replication', 'MEMBER')",
            None,
            "read rds_replication",
        )
        .await?;
    }
    let mut tables = Vec::with_capacity(spec.tables.len());
    for (schema, table) in &spec.tables {
        let rel = relation(conn, schema, table).await?;
        tables.push(TableFound {
            schema: schema.clone(),
            table: table.clone(),
            rel,
        });
    }
    let slot = slot(conn, &spec.slot).await?;
    let publication = publication(conn, &spec.publication).await?;
    Ok(Found {
        wal_level,
        user,
        database,
        replication,
        can_create,
        tables,
        slot,
        publication,
    })
}

async fn scalar<T>(
    conn: &mut PgConnection,
    sql: &'static str,
    bind: Option<&str>,
    step: &'static str,
) -> Result<T, SetupError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut q = sqlx::query_scalar::<_, T>(sql);
    if let Some(b) = bind {
        q = q.bind(b.to_string());
    }
    q.fetch_one(&mut *conn)
        .await
        .map_err(query_error(step, "the source"))
}

async fn relation(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<Option<Relation>, SetupError> {
    let object = format!("{schema}.{table}");
    let err = query_error("read table", &object);
    let row = sqlx::query(
        "SELECT c.relkind::text, pg_get_userbyid(c.relowner)::text, \
                pg_has_role(current_user, c.relowner, 'USAGE'), c.relreplident::text, \
                EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conrelid = c.oid AND p.contype = 'p'), \
                (SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                  WHERE i.indrelid = c.oid AND i.indisreplident), \
                (SELECT i.indisprimary FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), \
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                  AND NOT a.attisdropped AND a.attlen = -1 AND a.attstorage <> 'p') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_error("read table", &object))?;
    let Some(r) = row else { return Ok(None) };
    let index: Option<String> = r.try_get(5).map_err(&err)?;
    let index_is_pk: Option<bool> = r.try_get(6).map_err(&err)?;
    Ok(Some(Relation {
        kind: r.try_get(0).map_err(&err)?,
        owner: r.try_get(1).map_err(&err)?,
        owned: r.try_get(2).map_err(&err)?,
        identity: r.try_get(3).map_err(&err)?,
        has_pk: r.try_get(4).map_err(&err)?,
        identity_index: index.map(|i| (i, index_is_pk.unwrap_or(false))),
        toastable: r.try_get(7).map_err(&err)?,
    }))
}

async fn slot(conn: &mut PgConnection, slot: &str) -> Result<Option<SlotFound>, SetupError> {
    let err = query_error("read slot", slot);
    let row = sqlx::query("SELECT slot_type::text, plugin::text, database::text FROM pg_replication_slots WHERE slot_name = $1")
        .bind(slot)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_error("read slot", slot))?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(SlotFound {
        slot_type: r.try_get(0).map_err(&err)?,
        plugin: r.try_get(1).map_err(&err)?,
        database: r.try_get(2).map_err(&err)?,
    }))
}

async fn publication(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<PublicationFound>, SetupError> {
    let err = query_error("read publication", name);
    let row = sqlx::query(
        "SELECT puballtables, pg_get_userbyid(pubowner)::text, pg_has_role(current_user, pubowner, 'USAGE'), \
                pubinsert, pubupdate, pubdelete, pubtruncate \
         FROM pg_publication WHERE pubname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_error("read publication", name))?;
    let Some(r) = row else { return Ok(None) };
    let mut operations = [false; 4];
    for (i, on) in operations.iter_mut().enumerate() {
        *on = r.try_get(3 + i).map_err(&err)?;
    }
    let rows = sqlx::query(
        "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .map_err(query_error("read publication tables", name))?;
    let mut tables = BTreeSet::new();
    for t in rows {
        tables.insert((t.try_get(0).map_err(&err)?, t.try_get(1).map_err(&err)?));
    }
    Ok(Some(PublicationFound {
        all_tables: r.try_get(0).map_err(&err)?,
        owner: r.try_get(1).map_err(&err)?,
        owned: r.try_get(2).map_err(&err)?,
        operations,
        tables,
    }))
}

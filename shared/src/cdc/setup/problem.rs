//! What `check` reports and what `apply` did, each with the text the CLI prints.

use std::fmt;

use super::lsn_text;

/// What stands in the way, or (non-blocking) what `apply` will change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// `wal_level` must be `logical` (on RDS: `rds.logical_replication = 1`).
    WalLevel {
        current: String,
    },
    /// The user is neither superuser, nor REPLICATION, nor a member of `rds_replication`.
    NoReplicationRights {
        user: String,
    },
    /// Creating the publication needs CREATE on the database.
    NoCreateOnDatabase {
        user: String,
        database: String,
    },
    TableMissing {
        schema: String,
        table: String,
    },
    /// A view, partitioned table, foreign table…: only plain tables are published.
    NotATable {
        schema: String,
        table: String,
        kind: String,
    },
    /// Publishing a table and setting its replica identity need its owner's rights.
    NotOwner {
        schema: String,
        table: String,
        owner: String,
        user: String,
    },
    /// Without a primary key, updates and deletes carry no key and the snapshot cannot page.
    NoPrimaryKey {
        schema: String,
        table: String,
    },
    /// REPLICA IDENTITY NOTHING: deletes and updates would carry no key.
    ReplicaIdentityNothing {
        schema: String,
        table: String,
    },
    /// REPLICA IDENTITY USING INDEX on an index other than the primary key: `before` would
    /// carry that index's columns, not the key every later stage dedups on.
    ReplicaIdentityIndex {
        schema: String,
        table: String,
        index: String,
    },
    /// A physical slot holds the name.
    SlotNotLogical {
        slot: String,
    },
    SlotOtherPlugin {
        slot: String,
        plugin: String,
    },
    /// Logical slots belong to one database.
    SlotOtherDatabase {
        slot: String,
        database: String,
    },
    /// `FOR ALL TABLES` cannot be narrowed with `ALTER PUBLICATION … SET TABLE`.
    PublicationAllTables {
        publication: String,
    },
    PublicationNotOwned {
        publication: String,
        owner: String,
        user: String,
    },
    /// Not blocking: `apply` sets the publication to exactly the pipeline's tables and to
    /// publish every operation.
    PublicationDiffers {
        publication: String,
        /// `schema.table` to add.
        missing: Vec<String>,
        /// `schema.table` to remove.
        extra: Vec<String>,
        /// Operations the publication does not publish (`insert`, `update`, …).
        missing_operations: Vec<String>,
    },
}

impl Problem {
    /// Whether `apply` refuses while this is reported (all but what it fixes itself).
    pub fn is_blocking(&self) -> bool {
        !matches!(self, Problem::PublicationDiffers { .. })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::WalLevel { current } => write!(
                f,
                "wal_level is {current}, logical decoding needs logical (RDS: set rds.logical_replication = 1 and reboot)"
            ),
            Problem::NoReplicationRights { user } => write!(
                f,
                "user {user} may not use replication slots: needs SUPERUSER, REPLICATION, or (RDS) GRANT rds_replication TO {user}"
            ),
            Problem::NoCreateOnDatabase { user, database } => write!(
                f,
                "user {user} may not create the publication: needs GRANT CREATE ON DATABASE {database}"
            ),
            Problem::TableMissing { schema, table } => write!(f, "table {schema}.{table} does not exist"),
            Problem::NotATable { schema, table, kind } => write!(
                f,
                "{schema}.{table} is a {kind}; only plain tables can be published"
            ),
            Problem::NotOwner { schema, table, owner, user } => write!(
                f,
                "table {schema}.{table} is owned by {owner}, not by {user} (needed to publish it and set its replica identity)"
            ),
            Problem::NoPrimaryKey { schema, table } => write!(f, "table {schema}.{table} has no primary key"),
            Problem::ReplicaIdentityNothing { schema, table } => write!(
                f,
                "table {schema}.{table} has REPLICA IDENTITY NOTHING: updates and deletes would carry no key (set DEFAULT or FULL)"
            ),
            Problem::ReplicaIdentityIndex { schema, table, index } => write!(
                f,
                "table {schema}.{table} has REPLICA IDENTITY USING INDEX {index}, not its primary key (set DEFAULT or FULL)"
            ),
            Problem::SlotNotLogical { slot } => write!(f, "slot {slot} exists and is a physical slot"),
            Problem::SlotOtherPlugin { slot, plugin } => write!(
                f,
                "slot {slot} exists with plugin {plugin}, not pgoutput (drop it or choose another slot name)"
            ),
            Problem::SlotOtherDatabase { slot, database } => write!(
                f,
                "slot {slot} exists in database {database}, not this one"
            ),
            Problem::PublicationAllTables { publication } => write!(
                f,
                "publication {publication} is FOR ALL TABLES (drop it or choose another name)"
            ),
            Problem::PublicationNotOwned { publication, owner, user } => write!(
                f,
                "publication {publication} is owned by {owner}, not by {user}"
            ),
            Problem::PublicationDiffers { publication, missing, extra, missing_operations } => {
                write!(f, "publication {publication} will be changed:")?;
                for (label, list) in [("add", missing), ("remove", extra), ("publish", missing_operations)] {
                    if !list.is_empty() {
                        write!(f, " {label} {}", list.join(", "))?;
                        f.write_str(";")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// One thing `apply` did or kept, for the CLI to print.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    CreatedPublication {
        publication: String,
        tables: Vec<String>,
    },
    AlteredPublication {
        publication: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// The publication now publishes insert, update, delete and truncate.
    SetPublishedOperations {
        publication: String,
    },
    KeptPublication {
        publication: String,
    },
    SetReplicaIdentityFull {
        schema: String,
        table: String,
    },
    CreatedSlot {
        slot: String,
        consistent_lsn: u64,
    },
    KeptSlot {
        slot: String,
        confirmed_flush_lsn: u64,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreatedPublication {
                publication,
                tables,
            } => {
                write!(
                    f,
                    "created publication {publication} for {}",
                    tables.join(", ")
                )
            }
            Action::AlteredPublication {
                publication,
                added,
                removed,
            } => write!(
                f,
                "set publication {publication} to the pipeline's tables (added: {}; removed: {})",
                none_or(added),
                none_or(removed)
            ),
            Action::SetPublishedOperations { publication } => write!(
                f,
                "set publication {publication} to publish insert, update, delete, truncate"
            ),
            Action::KeptPublication { publication } => {
                write!(
                    f,
                    "publication {publication} already holds exactly the pipeline's tables"
                )
            }
            Action::SetReplicaIdentityFull { schema, table } => {
                write!(f, "set REPLICA IDENTITY FULL on {schema}.{table}")
            }
            Action::CreatedSlot {
                slot,
                consistent_lsn,
            } => write!(
                f,
                "created slot {slot} (pgoutput), consistent point {}",
                lsn_text(*consistent_lsn)
            ),
            Action::KeptSlot {
                slot,
                confirmed_flush_lsn,
            } => write!(
                f,
                "slot {slot} (pgoutput) already exists, confirmed up to {}",
                lsn_text(*confirmed_flush_lsn)
            ),
        }
    }
}

fn none_or(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

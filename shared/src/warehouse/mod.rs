//! The warehouse load: a table's merge as SQL, for Redshift (through the Data API) and for
//! PostgreSQL (local runs and tests). `plan/` builds statements, `load.rs` runs a batch of
//! manifests through an executor (`executor.rs`: `postgres.rs`, `dataapi/`).
//!
//! Missing tables are created first, in a transaction of their own (Redshift takes a
//! transaction's snapshot at its first CREATE, ALTER or DML, and a LOCK after that queues
//! nothing). Then, all in ONE transaction, so a failure anywhere leaves the final table as it
//! was and a retry starts clean:
//! 1. `SET enable_case_sensitive_identifier` when a name has upper case (Redshift), then `LOCK`
//!    the final table (when `warehouse.lock`): loads of one table queue instead of conflicting;
//! 2. new output columns added (ALTER TABLE … ADD COLUMN); the stage is created and filled (COPY
//!    of the batch's Parquet files, one per column list);
//! 3. rows with a NULL merge key or version leave the stage (the loader quarantined them);
//!    TRUNCATE change rows (`_op = 't'`) record their version in the side table and leave it;
//! 4. the batch: every staged row, numbered per key, greatest version first;
//! 5. a TRUNCATE's `DELETE FROM <final>`: final rows at or below the greatest recorded
//!    truncation are deleted (a row a newer load already brought is newer and stays), and the
//!    latest versions at or below it leave the batch, so older changes loaded later never
//!    come back; the version guard: latest versions not newer than the final row, or than a
//!    delete's tombstone, leave the batch (counted stale), so an older load after a newer one
//!    changes nothing and a deleted key never comes back;
//! 6. unchanged-TOAST markers (`_unchanged`, `plan/unchanged.rs`): the latest versions' marked
//!    values are taken from the key's nearest earlier version, in the batch or the final
//!    table; a row with a marker nothing resolves stays out of the merge (the final row is
//!    kept) and a query returns its key and version. Then the older versions leave the batch
//!    (counted as duplicates), so a key twice in a batch lands once;
//! 7. final rows whose keys are in the batch are deleted; deletes (`_op = 'd'`) leave
//!    tombstones;
//! 8. the batch's non-delete rows are inserted;
//! 9. the stage is cleared: temporary tables dropped, a persistent stage emptied with `DELETE`
//!    (never TRUNCATE, which would commit the transaction in Redshift); tombstones older than
//!    the retention are purged.
//!
//! After the commit, the quarantine: the rows with a NULL key (found in the files before the
//! load) and the unresolved change rows (found in the files by the keys the query returned)
//! go to `quarantine/<table>/load-<hash of the file>.jsonl`. A crash before that loses
//! nothing: the replay of the batch changes no final row and finds the same rows again.

mod dataapi;
mod executor;
pub mod lease;
mod load;
mod null_keys;
mod plan;
mod postgres;
mod reconcile;
mod sql;
mod target;
mod unresolved;

pub use dataapi::DataApiTarget;
pub use executor::{Executed, Executor, LoadError, RunContext};
pub use load::{batch_id, LoadOutcome, Loader};
pub use plan::{
    step_names, CopyGroup, CopyStep, LoadPlan, PlanColumn, PlanError, Statement, Step, TablesFound,
    LOADER_COLUMNS, MAX_BATCH_STATEMENTS, TOMBSTONE_SUFFIX,
};
pub use postgres::{append_csv, PgTarget};
pub use reconcile::{LoadCounts, LoadSummary};
pub use sql::{
    quote_ident, spectrum_schema, Dialect, REDSHIFT_COPY_MAX_ROW_BYTES, REDSHIFT_VARBYTE_MAX_BYTES,
    REDSHIFT_VARCHAR_MAX_BYTES,
};
pub use target::{open_target, Target, TargetError, WAREHOUSE_URL_ENV};

#[cfg(test)]
mod tests;

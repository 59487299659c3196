//! The warehouse load: a table's merge as SQL, for Redshift (through the Data API) and for
//! PostgreSQL (local runs and tests). `plan.rs` builds statements, `load.rs` runs a batch of
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
//!    TRUNCATE change rows (`_op = 't'`) record their version and leave it;
//! 4. the batch: the stage deduplicated by merge key, greatest version first, so a key twice in
//!    a batch lands once (the older ones counted as duplicates);
//! 5. rows at or below the greatest recorded truncation leave the batch and the final table;
//!    the version guard: batch rows not newer than the final row, or than a delete's tombstone,
//!    leave the batch (counted stale), so an older load after a newer one changes nothing and a
//!    deleted key never comes back;
//! 6. final rows whose keys are in the batch are deleted; deletes (`_op = 'd'`) leave tombstones;
//! 7. the batch's non-delete rows are inserted;
//! 8. the stage is cleared: temporary tables dropped, a persistent stage emptied with `DELETE`
//!    (never TRUNCATE, which would commit the transaction in Redshift); tombstones older than
//!    the retention are purged.

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

//! The lake's record of a submitted batch (`state/loads/<table>/<batch>.statement.json`): written
//! before the first poll, read by a re-invocation to resume the statement instead of submitting
//! it again, and read for the table's other batches so a load waits for a statement still
//! running (see the order of effects in `mod.rs`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::lake::layout::{load_state_prefix, load_statement_batch};
use crate::lake::{LakeError, PutMode};

use super::super::executor::{Executed, LoadError, RunContext};
use super::super::plan::Step;
use super::status::{align, Described, Phase};
// `Auth` and `Warehouse` are named by the `connect!` macro.
use super::{
    lake_error, sdk_error, sdk_failure, Auth, DataApiTarget, Waited, Warehouse, ORPHAN_AGE_SECS,
};

impl DataApiTarget {
    /// What became of the statement recorded for this batch, if one is.
    pub(super) async fn resume(
        &self,
        ctx: &RunContext<'_>,
        key: &str,
    ) -> Result<Resume, LoadError> {
        let bytes = match ctx.store.get_bytes(key).await {
            Ok(b) => b,
            Err(LakeError::NotFound { .. }) => return Ok(Resume::Nothing),
            Err(e) => return Err(lake_error(ctx.table, key, e)),
        };
        let rec: StatementRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(table = ctx.table, key, error = %e, "unreadable statement record; submitting the batch anew");
                return Ok(Resume::Nothing);
            }
        };
        match self.describe_raw(&rec.statement_id).await {
            Ok(d) => Ok(match d.phase {
                Phase::Running => {
                    tracing::info!(table = ctx.table, statement_id = %rec.statement_id, status = %d.status, submitted_at = %rec.submitted_at, "resuming the batch an earlier invocation submitted");
                    Resume::Running(rec)
                }
                Phase::Finished => Resume::Finished(rec, d),
                Phase::Failed | Phase::Aborted => {
                    tracing::warn!(table = ctx.table, statement_id = %rec.statement_id, status = %d.status, error = d.error.as_deref().unwrap_or(""), "the batch an earlier invocation submitted did not commit (rolled back); submitting it anew");
                    Resume::Failed(rec)
                }
            }),
            Err(f) if f.retryable => Err(sdk_failure(ctx.table, "DescribeStatement", f)),
            // Statements are kept 24 hours: an older one cannot be asked about any more.
            Err(f) => {
                tracing::warn!(table = ctx.table, statement_id = %rec.statement_id, error = %f.message, "the recorded statement cannot be described; submitting the batch anew");
                Ok(Resume::Failed(rec))
            }
        }
    }

    /// Waits for the statements other batches of the table left running (step 2 at the top):
    /// a `LoadError::Timeout` when one is still running at the deadline. Deletes orphans.
    pub(super) async fn wait_for_other_batches(
        &self,
        ctx: &RunContext<'_>,
        until: Instant,
    ) -> Result<(), LoadError> {
        let table = ctx.table;
        let prefix = load_state_prefix(table);
        let listed = ctx
            .store
            .list(&prefix)
            .await
            .map_err(|e| lake_error(table, &prefix, e))?;
        for meta in listed {
            let Some(batch) = load_statement_batch(table, &meta.key) else {
                continue;
            };
            if batch == ctx.batch {
                continue;
            }
            let key = meta.key.as_str();
            let rec: StatementRecord = match ctx.store.get_bytes(key).await {
                // Its own invocation finished with it since the listing.
                Err(LakeError::NotFound { .. }) => continue,
                Err(e) => return Err(lake_error(table, key, e)),
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(table, key, error = %e, "unreadable statement record of another batch; not waiting for it");
                        continue;
                    }
                },
            };
            let phase = match self.describe_raw(&rec.statement_id).await {
                Ok(d) => Some(d.phase),
                Err(f) if f.retryable => {
                    return Err(sdk_failure(table, "DescribeStatement", f));
                }
                Err(f) => {
                    tracing::warn!(table, batch, statement_id = %rec.statement_id, error = %f.message, "the statement of another batch cannot be described");
                    None
                }
            };
            if phase == Some(Phase::Running) {
                tracing::info!(table, batch, statement_id = %rec.statement_id, submitted_at = %rec.submitted_at, "another batch of this table is still running in Redshift; waiting for it before submitting");
                match self.wait(table, &rec.statement_id, until).await? {
                    Waited::Done(d) => {
                        // Its record stays: its own invocation reads the outcome.
                        tracing::info!(table, batch, statement_id = %rec.statement_id, status = %d.status, "the other batch's statement ended");
                    }
                    Waited::TimedOut { status, waited } => {
                        return Err(LoadError::Timeout {
                            table: table.to_string(),
                            message: format!(
                                "not submitted: Data API statement {} of batch {batch} (another load of this table, recorded at {key}) is still {status} after {waited:?}; this batch is submitted once it has ended",
                                rec.statement_id
                            ),
                        });
                    }
                }
            } else if is_orphan(&rec.submitted_at, chrono::Utc::now()) {
                tracing::info!(table, batch, key, statement_id = %rec.statement_id, submitted_at = %rec.submitted_at, "deleting the statement record of a batch that ended over 24 hours ago");
                self.forget(ctx, key).await;
            }
        }
        Ok(())
    }

    /// Submits the batch and records its id before anything polls it.
    pub(super) async fn submit(
        &self,
        ctx: &RunContext<'_>,
        key: &str,
        steps: &[Step],
        attempt: u32,
    ) -> Result<StatementRecord, LoadError> {
        let sqls = steps.iter().map(|s| s.sql().to_string()).collect();
        let out = connect!(
            self,
            self.client.batch_execute_statement().set_sqls(Some(sqls))
        )
        .statement_name(format!("sluice load {} {}", ctx.table, ctx.batch))
        .send()
        .await
        .map_err(|e| sdk_error(ctx.table, "BatchExecuteStatement", &e))?;
        let rec = StatementRecord {
            statement_id: out.id().unwrap_or_default().to_string(),
            submitted_at: chrono::Utc::now().to_rfc3339(),
            attempt,
            steps: steps.iter().map(|s| s.name().to_string()).collect(),
        };
        tracing::info!(table = ctx.table, batch = ctx.batch, statement_id = %rec.statement_id, attempt, statements = steps.len(), "load submitted to the Redshift Data API");
        // Not recording leaves the statement untracked should this invocation time out; it
        // may still finish within it, so the load goes on (see the note at the top).
        let body = serde_json::to_vec_pretty(&rec).unwrap_or_default();
        if let Err(e) = ctx.store.put(key, body.into(), PutMode::Overwrite).await {
            tracing::warn!(table = ctx.table, key, statement_id = %rec.statement_id, error = %e, "recording the submitted statement failed; a time-out now would submit it again");
        }
        Ok(rec)
    }

    /// Deletes the statement record once its outcome is handled.
    pub(super) async fn forget(&self, ctx: &RunContext<'_>, key: &str) {
        if let Err(e) = ctx.store.delete(key).await {
            tracing::warn!(table = ctx.table, key, error = %e, "deleting the statement record failed; the next load of this batch describes it again");
        }
    }
}

/// What an earlier invocation left for this batch.
pub(super) enum Resume {
    Nothing,
    Running(StatementRecord),
    Finished(StatementRecord, Described),
    /// Rolled back (or too old to describe): submit anew, counting its attempts.
    Failed(StatementRecord),
}

/// The lake record of a submitted batch (`load_statement_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StatementRecord {
    pub(super) statement_id: String,
    /// RFC 3339, UTC.
    pub(super) submitted_at: String,
    /// Transactions this batch has taken, this one included.
    pub(super) attempt: u32,
    /// Names of the batch's statements, in order: their row counts are read by position.
    pub(super) steps: Vec<String>,
}

/// The counts of a committed batch, lined up with the steps being run now.
pub(super) fn finished(rec: &StatementRecord, d: &Described, names: &[&str]) -> Executed {
    let rows = d.sub_rows(rec.steps.len());
    let millis = d.sub_millis(rec.steps.len());
    Executed {
        rows: align(&rec.steps, &rows, names),
        millis: align(&rec.steps, &millis, names),
        statement_id: Some(rec.statement_id.clone()),
        attempts: rec.attempt.max(1),
        results: Default::default(),
    }
}

/// Whether a record submitted at `submitted_at` (RFC 3339) is older than the Data API keeps
/// statements; an unreadable time is not (the record stays).
fn is_orphan(submitted_at: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::DateTime::parse_from_rfc3339(submitted_at)
        .is_ok_and(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds() > ORPHAN_AGE_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_older_than_a_day_are_orphans() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-02T12:00:00+00:00")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert!(is_orphan("2024-05-01T11:59:59+00:00", now));
        assert!(is_orphan("2024-05-01T13:59:59+02:00", now), "offsets count");
        assert!(!is_orphan("2024-05-01T12:00:01+00:00", now));
        assert!(!is_orphan("2024-05-02T11:00:00+00:00", now));
        assert!(!is_orphan("yesterday", now));
    }

    #[test]
    fn statement_record_round_trips() {
        let rec = StatementRecord {
            statement_id: "d9b6c0c9-5a3b-4d0e-9d26-2f8a1c1e0f00".into(),
            submitted_at: "2024-05-01T00:00:00+00:00".into(),
            attempt: 2,
            steps: vec!["lock".into(), "copy".into()],
        };
        let json = serde_json::to_vec(&rec).expect("serializes");
        let back: StatementRecord = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, rec);
    }
}

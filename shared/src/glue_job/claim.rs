//! One job run per object version, across re-deliveries of its event.
//!
//! S3 notifications arrive at least once, and Lambda retries a failed invocation (another
//! record failed, a timeout after StartJobRun succeeded), so the same object can reach the
//! route more than once. Before starting, the route writes a claim,
//! `state/glue/<table>/<source hash>-<etag>.json`, create-if-absent: only one delivery wins
//! it. The winner starts the run and records the run id in the claim (update-if-match on the
//! ETag it wrote); a start that finally fails deletes the claim so a later retry can start.
//! A delivery that finds the claim reports the recorded run, or, with no run id yet:
//! - a claim younger than the start retry time plus [`ORPHAN_MARGIN`]: the winner is still
//!   starting; fail `Retryable` so the event comes back when it has recorded the run;
//! - an older one: its owner died between claiming and recording (it cannot still be
//!   retrying), so the claim is taken over (update-if-match, one winner) and a run started.
//!   A run started by the dead owner in that short window is the one case of a second run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{GlueJobError, GlueRoute, LargeObject, StartedRun};
use crate::lake::{layout, LakeError, ObjectStore, PutMode};

/// How long past the start retry time a claim without a run id is still taken for a start in
/// progress: the claim's own writes and one last StartJobRun call fit well within it.
pub const ORPHAN_MARGIN: Duration = Duration::from_secs(120);

/// Rounds of create / read / take over before giving up on a claim that keeps changing.
const CLAIM_ROUNDS: u32 = 3;

/// The claim object's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub bucket: String,
    pub key: String,
    pub table: String,
    pub job_name: String,
    /// When the claim was written (ms since the epoch), to tell a start in progress from an
    /// owner that died.
    pub claimed_at_ms: u64,
    /// The run, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl GlueRoute {
    /// Starts the one run for `object` whose content has `etag`, unless a delivery before this
    /// one did: then that run is reported (`already_started`). `store` is the object's lake,
    /// which holds the claim.
    pub async fn start_once(
        &self,
        store: &dyn ObjectStore,
        object: &LargeObject<'_>,
        etag: &str,
    ) -> Result<StartedRun, GlueJobError> {
        let claim_key = layout::glue_claim_key(object.table, object.key, etag);
        let claim_error = |e: LakeError| GlueJobError::Claim {
            claim_key: claim_key.clone(),
            retryable: e.is_retryable(),
            message: e.to_string(),
        };
        for _ in 0..CLAIM_ROUNDS {
            let mine = self.claim_body(object, None);
            match store.put(&claim_key, mine.clone(), PutMode::Create).await {
                Ok(put) => {
                    return self
                        .start_claimed(store, object, &claim_key, put.etag)
                        .await
                }
                // Exists, or another create of it was in flight: read what is there.
                Err(LakeError::AlreadyExists { .. } | LakeError::Precondition { .. }) => {}
                Err(e) => return Err(claim_error(e)),
            }
            let meta = match store.head(&claim_key).await {
                Ok(m) => m,
                // Released by a start that failed meanwhile: claim again.
                Err(LakeError::NotFound { .. }) => continue,
                Err(e) => return Err(claim_error(e)),
            };
            let existing = match store.get_bytes(&claim_key).await {
                Ok(b) => serde_json::from_slice::<Claim>(&b).ok(),
                Err(LakeError::NotFound { .. }) => continue,
                Err(e) => return Err(claim_error(e)),
            };
            if let Some(Claim {
                run_id: Some(run_id),
                job_name,
                ..
            }) = &existing
            {
                return Ok(StartedRun {
                    job_name: job_name.clone(),
                    run_id: run_id.clone(),
                    attempts: 0,
                    already_started: true,
                });
            }
            // An unreadable claim counts as an old one: nobody can be relying on it.
            let claimed_at_ms = existing.map_or(0, |c| c.claimed_at_ms);
            let age = Duration::from_millis(now_ms().saturating_sub(claimed_at_ms));
            if age < self.backoff.budget + ORPHAN_MARGIN {
                return Err(GlueJobError::StartInProgress {
                    job: self.config.job_name.clone(),
                    claim_key: claim_key.clone(),
                    age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let Some(their_etag) = meta.etag else {
                return Err(GlueJobError::Claim {
                    claim_key: claim_key.clone(),
                    retryable: false,
                    message: "the store reports no ETag, so an orphaned claim cannot be taken over safely".into(),
                });
            };
            tracing::warn!(
                claim_key,
                age_ms = age.as_millis() as u64,
                "Glue run claim without a run id, older than any start in progress: taking it over"
            );
            match store
                .put(&claim_key, mine, PutMode::UpdateIfMatch(their_etag))
                .await
            {
                Ok(put) => {
                    return self
                        .start_claimed(store, object, &claim_key, put.etag)
                        .await
                }
                // Someone else took it over or recorded a run first: look again.
                Err(LakeError::Precondition { .. }) => continue,
                Err(e) => return Err(claim_error(e)),
            }
        }
        Err(GlueJobError::StartInProgress {
            job: self.config.job_name.clone(),
            claim_key,
            age_ms: 0,
        })
    }

    /// Starts the run under a claim this call holds, then records the run id in it (or, when
    /// the start finally fails, deletes the claim so a later delivery can start).
    async fn start_claimed(
        &self,
        store: &dyn ObjectStore,
        object: &LargeObject<'_>,
        claim_key: &str,
        claim_etag: Option<String>,
    ) -> Result<StartedRun, GlueJobError> {
        match self.start(object).await {
            Ok(run) => {
                let body = self.claim_body(object, Some(&run.run_id));
                let mode = claim_etag.map_or(PutMode::Overwrite, PutMode::UpdateIfMatch);
                if let Err(e) = store.put(claim_key, body, mode).await {
                    // The run is started and is reported; only a re-delivery after the claim
                    // ages out could start a second one.
                    tracing::warn!(claim_key, run_id = %run.run_id, error = %e, "Glue run started but its id not recorded in the claim");
                }
                Ok(run)
            }
            Err(start_error) => {
                if let Err(e) = store.delete(claim_key).await {
                    tracing::warn!(claim_key, error = %e, "Glue run not started and its claim not released; a retry takes it over once it is old");
                }
                Err(start_error)
            }
        }
    }

    fn claim_body(&self, object: &LargeObject<'_>, run_id: Option<&str>) -> Bytes {
        let claim = Claim {
            bucket: object.bucket.to_string(),
            key: object.key.to_string(),
            table: object.table.to_string(),
            job_name: self.config.job_name.clone(),
            claimed_at_ms: now_ms(),
            run_id: run_id.map(str::to_string),
        };
        // A struct of strings and integers always serializes.
        Bytes::from(serde_json::to_vec(&claim).unwrap_or_default())
    }
}

//! The Glue route: objects too large for one Lambda invocation are transformed by a Glue Spark
//! job (`infra/glue/transform_job.py`) that applies the same pipeline file, instead of by the
//! `transform` function. The function only starts a job run and reports its id.
//!
//! Order of effects: nothing is written to the lake here; the job run writes everything the
//! Rust transform would (Parquet, partitions, quarantine, manifest last). A start the service
//! refuses for now (`ConcurrentRunsExceededException` when the job's `MaxConcurrentRuns` are
//! all busy, throttling) is retried with exponential back-off and jitter for a bounded time,
//! then reported as `Retryable`: the invocation fails, Lambda retries the event and finally
//! sends it to the function's on-failure destination, so a large object is never dropped.
//!
//! Starts are claimed first (`claim.rs`): a re-delivered event reports the run an earlier
//! delivery started instead of starting a second one.
//!
//! Only the formats the job reads go there (`InputFormat::glue_supported`: csv and jsonl); a
//! cdc table's objects stay in the Lambda whatever their size.
//!
//! The job reads the pipeline file itself, so it must read the very file the function read:
//! the route takes the function's `SLUICE_PIPELINE` and refuses to start unless it is on S3
//! (a bundled copy and an S3 copy would drift apart).

mod aws;
mod claim;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::aws::SdkFailure;
use crate::config::{GlueConfig, TableConfig};
use crate::lambda::{ErrorKind, StartupError, PIPELINE_ENV};
use crate::metrics::Emf;

pub use aws::GlueStarter;

/// The job run's arguments (Glue passes them to the script as `--name value`; the script reads
/// them with `getResolvedOptions`).
pub const ARG_SOURCE_BUCKET: &str = "--source_bucket";
pub const ARG_SOURCE_KEY: &str = "--source_key";
pub const ARG_TABLE: &str = "--table";
pub const ARG_PIPELINE: &str = "--pipeline";

/// First wait after a refused start; doubled per attempt up to [`MAX_BACKOFF`]. Job runs last
/// minutes, so a slot frees in seconds at best: waiting less only spends StartJobRun quota.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest single wait, so several attempts fit even in a short retry time.
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// Starts runs of a Glue job: the one call the route makes, behind a trait so the retry rules
/// are tested without a service that can be made to refuse on demand.
#[async_trait]
pub trait JobStarter: Send + Sync + std::fmt::Debug {
    /// Starts a run of `job_name` with `arguments`; returns the run id.
    async fn start_job_run(
        &self,
        job_name: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<String, SdkFailure>;
}

/// The object a job run is started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeObject<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The table that owns the key (resolved as the transform resolves it).
    pub table: &'a str,
    pub size_bytes: u64,
}

/// A job run that was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedRun {
    pub job_name: String,
    pub run_id: String,
    /// Calls to StartJobRun it took (1 when the first was accepted; 0 when already started).
    pub attempts: u32,
    /// The run was started by an earlier delivery of the same object (read from its claim);
    /// this call started nothing.
    pub already_started: bool,
}

impl StartedRun {
    /// The EMF line of one started run.
    pub fn emf_line(&self, object: &LargeObject<'_>) -> String {
        Emf::new("transform")
            .dimension("Table", object.table)
            .count("GlueJobRunsStarted", 1)
            .bytes("SourceBytes", object.size_bytes)
            .property("SourceKey", object.key)
            .property("JobName", self.job_name.as_str())
            .property("JobRunId", self.run_id.as_str())
            .property("StartAttempts", self.attempts)
            .line()
    }
}

/// Why no job run was started.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GlueJobError {
    /// The service refused for now (concurrent runs, throttling) on every attempt until the
    /// retry time ran out. A later retry of the event may succeed.
    #[error("Glue job {job}: no run started for s3://{bucket}/{key} after {attempts} attempts over {waited_ms} ms: {message}")]
    Busy {
        job: String,
        bucket: String,
        key: String,
        attempts: u32,
        waited_ms: u64,
        message: String,
    },
    /// The service refused for good (no such job, access denied, a bad argument).
    #[error("Glue job {job}: no run started for s3://{bucket}/{key}: {message}")]
    Refused {
        job: String,
        bucket: String,
        key: String,
        message: String,
    },
    /// Another delivery of the same object holds the claim and has not recorded a run yet
    /// (it is starting one now). A later retry finds the run.
    #[error("Glue job {job}: a run for this object is being started by another invocation (claim {claim_key}, {age_ms} ms old); retry later")]
    StartInProgress {
        job: String,
        claim_key: String,
        age_ms: u64,
    },
    /// The claim could not be written, read or taken over.
    #[error("Glue run claim {claim_key}: {message}")]
    Claim {
        claim_key: String,
        message: String,
        retryable: bool,
    },
}

impl GlueJobError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GlueJobError::Busy { .. } => ErrorKind::Retryable,
            // A missing job or a missing permission fails the same way on every retry: the
            // deployment is wrong, not the moment.
            GlueJobError::Refused { .. } => ErrorKind::BadInput,
            GlueJobError::StartInProgress { .. } => ErrorKind::Retryable,
            GlueJobError::Claim {
                retryable: true, ..
            } => ErrorKind::Retryable,
            // Access denied on state/glue/ and the like: the deployment, not the moment.
            GlueJobError::Claim { .. } => ErrorKind::BadInput,
        }
    }
}

/// The waits between attempts: exponential from `first`, capped at `max`, with jitter, for at
/// most `budget` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub budget: Duration,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (from 1): `first · 2^(attempt-1)` capped at
    /// `max`, then a random part of its upper half taken off ("equal jitter"), so functions
    /// refused at the same moment do not all come back at the same moment.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .first
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.max);
        base - base.mul_f64(jitter_fraction(attempt) / 2.0)
    }
}

/// A fraction in [0, 1), different per process, moment and attempt. Not cryptographic: it only
/// spreads retries apart.
fn jitter_fraction(attempt: u32) -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&nanos.to_le_bytes());
    seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    seed[12..].copy_from_slice(&attempt.to_le_bytes());
    (xxhash_rust::xxh3::xxh3_64(&seed) % 1_000_000) as f64 / 1_000_000.0
}

/// The route, built once at start-up from the pipeline's `[glue]` section.
#[derive(Debug, Clone)]
pub struct GlueRoute {
    config: GlueConfig,
    pipeline_location: String,
    starter: Arc<dyn JobStarter>,
    backoff: Backoff,
}

impl GlueRoute {
    /// The route for `config`, whose job reads the pipeline file at `pipeline_location` (the
    /// function's `SLUICE_PIPELINE`), which must be on S3: the job runs elsewhere and cannot
    /// read a file bundled with the function.
    pub fn new(
        config: GlueConfig,
        pipeline_location: &str,
        starter: Arc<dyn JobStarter>,
    ) -> Result<Self, StartupError> {
        let on_s3 = pipeline_location
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(b, k)| !b.is_empty() && !k.is_empty());
        if !on_s3 {
            return Err(StartupError::BadEnv {
                var: PIPELINE_ENV,
                value: pipeline_location.to_string(),
                reason: format!(
                    "the pipeline has a [glue] section (job `{}`), and the Glue job reads the same pipeline file, so it must be on S3: set {PIPELINE_ENV}=s3://BUCKET/KEY, or remove [glue]",
                    config.job_name
                ),
            });
        }
        let backoff = Backoff {
            first: FIRST_BACKOFF,
            max: MAX_BACKOFF,
            budget: Duration::from_secs(config.start_retry_secs),
        };
        Ok(Self {
            config,
            pipeline_location: pipeline_location.to_string(),
            starter,
            backoff,
        })
    }

    /// The same route with other waits (tests: milliseconds instead of seconds).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn config(&self) -> &GlueConfig {
        &self.config
    }

    /// Whether an object of `size_bytes` of `table` goes to the Glue job: above the threshold,
    /// and of a format the job reads. A cdc table's objects never do (the job does not read
    /// change events): the Lambda transforms them whatever their size.
    pub fn routes(&self, table: &TableConfig, size_bytes: u64) -> bool {
        table.format.glue_supported() && self.config.routes(size_bytes)
    }

    /// The arguments of the run for `object`.
    pub fn arguments(&self, object: &LargeObject<'_>) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ARG_SOURCE_BUCKET.to_string(), object.bucket.to_string()),
            (ARG_SOURCE_KEY.to_string(), object.key.to_string()),
            (ARG_TABLE.to_string(), object.table.to_string()),
            (ARG_PIPELINE.to_string(), self.pipeline_location.clone()),
        ])
    }

    /// Starts a run for `object`, retrying a start refused for now within the retry time.
    pub async fn start(&self, object: &LargeObject<'_>) -> Result<StartedRun, GlueJobError> {
        let job = self.config.job_name.as_str();
        let arguments = self.arguments(object);
        let started = Instant::now();
        let deadline = started + self.backoff.budget;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let failure = match self.starter.start_job_run(job, &arguments).await {
                Ok(run_id) => {
                    return Ok(StartedRun {
                        job_name: job.to_string(),
                        run_id,
                        attempts: attempt,
                        already_started: false,
                    })
                }
                Err(f) => f,
            };
            let now = Instant::now();
            if !failure.retryable {
                return Err(GlueJobError::Refused {
                    job: job.to_string(),
                    bucket: object.bucket.to_string(),
                    key: object.key.to_string(),
                    message: failure.message,
                });
            }
            if now >= deadline {
                return Err(GlueJobError::Busy {
                    job: job.to_string(),
                    bucket: object.bucket.to_string(),
                    key: object.key.to_string(),
                    attempts: attempt,
                    waited_ms: u64::try_from(now.duration_since(started).as_millis())
                        .unwrap_or(u64::MAX),
                    message: failure.message,
                });
            }
            // The last wait is cut to the deadline, so one more attempt happens right there.
            let wait = self.backoff.delay(attempt).min(deadline - now);
            tracing::warn!(
                job,
                key = object.key,
                attempt,
                wait_ms = wait.as_millis() as u64,
                error = %failure.message,
                "Glue refused the job run for now; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests;

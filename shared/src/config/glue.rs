//! `[glue]`: the route for objects too large for one Lambda invocation. Above `threshold_bytes`
//! the `transform` function does not transform the object itself; it starts a run of the Glue
//! Spark job `job_name`, which applies the same pipeline file (see `crate::glue_job`).

use serde::Deserialize;

use super::error::Invalid;

/// Longest Glue job name the API takes (`JobName`: 1 to 255 characters).
const MAX_JOB_NAME_CHARS: usize = 255;

/// Default time to keep retrying a start the service refused for now (concurrent runs,
/// throttling): long enough for a short burst of large objects to find a free run slot, short
/// against the function's timeout (the transform function runs up to 15 minutes), so the
/// invocation still fails in time for Lambda's own retries and its on-failure destination.
const fn default_start_retry_secs() -> u64 {
    60
}

/// Upper bound of `start_retry_secs`: it must end inside one invocation (Lambda stops at 900 s,
/// and the error has to be reported before that, not be a timeout).
const MAX_START_RETRY_SECS: u64 = 600;

/// Upper bound of `threshold_bytes` (4 GiB). An object at or below the threshold is
/// transformed in the Lambda, which spools the object and the Parquet and quarantine files it
/// writes to /tmp: 10 GiB at most (template.yaml's `EphemeralStorage`). A larger threshold
/// would let an object through that fails there, every retry, instead of going to Glue.
pub const MAX_THRESHOLD_BYTES: u64 = 4 << 30;

/// The Glue Spark route for large objects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlueConfig {
    /// Name of the Glue job (`infra/glue/transform_job.py`) that transforms large objects.
    pub job_name: String,
    /// Objects larger than this many bytes (the S3 event's `s3.object.size`) go to the Glue
    /// job; others are transformed in the Lambda. At least 1, at most [`MAX_THRESHOLD_BYTES`].
    pub threshold_bytes: u64,
    /// How long, in seconds, to keep retrying a start refused for now
    /// (`ConcurrentRunsExceededException`, throttling) before the invocation fails as
    /// `Retryable`. Default 60, at most 600.
    #[serde(default = "default_start_retry_secs")]
    pub start_retry_secs: u64,
}

impl GlueConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        check_job_name(&self.job_name).map_err(|r| Invalid::at("job_name", r))?;
        if self.threshold_bytes == 0 {
            return Err(Invalid::at(
                "threshold_bytes",
                "must be at least 1 (0 would send every object, even an empty one, to Glue)",
            ));
        }
        if self.threshold_bytes > MAX_THRESHOLD_BYTES {
            return Err(Invalid::at(
                "threshold_bytes",
                format!(
                    "must be at most {MAX_THRESHOLD_BYTES} (4 GiB): a smaller object is transformed in the Lambda, which holds it and its output files in its 10 GiB /tmp"
                ),
            ));
        }
        if self.start_retry_secs == 0 || self.start_retry_secs > MAX_START_RETRY_SECS {
            return Err(Invalid::at(
                "start_retry_secs",
                format!(
                    "must be between 1 and {MAX_START_RETRY_SECS} (the retries must end inside one invocation)"
                ),
            ));
        }
        Ok(())
    }

    /// Whether an object of `size_bytes` goes to the Glue job.
    pub fn routes(&self, size_bytes: u64) -> bool {
        size_bytes > self.threshold_bytes
    }
}

/// A Glue job name: what the API's `JobName` takes (1 to 255 characters of its single-line
/// pattern, so no control characters), without surrounding spaces, which the console shows as
/// the same name as the trimmed one.
fn check_job_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.trim() != name {
        return Err(format!(
            "`{name}` has leading or trailing spaces: write the job's name exactly"
        ));
    }
    if name.chars().count() > MAX_JOB_NAME_CHARS {
        return Err(format!(
            "is longer than Glue's limit of {MAX_JOB_NAME_CHARS} characters"
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "holds the control character {c:?}: Glue job names are single-line text"
        ));
    }
    Ok(())
}

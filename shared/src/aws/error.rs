//! One classifier of AWS SDK errors for every client (S3 lake, Glue catalog, Secrets Manager,
//! and the Kinesis, Redshift Data and SQS clients still to come): whether the same call may
//! succeed when tried again, and a message that never holds a raw HTTP request or response
//! body (the SDK's `Debug` forms and `DisplayErrorContext` would print them).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// What a failed SDK call amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkFailure {
    /// HTTP status of the response, when one came.
    pub status: Option<u16>,
    /// The service's error code (`NoSuchKey`, `ThrottlingException`, ...).
    pub code: Option<String>,
    /// `HTTP <status> <code>: <service message>`, or the error chain for transport failures.
    pub message: String,
    /// Network failures, timeouts, throttling and 5xx are worth another try; other 4xx not.
    pub retryable: bool,
}

/// Error codes, across services, after which the same call may succeed.
pub fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        // Throttling, in each service's spelling.
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "SlowDown"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            // KMS throttled a stream's encryption (Kinesis PutRecords per-record code).
            | "KMSThrottlingException"
            // Transient service-side failures.
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "InternalError"
            | "InternalFailure"
            | "InternalServiceError"
            | "InternalServiceException"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "OperationTimeoutException"
            | "ResourceNotReadyException"
            | "FederationSourceRetryableException"
            // Redshift Data API: too many statements or sessions running at once (they clear
            // as others finish), or the database connection dropped.
            | "ActiveStatementsExceededException"
            | "ActiveSessionsExceededException"
            | "ActiveWaitingRequestsExceededException"
            | "DatabaseConnectionException"
            // Someone else changed the resource between our read and our write.
            | "ConcurrentModificationException"
            // Glue StartJobRun: the job's `MaxConcurrentRuns` are all busy; one frees when a
            // run ends.
            | "ConcurrentRunsExceededException"
    )
}

/// Classifies an SDK error. The same rule for every client, so retries agree everywhere.
pub fn classify<E>(err: &SdkError<E>) -> SdkFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let retryable = match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(_) => {
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.as_deref().is_some_and(is_retryable_code)
        }
        _ => false,
    };
    let message = match (status, code.as_deref()) {
        (Some(status), Some(code)) => format!(
            "HTTP {status} {code}: {}",
            err.message().unwrap_or("no message")
        ),
        (Some(status), None) => format!("HTTP {status}: {}", error_chain(err)),
        _ => error_chain(err),
    };
    SdkFailure {
        status,
        code,
        message,
        retryable,
    }
}

/// An error and its causes, each by its `Display`. Unlike the SDK's `DisplayErrorContext` this
/// never prints the `Debug` form, which holds the raw HTTP response, body included.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let next = e.to_string();
        // The SDK often repeats a cause's text in its parent's; say it once.
        if !out.ends_with(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_every_service_agree() {
        for c in [
            "SlowDown",
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "InternalServiceException",
            "ConcurrentModificationException",
            "ActiveStatementsExceededException",
        ] {
            assert!(is_retryable_code(c), "{c}");
        }
        for c in [
            "NoSuchKey",
            "AccessDenied",
            "EntityNotFoundException",
            "ValidationException",
            // A quota (Secrets Manager, Kinesis control plane): waiting does not lift it.
            "LimitExceededException",
        ] {
            assert!(!is_retryable_code(c), "{c}");
        }
    }

    #[test]
    fn error_chain_joins_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}

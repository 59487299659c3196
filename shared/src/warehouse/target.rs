//! Which warehouse a load runs on, decided in one place for the `redshift-loader` Lambda and the
//! `sluice load` / `sluice demo --target` commands: a `postgres://` URL gives the PostgreSQL
//! executor (local runs and tests); otherwise the pipeline's `[redshift]` section gives the Data
//! API executor.

use crate::aws::Clients;
use crate::config::Pipeline;

use super::load::{Executor, LoadError};
use super::postgres::PgTarget;

/// Where the Lambda finds a PostgreSQL target that replaces `[redshift]` (local runs, tests).
pub const WAREHOUSE_URL_ENV: &str = "SLUICE_WAREHOUSE_URL";

/// Tombstones (and TRUNCATE versions) older than this are purged after a load commits. A late
/// load of changes older than this could bring a deleted key back; 30 days is far beyond any
/// retry or DLQ replay window (SQS keeps a message 14 days at most).
pub const TOMBSTONE_RETENTION_DAYS: u32 = 30;

/// Why no warehouse target could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("warehouse URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no warehouse to load into: the pipeline has no [redshift] section; give a PostgreSQL URL (postgres://USER@HOST:PORT/DB) instead")]
    NoTarget,
    #[error("the pipeline's [redshift] section needs the Data API executor, which is not built yet; give a PostgreSQL URL (postgres://USER@HOST:PORT/DB) for now")]
    DataApiNotBuilt,
    #[error(transparent)]
    Connect(#[from] LoadError),
}

/// The executor for `url` (a `postgres://` or `postgresql://` URL) when given, else for the
/// pipeline's `[redshift]` section.
pub async fn open_target(
    url: Option<&str>,
    pipeline: &Pipeline,
    clients: Option<&Clients>,
) -> Result<Box<dyn Executor>, TargetError> {
    if let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(TargetError::BadUrl {
                url: redact(url),
                reason: "expected postgres://USER@HOST:PORT/DB (Redshift is reached through the pipeline's [redshift] section)".into(),
            });
        }
        return Ok(Box::new(PgTarget::connect(url).await?));
    }
    let Some(_redshift) = &pipeline.redshift else {
        return Err(TargetError::NoTarget);
    };
    // THE spot where the Data API executor is built (`DataApiTarget`, from `_redshift` and
    // `clients.sdk`), for the Lambda and the CLI alike. Until it lands, say so.
    let _ = clients;
    Err(TargetError::DataApiNotBuilt)
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(redshift: bool) -> Pipeline {
        let section = if redshift {
            "[redshift]\nworkgroup = \"wg\"\ndatabase = \"dev\"\ncopy_iam_role = \"arn:aws:iam::1:role/r\"\n"
        } else {
            ""
        };
        let text = format!(
            "{section}[[tables]]\nname = \"t\"\nraw_prefix = \"raw/t/\"\nformat = \"csv\"\npartition_by = \"a\"\ncatalog = {{ database = \"db\" }}\ncolumns = [{{ name = \"a\", type = \"timestamp\" }}]\n"
        );
        Pipeline::parse(&text, "test").expect("pipeline")
    }

    #[tokio::test]
    async fn targets_are_chosen_and_refused_by_name() {
        let e = open_target(Some("mysql://root:pw@h/db"), &pipeline(true), None)
            .await
            .err()
            .expect("not PostgreSQL");
        assert!(matches!(e, TargetError::BadUrl { .. }), "{e}");
        assert!(e.to_string().contains("mysql://root:***@h/db"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = open_target(None, &pipeline(false), None)
            .await
            .err()
            .expect("no target");
        assert!(matches!(e, TargetError::NoTarget), "{e}");
        let e = open_target(Some(" "), &pipeline(true), None)
            .await
            .err()
            .expect("no Data API yet");
        assert!(matches!(e, TargetError::DataApiNotBuilt), "{e}");
    }
}

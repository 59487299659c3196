//! Which warehouse a load runs on, decided in one place for the `redshift-loader` Lambda and the
//! `sluice load` / `sluice demo --target` commands: a `postgres://` URL gives the PostgreSQL
//! executor (local runs and tests); otherwise the pipeline's `[redshift]` section gives the Data
//! API executor.

use std::time::Instant;

use crate::aws::Clients;
use crate::config::Pipeline;

use super::dataapi::DataApiTarget;
use super::executor::{Executor, LoadError};
use super::postgres::PgTarget;

/// Where the Lambda finds a PostgreSQL target that replaces `[redshift]` (local runs, tests).
pub const WAREHOUSE_URL_ENV: &str = "SLUICE_WAREHOUSE_URL";

/// Why no warehouse target could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("warehouse URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("no warehouse to load into: the pipeline has no [redshift] section; give a PostgreSQL URL (postgres://USER@HOST:PORT/DB) instead")]
    NoTarget,
    #[error("the pipeline's [redshift] section needs AWS clients for the Data API")]
    NoClients,
    #[error(transparent)]
    Connect(#[from] LoadError),
}

/// A warehouse to load into, opened once (a connection pool, an SDK client).
#[derive(Debug, Clone)]
pub enum Target {
    Postgres(PgTarget),
    Redshift(DataApiTarget),
}

impl Target {
    /// The executor for a run that must end by `deadline`: the Data API stops polling there
    /// (the statement's id stays in the lake, and the next run of the same batch resumes it);
    /// PostgreSQL runs within one connection and needs none.
    pub fn executor(&self, deadline: Option<Instant>) -> Box<dyn Executor> {
        match self {
            Target::Postgres(pg) => Box::new(pg.clone()),
            Target::Redshift(r) => match deadline {
                Some(at) => Box::new(r.clone().with_deadline_at(at)),
                None => Box::new(r.clone()),
            },
        }
    }

    /// `postgres` or `redshift`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Postgres(_) => "postgres",
            Target::Redshift(_) => "redshift",
        }
    }
}

/// The target of `url` (a `postgres://` or `postgresql://` URL) when given, else of the
/// pipeline's `[redshift]` section (through the Data API client of `clients`).
pub async fn open_target(
    url: Option<&str>,
    pipeline: &Pipeline,
    clients: Option<&Clients>,
) -> Result<Target, TargetError> {
    if let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(TargetError::BadUrl {
                url: redact(url),
                reason: "expected postgres://USER@HOST:PORT/DB (Redshift is reached through the pipeline's [redshift] section)".into(),
            });
        }
        return Ok(Target::Postgres(PgTarget::connect(url).await?));
    }
    let Some(redshift) = &pipeline.redshift else {
        return Err(TargetError::NoTarget);
    };
    let clients = clients.ok_or(TargetError::NoClients)?;
    Ok(Target::Redshift(DataApiTarget::new(
        clients.redshift_data.clone(),
        redshift,
    )?))
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
            .expect_err("not PostgreSQL");
        assert!(matches!(e, TargetError::BadUrl { .. }), "{e}");
        assert!(e.to_string().contains("mysql://root:***@h/db"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = open_target(None, &pipeline(false), None)
            .await
            .expect_err("no target");
        assert!(matches!(e, TargetError::NoTarget), "{e}");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let clients = Clients::new(sdk);
        let t = open_target(Some(" "), &pipeline(true), Some(&clients))
            .await
            .expect("the Data API target");
        assert_eq!(t.name(), "redshift");
        assert_eq!(
            t.executor(Some(Instant::now())).dialect(),
            super::super::Dialect::Redshift
        );
    }
}

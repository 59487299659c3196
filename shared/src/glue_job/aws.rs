//! [`JobStarter`] on AWS Glue's StartJobRun.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::JobStarter;
use crate::aws::{classify, SdkFailure};

/// Starts job runs through the Glue client of `sluice::aws::Clients`.
#[derive(Debug, Clone)]
pub struct GlueStarter {
    client: aws_sdk_glue::Client,
}

impl GlueStarter {
    pub fn new(client: aws_sdk_glue::Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl JobStarter for GlueStarter {
    async fn start_job_run(
        &self,
        job_name: &str,
        arguments: &BTreeMap<String, String>,
    ) -> Result<String, SdkFailure> {
        let out = self
            .client
            .start_job_run()
            .job_name(job_name)
            .set_arguments(Some(
                arguments
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| classify(&e))?;
        out.job_run_id()
            .map(str::to_string)
            .ok_or_else(|| SdkFailure {
                status: None,
                code: None,
                message: "StartJobRun answered without a JobRunId".into(),
                retryable: false,
            })
    }
}

//! The decoder's settings from the pipeline file: the `[cdc]` section and the change tables
//! (`format = "cdc"`), each keyed by its source relation.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::run::{CdcTable, RunLimits, WalRun};
use super::source::SourceLocation;
use super::WalError;
use crate::config::{is_builtin_column, CdcSource, Pipeline};

/// What a wal-decoder needs from the pipeline.
#[derive(Debug, Clone)]
pub struct WalSettings {
    pub source: SourceLocation,
    /// The `[cdc] stream` (the function's `SLUICE_CDC_STREAM` overrides it).
    pub stream: String,
    /// The run, with limits to be set per invocation.
    pub run: WalRun,
    /// `sluice cdc setup`: set REPLICA IDENTITY FULL on tables with TOAST-able columns.
    pub replica_identity_full: bool,
}

/// The settings, or a configuration error when the pipeline has no `[cdc]` section or no
/// change table.
pub fn settings_from_pipeline(p: &Pipeline) -> Result<WalSettings, WalError> {
    let cdc = p.cdc.as_ref().ok_or_else(|| WalError::Config {
        reason: "the pipeline file has no [cdc] section".into(),
    })?;
    let source = match cdc.source() {
        Some(CdcSource::Secret(s)) => SourceLocation::Secret(s.to_string()),
        Some(CdcSource::UrlEnv(v)) => SourceLocation::UrlEnv(v.to_string()),
        None => {
            return Err(WalError::Config {
                reason: "[cdc] needs exactly one of source_secret or source_url_env".into(),
            })
        }
    };
    let mut tables = HashMap::new();
    for t in p.cdc_tables() {
        let Some(rel) = &t.cdc else { continue };
        let declared: HashSet<String> = t
            .columns
            .iter()
            .filter(|c| !is_builtin_column(&c.name))
            .map(|c| c.name.clone())
            .collect();
        let key_columns = t.dedup.as_ref().map(|d| d.key.clone()).unwrap_or_default();
        tables.insert(
            (rel.schema.clone(), rel.table.clone()),
            CdcTable {
                name: t.name.clone(),
                key_columns,
                declared,
            },
        );
    }
    if tables.is_empty() {
        return Err(WalError::Config {
            reason: "the pipeline file has a [cdc] section but no table with format = \"cdc\""
                .into(),
        });
    }
    Ok(WalSettings {
        source,
        stream: cdc.stream.clone(),
        replica_identity_full: cdc.replica_identity_full,
        run: WalRun {
            slot: cdc.slot.clone(),
            publications: vec![cdc.publication.clone()],
            max_changes_per_peek: u64::from(cdc.max_changes_per_peek),
            tables,
            heartbeat_interval: Duration::from_secs(cdc.heartbeat_interval_secs),
            limits: RunLimits {
                deadline: Instant::now(),
                max_changes: None,
            },
        },
    })
}

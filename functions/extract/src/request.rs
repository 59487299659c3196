//! What an invocation asks for: the scheduled event (every table with a source, incremental)
//! or a manual payload naming tables, shards and the mode; checked against the pipeline
//! before any shard runs, so a misspelt name costs no work and fails as `BadInput`.

use serde::Deserialize;
use serde_json::Value;

use sluice::config::Pipeline;
use sluice::extract::{ExtractError, Mode};
use sluice::lambda::HandlerError;

/// One run's choice of tables, shards and mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Tables to extract, in this order; empty: every table with a `[tables.source]`, in
    /// file order.
    pub tables: Vec<String>,
    /// Shards to read of each table; empty: all of them.
    pub shards: Vec<String>,
    /// A full dump (`Mode::Historical`) instead of the next incremental range.
    pub historical: bool,
}

/// The manual payload: `{"tables": […], "shards": […], "historical": true}`, each optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manual {
    #[serde(default)]
    tables: Option<Vec<String>>,
    #[serde(default)]
    shards: Option<Vec<String>>,
    #[serde(default)]
    historical: bool,
}

/// What the payload of a manual invocation may hold, for error messages.
const MANUAL_SHAPE: &str = r#"the EventBridge scheduled event, or {"tables": [..], "shards": [..], "historical": true} (each optional)"#;

impl Request {
    /// Reads an invocation's payload. The scheduled event (its content is not read), `null`
    /// (an invoke without data) and `{}` ask for every table; anything else must be the
    /// manual payload, unknown fields refused.
    pub fn from_payload(payload: &Value) -> Result<Self, HandlerError> {
        let map = match payload {
            Value::Null => return Ok(Self::default()),
            Value::Object(m) => m,
            _ => {
                return Err(HandlerError::bad_input(format!(
                    "payload: expected {MANUAL_SHAPE}"
                )))
            }
        };
        if is_schedule(map) {
            return Ok(Self::default());
        }
        let manual: Manual = serde_json::from_value(payload.clone()).map_err(|e| {
            HandlerError::bad_input(format!("payload: {e}; expected {MANUAL_SHAPE}"))
        })?;
        Ok(Self {
            tables: non_empty("tables", manual.tables)?,
            shards: non_empty("shards", manual.shards)?,
            historical: manual.historical,
        })
    }

    /// The mode the request asks for.
    pub fn mode(&self) -> Mode {
        if self.historical {
            Mode::Historical
        } else {
            Mode::Incremental
        }
    }

    /// The tables to run, each named once: the ones asked for, else every table with a
    /// source. Refused before anything runs: a table the pipeline does not have or that has
    /// no source, a shard one of the tables does not have.
    pub fn plan(&self, pipeline: &Pipeline) -> Result<Vec<String>, ExtractError> {
        let mut tables: Vec<String> = if self.tables.is_empty() {
            pipeline
                .tables
                .iter()
                .filter(|t| t.source.is_some())
                .map(|t| t.name.clone())
                .collect()
        } else {
            self.tables.clone()
        };
        let mut seen = std::collections::HashSet::new();
        tables.retain(|t| seen.insert(t.clone()));
        for name in &tables {
            let t = pipeline
                .table(name)
                .ok_or_else(|| ExtractError::UnknownTable {
                    table: name.clone(),
                })?;
            let source = t.source.as_ref().ok_or_else(|| ExtractError::NoSource {
                table: name.clone(),
            })?;
            if let Some(missing) = self.shards.iter().find(|s| source.shard(s).is_none()) {
                return Err(ExtractError::UnknownShard {
                    table: name.clone(),
                    shard: missing.clone(),
                    known: source
                        .shards
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(tables)
    }
}

/// EventBridge's scheduled event (`"source": "aws.events"`, `"detail-type": "Scheduled
/// Event"`); a rule may also send its own constant JSON, which is then read as a manual
/// payload.
fn is_schedule(map: &serde_json::Map<String, Value>) -> bool {
    map.get("source").and_then(Value::as_str) == Some("aws.events")
        || map.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
}

/// A list given empty is a mistake (it would mean "everything"): say so.
fn non_empty(field: &str, list: Option<Vec<String>>) -> Result<Vec<String>, HandlerError> {
    match list {
        Some(l) if l.is_empty() => Err(HandlerError::bad_input(format!(
            "payload: `{field}` is empty; leave it out to mean all of them"
        ))),
        Some(l) => Ok(l),
        None => Ok(Vec::new()),
    }
}

//! Metrics as CloudWatch Embedded Metric Format: one JSON line on stdout per object or batch,
//! which CloudWatch Logs turns into metrics without an API call (and without a PutMetricData
//! quota). Every function builds its line with [`Emf`]; this module knows no function.

use serde_json::{Map, Value};

/// The EMF namespace every Sluice metric lives in.
pub const NAMESPACE: &str = "Sluice";

/// CloudWatch units Sluice reports in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// One EMF line: the function name and further dimensions, metric values, and properties
/// (searchable in Logs Insights, not metrics, e.g. the object key).
///
/// ```
/// let line = sluice::metrics::Emf::new("transform")
///     .dimension("Table", "funnel")
///     .count("RowsRead", 10)
///     .property("SourceKey", "raw/funnel/a.csv")
///     .line();
/// assert!(line.contains("\"RowsRead\":10"));
/// ```
#[derive(Debug, Clone)]
pub struct Emf {
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, Value)>,
    properties: Vec<(String, Value)>,
}

impl Emf {
    /// A line for `function`, which is always the first dimension (`Function`).
    pub fn new(function: &str) -> Self {
        Self {
            dimensions: vec![("Function".into(), function.into())],
            metrics: Vec::new(),
            properties: Vec::new(),
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    pub fn metric(mut self, name: &str, unit: Unit, value: impl Into<Value>) -> Self {
        self.metrics.push((name.into(), unit, value.into()));
        self
    }

    pub fn count(self, name: &str, value: u64) -> Self {
        self.metric(name, Unit::Count, value)
    }

    pub fn bytes(self, name: &str, value: u64) -> Self {
        self.metric(name, Unit::Bytes, value)
    }

    pub fn millis(self, name: &str, value: u64) -> Self {
        self.metric(name, Unit::Milliseconds, value)
    }

    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.push((name.into(), value.into()));
        self
    }

    /// The JSON line, stamped now.
    pub fn line(&self) -> String {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.line_at(ts)
    }

    /// The JSON line, stamped `timestamp_ms` (milliseconds since the epoch).
    pub fn line_at(&self, timestamp_ms: u64) -> String {
        let dims: Vec<Value> = self
            .dimensions
            .iter()
            .map(|(n, _)| Value::from(n.as_str()))
            .collect();
        let defs: Vec<Value> = self
            .metrics
            .iter()
            .map(|(n, u, _)| serde_json::json!({"Name": n, "Unit": u.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [dims],
                    "Metrics": defs,
                }]
            }),
        );
        for (n, v) in &self.dimensions {
            root.insert(n.clone(), Value::from(v.as_str()));
        }
        for (n, v) in &self.properties {
            root.insert(n.clone(), v.clone());
        }
        for (n, _, v) in &self.metrics {
            root.insert(n.clone(), v.clone());
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_is_valid_emf() {
        let line = Emf::new("loader")
            .dimension("Table", "orders")
            .count("RowsLoaded", 7)
            .bytes("BytesCopied", 1024)
            .millis("DurationMs", 12)
            .property("Manifests", 3)
            .line_at(1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(cw["Namespace"], "Sluice");
        assert_eq!(cw["Dimensions"], serde_json::json!([["Function", "Table"]]));
        assert_eq!(
            cw["Metrics"],
            serde_json::json!([
                {"Name": "RowsLoaded", "Unit": "Count"},
                {"Name": "BytesCopied", "Unit": "Bytes"},
                {"Name": "DurationMs", "Unit": "Milliseconds"}
            ])
        );
        assert_eq!(v["Function"], "loader");
        assert_eq!(v["Table"], "orders");
        assert_eq!(v["RowsLoaded"], 7);
        assert_eq!(v["Manifests"], 3);
        assert!(!line.contains('\n'));
    }
}

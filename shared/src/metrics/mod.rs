//! Metrics as CloudWatch Embedded Metric Format: one JSON line on stdout per object, which
//! CloudWatch Logs turns into metrics without an API call (and without a PutMetricData quota).

use crate::transform::TransformSummary;

/// The EMF namespace every Sluice metric lives in.
pub const NAMESPACE: &str = "Sluice";

/// The EMF line for one transformed object (dimension: table).
pub fn transform_emf(s: &TransformSummary) -> String {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let c = &s.counts;
    serde_json::json!({
        "_aws": {
            "Timestamp": ts,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function", "Table"]],
                "Metrics": [
                    {"Name": "RowsRead", "Unit": "Count"},
                    {"Name": "RowsWritten", "Unit": "Count"},
                    {"Name": "RowsDuplicate", "Unit": "Count"},
                    {"Name": "RowsQuarantined", "Unit": "Count"},
                    {"Name": "SourceBytes", "Unit": "Bytes"},
                    {"Name": "FilesWritten", "Unit": "Count"},
                    {"Name": "DurationMs", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Function": "transform",
        "Table": s.table,
        "SourceKey": s.source_key,
        "RowsRead": c.rows_read,
        "RowsWritten": c.rows_written,
        "RowsDuplicate": c.rows_duplicate,
        "RowsQuarantined": c.rows_quarantined,
        "SourceBytes": s.source_bytes,
        "FilesWritten": s.files.len(),
        "DurationMs": s.duration_ms,
    })
    .to_string()
}

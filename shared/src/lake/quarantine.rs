//! The quarantine record: one JSON line per row or record a stage could not take, with enough
//! to find it, fix it and replay it. Every stage that quarantines writes this shape, to
//! `quarantine/<table>/<hash>.jsonl` (see `layout`). Records hold raw input: treat them as
//! sensitive as `raw/`, never log them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The lake key of the source object (or the stream position, for stream stages).
    pub object: String,
    /// 1-based line of the row in the object; 0 when the whole object is refused.
    pub line: u64,
    /// The column at fault, when one is.
    pub column: Option<String>,
    /// Why the row was refused, in words.
    pub reason: String,
    /// The row as it came (re-encoded for CSV), so it can be fixed and replayed.
    pub raw: String,
    /// Set when `raw` was cut short (a record over the size limit); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_truncated: bool,
}

impl QuarantineRecord {
    /// The record as one JSON line, newline included.
    pub fn to_json_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_with_every_field() {
        let r = QuarantineRecord {
            object: "raw/t/a.csv".into(),
            line: 7,
            column: Some("price".into()),
            reason: "not a decimal(10,2): \"x\"".into(),
            raw: "1,x\n".into(),
            raw_truncated: false,
        };
        let line = r.to_json_line().unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: QuarantineRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        assert!(!String::from_utf8_lossy(&line).contains("raw_truncated"));
    }
}

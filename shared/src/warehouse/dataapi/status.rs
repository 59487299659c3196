//! What `DescribeStatement` says of a statement, reduced to what the executor acts on:
//! its phase, rows per sub-statement, the sub-statement that failed and whether its error
//! is a conflict. Pure: unit-tested without a Data API.

use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, StatementStatusString, StatusString};

/// Where a statement is, as far as polling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Running,
    Finished,
    Failed,
    Aborted,
}

pub(super) fn phase(status: Option<&StatusString>) -> Phase {
    match status {
        Some(StatusString::Finished) => Phase::Finished,
        Some(StatusString::Failed) => Phase::Failed,
        Some(StatusString::Aborted) => Phase::Aborted,
        // SUBMITTED, PICKED, STARTED, and any status newer than this SDK: keep polling (the
        // deadline bounds it).
        _ => Phase::Running,
    }
}

pub(super) fn sub_phase(status: Option<&StatementStatusString>) -> Phase {
    match status {
        Some(StatementStatusString::Finished) => Phase::Finished,
        Some(StatementStatusString::Failed) => Phase::Failed,
        Some(StatementStatusString::Aborted) => Phase::Aborted,
        _ => Phase::Running,
    }
}

/// A `DescribeStatement` answer, reduced to what the executor acts on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Described {
    pub(super) phase: Phase,
    /// The status as reported, for messages.
    pub(super) status: String,
    pub(super) error: Option<String>,
    /// `ResultRows` of a single statement (rows returned or affected).
    pub(super) rows: Option<u64>,
    pub(super) has_result_set: bool,
    pub(super) subs: Vec<Sub>,
}

/// One sub-statement of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sub {
    /// Position in the batch (0-based).
    pub(super) index: usize,
    pub(super) phase: Phase,
    pub(super) error: Option<String>,
    pub(super) rows: Option<u64>,
    /// Redshift's query id (`sys_load_error_detail.query_id`), when reported.
    pub(super) query_id: Option<i64>,
    /// How long it ran (`Duration`, in nanoseconds), when reported.
    pub(super) duration_ns: Option<u64>,
}

impl Described {
    pub(super) fn from_output(o: &DescribeStatementOutput) -> Self {
        Described {
            phase: phase(o.status()),
            status: o
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
            error: non_empty(o.error()),
            rows: result_rows(o.result_rows()),
            has_result_set: o.has_result_set().unwrap_or(false),
            subs: o
                .sub_statements()
                .iter()
                .enumerate()
                .map(|(pos, s)| Sub {
                    index: sub_index(s.id(), pos),
                    phase: sub_phase(s.status()),
                    error: non_empty(s.error()),
                    rows: result_rows(s.result_rows()),
                    query_id: Some(s.redshift_query_id()).filter(|q| *q > 0),
                    // Negative (-1) until the sub-statement has run.
                    duration_ns: u64::try_from(s.duration()).ok(),
                })
                .collect(),
        }
    }

    /// Rows per statement of a batch of `n`, by position.
    pub(super) fn sub_rows(&self, n: usize) -> Vec<Option<u64>> {
        let mut rows = vec![None; n];
        for s in &self.subs {
            if let Some(r) = rows.get_mut(s.index) {
                *r = s.rows;
            }
        }
        rows
    }

    /// Milliseconds per statement of a batch of `n`, by position (`Duration` is in
    /// nanoseconds; rounded to the nearest millisecond).
    pub(super) fn sub_millis(&self, n: usize) -> Vec<Option<u64>> {
        let mut millis = vec![None; n];
        for s in &self.subs {
            if let Some(m) = millis.get_mut(s.index) {
                *m = s
                    .duration_ns
                    .map(|ns| ns.saturating_add(500_000) / 1_000_000);
            }
        }
        millis
    }
}

/// `ResultRows`: −1 means "not reported" (DDL, or not yet known).
pub(super) fn result_rows(n: i64) -> Option<u64> {
    u64::try_from(n).ok()
}

pub(super) fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty()).map(str::to_string)
}

/// A sub-statement's position from its id, `<batch id>:<n>` with n from 1; else its place in
/// the list.
pub(super) fn sub_index(id: &str, pos: usize) -> usize {
    id.rsplit_once(':')
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .unwrap_or(pos)
}

/// Why a batch did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// Name of the step that failed ("batch" when no sub-statement says).
    pub(super) statement: String,
    pub(super) index: Option<usize>,
    pub(super) error: String,
    pub(super) query_id: Option<i64>,
    pub(super) conflict: bool,
}

/// The failed sub-statement of a batch (the first FAILED one) named by its step.
pub(super) fn failure(d: &Described, names: &[String]) -> Failure {
    let sub = d.subs.iter().find(|s| s.phase == Phase::Failed);
    let error = sub
        .and_then(|s| s.error.clone())
        .or_else(|| d.error.clone())
        .unwrap_or_else(|| no_error_text(d.phase));
    Failure {
        statement: sub
            .and_then(|s| names.get(s.index))
            .cloned()
            .unwrap_or_else(|| "batch".into()),
        index: sub.map(|s| s.index),
        query_id: sub.and_then(|s| s.query_id),
        conflict: is_conflict(&error),
        error,
    }
}

pub(super) fn no_error_text(p: Phase) -> String {
    match p {
        Phase::Aborted => "the statement was aborted (cancelled) before it finished".into(),
        _ => "the statement failed without an error message".into(),
    }
}

/// Whether an error is another transaction winning, after which the same batch may commit.
///
/// - SERIALIZABLE isolation: `ERROR: 1023 DETAIL: Serializable isolation violation on table
///   …`, documented in the Redshift Database Developer Guide, "Isolation levels in Amazon
///   Redshift" → "Troubleshooting serializable isolation errors"
///   (https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html), whose first
///   remedy is to retry the transaction.
/// - SNAPSHOT isolation (the default for new clusters and workgroups, same page): concurrent
///   writes to the same table end one transaction with `ERROR: could not complete because of
///   conflict with concurrent transaction`. The AWS documentation we searched does not spell
///   this text out; it is the error users report from Redshift (aws/amazon-redshift-jdbc-driver
///   issue 147, dbt-labs/dbt-core issue 12596).
pub(super) fn is_conflict(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("serializable isolation violation")
        || m.contains("conflict with concurrent transaction")
}

/// Rows of the recorded steps, placed on the current steps by name in order. They differ when
/// a resumed batch was planned before something changed (an `add_column` step that has since
/// committed); a step without a recorded counterpart gets None.
pub(super) fn align(
    recorded: &[String],
    rows: &[Option<u64>],
    current: &[&str],
) -> Vec<Option<u64>> {
    if recorded
        .iter()
        .map(String::as_str)
        .eq(current.iter().copied())
    {
        return rows.to_vec();
    }
    let mut next = 0;
    current
        .iter()
        .map(|name| {
            let found = recorded[next..].iter().position(|r| r == name)?;
            next += found + 1;
            rows.get(next - 1).copied().flatten()
        })
        .collect()
}

pub(super) fn field_text(f: &Field) -> String {
    match f {
        Field::StringValue(s) => s.clone(),
        Field::LongValue(n) => n.to_string(),
        Field::DoubleValue(x) => x.to_string(),
        Field::BooleanValue(b) => b.to_string(),
        _ => String::new(),
    }
}

/// `sys_load_error_detail` rows (file, line, column, code, message) as one line.
pub(super) fn format_load_errors(rows: &[Vec<String>]) -> Option<String> {
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            format!(
                "{} line {} column {}: {} (code {})",
                get(0),
                get(1),
                get(2),
                get(4),
                get(3)
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_redshiftdata::types::SubStatementData;

    fn sub(id: &str, status: StatementStatusString, rows: i64) -> SubStatementData {
        SubStatementData::builder()
            .id(id)
            .status(status)
            .result_rows(rows)
            .build()
            .expect("id is set")
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn statuses_map_to_phases() {
        assert_eq!(phase(Some(&StatusString::Submitted)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Picked)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Started)), Phase::Running);
        assert_eq!(phase(Some(&StatusString::Finished)), Phase::Finished);
        assert_eq!(phase(Some(&StatusString::Failed)), Phase::Failed);
        assert_eq!(phase(Some(&StatusString::Aborted)), Phase::Aborted);
        assert_eq!(
            phase(Some(&StatusString::from("NEW_STATUS"))),
            Phase::Running
        );
        assert_eq!(phase(None), Phase::Running);
        assert_eq!(
            sub_phase(Some(&StatementStatusString::Failed)),
            Phase::Failed
        );
        assert_eq!(
            sub_phase(Some(&StatementStatusString::Started)),
            Phase::Running
        );
    }

    #[test]
    fn rows_by_sub_statement_position() {
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Finished)
            // Listed out of order: the id's suffix places them.
            .sub_statements(sub("b1:3", StatementStatusString::Finished, 7))
            .sub_statements(sub("b1:1", StatementStatusString::Finished, -1))
            .sub_statements(sub("b1:2", StatementStatusString::Finished, 0))
            .build()
            .expect("id is set");
        let d = Described::from_output(&o);
        assert_eq!(d.phase, Phase::Finished);
        assert_eq!(d.sub_rows(4), vec![None, Some(0), Some(7), None]);
        assert_eq!(sub_index("no-colon", 4), 4);
        assert_eq!(sub_index("x:0", 2), 2);
    }

    #[test]
    fn sub_statement_durations_are_nanoseconds() {
        let timed = |id: &str, ns: i64| {
            SubStatementData::builder()
                .id(id)
                .status(StatementStatusString::Finished)
                .duration(ns)
                .build()
                .expect("id is set")
        };
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Finished)
            .sub_statements(timed("b1:2", 2_345_600_000))
            .sub_statements(timed("b1:1", 400_000))
            .sub_statements(timed("b1:3", -1))
            .build()
            .expect("id is set");
        let d = Described::from_output(&o);
        assert_eq!(d.sub_millis(4), vec![Some(0), Some(2346), None, None]);
    }

    #[test]
    fn the_failed_sub_statement_names_its_step() {
        let failed = SubStatementData::builder()
            .id("b1:2")
            .status(StatementStatusString::Failed)
            .error("ERROR: Spectrum Scan Error")
            .redshift_query_id(4242)
            .build()
            .expect("id is set");
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Failed)
            .error("batch error")
            .sub_statements(sub("b1:1", StatementStatusString::Finished, 0))
            .sub_statements(failed)
            .sub_statements(sub("b1:3", StatementStatusString::Aborted, -1))
            .build()
            .expect("id is set");
        let f = failure(
            &Described::from_output(&o),
            &names(&["lock", "copy", "insert"]),
        );
        assert_eq!(
            f,
            Failure {
                statement: "copy".into(),
                index: Some(1),
                error: "ERROR: Spectrum Scan Error".into(),
                query_id: Some(4242),
                conflict: false,
            }
        );
    }

    #[test]
    fn a_failure_without_sub_statements_uses_the_batch_error() {
        let o = DescribeStatementOutput::builder()
            .id("b1")
            .status(StatusString::Failed)
            .error("ERROR: 1023 DETAIL: Serializable isolation violation on table - 12345, transactions forming the cycle are: 1, 2 (pid:3)")
            .build()
            .expect("id is set");
        let f = failure(&Described::from_output(&o), &names(&["lock"]));
        assert_eq!(f.statement, "batch");
        assert!(f.conflict);
        let aborted = DescribeStatementOutput::builder()
            .id("b2")
            .status(StatusString::Aborted)
            .build()
            .expect("id is set");
        let f = failure(&Described::from_output(&aborted), &[]);
        assert!(f.error.contains("aborted"), "{}", f.error);
        assert!(!f.conflict);
    }

    #[test]
    fn conflicts_of_both_isolation_levels() {
        assert!(is_conflict(
            "ERROR: 1023 DETAIL: Serializable isolation violation on table - 156221, transactions forming the cycle are: 123, 456"
        ));
        assert!(is_conflict(
            "ERROR: could not complete because of conflict with concurrent transaction"
        ));
        assert!(!is_conflict("ERROR: relation \"x\" does not exist"));
        assert!(!is_conflict(
            "ERROR: Load into table 'stage' failed. Check 'sys_load_error_detail' system table for details."
        ));
    }

    #[test]
    fn rows_follow_the_steps_by_name_when_the_plan_changed() {
        let recorded = names(&["lock", "add_column x", "copy", "insert", "drop_stage"]);
        let rows = [None, None, Some(10), Some(8), None];
        assert_eq!(
            align(&recorded, &rows, &["lock", "copy", "insert", "drop_stage"]),
            vec![None, Some(10), Some(8), None]
        );
        assert_eq!(
            align(
                &recorded,
                &rows,
                &["lock", "add_column x", "copy", "insert", "drop_stage"]
            ),
            rows.to_vec()
        );
        assert_eq!(align(&names(&["copy"]), &[Some(3)], &["other"]), vec![None]);
    }

    #[test]
    fn load_errors_read_as_one_line() {
        let rows = vec![vec![
            "s3://lake/curated/a.parquet".to_string(),
            "3".into(),
            "amount".into(),
            "1216".into(),
            "Invalid digit".into(),
        ]];
        assert_eq!(
            format_load_errors(&rows).as_deref(),
            Some("s3://lake/curated/a.parquet line 3 column amount: Invalid digit (code 1216)")
        );
        assert_eq!(format_load_errors(&[]), None);
    }
}

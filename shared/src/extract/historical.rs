//! Historical mode: a full dump of a shard, for a table's first load or a re-load.
//!
//! The dump reads every row with `updated_at` at or before its upper bound (the source's clock
//! less the safety lag and replica delay, as an incremental range), in key order, in parts
//! `<raw_prefix>shard=<id>/historical/<run>/part-<n>.jsonl.gz`: each part is one key range.
//! When the last part is written the watermark is set to "after every row at the upper
//! bound", where the dump began, so the next incremental range starts exactly where the dump
//! ended: a row version is in the dump (updated_at ≤ upper) or in a later range (updated_at >
//! upper), never in both, never in neither.
//!
//! A dump too long for one invocation continues in the next, whatever its mode: its range is
//! in the state until it is done (incremental runs wait for it), and a re-run continues after
//! the last key of the last part written. A dump started while an incremental range is
//! unfinished replaces that range: the dump covers it.

use super::state::{Cursor, RunKind, RunRecord};

/// A new dump up to `upper`, chosen when the source's clock read `source_now`.
pub(crate) fn start(upper: String, source_now: String) -> RunRecord {
    RunRecord::new(RunKind::Historical, Cursor::DumpStart, upper, source_now)
}

/// The watermark a finished dump leaves: after every row at its upper bound.
pub(crate) fn watermark_after(run: &RunRecord) -> Cursor {
    Cursor::After {
        updated_at: run.upper.clone(),
        key: None,
    }
}

/// Which run this invocation works on, given the one in the state and the mode asked for:
/// an unfinished run continues (a dump before anything else; a range unless a dump is
/// asked), otherwise `fresh` makes a new one. The flag says whether it is a continuation.
pub(crate) fn choose(
    pending: Option<RunRecord>,
    historical: bool,
    fresh: impl FnOnce() -> Option<RunRecord>,
) -> Option<(RunRecord, bool)> {
    match pending {
        Some(r) if r.kind == RunKind::Historical || !historical => Some((r, true)),
        _ => fresh().map(|r| (r, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> RunRecord {
        RunRecord::new(
            RunKind::Incremental,
            Cursor::Start,
            "2024-01-01T00:00:00.000000Z".into(),
            "x".into(),
        )
    }

    #[test]
    fn unfinished_runs_continue_and_a_dump_replaces_a_range() {
        let dump = start("2024-02-01T00:00:00.000000Z".into(), "x".into());
        assert_eq!(dump.from, Cursor::DumpStart);
        assert_eq!(
            choose(Some(dump.clone()), false, || None),
            Some((dump.clone(), true))
        );
        assert_eq!(
            choose(Some(dump.clone()), true, || None),
            Some((dump.clone(), true))
        );
        assert_eq!(choose(Some(range()), false, || None), Some((range(), true)));
        assert_eq!(
            choose(Some(range()), true, || Some(dump.clone())),
            Some((dump.clone(), false))
        );
        assert_eq!(choose(None, false, || None), None);
        assert_eq!(
            watermark_after(&dump),
            Cursor::After {
                updated_at: "2024-02-01T00:00:00.000000Z".into(),
                key: None
            }
        );
    }
}

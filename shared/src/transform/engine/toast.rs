//! The TOAST merge of a cdc table's changes within one object. An update that leaves a large
//! (TOASTed) value unchanged does not carry it: the column is marked in `_unchanged`. When
//! dedup keeps that update and drops an earlier version of its key from the same object (an
//! insert, say), the earlier version's value is the one the update left as it was; it is copied
//! into the kept row and the mark removed, so the value is not lost with the dropped row.
//!
//! Three steps across the engine's passes, memory bound by the keys that need a value:
//! - index pass: each key's current winner that left columns out (`on_winner`);
//! - fill pass, only when such a winner has earlier versions in the object (`plan_fill`): per
//!   column left out, the latest earlier version that has the value (`collect`); a delete or a
//!   TRUNCATE between that version and the winner voids it (the row did not exist meanwhile);
//! - write pass: the winner takes the values (`apply`).

use std::collections::HashMap;

use crate::transform::plan::{CdcPlan, Plan};
use crate::transform::values::{self, Val};

use super::change::{self, Op};
use super::row::Row;

/// Position of a change among its key's: (`_lsn`, row number in the object).
type At = (i64, u64);

/// A winner that left columns out, found on the index pass.
struct Pending {
    at: At,
    inputs: Vec<usize>,
}

/// The values found for one winner.
struct Fill {
    winner: At,
    /// The inputs the winner left out, and per input the latest earlier value found.
    inputs: Vec<usize>,
    found: Vec<Option<Found>>,
    /// The latest earlier delete of the key.
    last_delete: Option<At>,
}

/// An earlier version's values of one input (its slots, in slot order).
struct Found {
    at: At,
    vals: Vec<Val<'static>>,
}

#[derive(Default)]
pub(crate) struct Toast {
    pending: HashMap<u128, Pending>,
    fills: HashMap<u128, Fill>,
    /// TRUNCATEs seen on the fill pass.
    truncates: Vec<At>,
}

impl Toast {
    /// Index pass: the row at `at` is now the winner of key `h`.
    pub(crate) fn on_winner(&mut self, h: u128, at: At, unchanged: &[usize]) {
        if unchanged.is_empty() {
            if !self.pending.is_empty() {
                self.pending.remove(&h);
            }
            return;
        }
        self.pending.insert(
            h,
            Pending {
                at,
                inputs: unchanged.to_vec(),
            },
        );
    }

    /// After the index pass: the winners that left columns out and have earlier versions
    /// (`has_earlier`) need a fill pass. Returns whether one is needed.
    pub(crate) fn plan_fill(&mut self, has_earlier: impl Fn(u128) -> bool) -> bool {
        for (h, p) in self.pending.drain() {
            if has_earlier(h) {
                let found = p.inputs.iter().map(|_| None).collect();
                self.fills.insert(
                    h,
                    Fill {
                        winner: p.at,
                        inputs: p.inputs,
                        found,
                        last_delete: None,
                    },
                );
            }
        }
        !self.fills.is_empty()
    }

    /// Fill pass: a TRUNCATE at `at`.
    pub(crate) fn on_truncate(&mut self, at: At) {
        if !self.fills.is_empty() {
            self.truncates.push(at);
        }
    }

    /// Fill pass: the row of key `h` at `at`, if it is an earlier version of a winner that
    /// needs values.
    pub(crate) fn collect(&mut self, cdc: &CdcPlan, h: u128, at: At, row: &Row<'_>) {
        let (Some(fill), Some(change)) = (self.fills.get_mut(&h), &row.change) else {
            return;
        };
        if at >= fill.winner {
            return;
        }
        if change.op == Op::Delete {
            fill.last_delete = fill.last_delete.max(Some(at));
            return;
        }
        for (k, &input) in fill.inputs.iter().enumerate() {
            let newer = fill.found[k].as_ref().is_none_or(|f| at > f.at);
            if newer && !change.unchanged.contains(&input) {
                let vals = cdc.slots_of_input[input]
                    .iter()
                    .map(|&s| values::into_owned(row.vals[s].clone()))
                    .collect();
                fill.found[k] = Some(Found { at, vals });
            }
        }
    }

    /// After the fill pass: values from before a delete or a TRUNCATE of the key are void.
    pub(crate) fn finish_fill(&mut self) {
        let truncates = std::mem::take(&mut self.truncates);
        for fill in self.fills.values_mut() {
            let (winner, last_delete) = (fill.winner, fill.last_delete);
            let void = |at: At| {
                last_delete.is_some_and(|d| d > at)
                    || truncates.iter().any(|&t| t > at && t < winner)
            };
            for f in fill.found.iter_mut() {
                if f.as_ref().is_some_and(|f| void(f.at)) {
                    *f = None;
                }
            }
        }
    }

    /// Write pass: the winner of key `h` takes the values found for it, and `_unchanged`
    /// keeps only the columns still left out.
    pub(crate) fn apply(&mut self, plan: &Plan, h: u128, row: &mut Row<'_>) {
        if self.fills.is_empty() {
            return;
        }
        let (Some(cdc), Some(change)) = (&plan.cdc, row.change.as_mut()) else {
            return;
        };
        let Some(fill) = self.fills.remove(&h) else {
            return;
        };
        for (input, found) in fill.inputs.iter().zip(fill.found) {
            let Some(found) = found else { continue };
            for (&s, v) in cdc.slots_of_input[*input].iter().zip(found.vals) {
                row.vals[s] = v;
            }
            change.unchanged.retain(|i| i != input);
        }
        row.vals[cdc.unchanged_slot] = change::unchanged_value(cdc, &change.unchanged);
    }
}

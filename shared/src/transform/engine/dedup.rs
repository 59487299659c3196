//! Deduplication within one object, by a 128-bit hash of the key values.
//!
//! Without an ordering column the first valid occurrence wins, in one pass with a set of key
//! hashes. With one, pass 1 (`Pass::Index`) remembers per key hash the winning version and
//! row number (a compact table, `keyset.rs`), and pass 2 (`Pass::Write`) writes only the
//! winners. Either way memory grows with distinct keys, never with row width.
//!
//! A cdc table's changes are ordered by `_lsn` (its `order_by`), so a Kinesis retry that
//! reorders records changes nothing; a TRUNCATE has no key and is never a duplicate. Between
//! the index and the write pass, a fill pass may copy TOAST values a winner left out from the
//! versions it supersedes (`toast.rs`).

use crate::config::TableConfig;
use crate::transform::keyset::KeyTable;
use crate::transform::plan::Plan;
use crate::transform::values::Val;

use super::change::Op;
use super::row::Row;
use super::scan::Pass;
use super::toast::Toast;

/// The row of a key that wins so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Winner {
    version: i64,
    row_no: u64,
    /// The key has more than one version in the object.
    versions: bool,
}

enum Index {
    None,
    First(KeyTable<()>),
    Latest(KeyTable<Winner>),
}

/// What the index says about a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The row goes on (to be written, or it is the index pass).
    Keep,
    /// Another row with the same key wins.
    Duplicate,
}

/// The dedup index of one object, kept across its passes.
pub(crate) struct Dedup {
    index: Index,
    /// The key values' canonical bytes, reused from row to row.
    key_buf: Vec<u8>,
    /// TOAST values left out by winners (cdc tables).
    toast: Toast,
}

impl Dedup {
    pub(crate) fn new(t: &TableConfig) -> Self {
        let index = match &t.dedup {
            None => Index::None,
            Some(d) if d.order_by.is_none() => Index::First(KeyTable::new()),
            Some(_) => Index::Latest(KeyTable::new()),
        };
        Self {
            index,
            key_buf: Vec::with_capacity(128),
            toast: Toast::default(),
        }
    }

    /// Whether the object is read twice: once to find the latest versions, once to write.
    pub(crate) fn needs_index_pass(&self) -> bool {
        matches!(self.index, Index::Latest(_))
    }

    /// After the index pass: whether a fill pass must find TOAST values for winners.
    pub(crate) fn needs_fill_pass(&mut self) -> bool {
        let Index::Latest(map) = &self.index else {
            return false;
        };
        self.toast
            .plan_fill(|h| map.get(h).is_some_and(|w| w.versions))
    }

    /// After the fill pass.
    pub(crate) fn finish_fill_pass(&mut self) {
        self.toast.finish_fill();
    }

    /// Looks the row up: on the index pass records it, on the fill pass gathers what a
    /// winner needs from it, on the write pass says whether it is the winner (and completes
    /// it).
    pub(crate) fn check(
        &mut self,
        plan: &Plan,
        row: &mut Row<'_>,
        pass: Pass,
        row_no: u64,
    ) -> Verdict {
        if plan.key_slots.is_empty() {
            return Verdict::Keep;
        }
        if let Some(c) = row.change.as_ref().filter(|c| c.op == Op::Truncate) {
            // No key: every TRUNCATE is kept, and voids older values for the TOAST merge.
            if pass == Pass::Fill {
                self.toast.on_truncate(c.at(row_no));
            }
            return Verdict::Keep;
        }
        key_bytes(&plan.key_slots, &row.vals, &mut self.key_buf);
        let h = xxhash_rust::xxh3::xxh3_128(&self.key_buf);
        match (&mut self.index, pass) {
            (Index::None, _) => Verdict::Keep,
            (Index::First(seen), _) => match seen.entry(h) {
                (_, true) => Verdict::Duplicate,
                (_, false) => Verdict::Keep,
            },
            (Index::Latest(map), Pass::Index) => {
                let version = version(plan, &row.vals);
                let (e, present) = map.entry(h);
                // Ties go to the later row: a re-sent change supersedes the earlier copy.
                if !present || version >= e.version {
                    *e = Winner {
                        version,
                        row_no,
                        versions: present,
                    };
                    if let Some(c) = &row.change {
                        self.toast.on_winner(h, c.at(row_no), &c.unchanged);
                    }
                } else {
                    e.versions = true;
                }
                Verdict::Keep
            }
            (Index::Latest(_), Pass::Fill) => {
                if let (Some(cdc), Some(c)) = (&plan.cdc, &row.change) {
                    self.toast.collect(cdc, h, c.at(row_no), row);
                }
                Verdict::Keep
            }
            (Index::Latest(map), Pass::Write) => match map.get(h) {
                Some(w) if w.row_no == row_no => {
                    self.toast.apply(plan, h, row);
                    Verdict::Keep
                }
                _ => Verdict::Duplicate,
            },
        }
    }
}

/// The row's version: its ordering value as an integer.
fn version(plan: &Plan, vals: &[Val<'_>]) -> i64 {
    match plan.order_slot.map(|s| &vals[s]) {
        Some(Val::I64(v)) | Some(Val::Ts(v)) => *v,
        Some(Val::Date(d)) => i64::from(*d),
        _ => i64::MIN,
    }
}

/// The bytes of a row's dedup key: each key value's canonical bytes, one after another. Every
/// value's bytes delimit themselves (fixed width per type tag, or a length prefix), so two
/// different tuples of values never give the same bytes, whatever the strings contain.
fn key_bytes(slots: &[usize], vals: &[Val<'_>], out: &mut Vec<u8>) {
    out.clear();
    for &s in slots {
        canonical_bytes(&vals[s], out);
    }
}

/// Bytes that identify a value for the dedup key (type-tagged, so `1` and `"1"` differ;
/// strings and binaries length-prefixed, so no content can be mistaken for a boundary).
fn canonical_bytes(v: &Val<'_>, out: &mut Vec<u8>) {
    match v {
        Val::Null => out.push(0),
        Val::I64(x) | Val::Ts(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Val::F64(x) => {
            out.push(2);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Val::Dec(x) => {
            out.push(3);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Val::Bool(b) => out.extend_from_slice(&[4, u8::from(*b)]),
        Val::Str(s) => {
            out.push(5);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Val::Bin(b) => {
            out.push(6);
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
        }
        Val::Date(d) => {
            out.push(7);
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(text.into())
    }

    fn bytes_of(vals: &[Val<'_>]) -> Vec<u8> {
        let slots: Vec<usize> = (0..vals.len()).collect();
        let mut out = Vec::new();
        key_bytes(&slots, vals, &mut out);
        out
    }

    #[test]
    fn keys_whose_strings_hold_the_old_separator_stay_apart() {
        // With values joined by 0x1f (and no lengths) both keys were `05 a 1f 05 b 1f 05 1f`.
        let a = [s("a\u{1f}\u{5}b"), s("")];
        let b = [s("a"), s("b\u{1f}\u{5}")];
        assert_ne!(bytes_of(&a), bytes_of(&b));
        let a = [Val::Bin(b"x\x1f\x06".to_vec()), Val::Bin(Vec::new())];
        let b = [Val::Bin(b"x".to_vec()), Val::Bin(b"\x1f\x06".to_vec())];
        assert_ne!(bytes_of(&a), bytes_of(&b));
        // Moving bytes from one value to the next changes the key.
        assert_ne!(bytes_of(&[s("ab"), s("c")]), bytes_of(&[s("a"), s("bc")]));
        // Equal tuples still give equal keys, and the buffer is reset per row.
        let mut buf = vec![9u8; 3];
        key_bytes(&[0, 1], &[s("a"), Val::I64(1)], &mut buf);
        assert_eq!(buf, bytes_of(&[s("a"), Val::I64(1)]));
    }
}

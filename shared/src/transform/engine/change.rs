//! Change events (`format = "cdc"`, docs/CDC.md) as rows: the envelope read and checked, the
//! row image each kind of change carries its values in, the built-in columns filled, and the
//! rules that depend on the kind (a TRUNCATE has no key, a delete only its key, inserts and
//! updates their required columns unless left out as unchanged TOAST).
//!
//! A line that is not a change event goes to quarantine with the reason, and the column when
//! one is at fault; the other lines of the object still land.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::transform::plan::{CdcPlan, Plan};
use crate::transform::values::{self, json_kind, preview, Val};

use super::row::RowError;

/// The kind of change (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
    /// A snapshot read (`sluice cdc snapshot`).
    Read,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "c" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            "r" => Op::Read,
            _ => return None,
        })
    }

    /// The letter written to `_op`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Read => "r",
        }
    }

    /// The image the row's values come from: `after`, `before` for a delete, none for a
    /// TRUNCATE.
    fn image(self) -> Option<&'static str> {
        match self {
            Op::Insert | Op::Update | Op::Read => Some("after"),
            Op::Delete => Some("before"),
            Op::Truncate => None,
        }
    }
}

/// What a row knows of its change besides its values.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub op: Op,
    pub lsn: i64,
    /// The commit time, UTC microseconds.
    pub commit_ts: i64,
    /// Inputs (declared source columns) the change left out as unchanged TOAST, ascending.
    pub unchanged: Vec<usize>,
}

impl Change {
    /// Where the row stands among the changes of its key: the LSN, then the row's place in
    /// the object (a record sent twice is one change; the later copy counts).
    pub(crate) fn at(&self, row_no: u64) -> (i64, u64) {
        (self.lsn, row_no)
    }
}

/// One event read: the change, and the row image its values come from.
pub(crate) struct Event<'d> {
    pub change: Change,
    /// `after`, `before` for a delete; `None` for a TRUNCATE.
    pub image: Option<&'d Map<String, Value>>,
}

/// Reads the envelope of one event (`doc` is a JSON object).
pub(crate) fn read_event<'d>(
    cdc: &CdcPlan,
    plan: &Plan,
    doc: &'d Value,
) -> Result<Event<'d>, RowError> {
    let Some(obj) = doc.as_object() else {
        return Err(RowError::row("expected a JSON object".into()));
    };
    let op = read_op(obj)?;
    let source = match obj.get("source") {
        Some(Value::Object(s)) => s,
        Some(v) => {
            return Err(RowError::row(format!(
                "`source` must be an object, found a {}",
                json_kind(v)
            )))
        }
        None => return Err(RowError::row("the change event has no `source`".into())),
    };
    check_relation(cdc, source)?;
    let lsn = read_lsn(source)?;
    let commit_ts = read_commit_ts(plan, source)?;
    let image = match op.image() {
        None => None,
        Some(field) => match obj.get(field) {
            Some(Value::Object(m)) => Some(m),
            _ => {
                return Err(RowError::row(format!(
                    "a `{}` change needs its `{field}` row as an object",
                    op.as_str()
                )))
            }
        },
    };
    let unchanged = match (op, image) {
        (Op::Insert | Op::Update | Op::Read, Some(img)) => read_unchanged(cdc, plan, obj, img)?,
        _ => Vec::new(),
    };
    Ok(Event {
        change: Change {
            op,
            lsn,
            commit_ts,
            unchanged,
        },
        image,
    })
}

fn read_op(obj: &Map<String, Value>) -> Result<Op, RowError> {
    match obj.get("op") {
        Some(Value::String(s)) => Op::parse(s).ok_or_else(|| {
            RowError::col(
                "_op",
                format!(
                    "unknown op `{}` (expected c, u, d, t or r)",
                    preview(s.as_bytes())
                ),
            )
        }),
        Some(v) => Err(RowError::col(
            "_op",
            format!("`op` must be a string, found a {}", json_kind(v)),
        )),
        // cdc-sink swaps a pointer for the event it points to; one here was never resolved.
        None if obj.contains_key("spill") => Err(RowError::row(
            "a spill pointer, not a change event: cdc-sink replaces a pointer with the event it points to".into(),
        )),
        None => Err(RowError::row("the change event has no `op`".into())),
    }
}

/// An event names its relation; one for another relation was filed under the wrong table.
fn check_relation(cdc: &CdcPlan, source: &Map<String, Value>) -> Result<(), RowError> {
    let (schema, table) = (source.get("schema"), source.get("table"));
    let (Some(Value::String(s)), Some(Value::String(t))) = (schema, table) else {
        return Ok(());
    };
    if (s.as_str(), t.as_str()) != (cdc.relation.0.as_str(), cdc.relation.1.as_str()) {
        return Err(RowError::row(format!(
            "the change is for `{s}.{t}`, not this table's source `{}.{}`",
            cdc.relation.0, cdc.relation.1
        )));
    }
    Ok(())
}

fn read_lsn(source: &Map<String, Value>) -> Result<i64, RowError> {
    let err = |what: String| {
        RowError::col(
            "_lsn",
            format!("`source.lsn` must be a non-negative JSON integer (the WAL position as one 64-bit number), {what}"),
        )
    };
    match source.get("lsn") {
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(v), _) if v >= 0 => Ok(v),
            (None, Some(v)) => Err(err(format!("{v} is beyond 2^63 - 1"))),
            _ => Err(err(format!("found {n}"))),
        },
        Some(Value::String(s)) => Err(err(format!("found the string `{}`", preview(s.as_bytes())))),
        Some(v) => Err(err(format!("found a {}", json_kind(v)))),
        None => Err(err("but it is missing".into())),
    }
}

fn read_commit_ts(plan: &Plan, source: &Map<String, Value>) -> Result<i64, RowError> {
    match source.get("commit_ts") {
        Some(Value::String(s)) => values::parse_timestamp(s.as_bytes(), &plan.parse)
            .map_err(|r| RowError::col("_commit_ts", format!("`source.commit_ts`: {r}"))),
        Some(v) => Err(RowError::col(
            "_commit_ts",
            format!(
                "`source.commit_ts` must be an ISO-8601 string, found a {}",
                json_kind(v)
            ),
        )),
        None => Err(RowError::col(
            "_commit_ts",
            "`source.commit_ts` is missing".into(),
        )),
    }
}

/// The declared source columns listed in `unchanged` and absent from the image (a value that
/// is there wins over the marker). Columns the table does not declare are no output's concern.
fn read_unchanged(
    cdc: &CdcPlan,
    plan: &Plan,
    obj: &Map<String, Value>,
    image: &Map<String, Value>,
) -> Result<Vec<usize>, RowError> {
    let names = match obj.get("unchanged") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(RowError::col(
                "_unchanged",
                format!(
                    "`unchanged` must be a list of column names, found a {}",
                    json_kind(v)
                ),
            ))
        }
    };
    let mut out = Vec::new();
    for n in names {
        let Value::String(name) = n else {
            return Err(RowError::col(
                "_unchanged",
                format!(
                    "`unchanged` must list column names, found a {}",
                    json_kind(n)
                ),
            ));
        };
        let input = plan
            .inputs
            .iter()
            .position(|i| i.name == *name)
            .filter(|&i| !cdc.builtin_input[i]);
        if let Some(i) = input.filter(|_| !image.contains_key(name.as_str())) {
            out.push(i);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Fills the built-in columns and applies the rules of the change's kind, once the source
/// values are typed.
pub(crate) fn finish_row(
    cdc: &CdcPlan,
    plan: &Plan,
    change: &Change,
    vals: &mut [Val<'_>],
) -> Result<(), RowError> {
    vals[cdc.op_slot] = Val::Str(Cow::Borrowed(change.op.as_str()));
    vals[cdc.lsn_slot] = Val::I64(change.lsn);
    vals[cdc.commit_ts_slot] = Val::Ts(change.commit_ts);
    vals[cdc.unchanged_slot] = unchanged_value(cdc, &change.unchanged);
    if change.op == Op::Truncate {
        // No key and no values: the loader empties the table.
        return Ok(());
    }
    for &k in &plan.key_slots {
        if matches!(vals[k], Val::Null) {
            return Err(RowError::col(
                &plan.slots[k].name,
                format!(
                    "a `{}` change needs its key, and this key column is null",
                    change.op.as_str()
                ),
            ));
        }
    }
    if change.op == Op::Delete {
        // A delete carries the key (more only with REPLICA IDENTITY FULL).
        return Ok(());
    }
    for &s in &cdc.required_slots {
        let left_out = change.unchanged.contains(&plan.slots[s].input);
        if matches!(vals[s], Val::Null) && !left_out {
            return Err(RowError::col(
                &plan.slots[s].name,
                "required value is missing".into(),
            ));
        }
    }
    Ok(())
}

/// `_unchanged`: the output columns of the inputs left out, comma-separated in output order;
/// null when there are none.
pub(crate) fn unchanged_value(cdc: &CdcPlan, unchanged: &[usize]) -> Val<'static> {
    if unchanged.is_empty() {
        return Val::Null;
    }
    let names: Vec<&str> = cdc
        .output_inputs
        .iter()
        .filter(|(i, _)| unchanged.contains(i))
        .map(|(_, n)| n.as_str())
        .collect();
    if names.is_empty() {
        // Only outputs PII dropped: nothing left to mark.
        return Val::Null;
    }
    Val::Str(Cow::Owned(names.join(",")))
}

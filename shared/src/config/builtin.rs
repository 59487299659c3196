//! Built-in columns: the columns the system itself reads or adds, with fixed names and types.
//! They are the only column names that may start with `_`. A table carries one by declaring
//! it in its column list like any other column; for `csv` and `jsonl` input it is read from
//! the field of that name (the extract function and hand-made change files write them so).
//! `partition_by`, `dedup` and the warehouse section may name them.

use super::error::Invalid;
use super::types::ColumnType;
use super::ColumnConfig;

/// A built-in column: its name (also its output name) and its fixed type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinColumn {
    pub name: &'static str,
    pub ty: ColumnType,
    /// What it holds.
    pub doc: &'static str,
}

/// Every built-in column. The one place that lists them.
pub const BUILTIN_COLUMNS: &[BuiltinColumn] = &[
    BuiltinColumn {
        name: "_op",
        ty: ColumnType::String,
        doc: "the kind of change the row records (insert, update, delete)",
    },
    BuiltinColumn {
        name: "_lsn",
        ty: ColumnType::Int,
        doc: "the change's position in the source's log (orders changes of a row)",
    },
    BuiltinColumn {
        name: "_commit_ts",
        ty: ColumnType::Timestamp,
        doc: "when the source committed the change",
    },
    BuiltinColumn {
        name: "_shard",
        ty: ColumnType::String,
        doc: "the source shard the row comes from",
    },
    BuiltinColumn {
        name: "_unchanged",
        ty: ColumnType::String,
        doc: "the columns the change left out as unchanged",
    },
];

/// The built-in column called `name`.
pub fn builtin_column(name: &str) -> Option<&'static BuiltinColumn> {
    BUILTIN_COLUMNS.iter().find(|b| b.name == name)
}

/// Whether `name` is a built-in column's.
pub fn is_builtin_column(name: &str) -> bool {
    builtin_column(name).is_some()
}

/// `_op (string), _lsn (int), …`, for error messages.
fn listing() -> String {
    BUILTIN_COLUMNS
        .iter()
        .map(|b| format!("{} ({})", b.name, b.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rules for a declared column whose name starts with `_`: it is a built-in, of its
/// fixed type, under its own name, without a PII rule; or an input field of a source that
/// names its own fields so (a MongoDB `_id`), renamed to an ordinary lake name.
pub(crate) fn check_builtin(c: &ColumnConfig) -> Result<(), Invalid> {
    let Some(b) = builtin_column(&c.name) else {
        if c.rename.is_some() {
            // `rename` is validated as snake_case, which never starts with `_`.
            return Ok(());
        }
        return Err(Invalid::at(
            "name",
            format!(
                "column `{}` starts with `_`, which only built-in columns may: {} \
                 (to read an input field of that name, give it a `rename`)",
                c.name,
                listing()
            ),
        ));
    };
    if c.ty != b.ty {
        return Err(Invalid::at(
            "type",
            format!("built-in column `{}` is {}, not {}", b.name, b.ty, c.ty),
        ));
    }
    if c.rename.is_some() {
        return Err(Invalid::at(
            "rename",
            format!("built-in column `{}` keeps its name in the lake", b.name),
        ));
    }
    if c.pii.is_some() {
        return Err(Invalid::at(
            "pii",
            format!("built-in column `{}` cannot carry a PII rule", b.name),
        ));
    }
    Ok(())
}

//! Unchanged-TOAST markers resolved inside the merge, in SQL both Redshift and PostgreSQL run.
//!
//! A change row lists in `_unchanged` the output columns the source left out as unchanged
//! TOASTed values (NULL in the row). The value is the one of the key's nearest earlier
//! version: among the batch's older versions of the key, else the final row. Only string,
//! binary and decimal columns can be TOASTed; a marker on any other column is never resolved.
//!
//! The statements do not grow with the columns (joins do), so a wide table still loads in one
//! Data API batch:
//! 1. `sluice_resolved` is filled with the latest version of every marked key (`sluice_rn` 1,
//!    the older versions still in the batch): per resolvable column, the `sluice_rn` of the
//!    nearest older version that does not mark it (a GROUP BY of the batch; a delete stops the
//!    search, as nothing after a delete can leave a value unchanged), then a join on that
//!    version per column, and the final row for keys without one. Older versions that are not
//!    newer than the final row, the key's tombstone or the last TRUNCATE are no candidates:
//!    the final row (or nothing) is nearer. `sluice_missing` lists the marked columns nothing
//!    resolved (and markers on columns that cannot be TOASTed), NULL when none.
//! 2. An UPDATE joins it back on the key: the values filled, `_unchanged` set to the missing
//!    list. Rows with a missing list are then neither inserted nor allowed to delete their
//!    final row; the query `unresolved_changes` returns their key and version, and the loader
//!    quarantines them after the commit (a replay derives them again: they changed nothing).
//!
//! No correlated subquery with ORDER BY/LIMIT (Redshift has none), no `IGNORE NULLS`
//! (PostgreSQL has none), no outer join with the UPDATE's target (Redshift refuses one).

use crate::config::is_builtin_column;

use super::{st, step_names, LoadPlan, PlanColumn, Statement, TEMP_BATCH};
use crate::warehouse::sql::{quote_ident, quote_literal, Dialect};

/// The temporary table of resolved values.
const RESOLVED: &str = "sluice_resolved";

impl LoadPlan {
    /// Columns whose value a marker may leave out: not a key, not the version, not a
    /// built-in (a NULL key or version is the NULL-key quarantine's).
    fn markable(&self) -> impl Iterator<Item = &PlanColumn> {
        self.columns.iter().filter(|c| {
            !self.keys.contains(&c.warehouse)
                && c.warehouse != self.version
                && !is_builtin_column(&c.lake)
        })
    }

    /// The markable columns of a type the source can TOAST: string, binary, decimal.
    fn toastable(&self) -> Vec<&PlanColumn> {
        self.markable()
            .filter(|c| can_toast(&c.glue_type))
            .collect()
    }

    /// Whether `alias`'s row marks the column with lake name `lake` unchanged.
    fn marked(&self, u: &str, alias: &str, lake: &str) -> String {
        format!(
            "POSITION({} IN ',' || COALESCE({alias}.{}, '') || ',') > 0",
            quote_literal(&format!(",{lake},")),
            quote_ident(u)
        )
    }

    /// `sluice_resolved` created and filled, joined back into the batch, dropped (none when
    /// the table has no `_unchanged`).
    pub(super) fn resolve_unchanged(&self, dialect: Dialect) -> Vec<Statement> {
        let Some(u) = &self.unchanged else {
            return Vec::new();
        };
        let batch = quote_ident(TEMP_BATCH);
        let resolved = quote_ident(RESOLVED);
        let toast = self.toastable();
        let mut defs: Vec<String> = self
            .keys
            .iter()
            .chain(toast.iter().map(|c| &c.warehouse))
            .map(|w| self.column_def(w, dialect))
            .collect();
        defs.push(format!("sluice_missing {}", dialect.column_type("string")));
        let mut names: Vec<String> = self.keys.iter().map(|k| quote_ident(k)).collect();
        names.extend(toast.iter().map(|c| quote_ident(&c.warehouse)));
        names.push("sluice_missing".into());
        let set = toast
            .iter()
            .map(|c| format!("{q} = r.{q}", q = quote_ident(&c.warehouse)))
            .chain(std::iter::once(format!(
                "{} = r.sluice_missing",
                quote_ident(u)
            )))
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            st(
                "create_resolved",
                dialect.create_temp(&resolved, &format!("({})", defs.join(", "))),
            ),
            st(
                "resolve_unchanged",
                format!(
                    "INSERT INTO {resolved} ({}) {}",
                    names.join(", "),
                    self.resolution(u, &toast)
                ),
            ),
            st(
                "apply_resolved",
                format!(
                    "UPDATE {batch} SET {set} FROM {resolved} r WHERE {} AND {batch}.sluice_rn = 1",
                    self.keys_equal(&batch, "r")
                ),
            ),
            st("drop_resolved", format!("DROP TABLE {resolved}")),
        ]
    }

    /// The SELECT of the latest marked versions with their values resolved.
    fn resolution(&self, u: &str, toast: &[&PlanColumn]) -> String {
        let batch = quote_ident(TEMP_BATCH);
        let mut select: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("b.{}", quote_ident(k)))
            .collect();
        let mut joins = Vec::new();
        if !toast.is_empty() {
            joins.push(format!(
                "LEFT JOIN ({}) s ON {}",
                self.sources(u, toast),
                self.keys_equal("s", "b")
            ));
        }
        for (i, c) in toast.iter().enumerate() {
            let q = quote_ident(&c.warehouse);
            select.push(format!(
                "CASE WHEN {} THEN CASE WHEN s.sluice_s{i} IS NULL THEN f.{q} ELSE x{i}.{q} END ELSE b.{q} END",
                self.marked(u, "b", &c.lake)
            ));
            joins.push(format!(
                "LEFT JOIN {batch} x{i} ON {} AND x{i}.sluice_rn = s.sluice_s{i}",
                self.keys_equal(&format!("x{i}"), "b")
            ));
        }
        joins.push(format!(
            "LEFT JOIN {} f ON {}",
            self.final_table(),
            self.keys_equal("f", "b")
        ));
        select.push(self.missing(u, toast));
        format!(
            "SELECT {} FROM {batch} b {} WHERE b.sluice_rn = 1 AND b.{} IS NOT NULL",
            select.join(", "),
            joins.join(" "),
            quote_ident(u)
        )
    }

    /// Per key, per resolvable column, the `sluice_rn` of the nearest older version that
    /// holds the value (or is a delete, which ends the search): `sluice_s<i>`. Only versions
    /// newer than the final row, the key's tombstone and the last TRUNCATE count.
    fn sources(&self, u: &str, toast: &[&PlanColumn]) -> String {
        let batch = quote_ident(TEMP_BATCH);
        let tomb = self.tombstone_table();
        let v = quote_ident(&self.version);
        let keys = self
            .keys
            .iter()
            .map(|k| format!("c.{}", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let stop = match &self.op {
            Some(op) => format!("c.{} = 'd' OR ", quote_ident(op)),
            None => String::new(),
        };
        let nearest = toast
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "MIN(CASE WHEN {stop}NOT ({}) THEN c.sluice_rn END) AS sluice_s{i}",
                    self.marked(u, "c", &c.lake)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT {keys}, {nearest} FROM {batch} c LEFT JOIN {fin} f ON {kf} LEFT JOIN {tomb} t ON NOT t.sluice_truncate AND {kt} CROSS JOIN (SELECT MAX({v}) AS sluice_v FROM {tomb} WHERE sluice_truncate) tr WHERE c.sluice_rn > 1 AND (f.{v} IS NULL OR c.{v} > f.{v}) AND (t.{v} IS NULL OR c.{v} > t.{v}) AND (tr.sluice_v IS NULL OR c.{v} > tr.sluice_v) GROUP BY {keys}",
            fin = self.final_table(),
            kf = self.keys_equal("f", "c"),
            kt = self.keys_equal("t", "c"),
        )
    }

    /// `sluice_missing`: the marked columns of the row nothing resolved, comma-separated; NULL
    /// when none, and for a delete (whose other columns are not loaded).
    fn missing(&self, u: &str, toast: &[&PlanColumn]) -> String {
        let v = quote_ident(&self.version);
        let stop = |i: usize| match &self.op {
            Some(op) => format!(" OR x{i}.{} = 'd'", quote_ident(op)),
            None => String::new(),
        };
        let mut parts: Vec<String> = toast
            .iter()
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "CASE WHEN {} AND ((s.sluice_s{i} IS NULL AND f.{v} IS NULL){}) THEN {} ELSE '' END",
                    self.marked(u, "b", &c.lake),
                    stop(i),
                    quote_literal(&format!(",{}", c.lake))
                )
            })
            .collect();
        // Columns that cannot be TOASTed: a marker on one has no value to find.
        parts.extend(
            self.markable()
                .filter(|c| !can_toast(&c.glue_type))
                .map(|c| {
                    format!(
                        "CASE WHEN {} THEN {} ELSE '' END",
                        self.marked(u, "b", &c.lake),
                        quote_literal(&format!(",{}", c.lake))
                    )
                }),
        );
        if parts.is_empty() {
            return "NULL".into();
        }
        let list = format!("NULLIF(LTRIM({}, ','), '')", parts.join(" || "));
        match &self.op {
            Some(op) => format!(
                "CASE WHEN b.{} = 'd' THEN NULL ELSE {list} END",
                quote_ident(op)
            ),
            None => list,
        }
    }

    /// The query of the batch's rows whose markers nothing resolved: the merge keys, the
    /// version and the missing columns, as text (none when the table has no `_unchanged`).
    pub(super) fn unresolved_query(&self, dialect: Dialect) -> Option<Statement> {
        let u = self.unchanged.as_ref()?;
        let cols = self
            .keys
            .iter()
            .chain(std::iter::once(&self.version))
            .map(|w| self.as_text(w, dialect))
            .chain(std::iter::once(quote_ident(u)))
            .collect::<Vec<_>>()
            .join(", ");
        Some(st(
            step_names::UNRESOLVED,
            format!(
                "SELECT {cols} FROM {} WHERE {} IS NOT NULL",
                quote_ident(TEMP_BATCH),
                quote_ident(u)
            ),
        ))
    }

    /// A column's value as text (Redshift casts no BOOLEAN to VARCHAR).
    fn as_text(&self, warehouse: &str, dialect: Dialect) -> String {
        let q = quote_ident(warehouse);
        let glue = self
            .columns
            .iter()
            .find(|c| c.warehouse == warehouse)
            .map_or("string", |c| c.glue_type.as_str());
        match glue {
            "boolean" => format!("CASE WHEN {q} THEN 'true' WHEN NOT {q} THEN 'false' END"),
            _ => format!("CAST({q} AS {})", dialect.column_type("string")),
        }
    }
}

/// Whether a lake type holds values the source may TOAST (PostgreSQL TOASTs only
/// variable-length values: text, json, arrays, bytea, numeric).
fn can_toast(glue_type: &str) -> bool {
    let t = glue_type.to_ascii_lowercase();
    t == "string" || t == "binary" || t.starts_with("decimal")
}

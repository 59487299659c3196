//! The merge after the COPY filled the stage (steps 3–9 of the order of effects in the
//! warehouse's `mod.rs`).

use crate::config::Staging;

use super::{st, step_names, LoadPlan, Statement, Step, TEMP_BATCH};
use crate::warehouse::sql::{quote_ident, Dialect};

impl LoadPlan {
    /// The merge after the COPY filled the stage (steps 3–9 of the warehouse's `mod.rs`).
    pub fn after_copy(&self, dialect: Dialect) -> Vec<Step> {
        let mut out: Vec<Step> = self
            .clean_stage(dialect)
            .into_iter()
            .chain(self.fill_batch(dialect))
            .chain(self.resolve_unchanged(dialect))
            .map(Step::Sql)
            .collect();
        let batch = quote_ident(TEMP_BATCH);
        out.push(Step::Sql(st(
            step_names::DUPLICATES,
            format!("DELETE FROM {batch} WHERE sluice_rn > 1"),
        )));
        out.extend(self.unresolved_query(dialect).map(Step::Query));
        out.extend(self.apply_batch(dialect).into_iter().map(Step::Sql));
        out
    }

    /// Rows that cannot load leave the stage: a NULL merge key or version (quarantined before
    /// the load), and TRUNCATE change rows once their version is recorded.
    fn clean_stage(&self, dialect: Dialect) -> Vec<Statement> {
        let tomb = self.tombstone_table();
        let v = quote_ident(&self.version);
        let stage = self.stage_table();
        let no_key = self
            .keys
            .iter()
            .map(|k| format!("{} IS NULL", quote_ident(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        // A TRUNCATE change row carries no key: only its version counts.
        let unusable = match &self.op {
            Some(op) => format!(
                "{v} IS NULL OR (({no_key}) AND ({o} IS NULL OR {o} <> 't'))",
                o = quote_ident(op)
            ),
            None => format!("{v} IS NULL OR {no_key}"),
        };
        // Counted here; the loader quarantined these rows before the load: a NULL key matches
        // nothing, and a NULL version could never be ordered against another.
        let mut out = vec![st(
            step_names::DROP_NULL_KEYS,
            format!("DELETE FROM {stage} WHERE {unusable}"),
        )];
        if let Some(op) = &self.op {
            let op = quote_ident(op);
            out.push(st(
                "record_truncate",
                format!("INSERT INTO {tomb} ({v}, sluice_truncate, sluice_at) SELECT MAX({v}), TRUE, {} FROM {stage} WHERE {op} = 't' HAVING COUNT(*) > 0", dialect.now()),
            ));
            out.push(st(
                step_names::TRUNCATES,
                format!("DELETE FROM {stage} WHERE {op} = 't'"),
            ));
        }
        out
    }

    /// The batch: every staged row, numbered per key (greatest version first, `sluice_rn` 1),
    /// the older versions kept until the markers are resolved; then the latest versions that
    /// a TRUNCATE, the final row or a tombstone makes stale leave it, and the final rows a
    /// TRUNCATE covers leave the final table.
    fn fill_batch(&self, dialect: Dialect) -> Vec<Statement> {
        let fin = self.final_table();
        let tomb = self.tombstone_table();
        let batch = quote_ident(TEMP_BATCH);
        let v = quote_ident(&self.version);
        let cols = self.column_list();
        let partition = self.key_list();
        let stage = self.stage_table();
        // INSERT rather than CREATE … AS: both databases report its row count.
        let mut out = vec![
            st(
                "create_batch",
                dialect.create_temp(
                    &batch,
                    &format!("({}, sluice_rn BIGINT)", self.column_defs(dialect)),
                ),
            ),
            st(
                step_names::DEDUP,
                format!(
                    "INSERT INTO {batch} ({cols}, sluice_rn) SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {v} DESC) FROM {stage}"
                ),
            ),
        ];
        // The TRUNCATE's `DELETE FROM <final>`, limited to the rows at or below its version:
        // a later load (a newer batch loaded first) keeps what is newer than the TRUNCATE.
        let truncated = format!("(SELECT MAX({v}) FROM {tomb} WHERE sluice_truncate)");
        out.push(st(
            "drop_truncated_from_batch",
            format!("DELETE FROM {batch} WHERE sluice_rn = 1 AND {v} <= {truncated}"),
        ));
        out.push(st(
            "drop_truncated_from_final",
            format!("DELETE FROM {fin} WHERE {v} <= {truncated}"),
        ));
        out.push(st(
            "drop_stale_against_final",
            format!(
                "DELETE FROM {batch} USING {fin} f WHERE {batch}.sluice_rn = 1 AND {} AND f.{v} >= {batch}.{v}",
                self.keys_equal("f", &batch)
            ),
        ));
        out.push(st(
            "drop_stale_against_tombstones",
            format!(
                "DELETE FROM {batch} USING {tomb} t WHERE {batch}.sluice_rn = 1 AND NOT t.sluice_truncate AND {} AND t.{v} >= {batch}.{v}",
                self.keys_equal("t", &batch)
            ),
        ));
        out
    }

    /// The batch (one row per key now) applied: final rows of its keys deleted, deletes
    /// recorded as tombstones, the other rows inserted; rows whose markers nothing resolved
    /// stay out (the final table keeps its row). Then the stage is cleared.
    fn apply_batch(&self, dialect: Dialect) -> Vec<Statement> {
        let fin = self.final_table();
        let tomb = self.tombstone_table();
        let batch = quote_ident(TEMP_BATCH);
        let v = quote_ident(&self.version);
        let cols = self.final_column_list();
        let keys = self.key_list();
        let resolved = |alias: &str| match &self.unchanged {
            Some(u) => format!(" AND {alias}{} IS NULL", quote_ident(u)),
            None => String::new(),
        };
        let mut out = vec![st(
            "delete_replaced",
            format!(
                "DELETE FROM {fin} USING {batch} b WHERE {}{}",
                self.keys_equal(&fin, "b"),
                resolved("b.")
            ),
        )];
        let mut loadable = resolved("");
        if let Some(op) = &self.op {
            let op = quote_ident(op);
            out.push(st(
                "replace_tombstones",
                format!(
                    "DELETE FROM {tomb} USING {batch} b WHERE NOT {tomb}.sluice_truncate AND {} AND b.{op} = 'd'",
                    self.keys_equal(&tomb, "b")
                ),
            ));
            out.push(st(
                step_names::TOMBSTONES,
                format!("INSERT INTO {tomb} ({keys}, {v}, sluice_truncate, sluice_at) SELECT {keys}, {v}, FALSE, {} FROM {batch} WHERE {op} = 'd'", dialect.now()),
            ));
            loadable = format!(" AND ({op} IS NULL OR {op} NOT IN ('d', 't')){loadable}");
        }
        let filter = loadable
            .strip_prefix(" AND ")
            .map(|f| format!(" WHERE {f}"))
            .unwrap_or_default();
        out.push(st(
            step_names::INSERT,
            format!("INSERT INTO {fin} ({cols}) SELECT {cols} FROM {batch}{filter}"),
        ));
        out.push(st("drop_batch", format!("DROP TABLE {batch}")));
        match self.staging {
            Staging::Temp => out.push(st(
                "drop_stage",
                format!("DROP TABLE {}", self.stage_table()),
            )),
            Staging::Table(_) => out.push(st(
                "clear_stage",
                format!("DELETE FROM {}", self.stage_table()),
            )),
        }
        out
    }
}

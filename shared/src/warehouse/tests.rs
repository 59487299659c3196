//! Golden SQL: the plans of a few tables rendered to text files under `golden/`, checked in and
//! compared. Regenerate after an intended change with `SLUICE_BLESS=1 cargo test -p sluice
//! warehouse`, and read the diff.

use super::*;
use crate::config::Pipeline;

const ORDERS: &str = r#"
[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = { key = ["order"], order_by = "_lsn" }
catalog = { database = "db" }
warehouse = { schema = "Sales Mart", table = "Order", merge_keys = ["order"], staging = "stg.Order Stage", lock = false, columns = { order = "order", note = "Note \"quoted\"" } }
columns = [
  { name = "order", type = "int", required = true },
  { name = "note", type = "string" },
  { name = "amount", type = "decimal(12,2)" },
  { name = "_op", type = "string" },
  { name = "_lsn", type = "int" },
  { name = "_commit_ts", type = "timestamp" },
  { name = "_unchanged", type = "string" },
]
"#;

/// The plan as one load runs it: files of the table's current columns and, when `old` is
/// given, files written before the columns in `old.1` were added.
fn render(plan: &LoadPlan, dialect: Dialect, old: Option<(&str, &[&str])>) -> String {
    let full: Vec<String> = plan.columns.iter().map(|c| c.lake.clone()).collect();
    let mut groups = vec![CopyGroup {
        columns: full,
        files: vec!["curated/t/new.parquet".into()],
        manifest_url: "s3://lake/loads/t/b/copy-0.manifest".into(),
    }];
    let mut found = TablesFound::default();
    if let Some((file, added)) = old {
        groups.push(CopyGroup {
            columns: plan
                .columns
                .iter()
                .map(|c| c.lake.clone())
                .filter(|c| !added.contains(&c.as_str()))
                .collect(),
            files: vec![file.into()],
            manifest_url: "s3://lake/loads/t/b/copy-1.manifest".into(),
        });
        found.final_missing = added.iter().map(|c| c.to_string()).collect();
        if plan.stage_table() != "\"sluice_stage\"" {
            // The persistent stage as it was, before the column was added.
            found.stage_columns = Some(
                plan.columns
                    .iter()
                    .filter(|c| !added.contains(&c.lake.as_str()))
                    .map(|c| c.warehouse.clone())
                    .collect(),
            );
        }
    }
    let mut out = String::from("-- create_tables\n");
    for s in plan.create_tables(dialect) {
        out.push_str(&format!("-- {}\n{};\n", s.name, s.sql));
    }
    out.push_str("-- load\n");
    let role = "arn:aws:iam::123456789012:role/sluice-copy";
    for s in plan.steps(dialect, &groups, &found, role).expect("steps") {
        out.push_str(&format!("-- {}\n{};\n", s.name(), s.sql()));
    }
    out.push_str("-- after the commit\n");
    let p = plan.purge_tombstones(dialect);
    out.push_str(&format!("-- {}\n{};\n", p.name, p.sql));
    out
}

fn golden(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/warehouse/golden")
        .join(name);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with SLUICE_BLESS=1", path.display()));
    assert_eq!(
        text,
        want,
        "{} differs (SLUICE_BLESS=1 regenerates it)",
        path.display()
    );
}

fn plan_of(text: &str, table: &str) -> LoadPlan {
    let p = Pipeline::parse(text, "test").expect("pipeline");
    LoadPlan::new(p.table(table).expect("table")).expect("plan")
}

#[test]
fn customers_plan_is_golden() {
    let example = include_str!("../../../examples/pipeline.toml")
        .replace("secret = \"sluice/hash-key\"", "file = \"k\"");
    let plan = plan_of(&example, "customers");
    assert_eq!(plan.version, "updated_at");
    assert!(plan.op.is_none());
    assert!(!plan.needs_case_sensitivity());
    let redshift = render(&plan, Dialect::Redshift, None);
    // The LOCK opens the load: Redshift takes the snapshot at the first CREATE, ALTER or DML,
    // and a lock taken after that would queue nothing.
    let load = redshift.split("-- load\n").nth(1).expect("load section");
    assert!(
        load.starts_with("-- lock\nLOCK \"lake\".\"customers\";"),
        "{load}"
    );
    golden("customers.redshift.sql", &redshift);
    golden(
        "customers.postgres.sql",
        &render(&plan, Dialect::Postgres, None),
    );
}

#[test]
fn change_table_with_awkward_names_is_golden() {
    let plan = plan_of(ORDERS, "orders");
    assert_eq!(plan.version, "_lsn", "defaults to dedup.order_by");
    assert_eq!(plan.op.as_deref(), Some("_op"));
    assert!(plan.needs_case_sensitivity());
    let old = Some(("curated/orders/old.parquet", &["amount"][..]));
    let redshift = render(&plan, Dialect::Redshift, old);
    assert!(redshift.contains("SET enable_case_sensitive_identifier TO true"));
    assert!(
        !redshift
            .lines()
            .any(|l| l.trim_start().to_uppercase().starts_with("TRUNCATE")),
        "never TRUNCATE inside the load (it commits in Redshift)"
    );
    assert!(!redshift.contains("LOCK "), "lock = false");
    // The SET opens every session that names the tables: the load's first statement, and
    // before the CREATEs (Redshift would fold the names otherwise).
    let load = redshift.split("-- load\n").nth(1).expect("load section");
    assert!(
        load.starts_with(
            "-- case_sensitive_identifiers\nSET enable_case_sensitive_identifier TO true;"
        ),
        "{load}"
    );
    let session = plan.session(Dialect::Redshift);
    assert_eq!(session.len(), 1);
    assert!(plan.session(Dialect::Postgres).is_empty());
    assert!(redshift.contains("\"Note \"\"quoted\"\"\""));
    // Redshift maps Parquet columns by position: one COPY per column list, the older files
    // through a stage of their own shape, and the new column added to the final table first.
    assert_eq!(redshift.matches("FORMAT AS PARQUET MANIFEST").count(), 2);
    assert!(
        redshift.contains("COPY \"sluice_stage_g1\" FROM 's3://lake/loads/t/b/copy-1.manifest'")
    );
    assert!(redshift
        .contains("ALTER TABLE \"Sales Mart\".\"Order\" ADD COLUMN \"amount\" DECIMAL(12,2)"));
    // `_unchanged` is a column of the stage and the batch, not of the final table.
    let create_final = redshift
        .lines()
        .find(|l| l.starts_with("CREATE TABLE IF NOT EXISTS \"Sales Mart\".\"Order\" ("))
        .expect("create_final");
    assert!(!create_final.contains("_unchanged"), "{create_final}");
    assert!(redshift.contains("CREATE TABLE IF NOT EXISTS \"stg\".\"Order Stage\" (\"order\" BIGINT, \"Note \"\"quoted\"\"\" VARCHAR(65535), \"amount\" DECIMAL(12,2), \"_op\" VARCHAR(65535), \"_lsn\" BIGINT, \"_commit_ts\" TIMESTAMP, \"_unchanged\" VARCHAR(65535))"));
    golden("orders.redshift.sql", &redshift);
    golden(
        "orders.postgres.sql",
        &render(&plan, Dialect::Postgres, old),
    );
}

#[test]
fn a_table_without_version_or_warehouse_cannot_load() {
    let text = ORDERS.replace(", order_by = \"_lsn\"", "");
    let p = Pipeline::parse(&text, "test").expect("pipeline");
    let e = LoadPlan::new(p.table("orders").unwrap()).unwrap_err();
    assert!(matches!(e, PlanError::NoVersion { .. }), "{e}");
    let text = ORDERS.replace("warehouse = {", "# warehouse = {");
    let p = Pipeline::parse(&text, "test").expect("pipeline");
    let e = LoadPlan::new(p.table("orders").unwrap()).unwrap_err();
    assert!(matches!(e, PlanError::NoWarehouse { .. }), "{e}");
}

/// A change table with `columns` plain columns of `ty`, for the statement counts.
fn wide(columns: usize, ty: &str) -> LoadPlan {
    let cols: String = (0..columns)
        .map(|i| format!("  {{ name = \"c{i}\", type = \"{ty}\" }},\n"))
        .collect();
    let text = ORDERS.replace(
        "  { name = \"_op\", type = \"string\" },",
        &format!("{cols}  {{ name = \"_op\", type = \"string\" }},"),
    );
    plan_of(&text, "orders")
}

#[test]
fn unchanged_markers_cost_statements_per_table_not_per_column() {
    let count = |plan: &LoadPlan| plan.after_copy(Dialect::Redshift).len();
    let narrow = plan_of(ORDERS, "orders");
    let wide_text = wide(300, "string");
    assert_eq!(count(&narrow), count(&wide_text));
    // One join per resolvable column, in one statement.
    let resolve = |plan: &LoadPlan| {
        plan.after_copy(Dialect::Redshift)
            .into_iter()
            .find(|s| s.name() == "resolve_unchanged")
            .expect("resolve_unchanged")
            .sql()
            .to_string()
    };
    let sql = resolve(&wide_text);
    assert_eq!(
        sql.matches("LEFT JOIN \"sluice_batch\" x").count(),
        302,
        "c0…c299, note, amount"
    );
    // Columns that cannot be TOASTed are never joined: a marker on one is never resolved.
    let ints = resolve(&wide(300, "int"));
    assert_eq!(ints.matches("LEFT JOIN \"sluice_batch\" x").count(), 2);
    assert!(
        ints.contains("',c299'"),
        "a marker on c299 is reported missing"
    );
    // Without `_unchanged`, no resolution and no query.
    let plain = plan_of(
        &ORDERS.replace("  { name = \"_unchanged\", type = \"string\" },\n", ""),
        "orders",
    );
    assert!(plain.unchanged.is_none());
    assert_eq!(count(&narrow) - count(&plain), 5);
    assert!(!plain
        .after_copy(Dialect::Postgres)
        .iter()
        .any(|s| matches!(s, Step::Query(_))));
}

#[test]
fn the_final_table_keeps_the_version_but_not_the_markers() {
    let plan = plan_of(ORDERS, "orders");
    assert_eq!(plan.unchanged.as_deref(), Some("_unchanged"));
    let finals: Vec<&str> = plan.final_columns().map(|c| c.lake.as_str()).collect();
    assert_eq!(
        finals,
        ["order", "note", "amount", "_op", "_lsn", "_commit_ts"]
    );
    assert_eq!(plan.columns.len(), 7, "the stage has `_unchanged`");
    let steps = plan.after_copy(Dialect::Postgres);
    let insert = steps
        .iter()
        .find(|s| s.name() == step_names::INSERT)
        .expect("insert");
    assert!(
        !insert.sql().contains("\"_unchanged\","),
        "{}",
        insert.sql()
    );
    assert!(
        insert.sql().ends_with("AND \"_unchanged\" IS NULL"),
        "{}",
        insert.sql()
    );
}

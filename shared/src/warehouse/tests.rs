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

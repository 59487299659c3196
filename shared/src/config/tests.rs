use super::*;

mod cdc;
mod source;

fn example() -> &'static str {
    include_str!("../../../examples/pipeline.toml")
}

#[test]
fn example_pipeline_parses_and_validates() {
    let p = Pipeline::parse(example(), "examples/pipeline.toml").expect("example parses");
    assert_eq!(p.tables.len(), 2);
    let f = p.table("funnel").expect("funnel");
    assert_eq!(f.raw_prefix, "raw/funnel/");
    assert_eq!(f.columns.len(), 9);
    assert_eq!(f.columns[0].ty, ColumnType::Timestamp);
    assert_eq!(f.dedup.as_ref().map(|d| d.key.len()), Some(4));
    let c = p.table("customers").expect("customers");
    assert_eq!(
        c.columns[6].ty,
        ColumnType::Decimal {
            precision: 12,
            scale: 2
        }
    );
    assert!(p.needs_hash_key());
}

#[test]
fn longest_prefix_picks_the_table() {
    let text = example().replace(
        "raw_prefix = \"raw/customers/\"",
        "raw_prefix = \"raw/funnel/vip/\"",
    );
    let p = Pipeline::parse(&text, "t").expect("parses");
    assert_eq!(
        p.table_for_key("raw/funnel/vip/a.jsonl")
            .map(|t| t.name.as_str()),
        Some("customers")
    );
    assert_eq!(
        p.table_for_key("raw/funnel/a.csv").map(|t| t.name.as_str()),
        Some("funnel")
    );
    assert!(p.table_for_key("raw/other/a.csv").is_none());
}

#[test]
fn unknown_key_names_path_and_line() {
    let text = example().replace(
        "required = true\n\n[[tables.columns]]\nname = \"event_type\"",
        "requird = true\n\n[[tables.columns]]\nname = \"event_type\"",
    );
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("typo rejected")
        .to_string();
    assert!(err.contains("p.toml"), "{err}");
    assert!(err.contains("requird"), "{err}");
    assert!(err.contains("tables[0].columns[0]"), "{err}");
    let line = text
        .lines()
        .position(|l| l.contains("requird"))
        .map(|n| n + 1)
        .unwrap_or(0);
    assert!(
        err.contains(&format!("line {line}")),
        "{err} (want line {line})"
    );
}

#[test]
fn bad_type_is_reported_with_path() {
    let text = example().replace("type = \"decimal(12,2)\"", "type = \"decimal(40,2)\"");
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("bad decimal")
        .to_string();
    assert!(err.contains("tables[1].columns[6].type"), "{err}");
    assert!(err.contains("precision"), "{err}");
}

#[test]
fn validation_names_the_field() {
    let cases = [
        (
            "partition_by = \"event_time\"",
            "partition_by = \"nope\"",
            "tables[0].partition_by",
        ),
        (
            "order_by = \"updated_at\"",
            "order_by = \"loyalty_tier\"",
            "tables[1].dedup.order_by",
        ),
        (
            "as_of = \"signup_date\"",
            "as_of = \"missing\"",
            "tables[1].columns[3].pii",
        ),
        (
            "raw_prefix = \"raw/funnel/\"",
            "raw_prefix = \"funnel/\"",
            "tables[0].raw_prefix",
        ),
        ("secret = \"sluice/hash-key\"", "", "hash_key"),
    ];
    for (from, to, path) in cases {
        let text = example().replacen(from, to, 1);
        let err = Pipeline::parse(&text, "p.toml")
            .expect_err(path)
            .to_string();
        assert!(err.contains(path), "{path}: {err}");
    }
}

#[test]
fn snake_case_folds_names() {
    assert_eq!(snake_case("UserID"), "user_id");
    assert_eq!(snake_case("eventTime"), "event_time");
    assert_eq!(snake_case("event-time"), "event_time");
    assert_eq!(snake_case("Geo.Lat"), "geo_lat");
    assert_eq!(snake_case("HTTPStatus"), "http_status");
    assert_eq!(snake_case("1st"), "c_1st");
    assert_eq!(snake_case("already_snake"), "already_snake");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Arbitrary text never panics the parser: it is accepted or rejected with an error.
    #[test]
    fn parser_never_panics(s in "\\PC{0,400}") {
        let _ = Pipeline::parse(&s, "fuzz");
    }

    /// Mutations of the real example never panic either (deeper paths than random text).
    #[test]
    fn mutated_example_never_panics(pos in 0usize..4000, junk in "[\\[\\]{}=\"a-z0-9.,\n ]{0,12}") {
        let text = example();
        let at = text.char_indices().map(|(i, _)| i).nth(pos % text.chars().count()).unwrap_or(0);
        let mut s = text.to_string();
        s.insert_str(at, &junk);
        let _ = Pipeline::parse(&s, "fuzz");
    }
}

#[test]
fn section_rules_name_their_key_paths() {
    let cases = [
        (
            "partition_by = \"signup_date\"",
            "partition_by = \"signup_date\"\noutput = { batch_rows = 0 }",
            "tables[1].output.batch_rows",
        ),
        (
            "catalog = { database = \"sluice_lake\" }\nwarehouse",
            "catalog = { database = \"Sluice\" }\nwarehouse",
            "tables[1].catalog.database",
        ),
        (
            "key = [\"customer_id\"]",
            "key = [\"address\"]",
            "tables[1].dedup.key[0]",
        ),
        (
            "merge_keys = [\"customer_id\"]",
            "merge_keys = []",
            "tables[1].warehouse.merge_keys",
        ),
        (
            "{ path = \"geo.lat\", type = \"float\" }",
            "{ path = \"geo..lat\", type = \"float\" }",
            "tables[1].columns[7].fields[3].path",
        ),
        (
            "name = \"funnel\"",
            "name = \"funnel\"\ncsv = { delimiter = \";\", quote = \";\" }",
            "tables[0].csv.quote",
        ),
        (
            "name = \"customers\"",
            "name = \"funnel\"",
            "tables[1].name",
        ),
    ];
    for (from, to, path) in cases {
        let text = example().replacen(from, to, 1);
        assert_ne!(text, example(), "{from}");
        let err = Pipeline::parse(&text, "p.toml")
            .expect_err(path)
            .to_string();
        assert!(err.contains(&format!("at `{path}`")), "{path}: {err}");
    }
}

#[test]
fn two_output_columns_with_one_name_are_refused() {
    // `signup_date` renamed onto `loyalty_tier`'s output name.
    let text = example().replace(
        "name = \"signup_date\"\ntype = \"timestamp\"",
        "name = \"signup_date\"\ntype = \"timestamp\"\nrename = \"loyalty_tier\"",
    );
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("clash")
        .to_string();
    assert!(err.contains("tables[1].columns"), "{err}");
    assert!(
        err.contains("two output columns are both named `loyalty_tier`"),
        "{err}"
    );
    // A column whose snake_case form meets a flattened JSON field's name.
    let text = example().replace("name = \"loyalty_tier\"", "name = \"AddressCity\"");
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("clash")
        .to_string();
    assert!(err.contains("`address_city`"), "{err}");
}

#[test]
fn an_output_column_named_like_a_partition_key_is_refused() {
    let text = example().replace("name = \"brand\"", "name = \"brand\"\nrename = \"year\"");
    let err = Pipeline::parse(&text, "p.toml")
        .expect_err("year")
        .to_string();
    assert!(err.contains("tables[0].columns"), "{err}");
    assert!(err.contains("`year` clashes with a partition key"), "{err}");
    // A PII rule's output name counts too: `month` hashed is `month_hash`, which is fine.
    let text = example().replace("name = \"user_id\"", "name = \"month\"");
    Pipeline::parse(&text, "p.toml").expect("month_hash is no partition key");
}

/// A table of changes carrying every built-in column.
const CHANGES: &str = r#"
[[tables]]
name = "changes"
raw_prefix = "raw/changes/"
format = "jsonl"
partition_by = "_commit_ts"
dedup = { key = ["id", "_shard"], order_by = "_lsn" }
catalog = { database = "db" }
warehouse = { schema = "lake", merge_keys = ["id", "_shard"], version_column = "_lsn" }
columns = [
  { name = "id", type = "int", required = true },
  { name = "_op", type = "string" },
  { name = "_lsn", type = "int" },
  { name = "_commit_ts", type = "timestamp" },
  { name = "_shard", type = "string" },
  { name = "_unchanged", type = "string" },
]
"#;

fn changes_err(from: &str, to: &str) -> String {
    let text = CHANGES.replacen(from, to, 1);
    assert_ne!(text, CHANGES, "{from}");
    Pipeline::parse(&text, "c.toml").expect_err(to).to_string()
}

#[test]
fn built_in_columns_keep_their_names_and_may_partition_dedup_and_merge() {
    let p = Pipeline::parse(CHANGES, "c.toml").expect("built-ins are accepted");
    let t = p.table("changes").expect("changes");
    let names: Vec<String> = t.columns.iter().map(ColumnConfig::output_name).collect();
    assert_eq!(
        names,
        ["id", "_op", "_lsn", "_commit_ts", "_shard", "_unchanged"]
    );
    let builtins: Vec<(&str, ColumnType)> =
        BUILTIN_COLUMNS.iter().map(|b| (b.name, b.ty)).collect();
    assert_eq!(
        builtins,
        [
            ("_op", ColumnType::String),
            ("_lsn", ColumnType::Int),
            ("_commit_ts", ColumnType::Timestamp),
            ("_shard", ColumnType::String),
            ("_unchanged", ColumnType::String),
        ]
    );
    assert!(is_builtin_column("_lsn") && !is_builtin_column("lsn"));
}

#[test]
fn only_built_in_columns_may_start_with_an_underscore() {
    let err = changes_err(
        "{ name = \"_unchanged\", type = \"string\" },",
        "{ name = \"_unchanged\", type = \"string\" },\n  { name = \"_id\", type = \"int\" },",
    );
    assert!(err.contains("at `tables[0].columns[6].name`"), "{err}");
    assert!(err.contains("`_id`"), "{err}");
    assert!(
        err.contains("_op (string), _lsn (int), _commit_ts (timestamp), _shard (string), _unchanged (string)"),
        "the allowed built-ins are listed: {err}"
    );
}

#[test]
fn a_built_in_column_has_its_fixed_type() {
    let err = changes_err(
        "{ name = \"_lsn\", type = \"int\" }",
        "{ name = \"_lsn\", type = \"string\" }",
    );
    assert!(err.contains("at `tables[0].columns[2].type`"), "{err}");
    assert!(
        err.contains("built-in column `_lsn` is int, not string"),
        "{err}"
    );
}

#[test]
fn a_built_in_column_cannot_be_renamed() {
    let err = changes_err(
        "{ name = \"_op\", type = \"string\" }",
        "{ name = \"_op\", type = \"string\", rename = \"op\" }",
    );
    assert!(err.contains("at `tables[0].columns[1].rename`"), "{err}");
    assert!(err.contains("`_op` keeps its name"), "{err}");
}

#[test]
fn a_built_in_column_cannot_carry_pii_rules() {
    let err = changes_err(
        "{ name = \"_shard\", type = \"string\" }",
        "{ name = \"_shard\", type = \"string\", pii = { action = \"drop\" } }",
    );
    assert!(err.contains("at `tables[0].columns[4].pii`"), "{err}");
    assert!(err.contains("`_shard` cannot carry a PII rule"), "{err}");
}

#[test]
fn an_input_field_starting_with_an_underscore_is_read_under_a_rename() {
    let text = CHANGES.replacen(
        "{ name = \"_unchanged\", type = \"string\" },",
        "{ name = \"_unchanged\", type = \"string\" },\n  { name = \"_id\", type = \"string\", rename = \"mongo_id\" },",
        1,
    );
    let p = Pipeline::parse(&text, "c.toml").expect("a renamed `_id` is an ordinary column");
    let t = p.table("changes").expect("changes");
    let c = t.columns.iter().find(|c| c.name == "_id").expect("_id");
    assert_eq!(c.output_name(), "mongo_id");
    let err = changes_err(
        "{ name = \"_unchanged\", type = \"string\" },",
        "{ name = \"_unchanged\", type = \"string\" },\n  { name = \"_id\", type = \"string\", rename = \"_mongo_id\" },",
    );
    assert!(
        err.contains("rename"),
        "a rename keeps the lake name ordinary: {err}"
    );
}

fn with_warehouse(w: &str) -> Result<Pipeline, String> {
    let text = example().replace(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\" }",
        w,
    );
    assert_ne!(text, example());
    Pipeline::parse(&text, "p.toml").map_err(|e| e.to_string())
}

#[test]
fn warehouse_names_are_output_columns_and_the_version_defaults_to_order_by() {
    let p = with_warehouse(
        "warehouse = { schema = \"Sales Mart\", table = \"Order\", merge_keys = [\"customer_id\"], staging = \"stg.customers\", lock = false, columns = { loyalty_tier = \"Loyalty Tier\" } }",
    )
    .expect("valid");
    let t = p.table("customers").expect("customers");
    let w = t.warehouse.as_ref().expect("warehouse");
    assert_eq!(w.version_column_for(t).as_deref(), Some("updated_at"));
    assert_eq!(w.staging, Staging::Table("stg.customers".into()));
    assert!(!w.lock);
    assert_eq!(w.warehouse_name("loyalty_tier"), "Loyalty Tier");
    assert_eq!(w.warehouse_name("email_hash"), "email_hash");

    let e =
        with_warehouse("warehouse = { schema = \"lake\", merge_keys = [\"email\"] }").unwrap_err();
    assert!(e.contains("warehouse.merge_keys[0]"), "{e}");
    assert!(
        e.contains("`email` is not an output column"),
        "the PII hash renamed it: {e}"
    );
    let e = with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"nope\" }",
    )
    .unwrap_err();
    assert!(e.contains("warehouse.version_column"), "{e}");
    let e = with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\", \"updated_at\"] }",
    )
    .unwrap_err();
    assert!(e.contains("warehouse.version_column"), "{e}");
    assert!(e.contains("`updated_at` is a merge key"), "{e}");
    let e = with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], staging = \"nodot\" }",
    )
    .unwrap_err();
    assert!(e.contains("expected `temp` or `schema.table`"), "{e}");
    let e = with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], columns = { loyalty_tier = \"a\\u0000b\" } }",
    )
    .unwrap_err();
    assert!(e.contains("control character"), "{e}");
}

#[test]
fn redshift_section_names_one_target_and_one_way_in() {
    let with = |r: &str| Pipeline::parse(&format!("[redshift]\n{r}\n{}", example()), "p.toml");
    let role = "copy_iam_role = \"arn:aws:iam::123456789012:role/copy\"";
    let ok = with(&format!("workgroup = \"wg\"\ndatabase = \"dev\"\n{role}"))
        .expect("serverless, IAM user");
    assert_eq!(
        ok.redshift.as_ref().and_then(|r| r.workgroup.as_deref()),
        Some("wg")
    );
    with(&format!(
        "cluster = \"c\"\ndatabase = \"dev\"\ndb_user = \"loader\"\n{role}"
    ))
    .expect("cluster, db_user");
    for (bad, says) in [
        (
            format!("database = \"dev\"\n{role}"),
            "exactly one of `workgroup`",
        ),
        (
            format!("workgroup = \"wg\"\ncluster = \"c\"\ndatabase = \"dev\"\n{role}"),
            "exactly one of `workgroup`",
        ),
        (
            format!("cluster = \"c\"\ndatabase = \"dev\"\n{role}"),
            "exactly one of `secret` or `db_user`",
        ),
        (
            format!("workgroup = \"wg\"\ndatabase = \"dev\"\ndb_user = \"u\"\n{role}"),
            "Serverless takes the user",
        ),
        (
            "workgroup = \"wg\"\ndatabase = \"dev\"\ncopy_iam_role = \"copy\"".to_string(),
            "not an IAM role ARN",
        ),
    ] {
        let e = with(&bad).expect_err(&bad).to_string();
        assert!(e.contains("redshift."), "{e}");
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_persistent_stage_is_neither_the_final_table_nor_its_side_table() {
    for (staging, table, says) in [
        ("lake.customers", "", "the final table"),
        ("LAKE.Customers", "", "the final table"),
        ("mart.orders", ", table = \"orders\"", "the final table"),
        ("lake.customers__sluice_deleted", "", "the side table"),
    ] {
        let e = with_warehouse(&format!(
            "warehouse = {{ schema = \"{}\", merge_keys = [\"customer_id\"], staging = \"{staging}\"{table} }}",
            staging.split_once('.').map(|(s, _)| s.to_lowercase()).unwrap_or_default(),
        ))
        .expect_err(staging);
        assert!(e.contains("tables[1].warehouse.staging"), "{e}");
        assert!(e.contains(says), "{staging}: {e}");
        assert!(e.contains("DELETE FROM"), "{e}");
    }
    with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], staging = \"lake.customers_stage\" }",
    )
    .expect("a stage of its own");
}

/// The example with a warehouse section on the funnel too (`funnel`) and on the customers
/// (`customers`).
fn with_two_warehouses(funnel: &str, customers: &str) -> Result<Pipeline, String> {
    let text = example().replacen(
        "catalog = { database = \"sluice_lake\" }\n# No warehouse section",
        &format!("catalog = {{ database = \"sluice_lake\" }}\n{funnel}\n# No warehouse section"),
        1,
    );
    let text = text.replace(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\" }",
        customers,
    );
    Pipeline::parse(&text, "p.toml").map_err(|e| e.to_string())
}

#[test]
fn two_tables_never_write_one_warehouse_table() {
    let funnel = |rest: &str| {
        format!("warehouse = {{ schema = \"lake\", merge_keys = [\"user_session\"], version_column = \"event_time\"{rest} }}")
    };
    let customers = |rest: &str| {
        format!("warehouse = {{ schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\"{rest} }}")
    };
    with_two_warehouses(
        &funnel(", staging = \"stg.funnel\""),
        &customers(", staging = \"stg.customers\""),
    )
    .expect("each table its own");
    for (f, c, at, says) in [
        (
            funnel(", table = \"Customers\""),
            customers(""),
            "tables[1].warehouse.table",
            "`lake.customers`, the final table of table `customers`, is also the final table of table `funnel`",
        ),
        (
            funnel(", staging = \"stg.shared\""),
            customers(", staging = \"stg.shared\""),
            "tables[1].warehouse.staging",
            "the persistent staging table of table `customers`, is also the persistent staging table of table `funnel`",
        ),
        (
            funnel(", staging = \"lake.customers\""),
            customers(""),
            "tables[1].warehouse.table",
            "is also the persistent staging table of table `funnel`",
        ),
        (
            funnel(", table = \"customers__sluice_deleted\""),
            customers(""),
            "tables[1].warehouse.table",
            "`lake.customers__sluice_deleted`, the side table",
        ),
    ] {
        let e = with_two_warehouses(&f, &c).expect_err(at);
        assert!(e.contains(at), "{e}");
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn warehouse_column_names_are_distinct_and_not_the_loaders() {
    let w = |columns: &str| {
        with_warehouse(&format!(
            "warehouse = {{ schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\", columns = {{ {columns} }} }}"
        ))
    };
    w("loyalty_tier = \"Tier\", signup_date = \"Signed Up\"").expect("distinct names");
    let e = w("loyalty_tier = \"Signup_Date\"").unwrap_err();
    assert!(
        e.contains("tables[1].warehouse.columns.loyalty_tier"),
        "{e}"
    );
    assert!(
        e.contains("`signup_date` (warehouse name `signup_date`) and `loyalty_tier` (`Signup_Date`) would be one warehouse column"),
        "{e}"
    );
    let e = w("loyalty_tier = \"tier\", signup_date = \"TIER\"").unwrap_err();
    assert!(
        e.contains("tables[1].warehouse.columns.loyalty_tier"),
        "{e}"
    );
    assert!(
        e.contains("`signup_date` (warehouse name `TIER`) and `loyalty_tier` (`tier`) would be one warehouse column"),
        "{e}"
    );
    for loader in ["sluice_rn", "SLUICE_AT", "sluice_truncate"] {
        let e = w(&format!("loyalty_tier = \"{loader}\"")).unwrap_err();
        assert!(
            e.contains("tables[1].warehouse.columns.loyalty_tier"),
            "{e}"
        );
        assert!(e.contains("the loader uses for its own columns"), "{e}");
    }
}

#[test]
fn truncate_stage_needs_a_persistent_stage() {
    let e = with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\", truncate_stage = true }",
    )
    .unwrap_err();
    assert!(e.contains("tables[1].warehouse.truncate_stage"), "{e}");
    assert!(e.contains("needs a persistent `staging` table"), "{e}");
    with_warehouse(
        "warehouse = { schema = \"lake\", merge_keys = [\"customer_id\"], version_column = \"updated_at\", staging = \"stg.customers\", truncate_stage = true }",
    )
    .expect("a persistent stage may be truncated");
}

#[test]
fn glue_section_routes_objects_above_the_threshold() {
    let with = |g: &str| Pipeline::parse(&format!("[glue]\n{g}\n{}", example()), "p.toml");
    let p = with("job_name = \"sluice-transform\"\nthreshold_bytes = 1000").expect("valid");
    let g = p.glue.as_ref().expect("[glue] parsed");
    assert_eq!(g.job_name, "sluice-transform");
    assert_eq!(g.start_retry_secs, 60, "default");
    assert!(!g.routes(1000), "at the threshold: the Lambda");
    assert!(g.routes(1001));
    let at_max = with("job_name = \"j\"\nthreshold_bytes = 4294967296").expect("4 GiB is allowed");
    assert_eq!(
        at_max.glue.as_ref().map(|g| g.threshold_bytes),
        Some(crate::config::glue::MAX_THRESHOLD_BYTES)
    );
    assert!(Pipeline::parse(example(), "p.toml")
        .expect("example")
        .glue
        .is_none());
    for (bad, path, says) in [
        (
            "job_name = \"\"\nthreshold_bytes = 1",
            "glue.job_name",
            "must not be empty",
        ),
        (
            "job_name = \" job\"\nthreshold_bytes = 1",
            "glue.job_name",
            "leading or trailing spaces",
        ),
        (
            "job_name = \"a\\nb\"\nthreshold_bytes = 1",
            "glue.job_name",
            "control character",
        ),
        (
            &format!("job_name = \"{}\"\nthreshold_bytes = 1", "j".repeat(256)),
            "glue.job_name",
            "255 characters",
        ),
        (
            "job_name = \"j\"\nthreshold_bytes = 0",
            "glue.threshold_bytes",
            "at least 1",
        ),
        (
            "job_name = \"j\"\nthreshold_bytes = 4294967297",
            "glue.threshold_bytes",
            "at most 4294967296",
        ),
        (
            "job_name = \"j\"\nthreshold_bytes = 1\nstart_retry_secs = 0",
            "glue.start_retry_secs",
            "between 1 and 600",
        ),
        (
            "job_name = \"j\"\nthreshold_bytes = 1\nstart_retry_secs = 601",
            "glue.start_retry_secs",
            "between 1 and 600",
        ),
    ] {
        let e = with(bad).expect_err(bad).to_string();
        assert!(e.contains(&format!("at `{path}`")), "{bad}: {e}");
        assert!(e.contains(says), "{bad}: {e}");
    }
    // Parse errors: a missing key, a negative threshold, an unknown key.
    for (bad, says) in [
        ("job_name = \"j\"", "threshold_bytes"),
        (
            "job_name = \"j\"\nthreshold_bytes = -1",
            "glue.threshold_bytes",
        ),
        (
            "job_name = \"j\"\nthreshold_bytes = 1\nthreshold = 2",
            "threshold",
        ),
    ] {
        let e = with(bad).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

//! The `[cdc]` section and cdc tables: the example, the defaults a cdc table gets, and every
//! rule naming its field.

use crate::config::*;

const EXAMPLE: &str = include_str!("../../../../examples/cdc.toml");

/// A minimal cdc pipeline; tests edit it one key at a time.
const MINIMAL: &str = r#"
[cdc]
source_url_env = "SOURCE_URL"
slot = "s1"
publication = "p1"
stream = "changes"

[[tables]]
name = "orders"
raw_prefix = "raw/cdc/orders/"
format = "cdc"
cdc = { schema = "public", table = "orders" }
dedup = { key = ["id"] }
catalog = { database = "db" }
columns = [
  { name = "id", type = "int", required = true },
  { name = "note", type = "string" },
]
"#;

/// The error of `MINIMAL` with `from` replaced by `to`.
fn err(from: &str, to: &str) -> String {
    let text = MINIMAL.replacen(from, to, 1);
    assert_ne!(text, MINIMAL, "{from}");
    Pipeline::parse(&text, "c.toml").expect_err(to).to_string()
}

fn assert_at(e: &str, path: &str, says: &str) {
    assert!(e.contains(&format!("at `{path}`")), "{path}: {e}");
    assert!(e.contains(says), "{says}: {e}");
}

#[test]
fn cdc_example_parses_with_the_built_ins_and_defaults() {
    let p = Pipeline::parse(EXAMPLE, "examples/cdc.toml").expect("example parses");
    let c = p.cdc.as_ref().expect("[cdc]");
    assert_eq!(
        c.source(),
        Some(CdcSource::Secret("sluice/shop-replication"))
    );
    assert_eq!(
        (c.slot.as_str(), c.publication.as_str()),
        ("sluice_shop", "sluice_shop")
    );
    assert_eq!(c.stream, "sluice-shop-changes");
    assert_eq!(
        (c.heartbeat_interval_secs, c.max_changes_per_peek),
        (300, 20_000)
    );
    assert!(c.replica_identity_full);
    let t = p
        .cdc_table("public", "orders")
        .expect("by its source relation");
    assert_eq!(t.name, "orders");
    assert!(
        p.cdc_table("public", "Orders").is_none(),
        "names compare exactly"
    );
    assert!(p.cdc_table("shop", "orders").is_none());
    assert_eq!(p.cdc_tables().count(), 1);
    assert_eq!(t.format, InputFormat::Cdc);
    assert!(!t.format.glue_supported());
    let outputs: Vec<String> = crate::schema::output_columns(t)
        .expect("schema")
        .into_iter()
        .map(|c| format!("{}:{}:{}", c.name, c.glue_type, c.nullable))
        .collect();
    assert_eq!(
        outputs,
        [
            "id:bigint:true",
            "customer_email_hash:string:true",
            "amount:decimal(12,2):true",
            "status:string:true",
            "placed_at:timestamp:true",
            "delivery_city:string:true",
            "delivery_express:boolean:true",
            "tags:string:true",
            "notes:string:true",
            "_op:string:false",
            "_lsn:bigint:false",
            "_commit_ts:timestamp:false",
            "_unchanged:string:true",
        ],
        "source columns nullable (deletes, truncates), built-ins appended"
    );
    assert_eq!(t.partition_by, "_commit_ts");
    assert_eq!(
        t.dedup.as_ref().and_then(|d| d.order_by.as_deref()),
        Some("_lsn")
    );
    let w = t.warehouse.as_ref().expect("warehouse");
    assert_eq!(w.version_column_for(t).as_deref(), Some("_lsn"));
    assert!(t.null_tokens().is_empty() && !t.trim(), "values are exact");
    let sources: Vec<&str> = t.source_columns().map(|c| c.name.as_str()).collect();
    assert_eq!(sources.len(), 8);
    assert!(!sources.contains(&"_lsn"));
}

#[test]
fn the_minimal_table_and_declared_built_ins_keep_their_place() {
    let p = Pipeline::parse(MINIMAL, "c.toml").expect("minimal");
    let c = p.cdc.as_ref().expect("[cdc]");
    assert_eq!(c.source(), Some(CdcSource::UrlEnv("SOURCE_URL")));
    let names = |p: &Pipeline| -> Vec<String> {
        p.tables[0].columns.iter().map(|c| c.name.clone()).collect()
    };
    assert_eq!(
        names(&p),
        ["id", "note", "_op", "_lsn", "_commit_ts", "_unchanged"]
    );
    // Declared built-ins stay where they are declared; the rest are appended.
    let text = MINIMAL.replace(
        "{ name = \"id\", type = \"int\", required = true },",
        "{ name = \"_lsn\", type = \"int\" },\n  { name = \"id\", type = \"int\", required = true },",
    );
    let p = Pipeline::parse(&text, "c.toml").expect("declared _lsn");
    assert_eq!(
        names(&p),
        ["_lsn", "id", "note", "_op", "_commit_ts", "_unchanged"]
    );
    // A csv or jsonl table keeps its own defaults.
    let p = Pipeline::parse(include_str!("../../../../examples/pipeline.toml"), "p").expect("p");
    let f = p.table("funnel").expect("funnel");
    assert_eq!(f.null_tokens(), [String::new()]);
    assert!(f.trim() && f.format.glue_supported());
}

#[test]
fn the_cdc_section_rules_name_their_field() {
    let cases = [
        (
            "source_url_env = \"SOURCE_URL\"",
            "source_url_env = \"SOURCE_URL\"\nsource_secret = \"s\"",
            "cdc.source_secret",
            "exactly one of",
        ),
        (
            "source_url_env = \"SOURCE_URL\"",
            "",
            "cdc.source_secret",
            "exactly one of",
        ),
        (
            "source_url_env = \"SOURCE_URL\"",
            "source_url_env = \"postgres://u@h/db\"",
            "cdc.source_url_env",
            "not an environment variable name",
        ),
        (
            "source_url_env = \"SOURCE_URL\"",
            "source_secret = \" x\"",
            "cdc.source_secret",
            "not a Secrets Manager",
        ),
        ("slot = \"s1\"", "slot = \"Slot\"", "cdc.slot", "lower-case"),
        ("slot = \"s1\"", "slot = \"s-1\"", "cdc.slot", "lower-case"),
        (
            "slot = \"s1\"",
            &format!("slot = \"{}\"", "s".repeat(64)),
            "cdc.slot",
            "1 to 63 bytes",
        ),
        (
            "publication = \"p1\"",
            "publication = \"\"",
            "cdc.publication",
            "1 to 63 bytes",
        ),
        (
            "publication = \"p1\"",
            "publication = \"pub; drop\"",
            "cdc.publication",
            "lower-case",
        ),
        (
            "stream = \"changes\"",
            "stream = \"a b\"",
            "cdc.stream",
            "not a Kinesis stream name",
        ),
        (
            "stream = \"changes\"",
            "stream = \"arn:aws:s3:::bucket\"",
            "cdc.stream",
            "not a Kinesis stream ARN",
        ),
        (
            "stream = \"changes\"",
            "stream = \"changes\"\nheartbeat_interval_secs = 0",
            "cdc.heartbeat_interval_secs",
            "between 1 and 86400",
        ),
        (
            "stream = \"changes\"",
            "stream = \"changes\"\nmax_changes_per_peek = 0",
            "cdc.max_changes_per_peek",
            "int4",
        ),
    ];
    for (from, to, path, says) in cases {
        assert_at(&err(from, to), path, says);
    }
    let arn = MINIMAL.replace(
        "stream = \"changes\"",
        "stream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/changes\"",
    );
    Pipeline::parse(&arn, "c.toml").expect("a stream ARN");
    // Unknown keys are refused, with their path.
    let e = err("slot = \"s1\"", "slot = \"s1\"\nslott = 1");
    assert!(e.contains("slott") && e.contains("cdc"), "{e}");
}

#[test]
fn cdc_and_its_tables_come_together() {
    let e = err("[cdc]\nsource_url_env = \"SOURCE_URL\"\nslot = \"s1\"\npublication = \"p1\"\nstream = \"changes\"\n", "");
    assert_at(&e, "tables[0].format", "needs the top-level [cdc] section");
    let jsonl = MINIMAL
        .replace(
            "raw_prefix = \"raw/cdc/orders/\"",
            "raw_prefix = \"raw/orders/\"",
        )
        .replace("format = \"cdc\"", "format = \"jsonl\"")
        .replace(
            "cdc = { schema = \"public\", table = \"orders\" }\n",
            "partition_by = \"at\"\n",
        )
        .replace(
            "{ name = \"note\", type = \"string\" },",
            "{ name = \"at\", type = \"timestamp\" },",
        );
    let e = Pipeline::parse(&jsonl, "c.toml")
        .expect_err("[cdc] alone")
        .to_string();
    assert_at(&e, "cdc", "no table has format = \"cdc\"");
    // Two tables from one relation.
    let second = format!(
        "{MINIMAL}\n[[tables]]\nname = \"orders2\"\nraw_prefix = \"raw/cdc/orders2/\"\nformat = \"cdc\"\ncdc = {{ schema = \"public\", table = \"orders\" }}\ndedup = {{ key = [\"id\"] }}\ncatalog = {{ database = \"db\" }}\ncolumns = [{{ name = \"id\", type = \"int\" }}]\n"
    );
    let e = Pipeline::parse(&second, "c.toml")
        .expect_err("one relation, two tables")
        .to_string();
    assert_at(&e, "tables[1].cdc", "already the source of table `orders`");
}

#[test]
fn cdc_table_rules_name_their_field() {
    let rel = "cdc = { schema = \"public\", table = \"orders\" }\n";
    let cases: [(&str, &str, &str, &str); 14] = [
        (rel, "", "tables[0].cdc", "needs its source relation"),
        (rel, "cdc = { schema = \"\", table = \"orders\" }\n", "tables[0].cdc.schema", "1 to 63 bytes"),
        (rel, "cdc = { schema = \"public\", table = \"a\\nb\" }\n", "tables[0].cdc.table", "control character"),
        ("raw_prefix = \"raw/cdc/orders/\"", "raw_prefix = \"raw/orders/\"", "tables[0].raw_prefix", "must be `raw/cdc/orders/`"),
        ("dedup = { key = [\"id\"] }", "", "tables[0].dedup", "primary key"),
        ("dedup = { key = [\"id\"] }", "dedup = { key = [\"id\"], order_by = \"_commit_ts\" }", "tables[0].dedup.order_by", "by `_lsn`"),
        ("dedup = { key = [\"id\"] }", "dedup = { key = [\"nope\"] }", "tables[0].dedup.key[0]", "not a column"),
        ("catalog =", "partition_by = \"_lsn\"\ncatalog =", "tables[0].partition_by", "partitions by `_commit_ts`"),
        ("catalog =", "null_tokens = [\"NULL\"]\ncatalog =", "tables[0].null_tokens", "exact values"),
        ("catalog =", "trim = true\ncatalog =", "tables[0].trim", "never trimmed"),
        ("{ name = \"note\", type = \"string\" }", "{ name = \"note\", type = \"string\", null_tokens = [\"\"] }", "tables[0].columns[1].null_tokens", "exact values"),
        ("{ name = \"note\", type = \"string\" }", "{ name = \"_shard\", type = \"string\" }", "tables[0].columns[1].name", "no value in a change event"),
        ("{ name = \"note\", type = \"string\" }", "{ name = \"_lsn\", type = \"string\" }", "tables[0].columns[1].type", "`_lsn` is int"),
        ("catalog =", "warehouse = { schema = \"w\", merge_keys = [\"id\"], version_column = \"_commit_ts\" }\ncatalog =", "tables[0].warehouse.version_column", "is `_lsn`"),
    ];
    for (from, to, path, says) in cases {
        assert_at(&err(from, to), path, says);
    }
    // `format` is cdc, csv or jsonl.
    let e = err("format = \"cdc\"", "format = \"wal\"");
    assert!(e.contains("tables[0].format") && e.contains("cdc"), "{e}");
}

#[test]
fn other_tables_stay_out_of_cdc() {
    let base = include_str!("../../../../examples/pipeline.toml");
    let with = |from: &str, to: &str| {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base);
        Pipeline::parse(&text, "p.toml").expect_err(to).to_string()
    };
    let e = with(
        "raw_prefix = \"raw/funnel/\"",
        "raw_prefix = \"raw/funnel/\"\ncdc = { schema = \"public\", table = \"funnel\" }",
    );
    assert_at(&e, "tables[0].cdc", "only tables with format = \"cdc\"");
    let e = with("partition_by = \"event_time\"\n", "");
    assert_at(&e, "tables[0].partition_by", "is required");
}

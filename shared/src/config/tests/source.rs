//! `[tables.source]`: the example, the defaults, and every rule naming its field.

use crate::config::*;

const EXAMPLE: &str = include_str!("../../../../examples/extract.toml");

/// A minimal extracted table; tests edit it one key at a time.
const MINIMAL: &str = r#"
[[tables]]
name = "orders"
raw_prefix = "raw/orders/"
format = "jsonl"
partition_by = "updated_at"
catalog = { database = "db" }
warehouse = { schema = "shop", merge_keys = ["_shard", "id"], version_column = "updated_at" }
columns = [
  { name = "id", type = "int", required = true },
  { name = "updated_at", type = "timestamp", required = true },
  { name = "_shard", type = "string" },
  { name = "_op", type = "string" },
]

[tables.source]
engine = "mysql"
shards = [{ id = "s1", url_env = "S1_URL" }, { id = "s2", secret = "shards/s2" }]
table = "shop.orders"
key_columns = ["id"]
updated_at_column = "updated_at"
"#;

fn source(p: &Pipeline) -> &SourceConfig {
    p.table("orders")
        .and_then(|t| t.source.as_ref())
        .expect("a source")
}

/// The error of `MINIMAL` with `from` replaced by `to`.
fn err(from: &str, to: &str) -> String {
    let text = MINIMAL.replacen(from, to, 1);
    assert_ne!(text, MINIMAL, "{from}");
    Pipeline::parse(&text, "e.toml").expect_err(to).to_string()
}

fn assert_at(e: &str, path: &str, says: &str) {
    assert!(e.contains(&format!("at `{path}`")), "{path}: {e}");
    assert!(e.contains(says), "{says}: {e}");
}

#[test]
fn the_example_parses_with_a_table_and_a_join() {
    let p = Pipeline::parse(EXAMPLE, "examples/extract.toml").expect("example parses");
    let orders = p
        .table("orders")
        .and_then(|t| t.source.as_ref())
        .expect("orders");
    assert_eq!(orders.engine, SourceEngine::Mysql);
    assert_eq!(orders.table.as_deref(), Some("shop.orders"));
    assert_eq!(orders.soft_delete_column.as_deref(), Some("deleted_at"));
    assert_eq!(
        orders.shard("us1").and_then(|s| s.location()),
        Some(ShardLocation::Secret("sluice/shards/us1"))
    );
    let join = p
        .table("order_customers")
        .and_then(|t| t.source.as_ref())
        .expect("join");
    assert_eq!(join.engine, SourceEngine::Postgres);
    assert!(join
        .query
        .as_deref()
        .is_some_and(|q| q.contains("GREATEST")));
    assert!(join.keys_unique_across_shards);
    assert_eq!(
        join.shards[0].location(),
        Some(ShardLocation::UrlEnv("SHOP_REPLICA_URL"))
    );
}

#[test]
fn defaults_are_named() {
    let p = Pipeline::parse(MINIMAL, "m.toml").expect("minimal parses");
    let s = source(&p);
    assert_eq!(
        (s.page_rows, s.part_rows, s.safety_lag_secs),
        (10_000, 100_000, 300)
    );
    assert!(!s.keys_unique_across_shards);
    assert_eq!(s.soft_delete_column, None);
    assert_eq!(
        s.shard("s1").and_then(|s| s.location()),
        Some(ShardLocation::UrlEnv("S1_URL"))
    );
}

#[test]
fn engine_is_mysql_or_postgres() {
    let e = err("engine = \"mysql\"", "engine = \"oracle\"");
    assert!(e.contains("tables[0].source.engine"), "{e}");
    assert!(e.contains("mysql") && e.contains("postgres"), "{e}");
    let p = Pipeline::parse(
        &MINIMAL.replace("engine = \"mysql\"", "engine = \"postgres\""),
        "p.toml",
    )
    .expect("postgres");
    assert_eq!(source(&p).engine, SourceEngine::Postgres);
}

#[test]
fn shards_are_named_once_with_one_connection_each() {
    let e = err(
        "shards = [{ id = \"s1\", url_env = \"S1_URL\" }, { id = \"s2\", secret = \"shards/s2\" }]",
        "shards = []",
    );
    assert_at(&e, "tables[0].source.shards", "at least one shard");
    let e = err("id = \"s2\"", "id = \"s1\"");
    assert_at(&e, "tables[0].source.shards[1].id", "`s1` is listed twice");
    let e = err("id = \"s2\"", "id = \"Shard 2\"");
    assert_at(&e, "tables[0].source.shards[1].id", "lower-case");
    let e = err("{ id = \"s1\", url_env = \"S1_URL\" }", "{ id = \"s1\" }");
    assert_at(
        &e,
        "tables[0].source.shards[0].secret",
        "shard `s1`: set exactly one",
    );
    let e = err(
        "url_env = \"S1_URL\"",
        "url_env = \"S1_URL\", secret = \"x\"",
    );
    assert_at(&e, "tables[0].source.shards[0].secret", "exactly one");
    let e = err("url_env = \"S1_URL\"", "url_env = \"mysql://root@db/x\"");
    assert_at(
        &e,
        "tables[0].source.shards[0].url_env",
        "name the variable",
    );
    let e = err("secret = \"shards/s2\"", "secret = \" \"");
    assert_at(
        &e,
        "tables[0].source.shards[1].secret",
        "not a Secrets Manager",
    );
    let e = err("{ id = \"s1\",", "{ id = \"s1\", password = \"x\",");
    assert!(e.contains("password"), "{e}");
}

#[test]
fn exactly_one_of_table_or_query_and_only_one_select() {
    let e = err(
        "table = \"shop.orders\"",
        "table = \"shop.orders\"\nquery = \"SELECT 1\"",
    );
    assert_at(&e, "tables[0].source", "exactly one of `table` or `query`");
    let e = err("table = \"shop.orders\"", "");
    assert_at(&e, "tables[0].source", "exactly one of `table` or `query`");
    let e = err("table = \"shop.orders\"", "table = \"a.b.c\"");
    assert_at(&e, "tables[0].source.table", "`schema.name`");
    let e = err("table = \"shop.orders\"", "table = \"shop.`orders\"");
    assert_at(&e, "tables[0].source.table", "without quotes");
    let e = err("table = \"shop.orders\"", "query = \"DELETE FROM orders\"");
    assert_at(&e, "tables[0].source.query", "one SELECT");
    let e = err(
        "table = \"shop.orders\"",
        "query = \"SELECT * FROM a; DROP TABLE a\"",
    );
    assert_at(&e, "tables[0].source.query", "without `;`");
    let q = "query = \"WITH x AS (SELECT 1) SELECT * FROM orders\"";
    Pipeline::parse(&MINIMAL.replace("table = \"shop.orders\"", q), "q.toml").expect("a CTE");
}

#[test]
fn key_and_watermark_columns() {
    let e = err("key_columns = [\"id\"]", "key_columns = []");
    assert_at(
        &e,
        "tables[0].source.key_columns",
        "at least one key column",
    );
    let e = err("key_columns = [\"id\"]", "key_columns = [\"id\", \"id\"]");
    assert_at(&e, "tables[0].source.key_columns[1]", "listed twice");
    let e = err("key_columns = [\"id\"]", "key_columns = [\"i\\\"d\"]");
    assert_at(&e, "tables[0].source.key_columns[0]", "without quotes");
    let e = err(
        "updated_at_column = \"updated_at\"",
        "updated_at_column = \"id\"",
    );
    assert_at(&e, "tables[0].source.updated_at_column", "is a key column");
    let e = err(
        "updated_at_column = \"updated_at\"",
        "updated_at_column = \"\"",
    );
    assert_at(&e, "tables[0].source.updated_at_column", "1 to 64");
}

#[test]
fn limits_name_their_field() {
    for (field, bad, says) in [
        ("page_rows", "0", "between 1 and 1000000"),
        ("page_rows", "1000001", "between 1 and 1000000"),
        ("part_rows", "0", "between 1 and 10000000"),
        ("safety_lag_secs", "86401", "at most 86400"),
    ] {
        let e = err(
            "updated_at_column = \"updated_at\"",
            &format!("updated_at_column = \"updated_at\"\n{field} = {bad}"),
        );
        assert_at(&e, &format!("tables[0].source.{field}"), says);
    }
}

#[test]
fn the_table_must_carry_what_extract_writes() {
    let e = err("format = \"jsonl\"", "format = \"csv\"");
    assert_at(&e, "tables[0].source", "format = \"jsonl\"");
    // Soft deletes need `_op`.
    let no_op = MINIMAL.replace("  { name = \"_op\", type = \"string\" },\n", "");
    let e = Pipeline::parse(
        &no_op.replace(
            "updated_at_column = \"updated_at\"",
            "updated_at_column = \"updated_at\"\nsoft_delete_column = \"deleted_at\"",
        ),
        "d.toml",
    )
    .expect_err("no _op")
    .to_string();
    assert_at(
        &e,
        "tables[0].source.soft_delete_column",
        "declare the column `_op`",
    );
    // Keys repeat across shards unless said otherwise: `_shard` declared and in the merge key.
    let e = err("merge_keys = [\"_shard\", \"id\"]", "merge_keys = [\"id\"]");
    assert_at(
        &e,
        "tables[0].source.keys_unique_across_shards",
        "must include `_shard`",
    );
    let no_shard = MINIMAL
        .replace("  { name = \"_shard\", type = \"string\" },\n", "")
        .replace("merge_keys = [\"_shard\", \"id\"]", "merge_keys = [\"id\"]");
    let e = Pipeline::parse(&no_shard, "s.toml")
        .expect_err("no _shard")
        .to_string();
    assert_at(
        &e,
        "tables[0].source.keys_unique_across_shards",
        "declare the column `_shard`",
    );
    let unique = no_shard.replace(
        "updated_at_column = \"updated_at\"",
        "updated_at_column = \"updated_at\"\nkeys_unique_across_shards = true",
    );
    Pipeline::parse(&unique, "u.toml").expect("unique keys need no _shard");
}

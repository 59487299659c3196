//! What each source type becomes in a part, read from the real servers' binary protocol:
//! MariaDB's and PostgreSQL's types (NULLs, extremes, reserved-word column names), compared
//! value by value (MariaDB's JSON is a LONGTEXT alias: its text, as a string), and a MariaDB
//! part run through the transform (gzip JSON lines in, every row written, none quarantined).

mod extract_support;

use std::sync::Arc;

use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection};

use extract_support::*;
use sluice::catalog::LocalCatalog;
use sluice::config::Pipeline;
use sluice::extract::{Extractor, Mode, Shards};
use sluice::transform::Transformer;
use sluice_tests::{pg_url, unique_name};

/// A pipeline of one table `typed` extracted by `engine` from `relation`, with `columns`.
fn typed_pipeline(engine: &str, var: &str, relation: &str, columns: &str) -> Arc<Pipeline> {
    let text = format!(
        r#"
[[tables]]
name = "typed"
raw_prefix = "raw/typed/"
format = "jsonl"
null_tokens = []
partition_by = "updated_at"
catalog = {{ database = "lake" }}
columns = [
{columns}
  {{ name = "updated_at", type = "timestamp", required = true }},
]

[tables.source]
engine = "{engine}"
shards = [{{ id = "only", url_env = "{var}" }}]
table = "{relation}"
key_columns = ["id"]
updated_at_column = "updated_at"
safety_lag_secs = 0
keys_unique_across_shards = true
"#
    );
    Arc::new(Pipeline::parse(&text, "typed.toml").unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// The rows of the one part the run wrote, by id.
async fn extract_rows(p: Arc<Pipeline>, lake: &Lake) -> (String, Vec<Map<String, Value>>) {
    let r = Extractor::new(p, lake.store.clone())
        .run_table("typed", Shards::All, Mode::Incremental, limits())
        .await
        .expect("run");
    let s = extracted(&r[0]);
    assert_eq!(s.parts.len(), 1, "{s:?}");
    let mut rows = raw_rows(lake.store.as_ref(), &s.parts[0])
        .await
        .into_values()
        .next()
        .expect("the part");
    rows.sort_by_key(|r| r["id"].as_i64());
    (s.parts[0].clone(), rows)
}

fn assert_row(got: &Map<String, Value>, want: Value) {
    for (k, v) in want.as_object().expect("object") {
        assert_eq!(got.get(k), Some(v), "column {k}: {got:?}");
    }
}

const MARIADB_TYPED: &str = "CREATE TABLE typed (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, b TINYINT(1), \
    si SMALLINT, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, `dec` DECIMAL(20,3), \
    dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL, da DATE, tm TIME(6), yr YEAR, vc VARCHAR(20), \
    `order` TEXT, bn VARBINARY(8), js JSON, en ENUM('a','b'), st SET('x','y'), bt BIT(10), \
    updated_at DATETIME(6) NOT NULL)";

#[tokio::test]
async fn mariadb_types_become_json_the_transform_reads() {
    let shards = MyShards::create(1).await;
    shards.exec_all(MARIADB_TYPED).await;
    shards
        .exec_all(
            "INSERT INTO typed VALUES (1, -128, 255, 1, -32768, -8388608, -9223372036854775808, 18446744073709551615, \
             0.1, -2.5e-300, -12345678901234567.891, '2024-02-29 23:59:58.123456', '1999-12-31 23:59:59', \
             '2038-01-19 03:14:07.999999', '0001-01-01', '-838:59:59.000000', 2155, 'Zoë \"q\"\\n', 'reserved', \
             x'00ff10', '{\"a\": [1, null]}', 'b', 'x,y', b'1000000001', '2020-01-01 00:00:00')",
        )
        .await;
    shards
        .exec_all("INSERT INTO typed (id, updated_at) VALUES (2, '2020-01-01 00:00:00')")
        .await;
    let var = url_env(&shards.url(0));
    let columns = r#"  { name = "id", type = "int", required = true },
  { name = "ti", type = "int" }, { name = "tu", type = "int" }, { name = "b", type = "bool" },
  { name = "si", type = "int" }, { name = "mi", type = "int" }, { name = "bi", type = "int" },
  { name = "bu", type = "string" }, { name = "f", type = "float" }, { name = "d", type = "float" },
  { name = "dec", type = "decimal(20,3)" }, { name = "dt", type = "timestamp" },
  { name = "dt0", type = "timestamp" }, { name = "ts", type = "timestamp" }, { name = "da", type = "date" },
  { name = "tm", type = "string" }, { name = "yr", type = "int" }, { name = "vc", type = "string" },
  { name = "order", type = "string" }, { name = "bn", type = "binary" }, { name = "js", type = "string" },
  { name = "en", type = "string" }, { name = "st", type = "string" }, { name = "bt", type = "int" },"#;
    let p = typed_pipeline("mysql", &var, "typed", columns);
    let lake = lake();
    let (key, rows) = extract_rows(p.clone(), &lake).await;
    assert_row(
        &rows[0],
        json!({"id": 1, "ti": -128, "tu": 255, "b": 1, "si": -32768, "mi": -8388608, "bi": i64::MIN,
            "bu": u64::MAX, "f": 0.1, "d": -2.5e-300, "dec": "-12345678901234567.891",
            "dt": "2024-02-29T23:59:58.123456Z", "dt0": "1999-12-31T23:59:59.000000Z",
            "ts": "2038-01-19T03:14:07.999999Z", "da": "0001-01-01", "tm": "-838:59:59.000000", "yr": 2155,
            "vc": "Zoë \"q\"\n", "order": "reserved", "bn": "AP8Q", "js": "{\"a\": [1, null]}", "en": "b",
            "st": "x,y", "bt": 513, "updated_at": "2020-01-01T00:00:00.000000Z", "_shard": "only"}),
    );
    for (k, v) in &rows[1] {
        if !matches!(k.as_str(), "id" | "updated_at" | "_shard") {
            assert_eq!(v, &Value::Null, "column {k} of the NULL row");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = LocalCatalog::new(dir.path().join("catalog.json"));
    let t = Transformer::new(Arc::unwrap_or_clone(p), None).expect("transformer");
    let summary = t
        .transform_object(lake.store.as_ref(), &catalog, &key, None)
        .await
        .expect("transform the part");
    assert_eq!(
        (
            summary.counts.rows_read,
            summary.counts.rows_written,
            summary.counts.rows_quarantined
        ),
        (2, 2, 0),
        "{summary:?}"
    );
    shards.drop_all().await;
}

const PG_TYPED: &str = "CREATE TABLE {s}.typed (id int8 PRIMARY KEY, i2 int2, i4 int4, n numeric, n2 numeric(12,2), \
    f4 float4, f8 float8, f8n float8, b bool, t text, vc varchar(10), c char(4), d date, ts timestamp, \
    tz timestamptz, tm time, ttz timetz, u uuid, j json, jb jsonb, by bytea, mood {s}.mood, dom {s}.positive, \
    \"select\" text, updated_at timestamptz NOT NULL)";

#[tokio::test]
async fn postgres_types_become_json() {
    let url = pg_url();
    let mut c = PgConnection::connect(&url).await.expect("connect");
    let s = unique_name("xt");
    for sql in [
        format!("CREATE SCHEMA {s}"),
        format!("CREATE TYPE {s}.mood AS ENUM ('ok', 'sad')"),
        format!("CREATE DOMAIN {s}.positive AS int4 CHECK (VALUE > 0)"),
        PG_TYPED.replace("{s}", &s),
        format!(
            "INSERT INTO {s}.typed VALUES (1, -32768, 2147483647, -12345678901234567890.000000123456789, 0.5, \
             0.1, 1e-300, 'NaN', true, 'tab\there \"q\"', 'ünï', 'ab', '2000-02-29', '1970-01-01 00:00:00.000001', \
             '2024-06-30 23:59:59.999999+02', '24:00:00', '10:00:00-03:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
             '{{\"a\":\n 1}}', '{{\"b\": [true, null]}}', '\\x00ff', 'sad', 7, 'kw', '2020-01-01 00:00:00+00')"
        ),
        format!("INSERT INTO {s}.typed (id, n, updated_at) VALUES (2, 'Infinity', '2020-01-01 00:00:00+00')"),
        format!("INSERT INTO {s}.typed (id, n, n2, updated_at) VALUES (3, 0.000012, -0.01, '2020-01-01 00:00:00+00')"),
    ] {
        sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let var = url_env(&url);
    let columns = r#"  { name = "id", type = "int", required = true }, { name = "i2", type = "int" },
  { name = "i4", type = "int" }, { name = "n", type = "string" }, { name = "n2", type = "decimal(12,2)" },
  { name = "f4", type = "float" }, { name = "f8", type = "float" }, { name = "f8n", type = "float" },
  { name = "b", type = "bool" }, { name = "t", type = "string" }, { name = "vc", type = "string" },
  { name = "c", type = "string" }, { name = "d", type = "date" }, { name = "ts", type = "timestamp" },
  { name = "tz", type = "timestamp" }, { name = "tm", type = "string" }, { name = "ttz", type = "string" },
  { name = "u", type = "string" }, { name = "j", type = "string" }, { name = "jb", type = "string" },
  { name = "by", type = "binary" }, { name = "mood", type = "string" }, { name = "dom", type = "int" },
  { name = "select", type = "string" },"#;
    let lake = lake();
    let (_, rows) = extract_rows(
        typed_pipeline("postgres", &var, &format!("{s}.typed"), columns),
        &lake,
    )
    .await;
    assert_row(
        &rows[0],
        json!({"id": 1, "i2": -32768, "i4": 2147483647, "n": "-12345678901234567890.000000123456789",
            "n2": "0.50", "f4": 0.1, "f8": 1e-300, "f8n": "NaN", "b": true, "t": "tab\there \"q\"",
            "vc": "ünï", "c": "ab  ", "d": "2000-02-29", "ts": "1970-01-01T00:00:00.000001Z",
            "tz": "2024-06-30T21:59:59.999999Z", "tm": "24:00:00.000000", "ttz": "10:00:00.000000-03:30",
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "j": {"a": 1}, "jb": {"b": [true, null]},
            "by": "AP8=", "mood": "sad", "dom": 7, "select": "kw", "updated_at": "2020-01-01T00:00:00.000000Z"}),
    );
    assert_row(&rows[1], json!({"n": "Infinity", "n2": null, "tz": null}));
    assert_row(&rows[2], json!({"n": "0.000012", "n2": "-0.01"}));
    // Numerics as PostgreSQL itself prints them.
    let text: Vec<(Option<String>, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT n::text, n2::text FROM {s}.typed ORDER BY id"
    )))
    .fetch_all(&mut c)
    .await
    .expect("numerics as text");
    for (row, (n, n2)) in rows.iter().zip(text) {
        assert_eq!(row["n"].as_str().map(str::to_string), n);
        assert_eq!(row["n2"].as_str().map(str::to_string), n2);
    }
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {s} CASCADE")))
        .execute(&mut c)
        .await
        .expect("drop");
}

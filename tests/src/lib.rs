//! Support for the end-to-end tests: the moto_server endpoint and the database URLs that
//! `scripts/test` set up, SDK configuration pointed at moto, unique names so tests sharing one
//! server never collide, and ([`lambda`]) a built function binary served and invoked under
//! `cargo lambda`.

use std::sync::atomic::{AtomicU32, Ordering};

pub mod cdc;
pub mod conformance;
pub mod dataapi;
#[cfg(test)]
mod events;
pub mod golden;
pub mod lambda;
pub mod warehouse;
pub use lambda::{built_binary, Invocation, LambdaFunction, Payload, RunningLambda};

/// The moto_server endpoint. `scripts/test` starts one and exports `SLUICE_TEST_AWS_ENDPOINT`;
/// a test run without it fails (never skips) with a message saying how to run it.
pub fn moto_endpoint() -> String {
    match std::env::var("SLUICE_TEST_AWS_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "SLUICE_TEST_AWS_ENDPOINT is not set: run the suite with scripts/test, which starts \
             moto_server, or start `moto_server -p PORT` and export SLUICE_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT"
        ),
    }
}

/// SDK configuration for moto: fixed dummy credentials, us-east-1, the moto endpoint.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    let creds =
        aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "sluice-tests");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(moto_endpoint())
        .load()
        .await
}

/// A test database URL that `scripts/test` exports, or a panic naming the variable and how to
/// get one (tests fail, never skip, without their servers).
fn env_url(var: &str, what: &str, by_hand: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: run the suite with scripts/test, which sets up {what}, \
             or {by_hand} (scripts/databases.sh sets up all three and prints the exports)"
        ),
    }
}

/// A PostgreSQL database of this run on the machine's server (user postgres, trust auth):
/// `SLUICE_TEST_PG_URL`, e.g. `postgres://postgres@127.0.0.1:5432/sluice_test_123_ab12cd34`.
/// Tests share it: give every table or schema a [`unique_name`].
pub fn pg_url() -> String {
    env_url(
        "SLUICE_TEST_PG_URL",
        "a database for the run on the local PostgreSQL",
        "create one (createdb -h 127.0.0.1 -U postgres DB) and export \
         SLUICE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/DB",
    )
}

/// A MariaDB (MySQL protocol) database of this run on the machine's server (root, no
/// password): `SLUICE_TEST_MYSQL_URL`, e.g. `mysql://root@127.0.0.1:3306/sluice_test_123_ab12cd34`.
pub fn mysql_url() -> String {
    env_url(
        "SLUICE_TEST_MYSQL_URL",
        "a database for the run on the local MariaDB",
        "create one (mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE db') and export \
         SLUICE_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/DB",
    )
}

/// The `postgres` database of a throwaway PostgreSQL cluster with `wal_level = logical` and at
/// least 10 replication slots and WAL senders, for logical decoding (slots, publications,
/// `pgoutput`): `SLUICE_TEST_PG_LOGICAL_URL`, e.g. `postgres://postgres@127.0.0.1:PORT/postgres`.
/// Slots pin WAL on the whole cluster: drop the ones a test creates.
pub fn pg_logical_url() -> String {
    env_url(
        "SLUICE_TEST_PG_LOGICAL_URL",
        "a throwaway PostgreSQL cluster with wal_level = logical",
        "start a cluster with wal_level = logical and export \
         SLUICE_TEST_PG_LOGICAL_URL=postgres://postgres@127.0.0.1:PORT/postgres",
    )
}

/// A name unique to this process and call: `<prefix>p<pid>n<counter>t<nanos in hex>`, e.g.
/// `slotp4242n3t1a2b3c4d`.
///
/// The prefix must start with a lower-case letter and hold only lower-case letters, digits,
/// `_` or `-`, in at most 35 bytes; the name is then at most 63 bytes. With a prefix of
/// letters and digits only, the name is valid unquoted everywhere the tests need one: an S3
/// bucket, a Glue database, a secret, and a PostgreSQL or MariaDB identifier (database,
/// schema, table, replication slot, publication: lower-case `[a-z0-9_]`, starting with a
/// letter, at most 63 bytes), so it may be put into SQL text as is. A prefix with `-` suits
/// buckets and secrets; one with `_` suits Glue and SQL.
pub fn unique_name(prefix: &str) -> String {
    const MAX_PREFIX: usize = 35; // + "p" 7 digits "n" 10 digits "t" 8 hex digits = 63
    assert!(
        prefix.len() <= MAX_PREFIX
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "unique_name prefix {prefix:?}: want a lower-case letter, then [a-z0-9_-], at most {MAX_PREFIX} bytes"
    );
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Letters that are not hex digits separate the parts, so names stay distinct without `-`
    // (invalid in SQL) or `_` (invalid in bucket names).
    format!("{prefix}p{}n{n}t{nanos:x}", std::process::id())
}

/// Creates a bucket in moto and returns an S3 client for it.
pub async fn moto_bucket(sdk: &aws_config::SdkConfig, bucket: &str) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::Client::from_conf(sluice::aws::s3_config(sdk));
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket in moto");
    s3
}

// ---------------------------------------------------------------------------------------------
// Shared by the transform end-to-end tests (transform_e2e, lambda_invoke, reader_pyarrow).

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// The hash key the tests use (HMAC-SHA256 key bytes; at least 16 bytes).
pub const TEST_HASH_KEY: &[u8] = b"sluice-e2e-hash-key-0123456789abcdef";

/// Writes a copy of `examples/pipeline.toml` into `dir` with every table's Glue database set
/// to `database` and the hash-key secret set to `secret` (tests share one moto_server), and
/// returns its path. Fails if the example no longer has the lines it edits.
pub fn pipeline_copy(dir: &Path, database: &str, secret: &str) -> PathBuf {
    let src = workspace_root().join("examples/pipeline.toml");
    let text =
        std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let db_line = "database = \"sluice_lake\"";
    let secret_line = "secret = \"sluice/hash-key\"";
    assert_eq!(
        text.matches(db_line).count(),
        2,
        "{} should name `{db_line}` once per table (funnel, customers)",
        src.display()
    );
    assert_eq!(
        text.matches(secret_line).count(),
        1,
        "{} should have `{secret_line}` in [hash_key]",
        src.display()
    );
    let edited = text
        .replace(db_line, &format!("database = \"{database}\""))
        .replace(secret_line, &format!("secret = \"{secret}\""));
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, edited).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Creates a Secrets Manager secret in moto whose SecretString is `value`.
pub async fn moto_secret(sdk: &aws_config::SdkConfig, name: &str, value: &[u8]) {
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    sm.create_secret()
        .name(name)
        .secret_string(std::str::from_utf8(value).expect("secret value is UTF-8"))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create secret {name} in moto: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            )
        });
}

/// Hex HMAC-SHA256 of `text` under `key`: what the pipeline's PII `hash` action writes.
pub fn hmac_hex(key: &[u8], text: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes any key length");
    m.update(text.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Microseconds since the epoch of a UTC civil time (proleptic Gregorian).
pub fn utc_micros(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(mo) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400) + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) * 1_000_000
}

/// One curated funnel row as the pipeline writes it (`user_id` replaced by its hash).
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelOut {
    pub event_time_us: i64,
    pub event_type: String,
    pub product_id: Option<i64>,
    pub category_id: Option<i64>,
    pub category_code: Option<String>,
    pub brand: Option<String>,
    pub price: Option<f64>,
    pub user_id_hash: Option<String>,
    pub user_session: Option<String>,
}

/// A generated raw funnel CSV and everything the transform should make of it.
#[derive(Debug, Clone)]
pub struct FunnelSample {
    pub csv: String,
    /// Rows expected in the curated Parquet: first occurrence of each dedup key, in the order
    /// the files list them (partition `year=/month=` ascending, then input order).
    pub expected: Vec<FunnelOut>,
    /// `(year, month)` partitions, zero-padded, sorted.
    pub partitions: Vec<(String, String)>,
    pub rows_read: u64,
    pub rows_duplicate: u64,
    /// Quarantined rows: (line number in the file, raw line, column).
    pub bad: Vec<(u64, String, String)>,
}

/// A deterministic raw funnel CSV in `gen_funnel.py`'s shape: `rows` generated events spread
/// over `months` (`(year, month)`), plus exact duplicate lines, one same-key duplicate with
/// other values (first wins), a quoted brand with a comma, empty (null) fields, month-edge
/// timestamps and one bad row (day 32). `seed` varies the values.
pub fn funnel_sample(seed: u64, months: &[(i64, u32)], rows: usize) -> FunnelSample {
    assert!(!months.is_empty());
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        | 1;
    let mut next = move |n: u64| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    const TYPES: [&str; 4] = ["view", "cart", "remove_from_cart", "purchase"];
    const CATS: [&str; 5] = [
        "electronics.smartphone",
        "appliances.kitchen.refrigerators",
        "computers.notebook",
        "",
        "apparel.shoes",
    ];
    const BRANDS: [&str; 5] = ["samsung", "apple", "", "xiaomi", "acme, inc"];
    let sessions: Vec<String> = (0..4)
        .map(|_| {
            format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                next(1 << 32),
                next(1 << 16),
                next(1 << 12),
                next(1 << 12),
                next(1 << 48)
            )
        })
        .collect();
    let days_in = |y: i64, m: u32| -> u32 {
        match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    };

    // (csv line, parsed row, (year, month)) for the good lines; None for the bad one.
    type Good = (FunnelOut, (i64, u32));
    let mut lines: Vec<(String, Option<Good>)> = Vec::new();
    let push_event = |lines: &mut Vec<(String, Option<Good>)>,
                      (y, mo, d, h, mi, s): (i64, u32, u32, u32, u32, u32),
                      next: &mut dyn FnMut(u64) -> u64| {
        let event_type = TYPES[next(4) as usize];
        let product_id = 1_000_000 + next(59_000_000) as i64;
        let category_id = 2_053_013_550_000_000_000 + next(10_000_000) as i64;
        let cat = CATS[next(CATS.len() as u64) as usize];
        let brand = BRANDS[next(BRANDS.len() as u64) as usize];
        let cents = 100 + next(249_900);
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        // Every ninth event has no user (an anonymous view): its hash is null.
        let user_id = (next(9) != 0).then(|| 500_000_000 + next(100_000_000) as i64);
        let session = &sessions[next(sessions.len() as u64) as usize];
        let brand_csv = if brand.contains(',') {
            format!("\"{brand}\"")
        } else {
            brand.to_string()
        };
        let line = format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC,{event_type},{product_id},{category_id},{cat},{brand_csv},{price},{},{session}",
            user_id.map(|u| u.to_string()).unwrap_or_default()
        );
        let out = FunnelOut {
            event_time_us: utc_micros(y, mo, d, h, mi, s),
            event_type: event_type.to_string(),
            product_id: Some(product_id),
            category_id: Some(category_id),
            category_code: (!cat.is_empty()).then(|| cat.to_string()),
            brand: (!brand.is_empty()).then(|| brand.to_string()),
            price: Some(price.parse().expect("price")),
            user_id_hash: user_id.map(|u| hmac_hex(TEST_HASH_KEY, &u.to_string())),
            user_session: Some(session.clone()),
        };
        lines.push((line, Some((out, (y, mo)))));
    };
    for i in 0..rows {
        let (y, mo) = months[i % months.len()];
        let when = (
            y,
            mo,
            1 + next(u64::from(days_in(y, mo))) as u32,
            next(24) as u32,
            next(60) as u32,
            next(60) as u32,
        );
        push_event(&mut lines, when, &mut next);
        if i % 7 == 3 {
            // An exact duplicate line (the source re-sent it).
            let last = lines.last().expect("a line").clone();
            lines.push(last);
        }
        if i == rows / 2 {
            let (y, mo) = months[0];
            // The last second of a month and the first of the next one.
            push_event(&mut lines, (y, mo, days_in(y, mo), 23, 59, 59), &mut next);
            let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
            if months.contains(&(ny, nm)) {
                push_event(&mut lines, (ny, nm, 1, 0, 0, 0), &mut next);
            }
            // One bad row: there is no 32nd day.
            let bad = format!("{y:04}-{mo:02}-32 00:00:00 UTC,view,1000001,2053013550000000001,,samsung,1.00,500000001,{}", sessions[0]);
            lines.push((bad, None));
        }
    }
    // The same dedup key (session, time, type, product) as the first event, other values: a
    // duplicate; the first occurrence wins.
    let first = lines
        .iter()
        .find(|(l, p)| p.is_some() && !l.contains('"'))
        .cloned()
        .expect("an unquoted event line");
    let mut cols: Vec<String> = first.0.split(',').map(str::to_string).collect();
    cols[6] = "0.01".into(); // price
    cols[5] = "other-brand".into();
    lines.push((
        cols.join(","),
        first.1.clone().map(|(mut o, p)| {
            o.price = Some(0.01);
            o.brand = Some("other-brand".into());
            (o, p)
        }),
    ));

    let mut csv = String::from("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n");
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Good> = Vec::new();
    let mut bad = Vec::new();
    let mut rows_duplicate = 0;
    for (i, (line, parsed)) in lines.iter().enumerate() {
        csv.push_str(line);
        csv.push('\n');
        match parsed {
            None => bad.push((i as u64 + 2, line.clone(), "event_time".to_string())),
            Some((o, p)) => {
                let key = (
                    o.user_session.clone(),
                    o.event_time_us,
                    o.event_type.clone(),
                    o.product_id,
                );
                if seen.insert(key) {
                    kept.push((o.clone(), *p));
                } else {
                    rows_duplicate += 1;
                }
            }
        }
    }
    kept.sort_by_key(|(_, p)| *p); // stable: input order within a partition
    let mut partitions: Vec<(String, String)> = kept
        .iter()
        .map(|(_, (y, m))| (format!("{y:04}"), format!("{m:02}")))
        .collect();
    partitions.dedup();
    FunnelSample {
        csv,
        expected: kept.into_iter().map(|(o, _)| o).collect(),
        partitions,
        rows_read: lines.len() as u64,
        rows_duplicate,
        bad,
    }
}

impl FunnelSample {
    /// The same sample with its bad row removed (a fixed re-upload of the object).
    pub fn without_bad(&self) -> FunnelSample {
        let bad: std::collections::HashSet<&str> =
            self.bad.iter().map(|(_, raw, _)| raw.as_str()).collect();
        let csv: String = self
            .csv
            .lines()
            .filter(|l| !bad.contains(l))
            .map(|l| format!("{l}\n"))
            .collect();
        FunnelSample {
            csv,
            rows_read: self.rows_read - self.bad.len() as u64,
            bad: Vec::new(),
            ..self.clone()
        }
    }
}

/// Every record batch of one Parquet file.
pub fn parquet_batches(bytes: bytes::Bytes) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a Parquet file")
        .build()
        .expect("Parquet reader")
        .map(|b| b.expect("record batch"))
        .collect()
}

/// The curated funnel columns, in file order, with their Arrow types.
pub fn funnel_schema() -> Vec<(&'static str, DataType)> {
    vec![
        (
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        ("event_type", DataType::Utf8),
        ("product_id", DataType::Int64),
        ("category_id", DataType::Int64),
        ("category_code", DataType::Utf8),
        ("brand", DataType::Utf8),
        ("price", DataType::Float64),
        ("user_id_hash", DataType::Utf8),
        ("user_session", DataType::Utf8),
    ]
}

/// Typed funnel rows of a batch; asserts the schema first.
pub fn funnel_rows(b: &RecordBatch) -> Vec<FunnelOut> {
    let schema = b.schema();
    let got: Vec<(&str, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect();
    assert_eq!(got, funnel_schema(), "curated funnel schema");
    let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
    let int = |i: usize, r: usize| {
        let a = b.column(i).as_primitive::<Int64Type>();
        a.is_valid(r).then(|| a.value(r))
    };
    let s = |i: usize, r: usize| {
        let a = b.column(i).as_string::<i32>();
        a.is_valid(r).then(|| a.value(r).to_string())
    };
    let price = b.column(6).as_primitive::<Float64Type>();
    (0..b.num_rows())
        .map(|r| FunnelOut {
            event_time_us: {
                assert!(ts.is_valid(r), "event_time is required");
                ts.value(r)
            },
            event_type: s(1, r).expect("event_type is required"),
            product_id: int(2, r),
            category_id: int(3, r),
            category_code: s(4, r),
            brand: s(5, r),
            price: price.is_valid(r).then(|| price.value(r)),
            user_id_hash: s(7, r),
            user_session: s(8, r),
        })
        .collect()
}

/// Rows of a batch rendered `col=value|…` (nulls as `∅`): the one renderer, shared with the
/// unit tests of `shared` (the same source file).
#[path = "../../shared/src/testing.rs"]
mod testing;
pub use testing::render_rows;

/// Every object key in a bucket, sorted (ListObjectsV2, all pages).
pub async fn list_keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| {
            panic!(
                "list s3://{bucket}/{prefix}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    keys.sort();
    keys
}

/// The whole body of an object.
pub async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bytes::Bytes {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "get s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
}

/// Puts an object.
pub async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: impl Into<bytes::Bytes>,
) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body.into()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "put s3://{bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_sql_identifiers_and_bucket_names() {
        let longest = "a".repeat(35);
        let names: Vec<String> = ["slot", "pub", "e2e", longest.as_str()]
            .iter()
            .flat_map(|p| [unique_name(p), unique_name(p)])
            .collect();
        for n in &names {
            assert!(n.len() <= 63, "{n}: {} bytes", n.len());
            assert!(n.starts_with(|c: char| c.is_ascii_lowercase()), "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{n}"
            );
        }
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
    }

    #[test]
    #[should_panic(expected = "unique_name prefix")]
    fn unique_name_refuses_a_prefix_sql_cannot_take() {
        unique_name("Slot");
    }
}

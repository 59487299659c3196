//! The pgoutput decoder against the logical-replication cluster, read the way the wal-decoder
//! reads: the session settings, `COPY (… pg_logical_slot_peek_binary_changes …) TO STDOUT
//! (FORMAT binary)` streamed through `copy_out_raw` into `CopyFrames`, then `ChangeDecoder`.
//!
//! The type test: a table with every common type, a 1.2 MB random (incompressible, so TOASTed
//! out of line) text, NULLs, NaN and infinities; inserts, an update that leaves the big text
//! alone, a delete. Each event's row is compared value by value with JSON written out by hand,
//! once with REPLICA IDENTITY DEFAULT (the update lists the big text as unchanged) and once
//! FULL (the old row fills it).

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use serde_json::{json, Map, Value};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use sluice::cdc::copy::{peek_copy_sql, CopyFrames, SESSION_SETTINGS};
use sluice::cdc::decode::{ChangeDecoder, Decoded, DecoderOptions};
use sluice::cdc::event::{is_iso_utc_micros, ChangeEvent, Op};
use sluice_tests::{pg_logical_url, unique_name};

struct Names {
    schema: String,
    slot: String,
    publication: String,
}

async fn connect() -> PgConnection {
    let url = pg_logical_url();
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn exec(c: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// 1.2 MB of pseudo-random base64 letters: pglz finds too few repeats to compress it, so the
/// value is stored out of line and an update that leaves it alone sends it as unchanged.
fn random_text() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1_200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x >> 58) as usize])
        })
        .collect()
}

const COLUMNS: &str = "id int PRIMARY KEY, i2 int2, i4 int4, i8 int8, num numeric, f4 float4, \
    f8 float8, b bool, t text, vc varchar(20), ch char(5), d date, tm time, ts timestamp, \
    tstz timestamptz, iv interval, u uuid, j json, jb jsonb, by bytea, ia int[], ta text[], big text";

const ROW1_SQL: &str = "(1, -32768, 2147483647, 9223372036854775807, \
    '123456789012345678901234567890.123456789', 1.5, 1.0000000000000002, true, \
    'héllo wörld ✓ 日本語 🎉', 'abc', 'ab', '2026-11-26', '13:45:30.5', '2026-11-26 09:00:00.123456', \
    '2026-11-26 10:00:00.5+01', '1 year 2 months 3 days 04:05:06.789', \
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"b\": 1, \"a\": [1, 2.5, \"x\", null]}', \
    '{\"k\": {\"n\": 12345678901234567890}}', '\\x00ff10', '{1,NULL,-3}', \
    ARRAY['plain', 'with, comma', 'say \"hi\"', 'back\\slash', NULL, 'NULL', ''], $1)";

const ROW3_SQL: &str = "(3, NULL, NULL, NULL, 'NaN', 'Infinity', 'NaN', false, '', '', '', \
    'infinity', '00:00:00', '-infinity', 'infinity', '-00:00:01', NULL, 'null', '[]', '\\x', \
    '[0:1]={5,6}', '{}', NULL)";

fn row1(big: &str) -> Value {
    json!({
        "id": 1, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
        "num": "123456789012345678901234567890.123456789", "f4": 1.5, "f8": 1.0000000000000002,
        "b": true, "t": "héllo wörld ✓ 日本語 🎉", "vc": "abc", "ch": "ab   ", "d": "2026-11-26",
        "tm": "13:45:30.5", "ts": "2026-11-26T09:00:00.123456Z", "tstz": "2026-11-26T09:00:00.500000Z",
        "iv": "1 year 2 mons 3 days 04:05:06.789", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": {"a": [1, 2.5, "x", null], "b": 1}, "jb": {"k": {"n": 12345678901234567890u64}},
        "by": "AP8Q", "ia": [1, null, -3],
        "ta": ["plain", "with, comma", "say \"hi\"", "back\\slash", null, "NULL", ""],
        "big": big,
    })
}

fn row2() -> Value {
    let mut row = json!({});
    for c in COLUMNS.split(", ") {
        let name = c.split(' ').next().unwrap_or_default();
        row[name] = Value::Null;
    }
    row["id"] = json!(2);
    row
}

fn row3() -> Value {
    let mut row = row2();
    let set = json!({"id": 3, "num": "NaN", "f4": "Infinity", "f8": "NaN", "b": false, "t": "",
        "vc": "", "ch": "     ", "d": "infinity", "tm": "00:00:00", "ts": "-infinity",
        "tstz": "infinity", "iv": "-00:00:01", "j": null, "jb": [], "by": "", "ia": [5, 6], "ta": []});
    for (k, v) in set.as_object().into_iter().flatten() {
        row[k] = v.clone();
    }
    row
}

/// Each change in the slot, read and decoded as the wal-decoder does.
async fn peek_changes(c: &mut PgConnection, n: &Names, table: &str) -> (Vec<ChangeEvent>, usize) {
    for s in SESSION_SETTINGS {
        exec(c, s).await;
    }
    let sql =
        peek_copy_sql(&n.slot, std::slice::from_ref(&n.publication), None).expect("valid names");
    let mut decoder = ChangeDecoder::new(DecoderOptions {
        db: "postgres".into(),
        primary_keys: [(
            (n.schema.clone(), table.to_string()),
            vec!["id".to_string()],
        )]
        .into(),
    });
    let mut frames = CopyFrames::new();
    let mut out = Vec::new();
    let mut chunks = 0;
    {
        let mut stream = c.copy_out_raw(&sql).await.expect("peek");
        while let Some(chunk) = stream.next().await {
            frames.push(&chunk.expect("a COPY chunk"));
            chunks += 1;
            while let Some(row) = frames.next_row().expect("a COPY row") {
                decoder.decode(&row, &mut out).expect("a pgoutput message");
            }
        }
    }
    frames.finish().expect("the COPY stream is complete");
    let columns = decoder.relation_columns(&n.schema, table).map(|c| c.len());
    assert_eq!(
        columns,
        Some(23),
        "the Relation message declared every column"
    );
    let changes = out
        .into_iter()
        .filter_map(|d| match d {
            Decoded::Change(e) => Some(e),
            _ => None,
        })
        .collect();
    (changes, chunks)
}

/// Compares two rows column by column, naming a differing column and showing at most the
/// start of its values (the big text is 1.2 MB).
fn assert_row(got: &Option<Map<String, Value>>, want: &Value, what: &str) {
    let got = got
        .as_ref()
        .map(|m| Value::Object(m.clone()))
        .unwrap_or(Value::Null);
    if &got == want {
        return;
    }
    let short = |v: Option<&Value>| v.map(|v| v.to_string().chars().take(120).collect::<String>());
    let (g, w) = (got.as_object(), want.as_object());
    let keys: std::collections::BTreeSet<&String> = g
        .into_iter()
        .flat_map(|m| m.keys())
        .chain(w.into_iter().flat_map(|m| m.keys()))
        .collect();
    for k in keys {
        let (a, b) = (g.and_then(|m| m.get(k)), w.and_then(|m| m.get(k)));
        assert_eq!(short(a), short(b), "{what}: column {k}");
        assert!(
            a == b,
            "{what}: column {k} differs beyond its first 120 characters"
        );
    }
    panic!(
        "{what}: got {}, want {}",
        short(Some(&got)).unwrap_or_default(),
        short(Some(want)).unwrap_or_default()
    );
}

async fn type_test(full: bool) {
    let tag = if full { "full" } else { "dflt" };
    let n = Names {
        schema: unique_name(&format!("cdcdec_{tag}")),
        slot: unique_name(&format!("cdcdec_slot_{tag}")),
        publication: unique_name(&format!("cdcdec_pub_{tag}")),
    };
    let mut c = connect().await;
    let result = AssertUnwindSafe(type_test_body(&mut c, &n, full))
        .catch_unwind()
        .await;
    // Slots pin WAL on the whole cluster: drop everything, pass or fail.
    let mut c = connect().await;
    exec(&mut c, &format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}'; \
         DROP PUBLICATION IF EXISTS {}; DROP SCHEMA IF EXISTS {} CASCADE",
        n.slot, n.publication, n.schema
    ))
    .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn type_test_body(c: &mut PgConnection, n: &Names, full: bool) {
    let table = "types";
    let qualified = format!("{}.{table}", n.schema);
    exec(
        c,
        &format!(
            "CREATE SCHEMA {}; CREATE TABLE {qualified} ({COLUMNS})",
            n.schema
        ),
    )
    .await;
    if full {
        exec(c, &format!("ALTER TABLE {qualified} REPLICA IDENTITY FULL")).await;
    }
    exec(
        c,
        &format!("CREATE PUBLICATION {} FOR TABLE {qualified}", n.publication),
    )
    .await;
    exec(
        c,
        &format!(
            "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
            n.slot
        ),
    )
    .await;
    let big = random_text();

    let before_ts: String = scalar(
        c,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    let mut tx = c.begin().await.expect("begin");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {qualified} VALUES {ROW1_SQL}"
    )))
    .bind(&big)
    .execute(&mut *tx)
    .await
    .expect("insert row 1");
    exec(
        &mut tx,
        &format!(
            "INSERT INTO {qualified} (id) VALUES (2); INSERT INTO {qualified} VALUES {ROW3_SQL}"
        ),
    )
    .await;
    let insert_xid: i64 = scalar(&mut tx, "SELECT txid_current()").await;
    tx.commit().await.expect("commit");
    // Leaves the big text alone.
    exec(
        c,
        &format!("UPDATE {qualified} SET t = 'changed' WHERE id = 1"),
    )
    .await;
    exec(c, &format!("DELETE FROM {qualified} WHERE id = 2")).await;
    let after_ts: String = scalar(
        c,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
    .await;
    let stored: i32 = scalar(
        c,
        &format!("SELECT pg_column_size(big) FROM {qualified} WHERE id = 1"),
    )
    .await;
    assert!(
        stored > 1_000_000,
        "the big text is not compressed ({stored} bytes stored)"
    );

    let (events, chunks) = peek_changes(c, n, table).await;
    assert!(chunks > 1, "the COPY output arrived in {chunks} chunk(s)");
    let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        [Op::Insert, Op::Insert, Op::Insert, Op::Update, Op::Delete]
    );

    let mut updated = row1(&big);
    updated["t"] = json!("changed");
    let want: Vec<(Value, Value, Vec<&str>)> = if full {
        vec![
            (Value::Null, row1(&big), vec![]),
            (Value::Null, row2(), vec![]),
            (Value::Null, row3(), vec![]),
            (row1(&big), updated, vec![]),
            (row2(), Value::Null, vec![]),
        ]
    } else {
        updated.as_object_mut().map(|m| m.remove("big"));
        vec![
            (Value::Null, row1(&big), vec![]),
            (Value::Null, row2(), vec![]),
            (Value::Null, row3(), vec![]),
            (Value::Null, updated, vec!["big"]),
            (json!({"id": 2}), Value::Null, vec![]),
        ]
    };
    for (i, (e, (before, after, unchanged))) in events.iter().zip(&want).enumerate() {
        let what = format!("event {i} ({})", e.op.as_str());
        assert_row(&e.before, before, &format!("{what} before"));
        assert_row(&e.after, after, &format!("{what} after"));
        assert_eq!(&e.unchanged, unchanged, "{what} unchanged");
        assert_eq!(
            (
                e.source.db.as_str(),
                e.source.schema.as_str(),
                e.source.table.as_str()
            ),
            ("postgres", n.schema.as_str(), table)
        );
        assert!(
            is_iso_utc_micros(&e.source.commit_ts),
            "{}",
            e.source.commit_ts
        );
        assert!(
            before_ts <= e.source.commit_ts && e.source.commit_ts <= after_ts,
            "{what}: commit time {} outside {before_ts}..{after_ts}",
            e.source.commit_ts
        );
    }
    assert!(
        events[..3]
            .iter()
            .all(|e| i64::from(e.source.txid) == insert_xid),
        "the inserts' xid"
    );
    assert!(
        events[3].source.txid > events[0].source.txid
            && events[4].source.txid > events[3].source.txid
    );
    assert!(
        events.windows(2).all(|w| w[0].source.lsn < w[1].source.lsn),
        "every change has its own, rising LSN"
    );
    // The events serialise and read back as stream records (the 1.2 MB ones included).
    for e in &events {
        let bytes = serde_json::to_vec(e).expect("serialises");
        let back = sluice::cdc::event::StreamRecord::from_slice(&bytes).expect("reads back");
        assert!(
            back == sluice::cdc::event::StreamRecord::Event(e.clone()),
            "round trip"
        );
    }
}

async fn scalar<T>(c: &mut PgConnection, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut *c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn cdc_types_exact_with_replica_identity_default() {
    type_test(false).await;
}

#[tokio::test]
async fn cdc_types_exact_with_replica_identity_full() {
    type_test(true).await;
}

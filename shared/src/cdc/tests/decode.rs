use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::cdc::copy::tests::{rows_chunked, rows_split, FIXTURE, TEST_DECODING};
use crate::cdc::pgoutput::test_wire::encode;
use crate::cdc::pgoutput::{
    format_lsn, parse_lsn, Begin, Insert, Relation as RelationMsg, RelationColumn, Truncate,
};
use crate::cdc::value::timestamp;

fn options() -> DecoderOptions {
    DecoderOptions {
        db: "postgres".into(),
        primary_keys: HashMap::from([
            (("cdcfx".into(), "a".into()), vec!["id".into()]),
            (("cdcfx".into(), "b".into()), vec!["id".into()]),
        ]),
    }
}

/// Every row of `rows` through one decoder.
fn decode_all(opts: DecoderOptions, rows: &[PeekedRow]) -> Result<Vec<Decoded>, CdcDecodeError> {
    let mut d = ChangeDecoder::new(opts);
    let mut out = Vec::new();
    for row in rows {
        d.decode(row, &mut out)?;
    }
    Ok(out)
}

fn fixture_decoded() -> Vec<Decoded> {
    let rows = rows_chunked(FIXTURE, 1 << 20).expect("the fixture decodes");
    decode_all(options(), &rows).expect("the fixture decodes")
}

fn lsn(text: &str) -> u64 {
    parse_lsn(text).expect("X/Y")
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// (table, LSN, xid, commit-time microseconds) of an expected event.
type At<'a> = (&'a str, &'a str, u32, &'a str);

fn ev(
    op: Op,
    (table, at, txid, ts): At<'_>,
    before: Value,
    after: Value,
    unchanged: &[&str],
) -> Decoded {
    Decoded::Change(ChangeEvent {
        op,
        before: (!before.is_null()).then(|| map(before)),
        after: (!after.is_null()).then(|| map(after)),
        unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
        source: Source {
            db: "postgres".into(),
            schema: "cdcfx".into(),
            table: table.into(),
            lsn: lsn(at),
            txid,
            commit_ts: format!("2026-11-26T09:10:56.{ts}Z"),
        },
    })
}

/// A row of cdcfx.a with the given id, name and big, the other columns NULL.
fn a_row(id: i64, name: &str, big: Option<&str>) -> Value {
    let mut row = json!({"id": id, "name": name, "mood": null, "amount": null, "ts": null,
                         "doc": null, "tags": null, "raw": null, "big": big});
    if big.is_none() {
        row["big"] = Value::Null;
    }
    row
}

/// The changes of testdata/capture.sh, each value written out by hand.
fn expected_changes() -> Vec<Decoded> {
    use Op::*;
    let big1 = "0123456789abcdef".repeat(160);
    let big2 = "fedcba9876543210".repeat(160);
    let one = |name: &str| {
        json!({"id": 1, "name": name, "mood": "ok", "amount": "12.50", "ts": "2026-11-26T09:00:00.123456Z",
               "doc": {"a": 1, "b": [true, null]}, "tags": [1, 2, null], "raw": "AP8="})
    };
    let mut one_insert = one("one");
    one_insert["big"] = json!(big1);
    let mut two_moved = a_row(3, "two", None);
    two_moved.as_object_mut().map(|m| m.remove("big"));
    let b = |id: i64, v: &str| json!({"id": id, "v": v, "big": big1});
    let n = Value::Null;
    vec![
        ev(
            Insert,
            ("a", "0/153D5D8", 743, "761863"),
            n.clone(),
            one_insert,
            &[],
        ),
        ev(
            Insert,
            ("a", "0/153E258", 743, "761863"),
            n.clone(),
            a_row(2, "two", Some(&big2)),
            &[],
        ),
        ev(
            Insert,
            ("b", "0/153EE60", 743, "761863"),
            n.clone(),
            b(1, "x"),
            &[],
        ),
        // DEFAULT identity: no old row, the TOASTed column unknown.
        ev(
            Update,
            ("a", "0/153EFB8", 744, "762362"),
            n.clone(),
            one("uno"),
            &["big"],
        ),
        // FULL: the old row fills it.
        ev(
            Update,
            ("b", "0/153F0C0", 744, "762362"),
            b(1, "x"),
            b(1, "y"),
            &[],
        ),
        // Key changes: a delete of the old key and an insert, at one LSN.
        ev(
            Delete,
            ("a", "0/153FB98", 745, "762426"),
            json!({"id": 2}),
            n.clone(),
            &[],
        ),
        ev(
            Insert,
            ("a", "0/153FB98", 745, "762426"),
            n.clone(),
            two_moved,
            &["big"],
        ),
        ev(
            Delete,
            ("b", "0/153FCB8", 746, "762474"),
            b(1, "y"),
            n.clone(),
            &[],
        ),
        ev(
            Insert,
            ("b", "0/153FCB8", 746, "762474"),
            n.clone(),
            b(2, "y"),
            &[],
        ),
        ev(
            Delete,
            ("a", "0/15407B0", 747, "762733"),
            json!({"id": 3}),
            n.clone(),
            &[],
        ),
        ev(
            Delete,
            ("b", "0/1540868", 747, "762733"),
            b(2, "y"),
            n.clone(),
            &[],
        ),
        ev(
            Truncate,
            ("a", "0/1542A90", 748, "763710"),
            n.clone(),
            n.clone(),
            &[],
        ),
        ev(
            Truncate,
            ("b", "0/1542A90", 748, "763710"),
            n.clone(),
            n.clone(),
            &[],
        ),
        ev(
            Insert,
            ("a", "0/1542FC8", 750, "767075"),
            n.clone(),
            a_row(10, "from origin", None),
            &[],
        ),
    ]
}

#[test]
fn fixture_events_exactly() {
    let changes: Vec<Decoded> = fixture_decoded()
        .into_iter()
        .filter(|d| matches!(d, Decoded::Change(_)))
        .collect();
    let want = expected_changes();
    assert_eq!(changes.len(), want.len());
    for (i, (got, want)) in changes.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "change {i}");
    }
}

#[test]
fn fixture_transactions_and_messages() {
    let other: Vec<Decoded> = fixture_decoded()
        .into_iter()
        .filter(|d| !matches!(d, Decoded::Change(_)))
        .collect();
    let shape: Vec<String> = other
        .iter()
        .map(|d| match d {
            Decoded::Begin { xid, .. } => format!("B{xid}"),
            Decoded::Commit { end_lsn, .. } => format!("C{}", format_lsn(*end_lsn)),
            Decoded::Message {
                transactional,
                prefix,
                content,
                lsn,
            } => format!(
                "M{} {prefix} {} {}",
                u8::from(*transactional),
                String::from_utf8_lossy(content),
                format_lsn(*lsn)
            ),
            Decoded::Change(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "B743",
            "C0/153EF80",
            "B744",
            "C0/153FB60",
            "B745",
            "C0/153FC80",
            "B746",
            "C0/15407B0",
            "B747",
            "M1 sluice x 0/1541368",
            "C0/1541398",
            "M0 sluice nt 0/15413D8",
            "B748",
            "C0/1542D60",
            "B750",
            "C0/1543108"
        ]
    );
    // Begin and Commit agree on the commit record and time.
    for pair in other.chunks(2) {
        if let [Decoded::Begin {
            final_lsn,
            commit_ts,
            ..
        }, Decoded::Commit {
            commit_lsn,
            end_lsn,
            commit_ts: ts,
            ..
        }] = pair
        {
            assert_eq!((final_lsn, commit_ts), (commit_lsn, ts));
            assert!(commit_lsn < end_lsn);
        }
    }
}

/// test_decoding's account of the same WAL: the LSN, xid and commit time of every change, and
/// the table and kind of change, as an oracle independent of pgoutput.
#[test]
fn fixture_agrees_with_test_decoding() {
    let mut want = Vec::new();
    let mut commit_ts = std::collections::HashMap::new();
    for line in TEST_DECODING.lines() {
        let mut f = line.splitn(3, '|');
        let (at, xid, text) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        if let Some(ts) = text.strip_prefix(&format!("COMMIT {xid} (at ")) {
            let ts = ts.trim_end_matches(')');
            commit_ts.insert(
                xid.parse::<u32>().expect("xid"),
                timestamp(ts, true).expect("timestamp"),
            );
        }
        let Some(rest) = text.strip_prefix("table ") else {
            continue;
        };
        let (tables, kind) = rest.split_once(": ").expect("table list: KIND");
        let kind = kind.split(':').next().unwrap_or("");
        for t in tables.split(", ") {
            want.push((
                lsn(at),
                xid.parse::<u32>().expect("xid"),
                t.to_string(),
                kind.to_string(),
            ));
        }
    }
    let mut got = Vec::new();
    for d in fixture_decoded() {
        let Decoded::Change(e) = d else { continue };
        assert_eq!(
            Some(&e.source.commit_ts),
            commit_ts.get(&e.source.txid),
            "{:?}",
            e.source
        );
        let kind = match e.op {
            Op::Insert => "INSERT",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Truncate => "TRUNCATE",
            Op::Read => "READ",
        };
        got.push((
            e.source.lsn,
            e.source.txid,
            format!("{}.{}", e.source.schema, e.source.table),
            kind.to_string(),
        ));
    }
    // Our key changes are a DELETE and an INSERT where test_decoding has one UPDATE.
    let mut merged: Vec<(u64, u32, String, String)> = Vec::new();
    for g in got {
        match merged.last_mut() {
            Some(last)
                if last.0 == g.0 && last.2 == g.2 && last.3 == "DELETE" && g.3 == "INSERT" =>
            {
                last.3 = "UPDATE".into()
            }
            _ => merged.push(g),
        }
    }
    assert_eq!(merged, want);
}

#[test]
fn same_events_whatever_the_chunking() {
    let whole = fixture_decoded();
    for chunk in [1, 3, 100, 4096] {
        let rows = rows_chunked(FIXTURE, chunk).expect("decodes");
        assert_eq!(
            decode_all(options(), &rows).expect("decodes"),
            whole,
            "chunk {chunk}"
        );
    }
}

#[test]
fn events_round_trip_as_stream_records() {
    for d in fixture_decoded() {
        let Decoded::Change(e) = d else { continue };
        let bytes = serde_json::to_vec(&e).expect("serialises");
        assert_eq!(
            crate::cdc::event::StreamRecord::from_slice(&bytes),
            Ok(crate::cdc::event::StreamRecord::Event(e))
        );
    }
}

#[test]
fn relation_columns_and_keys() {
    let rows = rows_chunked(FIXTURE, 1 << 20).expect("decodes");
    let mut d = ChangeDecoder::new(DecoderOptions {
        db: "x".into(),
        primary_keys: HashMap::new(),
    });
    let mut out = Vec::new();
    for row in &rows[..7] {
        d.decode(row, &mut out).expect("decodes");
    }
    assert!(d.in_transaction());
    let names: Vec<&str> = d
        .relation_columns("cdcfx", "b")
        .expect("described")
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "v", "big"]);
    assert_eq!(d.relation_columns("cdcfx", "a").map(|c| c.len()), Some(9));
    assert_eq!(d.relation_columns("cdcfx", "zz"), None);
    // Without catalog keys: DEFAULT identity falls back to the flags, FULL has no key.
    assert_eq!(d.key_columns("cdcfx", "a"), Some(&["id".to_string()][..]));
    assert_eq!(d.key_columns("cdcfx", "b"), Some(&[][..]));
}

/// Without catalog keys a FULL-identity table has no key: its key change stays one update.
#[test]
fn full_identity_without_catalog_key_keeps_updates() {
    let rows = rows_chunked(FIXTURE, 1 << 20).expect("decodes");
    let mut opts = options();
    opts.primary_keys
        .remove(&("cdcfx".to_string(), "b".to_string()));
    let events = decode_all(opts, &rows).expect("decodes");
    let at = lsn("0/153FCB8");
    let ops: Vec<Op> = events
        .iter()
        .filter_map(|d| match d {
            Decoded::Change(e) if e.source.lsn == at => Some(e.op),
            _ => None,
        })
        .collect();
    assert_eq!(ops, [Op::Update]);
}

fn relation_msg(oid: u32) -> Vec<u8> {
    encode(&Message::Relation(RelationMsg {
        oid,
        namespace: "s",
        name: "t",
        replica_identity: b'd',
        columns: vec![
            RelationColumn {
                key: true,
                name: "id",
                type_oid: 23,
                type_mod: -1,
            },
            RelationColumn {
                key: false,
                name: "v",
                type_oid: 23,
                type_mod: -1,
            },
        ],
    }))
}

fn begin() -> Vec<u8> {
    encode(&Message::Begin(Begin {
        final_lsn: 100,
        commit_ts: 0,
        xid: 9,
    }))
}

fn insert(oid: u32, v: &[u8]) -> Vec<u8> {
    encode(&Message::Insert(Insert {
        relation: oid,
        new: vec![Column::Text(b"1"), Column::Text(v)],
    }))
}

fn run(msgs: Vec<Vec<u8>>) -> Result<Vec<Decoded>, CdcDecodeError> {
    let rows: Vec<PeekedRow> = msgs
        .into_iter()
        .enumerate()
        .map(|(i, m)| PeekedRow {
            lsn: 50 + i as u64,
            xid: 9,
            data: m.into(),
        })
        .collect();
    decode_all(DecoderOptions::default(), &rows)
}

#[test]
fn out_of_order_and_bad_rows_are_errors_with_the_lsn() {
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![relation_msg(1), insert(1, b"2")], "Insert at LSN 0/33: outside a transaction"),
        (vec![begin(), insert(7, b"2")], "change at LSN 0/33 is for relation OID 7"),
        (vec![begin(), begin()], "Begin at LSN 0/33: inside a transaction"),
        (vec![encode(&Message::Commit(pgoutput::Commit { flags: 0, commit_lsn: 1, end_lsn: 2, commit_ts: 0 }))], "Commit at LSN 0/32: without a Begin"),
        (vec![begin(), relation_msg(1), insert(1, b"\xff")], "column v (type OID 23): the value is not UTF-8"),
        (
            vec![begin(), relation_msg(1), encode(&Message::Insert(Insert { relation: 1, new: vec![Column::Null] }))],
            "the tuple has 1 columns, the Relation message 2",
        ),
        (vec![begin(), b"I\0\0".to_vec()], "message at LSN 0/33: input ends while reading Insert relation OID: 4 bytes needed, 2 available"),
        (
            vec![encode(&Message::Message(pgoutput::LogicalMessage { transactional: true, lsn: 1, prefix: "p", content: b"" }))],
            "transactional Message at LSN 0/32: outside a transaction",
        ),
        (
            vec![encode(&Message::Truncate(Truncate { options: 0, relations: vec![1] }))],
            "Truncate at LSN 0/32: outside a transaction",
        ),
    ];
    for (msgs, want) in cases {
        let err = run(msgs).expect_err(want).to_string();
        assert!(err.contains(want), "{err}\n want {want}");
    }
    // A value PostgreSQL sent but the typing cannot read goes on as its text: an error would
    // stop every run at this change and hold the slot forever.
    let out = run(vec![begin(), relation_msg(1), insert(1, b"x2")]).expect("a value as text");
    let after = out.iter().find_map(|d| match d {
        Decoded::Change(e) => e.after.clone(),
        _ => None,
    });
    assert_eq!(
        after.and_then(|a| a.get("v").cloned()),
        Some(serde_json::json!("x2"))
    );
    // A catalog key that the relation does not have.
    let mut opts = DecoderOptions::default();
    opts.primary_keys
        .insert(("s".into(), "t".into()), vec!["nope".into()]);
    let row = PeekedRow {
        lsn: 1,
        xid: 0,
        data: relation_msg(1).into(),
    };
    let err = ChangeDecoder::new(opts)
        .decode(&row, &mut Vec::new())
        .expect_err("bad key");
    assert!(
        err.to_string().contains("primary-key column nope of s.t"),
        "{err}"
    );
}

#[test]
fn commit_time_from_the_postgres_epoch() {
    assert_eq!(
        pg_timestamp(0, 0).as_deref(),
        Ok("2000-01-01T00:00:00.000000Z")
    );
    assert_eq!(
        pg_timestamp(-1, 0).as_deref(),
        Ok("1999-12-31T23:59:59.999999Z")
    );
    assert_eq!(
        pg_timestamp(848_999_456_761_863, 0).as_deref(),
        Ok("2026-11-26T09:10:56.761863Z")
    );
    assert!(pg_timestamp(i64::MAX, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The decoded events do not depend on how the COPY stream was split.
    #[test]
    fn any_split_same_events(splits in proptest::collection::vec(0usize..3000, 0..30)) {
        let rows = rows_split(FIXTURE, &splits).expect("decodes");
        prop_assert_eq!(decode_all(options(), &rows).expect("decodes"), fixture_decoded());
    }

    /// Arbitrary rows after a valid prefix of the stream (relations and an open transaction)
    /// never panic the decoder.
    #[test]
    fn any_rows_no_panic(
        prefix in 0usize..36,
        rows in proptest::collection::vec((proptest::sample::select(b"BCORYIUDTM".to_vec()), proptest::collection::vec(any::<u8>(), 0..60)), 0..8),
    ) {
        let mut d = ChangeDecoder::new(options());
        let mut out = Vec::new();
        for row in rows_chunked(FIXTURE, 1 << 20).expect("decodes").iter().take(prefix) {
            d.decode(row, &mut out).expect("the fixture decodes");
        }
        for (i, (tag, body)) in rows.into_iter().enumerate() {
            let mut data = vec![tag];
            data.extend(body);
            let _ = d.decode(&PeekedRow { lsn: i as u64, xid: 0, data: data.into() }, &mut out);
        }
    }

    /// A captured message with one byte changed, decoded in its place, never panics.
    #[test]
    fn corrupted_fixture_rows_no_panic(which in 0usize..36, at in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let mut rows = rows_chunked(FIXTURE, 1 << 20).expect("decodes");
        let mut data = rows[which].data.to_vec();
        let i = at.index(data.len());
        data[i] = byte;
        rows[which].data = data.into();
        let mut d = ChangeDecoder::new(options());
        let mut out = Vec::new();
        for row in &rows {
            let _ = d.decode(row, &mut out);
        }
    }
}

use proptest::prelude::*;

use super::test_wire::encode;
use super::*;
use crate::cdc::copy::tests::{rows_chunked, FIXTURE};

const OID_A: u32 = 16395;
const OID_B: u32 = 16402;
const OID_MOOD: u32 = 16391;

fn fixture_data() -> Vec<bytes::Bytes> {
    rows_chunked(FIXTURE, 4096)
        .expect("the fixture decodes")
        .into_iter()
        .map(|r| r.data)
        .collect()
}

#[test]
fn fixture_message_sequence() {
    let tags: String = fixture_data().iter().map(|d| char::from(d[0])).collect();
    assert_eq!(tags, "BYRIIRICBUUCBUCBUCBDDMCMBYRRTCBOYRIC");
    for d in fixture_data() {
        let m = parse(&d).expect("every captured message parses");
        assert_eq!(
            encode(&m),
            d.to_vec(),
            "the encoder writes it back byte for byte"
        );
    }
}

#[test]
fn fixture_relations_types_and_origin() {
    let data = fixture_data();
    let Message::Relation(a) = parse(&data[2]).expect("parses") else {
        panic!("row 2 is a Relation")
    };
    assert_eq!(
        (a.oid, a.namespace, a.name, a.replica_identity),
        (OID_A, "cdcfx", "a", b'd')
    );
    let cols: Vec<(&str, u32, bool)> = a
        .columns
        .iter()
        .map(|c| (c.name, c.type_oid, c.key))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id", 23, true),
            ("name", 25, false),
            ("mood", OID_MOOD, false),
            ("amount", 1700, false),
            ("ts", 1184, false),
            ("doc", 3802, false),
            ("tags", 1007, false),
            ("raw", 17, false),
            ("big", 25, false),
        ]
    );
    // numeric(12,2): typmod ((12 << 16) | 2) + 4.
    assert_eq!(a.columns[3].type_mod, (12 << 16 | 2) + 4);
    let Message::Relation(b) = parse(&data[5]).expect("parses") else {
        panic!("row 5 is a Relation")
    };
    assert_eq!((b.oid, b.replica_identity), (OID_B, b'f'));
    assert!(b.columns.iter().all(|c| c.key), "FULL flags every column");
    assert_eq!(
        parse(&data[1]),
        Ok(Message::Type(TypeInfo {
            oid: OID_MOOD,
            namespace: "cdcfx",
            name: "mood"
        }))
    );
    assert_eq!(
        parse(&data[31]),
        Ok(Message::Origin(Origin {
            commit_lsn: 0xABCDEF,
            name: "cdcfx_origin"
        }))
    );
}

#[test]
fn fixture_changes() {
    let data = fixture_data();
    let Message::Begin(begin) = parse(&data[0]).expect("parses") else {
        panic!("Begin")
    };
    assert_eq!(begin.xid, 743);
    let Message::Commit(commit) = parse(&data[7]).expect("parses") else {
        panic!("Commit")
    };
    assert_eq!(
        (commit.commit_lsn, commit.commit_ts),
        (begin.final_lsn, begin.commit_ts)
    );
    assert_eq!(commit.end_lsn, 0x153EF80, "the Commit row's LSN");

    let Message::Update(default_update) = parse(&data[9]).expect("parses") else {
        panic!("Update")
    };
    assert_eq!(
        default_update.old, None,
        "DEFAULT identity, key kept: no old row"
    );
    assert_eq!(default_update.new[1], Column::Text(b"uno"));
    assert_eq!(default_update.new[8], Column::UnchangedToast);

    let Message::Update(full_update) = parse(&data[10]).expect("parses") else {
        panic!("Update")
    };
    let old = full_update.old.expect("FULL sends the old row");
    assert_eq!(old.kind, OldKind::Full);
    assert_eq!(
        old.columns[2],
        Column::Text("0123456789abcdef".repeat(160).as_bytes())
    );
    assert_eq!(full_update.new[2], Column::UnchangedToast);

    let Message::Update(key_change) = parse(&data[13]).expect("parses") else {
        panic!("Update")
    };
    let old = key_change.old.expect("a key change sends the old key");
    assert_eq!(old.kind, OldKind::Key);
    assert_eq!(old.columns[0], Column::Text(b"2"));
    assert!(old.columns[1..].iter().all(|c| *c == Column::Null));

    assert_eq!(
        parse(&data[28]),
        Ok(Message::Truncate(Truncate {
            options: 0,
            relations: vec![OID_A, OID_B]
        }))
    );
    assert_eq!(
        parse(&data[21]),
        Ok(Message::Message(LogicalMessage {
            transactional: true,
            lsn: 0x1541368,
            prefix: "sluice",
            content: b"x"
        }))
    );
    let Message::Message(nt) = parse(&data[23]).expect("parses") else {
        panic!("Message")
    };
    assert_eq!((nt.transactional, nt.content), (false, &b"nt"[..]));
}

#[test]
fn every_prefix_of_every_message_is_truncated() {
    for d in fixture_data() {
        for cut in 0..d.len() {
            match parse(&d[..cut]) {
                Err(CdcDecodeError::Truncated {
                    needed, available, ..
                }) => assert!(needed > available),
                other => panic!("{:?} cut at {cut}: {other:?}", char::from(d[0])),
            }
        }
        let mut longer = d.to_vec();
        longer.push(0);
        assert!(matches!(
            parse(&longer),
            Err(CdcDecodeError::Invalid { .. })
        ));
    }
}

#[test]
fn declared_lengths_are_checked_before_allocating() {
    // A text column that claims 2 GiB with 3 bytes behind it.
    let mut m = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
    m.extend(i32::MAX.to_be_bytes());
    m.extend(b"abc");
    assert_eq!(
        parse(&m),
        Err(CdcDecodeError::Truncated {
            reading: "TupleData text",
            needed: i32::MAX as usize,
            available: 3
        })
    );
    // A tuple of 32,767 columns in 2 bytes: refused before the Vec is made.
    let mut m = vec![b'I', 0, 0, 0, 1, b'N'];
    m.extend(i16::MAX.to_be_bytes());
    m.extend(b"nn");
    let err = parse(&m).expect_err("too few bytes");
    assert_eq!(
        err.to_string(),
        "input ends while reading TupleData column count: 32767 bytes needed, 2 available"
    );
    // A truncate of 2^31 - 1 relations.
    let mut m = vec![b'T'];
    m.extend(i32::MAX.to_be_bytes());
    m.push(0);
    m.extend(7u32.to_be_bytes());
    assert!(matches!(
        parse(&m),
        Err(CdcDecodeError::Truncated { available: 4, .. })
    ));
    // Negative lengths and counts.
    let mut m = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
    m.extend((-5i32).to_be_bytes());
    assert!(matches!(parse(&m), Err(CdcDecodeError::Invalid { .. })));
    let m = [b'I', 0, 0, 0, 1, b'N', 0xff, 0xfe];
    assert!(matches!(parse(&m), Err(CdcDecodeError::Invalid { .. })));
}

#[test]
fn bad_tags_and_strings() {
    for m in [
        &b"Z"[..],
        b"I\0\0\0\x01X\0\0",
        b"U\0\0\0\x01K\0\0X\0\0",
        b"D\0\0\0\x01N\0\0",
        b"I\0\0\0\x01N\0\x01b\0\0\0\0",
        b"Y\0\0\0\x01\xff\xfe\0t\0",
    ] {
        assert!(
            matches!(parse(m), Err(CdcDecodeError::Invalid { .. })),
            "{m:?}"
        );
    }
    assert_eq!(
        parse(b""),
        Err(CdcDecodeError::Truncated {
            reading: "message tag",
            needed: 1,
            available: 0
        })
    );
}

#[test]
fn lsn_text() {
    assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
    assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
    assert_eq!(parse_lsn("0/0"), Some(0));
    assert_eq!(parse_lsn("x/1"), None);
    assert_eq!(parse_lsn("1"), None);
}

/// Owned parts of a message, from which a borrowed `Message` is built for the round trip.
#[derive(Debug, Clone)]
enum Owned {
    Begin(u64, i64, u32),
    Commit(u8, u64, u64, i64),
    Origin(u64, String),
    Relation(u32, String, String, u8, Vec<(bool, String, u32, i32)>),
    Type(u32, String, String),
    Insert(u32, Vec<Col>),
    Update(u32, Option<(bool, Vec<Col>)>, Vec<Col>),
    Delete(u32, bool, Vec<Col>),
    Truncate(u8, Vec<u32>),
    Message(bool, u64, String, Vec<u8>),
}

#[derive(Debug, Clone)]
enum Col {
    Null,
    Unchanged,
    Text(Vec<u8>),
}

fn cols(v: &[Col]) -> Vec<Column<'_>> {
    v.iter()
        .map(|c| match c {
            Col::Null => Column::Null,
            Col::Unchanged => Column::UnchangedToast,
            Col::Text(t) => Column::Text(t),
        })
        .collect()
}

fn old(full: bool, v: &[Col]) -> OldTuple<'_> {
    OldTuple {
        kind: if full { OldKind::Full } else { OldKind::Key },
        columns: cols(v),
    }
}

fn borrowed(o: &Owned) -> Message<'_> {
    match o {
        Owned::Begin(l, t, x) => Message::Begin(Begin {
            final_lsn: *l,
            commit_ts: *t,
            xid: *x,
        }),
        Owned::Commit(f, c, e, t) => Message::Commit(Commit {
            flags: *f,
            commit_lsn: *c,
            end_lsn: *e,
            commit_ts: *t,
        }),
        Owned::Origin(l, n) => Message::Origin(Origin {
            commit_lsn: *l,
            name: n,
        }),
        Owned::Relation(oid, ns, name, ri, cs) => Message::Relation(Relation {
            oid: *oid,
            namespace: ns,
            name,
            replica_identity: *ri,
            columns: cs
                .iter()
                .map(|(k, n, t, m)| RelationColumn {
                    key: *k,
                    name: n,
                    type_oid: *t,
                    type_mod: *m,
                })
                .collect(),
        }),
        Owned::Type(oid, ns, n) => Message::Type(TypeInfo {
            oid: *oid,
            namespace: ns,
            name: n,
        }),
        Owned::Insert(r, c) => Message::Insert(Insert {
            relation: *r,
            new: cols(c),
        }),
        Owned::Update(r, o, n) => Message::Update(Update {
            relation: *r,
            old: o.as_ref().map(|(f, c)| old(*f, c)),
            new: cols(n),
        }),
        Owned::Delete(r, f, c) => Message::Delete(Delete {
            relation: *r,
            old: old(*f, c),
        }),
        Owned::Truncate(opt, rels) => Message::Truncate(Truncate {
            options: *opt,
            relations: rels.clone(),
        }),
        Owned::Message(t, l, p, c) => Message::Message(LogicalMessage {
            transactional: *t,
            lsn: *l,
            prefix: p,
            content: c,
        }),
    }
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..6)
        .prop_map(|v| v.into_iter().collect())
}

fn tuple() -> impl Strategy<Value = Vec<Col>> {
    let col = prop_oneof![
        Just(Col::Null),
        Just(Col::Unchanged),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Col::Text),
    ];
    proptest::collection::vec(col, 0..6)
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(a, b, c)| Owned::Begin(a, b, c)),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>())
            .prop_map(|(a, b, c, d)| Owned::Commit(a, b, c, d)),
        (any::<u64>(), name()).prop_map(|(a, b)| Owned::Origin(a, b)),
        (
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            proptest::collection::vec((any::<bool>(), name(), any::<u32>(), any::<i32>()), 0..5)
        )
            .prop_map(|(a, b, c, d, e)| Owned::Relation(a, b, c, d, e)),
        (any::<u32>(), name(), name()).prop_map(|(a, b, c)| Owned::Type(a, b, c)),
        (any::<u32>(), tuple()).prop_map(|(a, b)| Owned::Insert(a, b)),
        (
            any::<u32>(),
            proptest::option::of((any::<bool>(), tuple())),
            tuple()
        )
            .prop_map(|(a, b, c)| Owned::Update(a, b, c)),
        (any::<u32>(), any::<bool>(), tuple()).prop_map(|(a, b, c)| Owned::Delete(a, b, c)),
        (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..5))
            .prop_map(|(a, b)| Owned::Truncate(a, b)),
        (
            any::<bool>(),
            any::<u64>(),
            name(),
            proptest::collection::vec(any::<u8>(), 0..10)
        )
            .prop_map(|(a, b, c, d)| Owned::Message(a, b, c, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// decode(encode(m)) == m for every kind of message.
    #[test]
    fn round_trip(o in owned()) {
        let m = borrowed(&o);
        let bytes = encode(&m);
        prop_assert_eq!(parse(&bytes), Ok(m));
    }

    /// Arbitrary bytes, alone or after a valid tag, never panic.
    #[test]
    fn any_bytes_no_panic(
        tag in proptest::sample::select(b"BCORYIUDTMZ".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = parse(&body);
        let mut m = vec![tag];
        m.extend(body);
        let _ = parse(&m);
    }

    /// Every captured message with one byte changed never panics.
    #[test]
    fn corrupted_messages_no_panic(which in 0usize..36, at in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let data = fixture_data();
        let mut m = data[which].to_vec();
        let i = at.index(m.len());
        m[i] = byte;
        let _ = parse(&m);
    }
}

//! The fast path's events against the Map path's, row by row: the same result (or the same
//! error), the same Begin, Commit and Message items, and for every change event a JSON line
//! that reads back as the Map path's `ChangeEvent` — over the captured fixture, a table of
//! every type with the type test data, and random relations, tuples and changes.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::Value;

use super::tests::{pg_text, TYPES};
use crate::cdc::copy::tests::{rows_chunked, FIXTURE};
use crate::cdc::copy::PeekedRow;
use crate::cdc::decode::{ChangeDecoder, Decoded, DecoderOptions};
use crate::cdc::event::StreamRecord;
use crate::cdc::fastjson::JsonEvents;
use crate::cdc::pgoutput::test_wire::encode;
use crate::cdc::pgoutput::{
    Begin, Column, Commit, Delete, Insert, Message, OldKind, OldTuple, Relation, RelationColumn,
    Truncate, Update,
};
use crate::cdc::value::oid;
use crate::cdc::value::tests::{array_cases, scalar_cases, timestamp_cases, INVALID};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// With `serde_json::to_value` of the Map path's event.
    Exact,
    /// With the Map path's event written and read back: floats read through serde_json's
    /// reader, which is not correctly rounded (see tests/fastjson.rs).
    AsRead,
}

/// Decodes `rows` on both paths and checks that they agree; returns the number of events.
fn assert_both_paths_agree(opts: &DecoderOptions, rows: &[PeekedRow], compare: Compare) -> usize {
    let mut map = ChangeDecoder::new(opts.clone());
    let mut fast = ChangeDecoder::new(opts.clone());
    let mut json = JsonEvents::default();
    let mut events = 0;
    for row in rows {
        let (mut map_out, mut fast_out) = (Vec::new(), Vec::new());
        json.clear();
        let m = map.decode(row, &mut map_out);
        let f = fast.decode_json(row, &mut fast_out, &mut json);
        assert_eq!(f, m, "row at LSN {}", row.lsn);
        let (changes, other): (Vec<Decoded>, Vec<Decoded>) = map_out
            .into_iter()
            .partition(|d| matches!(d, Decoded::Change(_)));
        assert_eq!(fast_out, other);
        assert_eq!(json.events.len(), changes.len());
        let breaks = json.bytes.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(breaks, changes.len(), "one line per event");
        for (je, d) in json.events.iter().zip(&changes) {
            let Decoded::Change(ev) = d else {
                unreachable!("partitioned")
            };
            assert_eq!((je.op, je.lsn), (ev.op, ev.source.lsn));
            let line = json.event(je);
            assert_eq!(json.bytes.get(je.end), Some(&b'\n'));
            let got: Value = serde_json::from_slice(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
            let want = match compare {
                Compare::Exact => serde_json::to_value(ev).expect("an event is JSON"),
                Compare::AsRead => {
                    let text = serde_json::to_string(ev).expect("an event is JSON");
                    serde_json::from_str(&text).expect("reads back")
                }
            };
            if compare == Compare::AsRead {
                // Both sides are read back through serde_json, whose float parser (without
                // `float_roundtrip`) may land one ulp off for 17-digit texts: floats compare
                // within one ulp, everything else exactly.
                assert!(
                    same_within_ulp(&got, &want),
                    "{}\n got {got:?}\n want {want:?}",
                    String::from_utf8_lossy(line)
                );
            } else {
                assert_eq!(got, want, "{}", String::from_utf8_lossy(line));
            }
            if compare == Compare::Exact {
                // The sink reads it as the same event.
                assert_eq!(
                    StreamRecord::from_slice(line),
                    Ok(StreamRecord::Event(ev.clone()))
                );
            }
            events += 1;
        }
    }
    events
}

fn fixture_options() -> DecoderOptions {
    DecoderOptions {
        db: "postgres".into(),
        primary_keys: HashMap::from([
            (("cdcfx".into(), "a".into()), vec!["id".into()]),
            (("cdcfx".into(), "b".into()), vec!["id".into()]),
        ]),
    }
}

/// The captured changes: TOAST left alone (DEFAULT and FULL), key changes of both
/// identities, deletes, a truncate of two tables, an origin; with the catalog's keys and
/// without (a FULL table then has no key, and its key change stays one update).
#[test]
fn fixture_events_same_on_both_paths() {
    let rows = rows_chunked(FIXTURE, 1 << 20).expect("the fixture decodes");
    assert_eq!(
        assert_both_paths_agree(&fixture_options(), &rows, Compare::Exact),
        14
    );
    let mut no_keys = fixture_options();
    no_keys.primary_keys.clear();
    assert_eq!(assert_both_paths_agree(&no_keys, &rows, Compare::Exact), 13);
}

const REL: u32 = 16384;
/// Column names, the second one in need of escaping.
const NAMES: [&str; 6] = ["id", "wé\"ird\\ name\n", "c2", "c3", "c4", "c5"];

fn row(i: usize, data: Vec<u8>) -> PeekedRow {
    PeekedRow {
        lsn: 0x100 + 8 * i as u64,
        xid: 7,
        data: data.into(),
    }
}

/// Begin, the Relation message, `changes`, Commit.
fn transaction(relation: Relation<'_>, changes: Vec<Vec<u8>>) -> Vec<PeekedRow> {
    let ts = 848_999_456_761_863;
    let mut msgs = vec![
        encode(&Message::Begin(Begin {
            final_lsn: 1,
            commit_ts: ts,
            xid: 7,
        })),
        encode(&Message::Relation(relation)),
    ];
    msgs.extend(changes);
    msgs.push(encode(&Message::Commit(Commit {
        flags: 0,
        commit_lsn: 1,
        end_lsn: 2,
        commit_ts: ts,
    })));
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| row(i, m))
        .collect()
}

/// A table with a column of every type of value.rs's test data, one insert per case (its
/// text in its column, the others NULL), then an update and a delete of the full row.
#[test]
fn type_test_data_events_same_on_both_paths() {
    let mut cases: Vec<(u32, &str)> = scalar_cases()
        .into_iter()
        .chain(array_cases())
        .map(|(t, text, _)| (t, text))
        .collect();
    cases.extend(timestamp_cases().into_iter().map(|(t, text, _)| (t, text)));
    cases.extend(INVALID);
    let mut types: Vec<u32> = cases.iter().map(|c| c.0).collect();
    types.sort_unstable();
    types.dedup();
    let names: Vec<String> = types.iter().map(|t| format!("t{t}")).collect();
    let columns = types
        .iter()
        .zip(&names)
        .map(|(&t, name)| RelationColumn {
            key: true,
            name,
            type_oid: t,
            type_mod: -1,
        })
        .collect();
    let full_row: Vec<Column<'_>> = types
        .iter()
        .map(|t| match cases.iter().find(|c| c.0 == *t) {
            Some((_, text)) => Column::Text(text.as_bytes()),
            None => Column::Null,
        })
        .collect();
    let mut changes: Vec<Vec<u8>> = cases
        .iter()
        .map(|(t, text)| {
            let new = types
                .iter()
                .map(|c| match c == t {
                    true => Column::Text(text.as_bytes()),
                    false => Column::Null,
                })
                .collect();
            encode(&Message::Insert(Insert { relation: REL, new }))
        })
        .collect();
    let old = OldTuple {
        kind: OldKind::Full,
        columns: full_row.clone(),
    };
    changes.push(encode(&Message::Update(Update {
        relation: REL,
        old: Some(old.clone()),
        new: full_row.iter().map(|_| Column::UnchangedToast).collect(),
    })));
    changes.push(encode(&Message::Delete(Delete { relation: REL, old })));
    let relation = Relation {
        oid: REL,
        namespace: "s",
        name: "types",
        replica_identity: b'f',
        columns,
    };
    let opts = DecoderOptions {
        db: "postgres".into(),
        primary_keys: HashMap::new(),
    };
    let n = assert_both_paths_agree(&opts, &transaction(relation, changes), Compare::Exact);
    assert_eq!(n, cases.len() + 2);
}

/// A key change is told by value, not by text: `0` and `-0` of a float, or two spellings of
/// one JSON document, are the same key (one update); other values are a delete and an insert.
#[test]
fn key_changes_are_told_by_value() {
    let cases: [(u32, &str, &str, usize); 6] = [
        (oid::FLOAT8, "0", "-0", 1),
        (oid::FLOAT8, "1", "1.5", 2),
        (oid::JSON, "{\"a\":1}", "{\"a\": 1}", 1),
        (oid::JSON, "{\"a\":1}", "{\"a\": 2}", 2),
        (oid::INT8, "7", "7", 1),
        (oid::INT8, "7", "8", 2),
    ];
    for (t, old, new, events) in cases {
        let columns = vec![RelationColumn {
            key: true,
            name: "k",
            type_oid: t,
            type_mod: -1,
        }];
        let relation = Relation {
            oid: REL,
            namespace: "s",
            name: "t",
            replica_identity: b'd',
            columns,
        };
        let update = encode(&Message::Update(Update {
            relation: REL,
            old: Some(OldTuple {
                kind: OldKind::Key,
                columns: vec![Column::Text(old.as_bytes())],
            }),
            new: vec![Column::Text(new.as_bytes())],
        }));
        let opts = DecoderOptions::default();
        let rows = transaction(relation, vec![update]);
        assert_eq!(
            assert_both_paths_agree(&opts, &rows, Compare::Exact),
            events,
            "{old} to {new}"
        );
    }
}

#[derive(Debug, Clone)]
enum Cell {
    Null,
    Toast,
    Text(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Change {
    Insert(Vec<Cell>),
    Update {
        /// The old tuple, `O` (whole row) when true, else `K`.
        old: Option<(bool, Vec<Cell>)>,
        new: Vec<Cell>,
        /// The new row takes the old one's first two values (the key, usually): no key change.
        same_key: bool,
    },
    Delete(bool, Vec<Cell>),
    /// With a second relation that no Relation message described when true.
    Truncate(bool),
}

#[derive(Debug, Clone)]
struct Case {
    types: Vec<u32>,
    identity: Vec<bool>,
    full: bool,
    /// The catalog key: the first `pk` columns; none (the Relation's flags) with 0.
    pk: usize,
    changes: Vec<Change>,
}

fn cell(t: u32) -> BoxedStrategy<Cell> {
    prop_oneof![
        1 => Just(Cell::Null),
        1 => Just(Cell::Toast),
        6 => pg_text(t).prop_map(Cell::Text),
    ]
    .boxed()
}

fn tuple(types: &[u32]) -> Vec<BoxedStrategy<Cell>> {
    types.iter().map(|&t| cell(t)).collect()
}

fn change(types: &[u32]) -> BoxedStrategy<Change> {
    let update = (
        proptest::option::of((any::<bool>(), tuple(types))),
        tuple(types),
        any::<bool>(),
    );
    prop_oneof![
        2 => tuple(types).prop_map(Change::Insert),
        3 => update.prop_map(|(old, new, same_key)| Change::Update { old, new, same_key }),
        1 => (any::<bool>(), tuple(types)).prop_map(|(full, old)| Change::Delete(full, old)),
        1 => any::<bool>().prop_map(Change::Truncate),
    ]
    .boxed()
}

fn case() -> impl Strategy<Value = Case> {
    let column = (proptest::sample::select(TYPES.to_vec()), any::<bool>());
    (
        proptest::collection::vec(column, 1..=NAMES.len()),
        any::<bool>(),
        0usize..3,
    )
        .prop_flat_map(|(columns, full, pk)| {
            let (types, identity): (Vec<u32>, Vec<bool>) = columns.into_iter().unzip();
            let changes = proptest::collection::vec(change(&types), 1..6);
            (Just(types), Just(identity), Just(full), Just(pk), changes)
        })
        .prop_map(|(types, identity, full, pk, changes)| Case {
            types,
            identity,
            full,
            pk,
            changes,
        })
}

fn columns(cells: &[Cell]) -> Vec<Column<'_>> {
    cells
        .iter()
        .map(|c| match c {
            Cell::Null => Column::Null,
            Cell::Toast => Column::UnchangedToast,
            Cell::Text(t) => Column::Text(t),
        })
        .collect()
}

fn old_tuple(full: bool, cells: &[Cell]) -> OldTuple<'_> {
    let kind = if full { OldKind::Full } else { OldKind::Key };
    OldTuple {
        kind,
        columns: columns(cells),
    }
}

fn encode_change(c: &Change) -> Vec<u8> {
    let msg = match c {
        Change::Insert(new) => Message::Insert(Insert {
            relation: REL,
            new: columns(new),
        }),
        Change::Update { old, new, same_key } => {
            let mut new = columns(new);
            if let (Some((_, old)), true) = (old, same_key) {
                for (n, o) in new.iter_mut().zip(columns(old)).take(2) {
                    *n = o;
                }
            }
            Message::Update(Update {
                relation: REL,
                old: old.as_ref().map(|(full, cells)| old_tuple(*full, cells)),
                new,
            })
        }
        Change::Delete(full, old) => Message::Delete(Delete {
            relation: REL,
            old: old_tuple(*full, old),
        }),
        Change::Truncate(unknown) => Message::Truncate(Truncate {
            options: 0,
            relations: if *unknown { vec![REL, 999] } else { vec![REL] },
        }),
    };
    encode(&msg)
}

fn case_rows(case: &Case) -> (DecoderOptions, Vec<PeekedRow>) {
    let columns = case
        .types
        .iter()
        .zip(&case.identity)
        .zip(NAMES)
        .map(|((&t, &identity), name)| RelationColumn {
            key: case.full || identity,
            name,
            type_oid: t,
            type_mod: -1,
        })
        .collect();
    let relation = Relation {
        oid: REL,
        namespace: "s\"ch",
        name: "t",
        replica_identity: if case.full { b'f' } else { b'd' },
        columns,
    };
    let mut primary_keys = HashMap::new();
    if case.pk > 0 {
        let key = NAMES[..case.pk.min(case.types.len())]
            .iter()
            .map(|n| n.to_string())
            .collect();
        primary_keys.insert(("s\"ch".to_string(), "t".to_string()), key);
    }
    let opts = DecoderOptions {
        db: "d\"b".into(),
        primary_keys,
    };
    let changes = case.changes.iter().map(encode_change).collect();
    (opts, transaction(relation, changes))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random relations (types, identity flags, DEFAULT or FULL, catalog keys or none) and
    /// random changes of random tuples (NULLs, unchanged TOAST, PostgreSQL texts, odd texts,
    /// bytes that are not UTF-8): both paths agree on every row.
    #[test]
    fn random_changes_same_on_both_paths(case in case()) {
        let (opts, rows) = case_rows(&case);
        assert_both_paths_agree(&opts, &rows, Compare::AsRead);
    }
}

/// JSON equality, floats within one ulp (see the caller).
fn same_within_ulp(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x.to_bits() as i64 - y.to_bits() as i64).abs() <= 1
                }
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_within_ulp(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_within_ulp(v, w)))
        }
        _ => a == b,
    }
}

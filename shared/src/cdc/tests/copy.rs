use proptest::prelude::*;

use super::*;
use crate::cdc::pgoutput::test_wire::copy_stream;
use crate::cdc::pgoutput::{format_lsn, parse_lsn};

/// A real peek (see testdata/capture.sh).
pub(crate) const FIXTURE: &[u8] = include_bytes!("../testdata/dml.copy");
/// The same changes through test_decoding: `lsn|xid|text` per line.
pub(crate) const TEST_DECODING: &str = include_str!("../testdata/dml.test_decoding.txt");

/// `input` fed in the given chunk lengths (the rest in one chunk), every row drained after
/// each push, then `finish`.
pub(crate) fn rows_split(input: &[u8], splits: &[usize]) -> Result<Vec<PeekedRow>, CdcDecodeError> {
    let mut frames = CopyFrames::new();
    let mut out = Vec::new();
    let mut rest = input;
    for &n in splits {
        let n = n.min(rest.len());
        frames.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(row) = frames.next_row()? {
            out.push(row);
        }
    }
    frames.push(rest);
    while let Some(row) = frames.next_row()? {
        out.push(row);
    }
    frames.finish()?;
    Ok(out)
}

pub(crate) fn rows_chunked(input: &[u8], chunk: usize) -> Result<Vec<PeekedRow>, CdcDecodeError> {
    let splits = vec![chunk; input.len() / chunk + 1];
    rows_split(input, &splits)
}

/// (lsn, xid) of each line of the test_decoding capture.
pub(crate) fn test_decoding_positions() -> Vec<(u64, u32)> {
    TEST_DECODING
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '|');
            let lsn = parse_lsn(f.next().unwrap_or("")).expect("an X/Y LSN");
            let xid = f.next().unwrap_or("").parse().expect("an xid");
            (lsn, xid)
        })
        .collect()
}

fn dedup(mut v: Vec<(u64, u32)>) -> Vec<(u64, u32)> {
    v.dedup();
    v
}

#[test]
fn fixture_rows_match_test_decoding_positions() {
    let rows = rows_chunked(FIXTURE, 1 << 20).expect("the fixture decodes");
    assert_eq!(
        rows.len(),
        36,
        "B, Y, R, I … as listed in the pgoutput test"
    );
    // pgoutput sends Relation and Type messages at the LSN of the change they precede; the
    // distinct positions in order are those test_decoding reports.
    let ours = dedup(rows.iter().map(|r| (r.lsn, r.xid)).collect());
    assert_eq!(ours, dedup(test_decoding_positions()));
    assert_eq!(rows[0].data[0], b'B');
    assert_eq!(format_lsn(rows[0].lsn), "0/153D5D8");
}

#[test]
fn same_rows_whatever_the_chunking() {
    let whole = rows_chunked(FIXTURE, FIXTURE.len()).expect("decodes");
    for chunk in [1, 2, 3, 7, 100, 4096] {
        assert_eq!(
            rows_chunked(FIXTURE, chunk).expect("decodes"),
            whole,
            "chunk {chunk}"
        );
    }
}

#[test]
fn buffer_holds_only_the_unfinished_row() {
    let largest = rows_chunked(FIXTURE, FIXTURE.len())
        .expect("decodes")
        .iter()
        .map(|r| r.data.len() + 26)
        .max()
        .unwrap_or(0);
    let mut frames = CopyFrames::new();
    for chunk in FIXTURE.chunks(100) {
        frames.push(chunk);
        assert!(
            frames.buf.len() <= largest + 100,
            "buffer {} bytes",
            frames.buf.len()
        );
        while frames.next_row().expect("decodes").is_some() {}
    }
    frames.finish().expect("complete");
}

#[test]
fn every_cut_of_the_stream_is_a_truncation_error() {
    for cut in (0..FIXTURE.len())
        .step_by(7)
        .chain([1, 2, 18, 19, FIXTURE.len() - 1])
    {
        match rows_chunked(&FIXTURE[..cut], 64) {
            Err(CdcDecodeError::Truncated {
                needed, available, ..
            }) => assert!(
                needed > available,
                "cut {cut}: needed {needed} available {available}"
            ),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn header_extension_and_empty_stream() {
    let mut s = copy_stream(&[(5, 7, b"B".to_vec())]);
    // Rewrite the header with a 3-byte extension that a reader skips.
    s.splice(15..19, [0, 0, 0, 3, 0xaa, 0xbb, 0xcc]);
    let rows = rows_chunked(&s, 1).expect("decodes");
    assert_eq!(
        rows,
        vec![PeekedRow {
            lsn: 5,
            xid: 7,
            data: Bytes::from_static(b"B")
        }]
    );
    assert_eq!(rows_chunked(&copy_stream(&[]), 3).expect("decodes"), vec![]);
}

#[test]
fn malformed_streams_are_errors() {
    let good = copy_stream(&[(1, 2, b"xyz".to_vec())]);
    let mut trailing = good.clone();
    trailing.push(0);
    let mut bad_sig = good.clone();
    bad_sig[0] = b'X';
    let mut two_fields = good.clone();
    two_fields[19..21].copy_from_slice(&2i16.to_be_bytes());
    let mut null_lsn = good.clone();
    null_lsn[21..25].copy_from_slice(&(-1i32).to_be_bytes());
    let mut oids = good.clone();
    oids[11..15].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    for (name, input) in [
        ("trailing", trailing),
        ("signature", bad_sig),
        ("field count", two_fields),
        ("null lsn", null_lsn),
        ("oid flag", oids),
    ] {
        assert!(
            matches!(rows_chunked(&input, 5), Err(CdcDecodeError::Invalid { .. })),
            "{name}"
        );
    }
}

#[test]
fn huge_declared_length_waits_without_allocating() {
    let mut s = copy_stream(&[(1, 2, vec![])]);
    let at = 19 + 2 + 12 + 8; // the data length of the first row
    s[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
    s.truncate(at + 4);
    s.extend([0; 10]);
    let mut frames = CopyFrames::new();
    frames.push(&s);
    assert_eq!(frames.next_row(), Ok(None));
    assert!(
        frames.buf.capacity() < 1 << 16,
        "no allocation for the declared length"
    );
    assert_eq!(
        frames.finish(),
        Err(CdcDecodeError::Truncated {
            reading: "COPY row",
            needed: 26 + i32::MAX as usize,
            available: 36,
        })
    );
    let msg = frames.finish().unwrap_err().to_string();
    assert!(
        msg.contains("2147483673 bytes needed, 36 available"),
        "{msg}"
    );
}

#[test]
fn peek_sql_quotes_checked_names() {
    let sql = peek_copy_sql("sluice_slot", &["pub_a".into(), "pub_b".into()], Some(5000));
    assert_eq!(
        sql.expect("valid names"),
        "COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes('sluice_slot', NULL, 5000, \
         'proto_version', '1', 'publication_names', 'pub_a,pub_b', 'messages', 'true')) TO STDOUT (FORMAT binary)"
    );
    let unlimited = peek_copy_sql("s", &["p".into()], None).expect("valid");
    assert!(unlimited.contains("('s', NULL, NULL,"), "{unlimited}");
    for (slot, pubs) in [
        ("bad'slot", vec!["p".to_string()]),
        ("Upper", vec!["p".to_string()]),
        ("s", vec!["a,b".to_string()]),
        ("s", vec![]),
        ("", vec!["p".to_string()]),
        ("9s", vec!["p".to_string()]),
        ("s", vec!["x".repeat(64)]),
    ] {
        assert!(
            matches!(
                peek_copy_sql(slot, &pubs, None),
                Err(CdcDecodeError::InvalidName { .. })
            ),
            "{slot:?} {pubs:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The fixture split at arbitrary points gives the same rows.
    #[test]
    fn any_split_same_rows(splits in proptest::collection::vec(0usize..2000, 0..40)) {
        let whole = rows_chunked(FIXTURE, FIXTURE.len()).expect("decodes");
        prop_assert_eq!(rows_split(FIXTURE, &splits).expect("decodes"), whole);
    }

    /// Arbitrary bytes, raw or after a valid header, never panic.
    #[test]
    fn any_bytes_no_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        with_header in any::<bool>(),
        chunk in 1usize..50,
    ) {
        let mut input = if with_header { copy_stream(&[])[..19].to_vec() } else { Vec::new() };
        input.extend(body);
        let _ = rows_chunked(&input, chunk);
    }

    /// A corrupted byte anywhere in the fixture never panics.
    #[test]
    fn corrupted_fixture_no_panic(at in 0usize..FIXTURE.len(), byte in any::<u8>()) {
        let mut input = FIXTURE.to_vec();
        input[at] = byte;
        let _ = rows_chunked(&input, 97);
    }
}

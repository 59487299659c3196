use super::*;

/// `input` read `chunk` bytes at a time, in batches of `rows`.
fn batches(format: InputFormat, input: &[u8], chunk: usize, rows: usize) -> RawBatches<&[u8]> {
    batches_max(format, input, chunk, rows, 1 << 20)
}

fn batches_max(
    format: InputFormat,
    input: &[u8],
    chunk: usize,
    rows: usize,
    max_record_bytes: usize,
) -> RawBatches<&[u8]> {
    let d = Decoder::new(format, &CsvOptions::default(), rows, max_record_bytes);
    RawBatches::new(input, d, chunk)
}

/// Every record of every batch, mapped by `f`.
fn each<T>(mut b: RawBatches<&[u8]>, mut f: impl FnMut(&RawBatch, &RawRec) -> T) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(batch) = b.next_batch().expect("slices do not fail") {
        out.extend(batch.recs.iter().map(|r| f(batch, r)));
    }
    out
}

/// Splits `input` fed in chunks of `chunk` bytes with batches of `rows`; returns
/// (start line, fields) per record.
fn csv_records(input: &[u8], chunk: usize, rows: usize) -> Vec<(u64, Vec<String>)> {
    each(batches(InputFormat::Csv, input, chunk, rows), |b, r| {
        let f = (0..r.nfields)
            .map(|i| String::from_utf8_lossy(b.field(r, i)).into_owned())
            .collect();
        (b.start_line(r, InputFormat::Csv), f)
    })
}

#[test]
fn csv_quotes_newlines_crlf_bom_across_chunks() {
    let input = b"\xef\xbb\xbfa,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\r\n2,\"multi\nline\",z\r\n3,short\r\n4,last,row";
    let want = vec![
        (1, vec!["a", "b", "c"]),
        (2, vec!["1", "x, y", "say \"hi\""]),
        (3, vec!["2", "multi\nline", "z"]),
        (5, vec!["3", "short"]),
        (6, vec!["4", "last", "row"]),
    ];
    let want: Vec<(u64, Vec<String>)> = want
        .into_iter()
        .map(|(l, f)| (l, f.into_iter().map(String::from).collect()))
        .collect();
    for chunk in [1, 2, 3, 7, 100, 10_000] {
        for rows in [1, 2, 7, 8192] {
            assert_eq!(
                csv_records(input, chunk, rows),
                want,
                "chunk {chunk} rows {rows}"
            );
        }
    }
}

#[test]
fn csv_lf_line_numbers_and_trailing_newline() {
    let got = csv_records(b"h\n1\n\"a\nb\"\n3\n", 3, 2);
    let lines: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(lines, vec![1, 2, 3, 5]);
}

#[test]
fn csv_oversize_record_is_flagged_not_buffered() {
    let mut input = b"a,b\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 5000));
    input.extend(b",1\nok,2\n");
    let mut batches = batches_max(InputFormat::Csv, &input, 1 << 20, 10, 100);
    let b = batches
        .next_batch()
        .expect("slices do not fail")
        .expect("a batch");
    assert_eq!(b.recs.len(), 3);
    assert!(b.recs[1].oversize);
    assert_eq!(
        b.recs[1].total_bytes, 5003,
        "5,001 field bytes and two field ends"
    );
    assert!(b.bytes(&b.recs[1]).len() <= 100);
    assert_eq!(b.field(&b.recs[2], 0), b"ok");
}

#[test]
fn jsonl_lines_blank_crlf_bom() {
    let input = b"\xef\xbb\xbf{\"a\":1}\r\n\n{\"a\":2}\n  \n{\"a\":3}";
    for chunk in [1, 2, 5, 100] {
        let got = each(batches(InputFormat::Jsonl, input, chunk, 2), |b, r| {
            (r.end_line, String::from_utf8_lossy(b.bytes(r)).into_owned())
        });
        assert_eq!(
            got,
            vec![
                (1, "{\"a\":1}".to_string()),
                (3, "{\"a\":2}".to_string()),
                (5, "{\"a\":3}".to_string())
            ],
            "chunk {chunk}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Arbitrary bytes in arbitrary chunks: no panic, and the records do not depend on
    /// how the input was chunked.
    #[test]
    fn csv_any_bytes_any_chunks(input in proptest::collection::vec(proptest::num::u8::ANY, 0..600), chunk in 1usize..50, rows in 1usize..9) {
        let a = csv_records(&input, chunk, rows);
        let b = csv_records(&input, 10_000, 8192);
        proptest::prop_assert_eq!(a, b);
    }

    #[test]
    fn jsonl_any_bytes(input in proptest::collection::vec(proptest::num::u8::ANY, 0..600), chunk in 1usize..50) {
        each(batches_max(InputFormat::Jsonl, &input, chunk, 3, 64), |_, _| ());
    }
}

//! Push decoders that split raw bytes into records, in the two-layer shape of arrow-csv and
//! arrow-json: `decode(&[u8])` takes what it can and returns the bytes consumed; `flush()`
//! hands over the records gathered so far as a `RawBatch`. Bytes arrive in whatever chunks
//! the reader gives; a record may span any number of chunks. Memory is bounded by the batch
//! size and `max_record_bytes`: an oversize record is kept only up to that limit and flagged.

use crate::config::{CsvOptions, InputFormat};

/// One record of a batch.
#[derive(Debug, Clone)]
pub(crate) struct RawRec {
    /// CSV: the line the record ends on; with `nl_inside` gives the start line.
    /// JSONL: the line number.
    pub end_line: u64,
    /// Index of the record's first field end in `RawBatch::ends` (CSV).
    pub first_end: usize,
    /// Number of fields (CSV); 1 for JSONL.
    pub nfields: usize,
    /// Byte range of the record in `RawBatch::buf`.
    pub start: usize,
    pub end: usize,
    /// The record was larger than `max_record_bytes`; `buf` holds only its beginning.
    pub oversize: bool,
    /// Bytes the record really had (for the error message on oversize records).
    pub total_bytes: u64,
}

/// Records split out of the input, not yet typed.
#[derive(Debug, Default)]
pub(crate) struct RawBatch {
    /// CSV: unescaped field bytes, back to back. JSONL: line bytes.
    pub buf: Vec<u8>,
    /// CSV: absolute end offset of each field in `buf`.
    pub ends: Vec<usize>,
    pub recs: Vec<RawRec>,
}

impl RawBatch {
    /// The fields of record `r` (CSV).
    pub fn field(&self, r: &RawRec, i: usize) -> &[u8] {
        let start = if i == 0 {
            r.start
        } else {
            self.ends[r.first_end + i - 1]
        };
        &self.buf[start..self.ends[r.first_end + i]]
    }
    /// The whole record's bytes (JSONL line; CSV fields back to back).
    pub fn bytes(&self, r: &RawRec) -> &[u8] {
        &self.buf[r.start..r.end]
    }
    /// The line a record starts on (1-based).
    pub fn start_line(&self, r: &RawRec, format: InputFormat) -> u64 {
        match format {
            InputFormat::Jsonl => r.end_line,
            InputFormat::Csv => {
                let inside = self.bytes(r).iter().filter(|&&b| b == b'\n').count() as u64;
                r.end_line.saturating_sub(inside)
            }
        }
    }
    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.recs.clear();
    }
}

/// A push decoder for either input format.
pub(crate) enum Decoder {
    Csv(Box<CsvDecoder>),
    Jsonl(JsonlDecoder),
}

impl Decoder {
    pub fn new(
        format: InputFormat,
        csv: &CsvOptions,
        batch_rows: usize,
        max_record_bytes: usize,
    ) -> Self {
        match format {
            InputFormat::Csv => {
                Decoder::Csv(Box::new(CsvDecoder::new(csv, batch_rows, max_record_bytes)))
            }
            InputFormat::Jsonl => Decoder::Jsonl(JsonlDecoder::new(batch_rows, max_record_bytes)),
        }
    }
    /// Consumes bytes until the batch is full or the input is used up; returns bytes consumed.
    pub fn decode(&mut self, input: &[u8]) -> usize {
        match self {
            Decoder::Csv(d) => d.decode(input),
            Decoder::Jsonl(d) => d.decode(input),
        }
    }
    /// Ends the input: the last record (without a trailing newline) is completed.
    pub fn finish(&mut self) {
        match self {
            Decoder::Csv(d) => d.finish(),
            Decoder::Jsonl(d) => d.finish(),
        }
    }
    /// Whether the batch holds `batch_rows` records (call `flush`).
    pub fn is_full(&self) -> bool {
        match self {
            Decoder::Csv(d) => d.batch.recs.len() >= d.batch_rows,
            Decoder::Jsonl(d) => d.batch.recs.len() >= d.batch_rows,
        }
    }
    /// Takes the records gathered so far into `out` (which is cleared first), keeping any
    /// partial record for the next batch. Returns false when there were none.
    pub fn flush(&mut self, out: &mut RawBatch) -> bool {
        match self {
            Decoder::Csv(d) => d.flush(out),
            Decoder::Jsonl(d) => d.flush(out),
        }
    }
}

/// CSV on top of `csv-core` (RFC 4180 quoting, embedded newlines, CRLF/LF, UTF-8 BOM).
pub(crate) struct CsvDecoder {
    rdr: csv_core::Reader,
    batch: RawBatch,
    batch_rows: usize,
    max_record_bytes: usize,
    /// Bytes of the record in progress written to `batch.buf` after `rec_start`.
    rec_out: usize,
    rec_start: usize,
    /// Field ends of the record in progress (relative to `rec_start`).
    rec_ends: Vec<usize>,
    oversize: bool,
    total_bytes: u64,
    scratch: Vec<u8>,
    last_was_nl: bool,
    done: bool,
    /// The first bytes of the stream, held until we know whether they are a UTF-8 BOM
    /// (csv-core only strips one that arrives whole in its first call).
    head: Vec<u8>,
    head_done: bool,
}

impl CsvDecoder {
    fn new(opts: &CsvOptions, batch_rows: usize, max_record_bytes: usize) -> Self {
        let rdr = csv_core::ReaderBuilder::new()
            .delimiter(opts.delimiter as u8)
            .quote(opts.quote as u8)
            .double_quote(true)
            .build();
        Self {
            rdr,
            batch: RawBatch {
                buf: Vec::with_capacity(1 << 20),
                ..Default::default()
            },
            batch_rows: batch_rows.max(1),
            max_record_bytes,
            rec_out: 0,
            rec_start: 0,
            rec_ends: Vec::with_capacity(64),
            oversize: false,
            total_bytes: 0,
            scratch: Vec::new(),
            last_was_nl: false,
            done: false,
            head: Vec::with_capacity(3),
            head_done: false,
        }
    }

    /// Feeds the held head bytes; returns false when the batch filled before they were used.
    fn drain_head(&mut self) -> bool {
        while !self.head.is_empty() && self.batch.recs.len() < self.batch_rows {
            let head = std::mem::take(&mut self.head);
            let mut pos = 0;
            let more = self.step(&head, &mut pos);
            self.head = head[pos..].to_vec();
            if !more && pos == 0 {
                break;
            }
        }
        self.head.is_empty()
    }

    fn decode(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        if !self.head_done {
            let take = (3 - self.head.len()).min(input.len());
            self.head.extend_from_slice(&input[..take]);
            pos = take;
            if self.head.len() < 3 {
                return pos;
            }
            self.head_done = true;
            if self.head == b"\xef\xbb\xbf" {
                self.head.clear();
            }
        }
        if !self.drain_head() {
            return pos;
        }
        while pos < input.len() && self.batch.recs.len() < self.batch_rows {
            if !self.step(&input[pos..], &mut pos) {
                break;
            }
        }
        pos
    }

    fn finish(&mut self) {
        if !self.head_done {
            self.head_done = true;
            if self.head == b"\xef\xbb\xbf" {
                self.head.clear();
            }
        }
        while !self.head.is_empty() {
            let head = std::mem::take(&mut self.head);
            let mut pos = 0;
            self.step(&head, &mut pos);
            self.head = head[pos..].to_vec();
        }
        while !self.done {
            let mut pos = 0;
            if !self.step(&[], &mut pos) {
                break;
            }
        }
    }

    /// One `read_record` call. Returns false when more input is needed.
    fn step(&mut self, input: &[u8], pos: &mut usize) -> bool {
        use csv_core::ReadRecordResult as R;
        if self.rec_ends.len() == self.rec_ends.capacity() {
            self.rec_ends.reserve(self.rec_ends.len().max(64));
        }
        let ends_len = self.rec_ends.len();
        // Room for output: grow the batch buffer, unless the record is over the limit, in which
        // case the rest of it streams through a scratch buffer and is dropped.
        let (res, nin, nout, nend) = if self.oversize {
            if self.scratch.is_empty() {
                self.scratch.resize(64 * 1024, 0);
            }
            let mut ends = [0usize; 256];
            let r = self.rdr.read_record(input, &mut self.scratch, &mut ends);
            (r.0, r.1, r.2, r.3.min(1))
        } else {
            let need = self.rec_start + self.rec_out + 4096;
            if self.batch.buf.len() < need {
                let grow = need.max(self.batch.buf.len() * 2).max(64 * 1024);
                self.batch.buf.resize(grow, 0);
            }
            // SAFETY of indices: `rec_ends` has spare capacity from the reserve above.
            let spare = self.rec_ends.capacity() - ends_len;
            self.rec_ends.resize(ends_len + spare, 0);
            let out = &mut self.batch.buf[self.rec_start + self.rec_out..];
            let r = self
                .rdr
                .read_record(input, out, &mut self.rec_ends[ends_len..]);
            self.rec_ends.truncate(ends_len + r.3);
            r
        };
        *pos += nin;
        if nin > 0 {
            self.last_was_nl = input[nin - 1] == b'\n';
        }
        self.total_bytes += nout as u64;
        if !self.oversize {
            self.rec_out += nout;
            // Field ends count too: a line of nothing but delimiters writes no bytes but one
            // end offset per field.
            if self.rec_out + self.rec_ends.len() > self.max_record_bytes {
                self.oversize = true;
                self.rec_out = self.rec_out.min(self.max_record_bytes);
                self.rec_ends.clear();
            }
        } else {
            let _ = nend;
        }
        match res {
            R::InputEmpty => {
                if input.is_empty() {
                    // csv-core asks for more input only when it has none left at all.
                    self.done = true;
                }
                false
            }
            R::OutputFull | R::OutputEndsFull => true,
            R::Record => {
                self.finish_record();
                true
            }
            R::End => {
                self.done = true;
                false
            }
        }
    }

    fn finish_record(&mut self) {
        // csv-core counts lines from 1 and has counted this record's `\n` only if it ended on one.
        let end_line = self.rdr.line() - 1 + u64::from(!self.last_was_nl);
        let first_end = self.batch.ends.len();
        let start = self.rec_start;
        let nfields = if self.oversize {
            0
        } else {
            self.rec_ends.len()
        };
        if !self.oversize {
            for &e in &self.rec_ends {
                self.batch.ends.push(start + e);
            }
        }
        let end = start + self.rec_out;
        self.batch.recs.push(RawRec {
            end_line,
            first_end,
            nfields,
            start,
            end,
            oversize: self.oversize,
            total_bytes: self.total_bytes,
        });
        self.rec_start = end;
        self.rec_out = 0;
        self.rec_ends.clear();
        self.oversize = false;
        self.total_bytes = 0;
    }

    fn flush(&mut self, out: &mut RawBatch) -> bool {
        if self.batch.recs.is_empty() {
            return false;
        }
        out.ends.clear();
        out.recs.clear();
        // The record in progress (bytes after `rec_start`) moves to the front of the new buffer.
        let partial = self.rec_start..self.rec_start + self.rec_out;
        std::mem::swap(&mut self.batch, out);
        if self.batch.buf.len() < partial.len() + 4096 {
            self.batch.buf.resize(partial.len() + 64 * 1024, 0);
        }
        self.batch.buf[..partial.len()].copy_from_slice(&out.buf[partial.clone()]);
        // `out.buf` keeps its length: records are addressed by their offsets, and a buffer that
        // keeps its length is not zeroed again when it comes back for the next batch.
        self.rec_start = 0;
        true
    }
}

/// JSON lines: one object per line, blank lines skipped, CRLF and a BOM tolerated.
pub(crate) struct JsonlDecoder {
    batch: RawBatch,
    batch_rows: usize,
    max_record_bytes: usize,
    line: u64,
    cur_start: usize,
    oversize: bool,
    total_bytes: u64,
}

impl JsonlDecoder {
    fn new(batch_rows: usize, max_record_bytes: usize) -> Self {
        Self {
            batch: RawBatch::default(),
            batch_rows: batch_rows.max(1),
            max_record_bytes,
            line: 0,
            cur_start: 0,
            oversize: false,
            total_bytes: 0,
        }
    }

    fn decode(&mut self, mut input: &[u8]) -> usize {
        let total = input.len();
        while !input.is_empty() && self.batch.recs.len() < self.batch_rows {
            match input.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.push_bytes(&input[..p]);
                    self.end_line();
                    input = &input[p + 1..];
                }
                None => {
                    self.push_bytes(input);
                    input = &[];
                }
            }
        }
        total - input.len()
    }

    fn push_bytes(&mut self, b: &[u8]) {
        self.total_bytes += b.len() as u64;
        let have = self.batch.buf.len() - self.cur_start;
        let room = self.max_record_bytes.saturating_sub(have);
        if b.len() > room {
            self.oversize = true;
        }
        self.batch.buf.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn end_line(&mut self) {
        if self.line == 0 && self.batch.buf[self.cur_start..].starts_with(b"\xef\xbb\xbf") {
            // A UTF-8 BOM before the first line (it may have arrived split across chunks).
            self.batch.buf.drain(self.cur_start..self.cur_start + 3);
        }
        self.line += 1;
        let mut end = self.batch.buf.len();
        if !self.oversize && end > self.cur_start && self.batch.buf[end - 1] == b'\r' {
            end -= 1;
        }
        let blank = self.batch.buf[self.cur_start..end]
            .iter()
            .all(u8::is_ascii_whitespace);
        if blank && !self.oversize {
            self.batch.buf.truncate(self.cur_start);
        } else {
            self.batch.buf.truncate(end);
            self.batch.recs.push(RawRec {
                end_line: self.line,
                first_end: 0,
                nfields: 1,
                start: self.cur_start,
                end,
                oversize: self.oversize,
                total_bytes: self.total_bytes,
            });
        }
        self.cur_start = self.batch.buf.len();
        self.oversize = false;
        self.total_bytes = 0;
    }

    fn finish(&mut self) {
        if self.batch.buf.len() > self.cur_start || self.oversize {
            self.end_line();
        }
    }

    fn flush(&mut self, out: &mut RawBatch) -> bool {
        if self.batch.recs.is_empty() {
            return false;
        }
        out.clear();
        std::mem::swap(&mut self.batch, out);
        self.batch.buf.extend_from_slice(&out.buf[self.cur_start..]);
        out.buf.truncate(self.cur_start);
        self.cur_start = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` fed in chunks of `chunk` bytes with batches of `rows`; returns
    /// (start line, fields) per record.
    fn csv_records(input: &[u8], chunk: usize, rows: usize) -> Vec<(u64, Vec<String>)> {
        let mut d = Decoder::new(InputFormat::Csv, &CsvOptions::default(), rows, 1 << 20);
        let mut out = Vec::new();
        let mut b = RawBatch::default();
        let mut take = |d: &mut Decoder, out: &mut Vec<(u64, Vec<String>)>| {
            while d.flush(&mut b) {
                for r in &b.recs {
                    let f = (0..r.nfields)
                        .map(|i| String::from_utf8_lossy(b.field(r, i)).into_owned())
                        .collect();
                    out.push((b.start_line(r, InputFormat::Csv), f));
                }
            }
        };
        for c in input.chunks(chunk.max(1)) {
            let mut pos = 0;
            while pos < c.len() {
                pos += d.decode(&c[pos..]);
                if d.is_full() {
                    take(&mut d, &mut out);
                }
            }
        }
        d.finish();
        take(&mut d, &mut out);
        out
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
        let mut d = Decoder::new(InputFormat::Csv, &CsvOptions::default(), 10, 100);
        let mut input = b"a,b\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend(b",1\nok,2\n");
        let mut pos = 0;
        while pos < input.len() {
            pos += d.decode(&input[pos..]);
        }
        d.finish();
        let mut b = RawBatch::default();
        assert!(d.flush(&mut b));
        assert_eq!(b.recs.len(), 3);
        assert!(b.recs[1].oversize);
        assert_eq!(b.recs[1].total_bytes, 5001);
        assert!(b.bytes(&b.recs[1]).len() <= 100);
        assert_eq!(b.field(&b.recs[2], 0), b"ok");
    }

    #[test]
    fn jsonl_lines_blank_crlf_bom() {
        let input = b"\xef\xbb\xbf{\"a\":1}\r\n\n{\"a\":2}\n  \n{\"a\":3}";
        for chunk in [1, 2, 5, 100] {
            let mut d = Decoder::new(InputFormat::Jsonl, &CsvOptions::default(), 2, 1 << 20);
            let mut got = Vec::new();
            let mut b = RawBatch::default();
            for c in input.chunks(chunk) {
                let mut pos = 0;
                while pos < c.len() {
                    pos += d.decode(&c[pos..]);
                    if d.is_full() {
                        while d.flush(&mut b) {
                            got.extend(b.recs.iter().map(|r| {
                                (r.end_line, String::from_utf8_lossy(b.bytes(r)).into_owned())
                            }));
                        }
                    }
                }
            }
            d.finish();
            while d.flush(&mut b) {
                got.extend(
                    b.recs
                        .iter()
                        .map(|r| (r.end_line, String::from_utf8_lossy(b.bytes(r)).into_owned())),
                );
            }
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
            let mut d = Decoder::new(InputFormat::Jsonl, &CsvOptions::default(), 3, 64);
            let mut b = RawBatch::default();
            for c in input.chunks(chunk) {
                let mut pos = 0;
                while pos < c.len() {
                    pos += d.decode(&c[pos..]);
                    if d.is_full() { while d.flush(&mut b) {} }
                }
            }
            d.finish();
            while d.flush(&mut b) {}
        }
    }
}

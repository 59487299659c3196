//! CSV on top of `csv-core` (RFC 4180 quoting, embedded newlines, CRLF/LF, UTF-8 BOM).

use crate::config::CsvOptions;

use super::{RawBatch, RawRec};

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
    pub(super) fn new(opts: &CsvOptions, batch_rows: usize, max_record_bytes: usize) -> Self {
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

    pub(super) fn decode(&mut self, input: &[u8]) -> usize {
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

    pub(super) fn finish(&mut self) {
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

    /// One `read_record` call. Returns false when more input is needed. The decoder's hot loop:
    /// kept whole, as the buffer bookkeeping of both branches shares its locals.
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
        // Field bytes plus one per field end, as the limit counts them.
        self.total_bytes += (nout + nend) as u64;
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

    pub(super) fn is_full(&self) -> bool {
        self.batch.recs.len() >= self.batch_rows
    }

    pub(super) fn flush(&mut self, out: &mut RawBatch) -> bool {
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

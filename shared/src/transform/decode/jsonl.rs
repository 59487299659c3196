//! JSON lines: one object per line, blank lines skipped, CRLF and a BOM tolerated.

use super::{RawBatch, RawRec};

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
    pub(super) fn new(batch_rows: usize, max_record_bytes: usize) -> Self {
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

    pub(super) fn decode(&mut self, mut input: &[u8]) -> usize {
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

    pub(super) fn finish(&mut self) {
        if self.batch.buf.len() > self.cur_start || self.oversize {
            self.end_line();
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.batch.recs.len() >= self.batch_rows
    }

    pub(super) fn flush(&mut self, out: &mut RawBatch) -> bool {
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

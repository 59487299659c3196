//! Readers that split raw bytes into records, in the two layers of arrow-csv and arrow-json.
//!
//! - Push decoders (`csv.rs`, `jsonl.rs`): `decode(&[u8])` takes what it can and returns the
//!   bytes consumed; `flush()` hands over the records gathered so far as a `RawBatch`. Bytes
//!   arrive in whatever chunks the reader gives; a record may span any number of chunks.
//! - A pull reader on top (`RawBatches`): reads a `Read` chunk by chunk into the decoder and
//!   yields one batch at a time. The engine and the tests below read through it.
//!
//! Memory is bounded by the batch size and `max_record_bytes`: an oversize record is kept only
//! up to that limit and flagged.

mod csv;
mod jsonl;

use std::io::Read;

use crate::config::{CsvOptions, InputFormat};

use self::csv::CsvDecoder;
use self::jsonl::JsonlDecoder;

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
            InputFormat::Jsonl | InputFormat::Cdc => r.end_line,
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
            // Change events are JSON lines too; the row reader reads their envelope.
            InputFormat::Jsonl | InputFormat::Cdc => {
                Decoder::Jsonl(JsonlDecoder::new(batch_rows, max_record_bytes))
            }
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
            Decoder::Csv(d) => d.is_full(),
            Decoder::Jsonl(d) => d.is_full(),
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

/// The pull layer: batches of records read from `R` through a push decoder. A lending
/// iterator (each batch borrows the reader's buffer until the next call), so a batch is never
/// copied.
pub(crate) struct RawBatches<R> {
    input: R,
    dec: Decoder,
    /// Bytes read from `input`; `buf[pos..len]` are not yet decoded.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    batch: RawBatch,
    eof: bool,
}

impl<R: Read> RawBatches<R> {
    /// Reads `input` in chunks of up to `read_bytes`.
    pub fn new(input: R, dec: Decoder, read_bytes: usize) -> Self {
        Self {
            input,
            dec,
            buf: vec![0u8; read_bytes.max(1)],
            pos: 0,
            len: 0,
            batch: RawBatch::default(),
            eof: false,
        }
    }

    /// The next batch: full ones (`batch_rows` records) while input lasts, then what is left.
    /// `None` at the end of the input.
    pub fn next_batch(&mut self) -> std::io::Result<Option<&RawBatch>> {
        loop {
            if self.eof {
                return Ok(self.dec.flush(&mut self.batch).then_some(&self.batch));
            }
            while self.pos < self.len {
                self.pos += self.dec.decode(&self.buf[self.pos..self.len]);
                if self.dec.is_full() && self.dec.flush(&mut self.batch) {
                    return Ok(Some(&self.batch));
                }
            }
            let n = match self.input.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.dec.finish();
                self.eof = true;
            }
            self.pos = 0;
            self.len = n;
        }
    }
}

#[cfg(test)]
mod tests;

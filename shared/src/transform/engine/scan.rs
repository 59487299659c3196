//! One pass over the source file: batches of records from the decoder, the header mapped,
//! each row read, deduplicated and written (or quarantined), and every row counted.

use std::path::Path;

use crate::transform::decode::{Decoder, RawBatch, RawBatches, RawRec};
use crate::transform::TransformError;

use super::dedup::{Dedup, Verdict};
use super::header::{fields_without_header, read_header};
use super::input::open_input;
use super::pii::Masker;
use super::quarantine::Quarantine;
use super::row::{RowDocs, RowOutcome, RowReader};
use super::writer::Partitions;
use super::{Counts, EngineJob, EngineOutput};

/// Bytes asked of the input per read.
const READ_BYTES: usize = 1 << 20;

/// Which pass over the object this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Dedup with an ordering column, first pass: finds each key's latest version.
    Index,
    /// A cdc table whose winners left TOAST values out: finds them in earlier versions.
    Fill,
    /// Writes the rows (the only pass without an ordering column).
    Write,
}

pub(crate) struct Scan<'a> {
    job: &'a EngineJob<'a>,
    pass: Pass,
    /// A CSV header is still to be read.
    header_pending: bool,
    reader: RowReader<'a>,
    row_no: u64,
    counts: Counts,
    masker: Masker,
    parts: Partitions,
    quarantine: Quarantine<'a>,
    missing_columns: Vec<String>,
    unknown_columns: Vec<String>,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(job: &'a EngineJob<'a>, pass: Pass) -> Result<Self, TransformError> {
        let masker = Masker::new(job.plan, job.hash_key)?;
        let fields = fields_without_header(job.table, job.plan);
        Ok(Self {
            job,
            pass,
            header_pending: fields.is_none(),
            reader: RowReader::new(job, fields.unwrap_or_default()),
            row_no: 0,
            counts: Counts::default(),
            masker,
            parts: Partitions::new(job)?,
            quarantine: Quarantine::new(job),
            missing_columns: Vec::new(),
            unknown_columns: Vec::new(),
        })
    }

    /// Reads the file at `path` through.
    pub(crate) fn run(&mut self, path: &Path, dedup: &mut Dedup) -> Result<(), TransformError> {
        let t = self.job.table;
        let key = self.job.source_key;
        // Progress is reported once, on the pass that writes.
        let progress = match self.pass {
            Pass::Write => self.job.progress,
            Pass::Index | Pass::Fill => None,
        };
        let input = open_input(path, key, progress)?;
        let dec = Decoder::new(
            t.format,
            &t.csv,
            t.output.batch_rows,
            t.output.max_record_bytes,
        );
        let mut batches = RawBatches::new(input, dec, READ_BYTES);
        while let Some(batch) = batches.next_batch().map_err(|e| TransformError::Io {
            key: key.to_string(),
            source: e,
        })? {
            self.batch(batch, dedup)?;
        }
        Ok(())
    }

    fn batch(&mut self, batch: &RawBatch, dedup: &mut Dedup) -> Result<(), TransformError> {
        for rec in &batch.recs {
            if self.header_pending {
                self.header(batch, rec)?;
                continue;
            }
            let row_no = self.row_no;
            self.row_no += 1;
            self.counts.rows_read += 1;
            // A write failure (disk full, Parquet error) stops the object: rows already
            // buffered would otherwise be lost while counted as written.
            match self.row(batch, rec, row_no, dedup)? {
                RowOutcome::Written => self.counts.rows_written += 1,
                RowOutcome::Duplicate => self.counts.rows_duplicate += 1,
                RowOutcome::Quarantined(e) => {
                    self.counts.rows_quarantined += 1;
                    if self.pass == Pass::Write {
                        self.quarantine.write(batch, rec, &e)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn header(&mut self, batch: &RawBatch, rec: &RawRec) -> Result<(), TransformError> {
        self.header_pending = false;
        let h = read_header(self.job, batch, rec)?;
        self.reader.fields = h.fields;
        self.missing_columns = h.missing_columns;
        self.unknown_columns = h.unknown_columns;
        Ok(())
    }

    /// Reads, checks, deduplicates and (on the write pass) writes one row. `Err` is a failed
    /// write, which stops the object.
    fn row(
        &mut self,
        batch: &RawBatch,
        rec: &RawRec,
        row_no: u64,
        dedup: &mut Dedup,
    ) -> Result<RowOutcome, TransformError> {
        let mut docs = RowDocs::default();
        let mut row = match self.reader.read(batch, rec, &mut docs) {
            Ok(row) => row,
            Err(e) => return Ok(RowOutcome::Quarantined(e)),
        };
        let plan = self.job.plan;
        let outcome = match dedup.check(plan, &mut row, self.pass, row_no) {
            Verdict::Duplicate => Ok(RowOutcome::Duplicate),
            Verdict::Keep if self.pass != Pass::Write => Ok(RowOutcome::Written),
            Verdict::Keep => {
                let masker = &mut self.masker;
                self.parts
                    .append_row(row.partition, |b| {
                        masker.append_row(&plan.outs, &row.vals, b)
                    })
                    .map(|()| RowOutcome::Written)
            }
        };
        self.reader.recycle(row);
        outcome
    }

    pub(crate) fn finish(self) -> Result<EngineOutput, TransformError> {
        Ok(EngineOutput {
            files: self.parts.finish()?,
            quarantine: self.quarantine.finish()?,
            counts: self.counts,
            missing_columns: self.missing_columns,
            unknown_columns: self.unknown_columns,
        })
    }
}

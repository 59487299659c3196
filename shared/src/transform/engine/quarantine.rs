//! The quarantine file: one JSON line per rejected row, with enough to find, understand and
//! replay it. Created on the first rejected row.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::config::{InputFormat, TableConfig};
use crate::lake::quarantine::QuarantineRecord;
use crate::transform::decode::{RawBatch, RawRec};
use crate::transform::TransformError;

use super::row::RowError;
use super::EngineJob;

/// The quarantine file of one object, written in the work directory.
pub(crate) struct Quarantine<'a> {
    table: &'a TableConfig,
    source_key: &'a str,
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl<'a> Quarantine<'a> {
    pub(crate) fn new(job: &'a EngineJob<'a>) -> Self {
        Self {
            table: job.table,
            source_key: job.source_key,
            path: job.work_dir.join("quarantine.jsonl"),
            file: None,
        }
    }

    fn io(&self, e: std::io::Error) -> TransformError {
        TransformError::Io {
            key: self.source_key.to_string(),
            source: e,
        }
    }

    /// Appends the record of a rejected row.
    pub(crate) fn write(
        &mut self,
        batch: &RawBatch,
        rec: &RawRec,
        e: &RowError,
    ) -> Result<(), TransformError> {
        // The lake's one record type; a rejected row is rare enough that owning its text costs
        // nothing that shows.
        let q = QuarantineRecord {
            object: self.source_key.to_string(),
            line: batch.start_line(rec, self.table.format),
            column: e.column.clone(),
            reason: e.reason.clone(),
            raw: self.raw(batch, rec).into_owned(),
            raw_truncated: rec.oversize,
        };
        if self.file.is_none() {
            let f = File::create(&self.path).map_err(|e| self.io(e))?;
            self.file = Some(BufWriter::new(f));
        }
        let Some(w) = self.file.as_mut() else {
            return Err(TransformError::Internal("quarantine writer".into()));
        };
        let res = q
            .to_json_line()
            .map_err(std::io::Error::from)
            .and_then(|line| w.write_all(&line));
        res.map_err(|e| self.io(e))
    }

    /// The row as it was: the JSON line, or the CSV record written back as CSV.
    fn raw<'b>(&self, batch: &'b RawBatch, rec: &RawRec) -> Cow<'b, str> {
        match self.table.format {
            InputFormat::Jsonl | InputFormat::Cdc => String::from_utf8_lossy(batch.bytes(rec)),
            InputFormat::Csv if rec.oversize => String::from_utf8_lossy(batch.bytes(rec)),
            InputFormat::Csv => Cow::Owned(reencode_csv(
                batch,
                rec,
                self.table.csv.delimiter as u8,
                self.table.csv.quote as u8,
            )),
        }
    }

    /// The file, if any row was rejected.
    pub(crate) fn finish(mut self) -> Result<Option<PathBuf>, TransformError> {
        match self.file.take() {
            Some(mut w) => {
                w.flush().map_err(|e| self.io(e))?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

/// A CSV record written back as one CSV line (quoting where needed), for quarantine.
fn reencode_csv(batch: &RawBatch, rec: &RawRec, delim: u8, quote: u8) -> String {
    let mut out = Vec::with_capacity(rec.end - rec.start + rec.nfields * 3);
    for i in 0..rec.nfields {
        if i > 0 {
            out.push(delim);
        }
        let f = batch.field(rec, i);
        if f.iter()
            .any(|&c| c == delim || c == quote || c == b'\n' || c == b'\r')
        {
            out.push(quote);
            for &c in f {
                if c == quote {
                    out.push(quote);
                }
                out.push(c);
            }
            out.push(quote);
        } else {
            out.extend_from_slice(f);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

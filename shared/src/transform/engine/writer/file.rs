//! One partition's Parquet file being written, and the writer properties all files share.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::transform::plan::{OutKind, Plan};
use crate::transform::TransformError;

use super::{LocalFile, PartitionKey};

/// Compression, statistics and dictionaries for the table's files.
pub(crate) fn properties(plan: &Plan, zstd_level: i32) -> Result<WriterProperties, TransformError> {
    let level = ZstdLevel::try_new(zstd_level)
        .map_err(|e| TransformError::Internal(format!("zstd level: {e}")))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .set_max_row_group_row_count(Some(1 << 20))
        // Row-group (chunk) statistics are what Athena and Spark prune on; page-level
        // statistics and the page index cost time on every page for little use there.
        .set_statistics_enabled(EnabledStatistics::Chunk);
    // Keyed hashes are random, and floats and timestamps from OLTP tables are mostly amounts
    // and instants, nearly unique per row: a dictionary rarely pays off there (ZSTD still
    // catches repeats) and interning costs time on every value. Strings, dates, booleans,
    // integers and decimals keep dictionaries.
    let props = plan
        .outs
        .iter()
        .filter(|o| {
            matches!(o.kind, OutKind::Hash)
                || matches!(o.data_type, DataType::Timestamp(_, _) | DataType::Float64)
        })
        .fold(props, |p, o| {
            let path = ColumnPath::from(o.name.as_str());
            let p = p.set_column_dictionary_enabled(path.clone(), false);
            if matches!(o.kind, OutKind::Hash) {
                // Min/max of random hex prune nothing; comparing every value costs time.
                p.set_column_statistics_enabled(path, EnabledStatistics::None)
            } else {
                p
            }
        })
        .build();
    Ok(props)
}

fn parquet_err(e: parquet::errors::ParquetError) -> TransformError {
    TransformError::Parquet(e.to_string())
}

/// An open Parquet file of a partition: its writer, where it is, which part of the partition
/// it is, and the rows written to it so far.
pub(crate) struct OpenFile {
    writer: ArrowWriter<BufWriter<File>>,
    path: PathBuf,
    part: u32,
    rows: u64,
}

impl OpenFile {
    pub(crate) fn create(
        path: PathBuf,
        schema: SchemaRef,
        props: &WriterProperties,
        part: u32,
    ) -> Result<Self, TransformError> {
        let f = File::create(&path).map_err(|e| TransformError::Io {
            key: path.display().to_string(),
            source: e,
        })?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, f),
            schema,
            Some(props.clone()),
        )
        .map_err(parquet_err)?;
        Ok(Self {
            writer,
            path,
            part,
            rows: 0,
        })
    }

    /// Writes a batch of `rows` rows; the row group is flushed once it reaches
    /// `row_group_bytes`.
    pub(crate) fn write(
        &mut self,
        batch: &RecordBatch,
        rows: u64,
        row_group_bytes: usize,
    ) -> Result<(), TransformError> {
        self.writer.write(batch).map_err(parquet_err)?;
        self.rows += rows;
        if self.writer.in_progress_size() >= row_group_bytes {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Encoded bytes of the row group in progress.
    pub(crate) fn in_progress_size(&self) -> usize {
        self.writer.in_progress_size()
    }

    /// The file's size so far, the row group in progress included.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.writer.bytes_written() as u64 + self.writer.in_progress_size() as u64
    }

    pub(crate) fn flush_row_group(&mut self) -> Result<(), TransformError> {
        self.writer.flush().map_err(parquet_err)
    }

    /// Finishes the file (footer written, buffer flushed).
    pub(crate) fn close(self, key: PartitionKey) -> Result<LocalFile, TransformError> {
        let Self {
            writer,
            path,
            part,
            rows,
        } = self;
        let inner = writer.into_inner().map_err(parquet_err)?;
        let f = inner.into_inner().map_err(|e| TransformError::Io {
            key: path.display().to_string(),
            source: e.into_error(),
        })?;
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LocalFile {
            path,
            year: format!("{:04}", key.year),
            month: format!("{:02}", key.month),
            part,
            rows,
            bytes,
        })
    }
}

//! The open partitions: column builders and a Parquet file each, within three bounds on
//! memory: rows waiting in builders (8 × `batch_rows` across partitions, the fullest flushed
//! first), encoded bytes in writers (`buffer_budget_bytes`, the largest row group flushed
//! first), and files open at once (`max_open_partitions`, the least recently used closed
//! first).

mod builders;
mod file;

use std::collections::HashMap;
use std::path::PathBuf;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::file::properties::WriterProperties;

use crate::config::OutputConfig;
use crate::transform::TransformError;

use super::EngineJob;

pub(crate) use builders::ColBuilder;
use file::OpenFile;

/// One finished Parquet file, still local.
#[derive(Debug, Clone)]
pub(crate) struct LocalFile {
    pub path: PathBuf,
    pub year: String,
    pub month: String,
    pub part: u32,
    pub rows: u64,
    pub bytes: u64,
}

/// A partition of the output: `year=YYYY/month=MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PartitionKey {
    pub year: i64,
    pub month: u32,
}

/// One partition's rows in progress and its open file.
struct Partition {
    builders: Vec<ColBuilder>,
    /// Rows in `builders`.
    rows: usize,
    file: Option<OpenFile>,
    /// Part number of the partition's next file.
    next_part: u32,
    /// `Partitions::tick` when a row last went to this partition.
    last_used: u64,
}

/// The table's output limits, from `[tables.output]`.
struct Limits {
    batch_rows: usize,
    target_file_bytes: u64,
    row_group_bytes: usize,
    buffer_budget_bytes: usize,
    max_open: usize,
}

impl Limits {
    fn new(o: &OutputConfig) -> Self {
        Self {
            batch_rows: o.batch_rows,
            target_file_bytes: o.target_file_size_bytes,
            row_group_bytes: o.row_group_bytes,
            buffer_budget_bytes: o.buffer_budget_bytes,
            max_open: o.max_open_partitions,
        }
    }
}

pub(crate) struct Partitions {
    schema: SchemaRef,
    props: WriterProperties,
    dtypes: Vec<DataType>,
    work_dir: PathBuf,
    limits: Limits,
    map: HashMap<PartitionKey, Partition>,
    current: Option<PartitionKey>,
    tick: u64,
    files: Vec<LocalFile>,
    file_seq: u64,
    /// Rows in builders across all partitions, not yet handed to a writer.
    buffered: usize,
}

impl Partitions {
    pub(crate) fn new(job: &EngineJob<'_>) -> Result<Self, TransformError> {
        let o = &job.table.output;
        Ok(Self {
            schema: job.plan.schema.clone(),
            props: file::properties(job.plan, o.zstd_level)?,
            dtypes: job.plan.outs.iter().map(|o| o.data_type.clone()).collect(),
            work_dir: job.work_dir.to_path_buf(),
            limits: Limits::new(o),
            map: HashMap::new(),
            current: None,
            tick: 0,
            files: Vec::new(),
            file_seq: 0,
            buffered: 0,
        })
    }

    /// Appends one row to partition `key`: `fill` appends one value to every builder. Then
    /// flushes what the bounds require.
    pub(crate) fn append_row<F>(&mut self, key: PartitionKey, fill: F) -> Result<(), TransformError>
    where
        F: FnOnce(&mut [ColBuilder]) -> Result<(), TransformError>,
    {
        let batch_rows = self.limits.batch_rows;
        let p = self.get(key)?;
        fill(&mut p.builders)?;
        p.rows += 1;
        let full = p.rows >= batch_rows;
        self.buffered += 1;
        if full {
            self.flush(key)
        } else if self.buffered > batch_rows.saturating_mul(8) {
            // Rows spread over many partitions: bound the builders by flushing the fullest.
            self.flush_largest()
        } else {
            Ok(())
        }
    }

    /// The partition `key`, created on first use.
    fn get(&mut self, key: PartitionKey) -> Result<&mut Partition, TransformError> {
        if !(1..=9999).contains(&key.year) {
            return Err(TransformError::Internal(format!(
                "year {} outside 0001-9999",
                key.year
            )));
        }
        self.tick += 1;
        if self.current != Some(key) {
            self.current = Some(key);
            if !self.map.contains_key(&key) {
                let builders = self.dtypes.iter().map(ColBuilder::new).collect();
                self.map.insert(
                    key,
                    Partition {
                        builders,
                        rows: 0,
                        file: None,
                        next_part: 0,
                        last_used: 0,
                    },
                );
            }
        }
        let tick = self.tick;
        let p = self
            .map
            .get_mut(&key)
            .ok_or_else(|| TransformError::Internal("partition vanished".into()))?;
        p.last_used = tick;
        Ok(p)
    }

    /// Writes the rows of the partition holding the most.
    fn flush_largest(&mut self) -> Result<(), TransformError> {
        // Ties go to the earliest partition, not to the hash map's order (random per process):
        // the same object always splits into the same part files.
        let k = self
            .map
            .iter()
            .max_by_key(|(k, p)| (p.rows, std::cmp::Reverse(**k)))
            .map(|(k, _)| *k);
        match k {
            Some(k) => self.flush(k),
            None => Ok(()),
        }
    }

    /// Writes partition `k`'s buffered rows as a record batch to its file (opened when it has
    /// none, after closing the least recently used file if at the cap), rolls the file at the
    /// target size, then keeps all writers within the buffer budget.
    fn flush(&mut self, k: PartitionKey) -> Result<(), TransformError> {
        let needs_open = self
            .map
            .get(&k)
            .is_some_and(|p| p.rows > 0 && p.file.is_none());
        if needs_open {
            self.make_room_for_a_file(k)?;
        }
        let Some(batch) = self.take_batch(k)? else {
            return Ok(());
        };
        let rows = batch.num_rows() as u64;
        if needs_open {
            self.open_file(k)?;
        }
        let Some(file) = self.map.get_mut(&k).and_then(|p| p.file.as_mut()) else {
            return Err(TransformError::Internal("partition file vanished".into()));
        };
        file.write(&batch, rows, self.limits.row_group_bytes)?;
        if file.size_bytes() >= self.limits.target_file_bytes {
            self.close_file(k)?;
        }
        self.keep_within_budget()
    }

    /// At the cap on open files, closes the least recently used one other than `k`'s.
    fn make_room_for_a_file(&mut self, k: PartitionKey) -> Result<(), TransformError> {
        let open = self.map.values().filter(|p| p.file.is_some()).count();
        if open < self.limits.max_open {
            return Ok(());
        }
        let victim = self
            .map
            .iter()
            .filter(|(kk, p)| p.file.is_some() && **kk != k)
            .min_by_key(|(_, p)| p.last_used)
            .map(|(kk, _)| *kk);
        match victim {
            Some(v) => self.close_file(v),
            None => Ok(()),
        }
    }

    /// Partition `k`'s buffered rows as a record batch (`None` when it has none).
    fn take_batch(&mut self, k: PartitionKey) -> Result<Option<RecordBatch>, TransformError> {
        let Some(p) = self.map.get_mut(&k) else {
            return Ok(None);
        };
        if p.rows == 0 {
            return Ok(None);
        }
        let cols: Vec<ArrayRef> = p.builders.iter_mut().map(ColBuilder::finish).collect();
        self.buffered = self.buffered.saturating_sub(p.rows);
        p.rows = 0;
        RecordBatch::try_new(self.schema.clone(), cols)
            .map(Some)
            .map_err(|e| TransformError::Internal(format!("record batch: {e}")))
    }

    fn open_file(&mut self, k: PartitionKey) -> Result<(), TransformError> {
        self.file_seq += 1;
        let path = self
            .work_dir
            .join(format!("part-{}.parquet", self.file_seq));
        let Some(p) = self.map.get_mut(&k) else {
            return Ok(());
        };
        p.file = Some(OpenFile::create(
            path,
            self.schema.clone(),
            &self.props,
            p.next_part,
        )?);
        p.next_part += 1;
        Ok(())
    }

    /// All open partitions together stay within the buffer budget: when over, the largest
    /// row group in progress is flushed (writers hold about twice their encoded size).
    fn keep_within_budget(&mut self) -> Result<(), TransformError> {
        let total: usize = self
            .map
            .values()
            .filter_map(|p| p.file.as_ref())
            .map(OpenFile::in_progress_size)
            .sum();
        if total <= self.limits.buffer_budget_bytes {
            return Ok(());
        }
        // Ties broken by partition, as in `flush_largest`: row groups fall the same every run.
        match self
            .map
            .iter_mut()
            .filter_map(|(k, p)| p.file.as_mut().map(|f| (*k, f)))
            .max_by_key(|(k, f)| (f.in_progress_size(), std::cmp::Reverse(*k)))
            .map(|(_, f)| f)
        {
            Some(f) => f.flush_row_group(),
            None => Ok(()),
        }
    }

    fn close_file(&mut self, k: PartitionKey) -> Result<(), TransformError> {
        let Some(file) = self.map.get_mut(&k).and_then(|p| p.file.take()) else {
            return Ok(());
        };
        self.files.push(file.close(k)?);
        Ok(())
    }

    /// Flushes and closes every partition; the files in (year, month, part) order.
    pub(crate) fn finish(mut self) -> Result<Vec<LocalFile>, TransformError> {
        let mut keys: Vec<PartitionKey> = self.map.keys().copied().collect();
        keys.sort();
        for k in keys {
            self.flush(k)?;
            self.close_file(k)?;
        }
        self.files
            .sort_by(|a, b| (&a.year, &a.month, a.part).cmp(&(&b.year, &b.month, b.part)));
        Ok(self.files)
    }
}

//! `[tables.output]`: file sizes, row groups, memory bounds and limits on input records.

use serde::Deserialize;

use super::error::Invalid;

/// 128 MiB: large enough for efficient Athena scans, small enough that one Lambda writes
/// several files in parallel-friendly sizes (AWS guidance: 128 MiB–1 GiB Parquet files).
const fn default_target_file_size_bytes() -> u64 {
    128 * 1024 * 1024
}
/// Rows per Arrow record batch: arrow's own default; memory per batch stays in the low MiBs.
const fn default_batch_rows() -> usize {
    8192
}
/// Bytes buffered per open partition before a Parquet row group is flushed. 8 MiB keeps a
/// dozen open partitions well under a 256 MB Lambda while row groups stay scan-efficient.
const fn default_row_group_bytes() -> usize {
    8 * 1024 * 1024
}
/// Encoded bytes buffered across all open partitions before the largest row group is
/// flushed: the main lever on peak memory (writers hold about twice their encoded size; see
/// docs/BENCHMARKS.md for peak RSS at this default).
const fn default_buffer_budget_bytes() -> usize {
    12 * 1024 * 1024
}
/// More open partitions than this and the least recently used one is closed (its file
/// finished); memory stays bounded however scattered the timestamps are.
const fn default_max_open_partitions() -> usize {
    16
}
/// ZSTD level 1: most of the size win at a fraction of level 3's CPU.
const fn default_zstd_level() -> i32 {
    1
}
/// A field over this size is quarantined: Redshift's VARCHAR(MAX) is 64 KiB and Athena
/// rows over a few MiB fail; 1 MiB keeps real payloads and catches runaway quoting.
const fn default_max_field_bytes() -> usize {
    1024 * 1024
}
/// A record over this size is quarantined without being kept whole in memory.
const fn default_max_record_bytes() -> usize {
    16 * 1024 * 1024
}

/// Output layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Roll to a new Parquet file when one reaches this size.
    #[serde(default = "default_target_file_size_bytes")]
    pub target_file_size_bytes: u64,
    /// Flush a row group when a partition's buffered data reaches this size.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
    /// Flush the largest row group when all open partitions together buffer more than this.
    #[serde(default = "default_buffer_budget_bytes")]
    pub buffer_budget_bytes: usize,
    /// Rows per record batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Cap on partitions with an open file at once.
    #[serde(default = "default_max_open_partitions")]
    pub max_open_partitions: usize,
    /// ZSTD compression level (1–22).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Fields larger than this go to quarantine.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
    /// Records larger than this go to quarantine (truncated in the quarantine object).
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            target_file_size_bytes: default_target_file_size_bytes(),
            row_group_bytes: default_row_group_bytes(),
            buffer_budget_bytes: default_buffer_budget_bytes(),
            batch_rows: default_batch_rows(),
            max_open_partitions: default_max_open_partitions(),
            zstd_level: default_zstd_level(),
            max_field_bytes: default_max_field_bytes(),
            max_record_bytes: default_max_record_bytes(),
        }
    }
}

impl OutputConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if self.batch_rows == 0 || self.batch_rows > 1_000_000 {
            return Err(Invalid::at("batch_rows", "must be between 1 and 1000000"));
        }
        if self.target_file_size_bytes < 1024 * 1024 {
            return Err(Invalid::at(
                "target_file_size_bytes",
                "must be at least 1 MiB",
            ));
        }
        if self.row_group_bytes < 64 * 1024 {
            return Err(Invalid::at("row_group_bytes", "must be at least 64 KiB"));
        }
        if self.buffer_budget_bytes < self.row_group_bytes {
            return Err(Invalid::at(
                "buffer_budget_bytes",
                "must be at least row_group_bytes",
            ));
        }
        if self.max_open_partitions == 0 {
            return Err(Invalid::at("max_open_partitions", "must be at least 1"));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Invalid::at("zstd_level", "must be between 1 and 22"));
        }
        if self.max_field_bytes == 0 || self.max_record_bytes < self.max_field_bytes {
            return Err(Invalid::at(
                "max_record_bytes",
                "must be at least max_field_bytes, which must be positive",
            ));
        }
        Ok(())
    }
}

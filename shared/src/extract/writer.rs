//! Parts: rows as gzip JSON lines, `part_rows` rows an object. A row is one JSON object with
//! the result's columns in order, then `_shard` (and `_op` when deletes are marked), written
//! straight from the source's bytes (`values.rs`). A part is staged in a temporary file and
//! uploaded whole, so memory holds one row, never a part or a page.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{Map, Value};
use tempfile::TempPath;

use super::columns::Described;
use super::error::ShardError;
use super::state::Cursor;
use super::values::{self, Kind};
use crate::lake::layout::extract_part_key;
use crate::lake::{LakeError, ObjectStore, PutMode};

/// Builds one row's JSON line at a time, and remembers where its watermark and key values are
/// so that the last row of a page becomes the cursor.
pub(crate) struct RowEncoder {
    /// `{"name":` for the first column, `,"name":` for the others.
    prefixes: Vec<Vec<u8>>,
    names: Vec<String>,
    /// `,"_shard":"<id>"`.
    shard: Vec<u8>,
    soft_delete: Option<usize>,
    mark_deletes: bool,
    updated_at: usize,
    keys: Vec<usize>,
    line: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// The greatest `updated_at` written, as its JSON text (fixed width: text order is time
    /// order).
    newest: Vec<u8>,
    /// The JSON texts of the last finished row's `updated_at` and key columns (in that order):
    /// the cursor, and what the next row's position must differ from.
    prev: Vec<Vec<u8>>,
    /// A dump orders by the key alone, so its positions are the key alone.
    dump: bool,
}

impl RowEncoder {
    /// An encoder for the described columns; `mark_deletes` adds `_op` (`"d"` when the
    /// soft-delete column is set, `"u"` otherwise).
    pub(crate) fn new(d: &Described, shard: &str) -> Self {
        let prefixes = d
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut p = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
                values::string(&c.name, &mut p);
                p.push(b':');
                p
            })
            .collect();
        let mut tail = b",\"_shard\":".to_vec();
        values::string(shard, &mut tail);
        Self {
            prefixes,
            names: d.columns.iter().map(|c| c.name.clone()).collect(),
            shard: tail,
            soft_delete: d.soft_delete,
            mark_deletes: d.soft_delete.is_some(),
            updated_at: d.updated_at,
            keys: d.keys.clone(),
            line: Vec::with_capacity(1024),
            spans: Vec::new(),
            newest: Vec::new(),
            prev: Vec::new(),
            dump: false,
        }
    }

    /// Positions are keys alone (a dump) or `(updated_at, key)` (a range).
    pub(crate) fn set_dump(&mut self, dump: bool) {
        self.dump = dump;
    }

    /// Fails when the row in progress has the last finished row's position: rows the keyset
    /// cannot tell apart, of which a page boundary between them would skip all but the first.
    pub(crate) fn check_distinct(&self) -> Result<(), ShardError> {
        let Some((prev_ua, prev_keys)) = self.prev.split_first() else {
            return Ok(());
        };
        let same_keys = self
            .keys
            .iter()
            .zip(prev_keys)
            .all(|(&i, p)| self.text(i) == p.as_slice());
        if same_keys && (self.dump || self.text(self.updated_at) == prev_ua.as_slice()) {
            let names: Vec<&str> = self.keys.iter().map(|&i| self.names[i].as_str()).collect();
            return Err(ShardError::DuplicateKey {
                columns: names.join(", "),
                with_updated_at: !self.dump,
            });
        }
        Ok(())
    }

    pub(crate) fn columns(&self) -> usize {
        self.prefixes.len()
    }

    /// Appends column `i` (called for 0, 1, … in order, after `begin` for i = 0).
    pub(crate) fn value(
        &mut self,
        i: usize,
        kind: Kind,
        bytes: Option<&[u8]>,
    ) -> Result<(), ShardError> {
        if i == 0 {
            self.line.clear();
            self.spans.clear();
        }
        self.line.extend_from_slice(&self.prefixes[i]);
        let start = self.line.len();
        match bytes {
            None => self.line.extend_from_slice(b"null"),
            Some(b) => values::encode(kind, b, &mut self.line)
                .map_err(|r| ShardError::column(&self.names[i], r))?,
        }
        self.spans.push((start, self.line.len()));
        Ok(())
    }

    fn text(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.line[a..b]
    }

    /// Closes the row: `_shard`, `_op`, the line break. A NULL watermark or key cannot be
    /// paged past, so it fails the run naming the column.
    pub(crate) fn finish(&mut self) -> Result<&[u8], ShardError> {
        for &i in self.keys.iter().chain([&self.updated_at]) {
            if self.text(i) == b"null" {
                return Err(ShardError::column(
                    &self.names[i],
                    "is NULL in a row: key and updated_at columns must be NOT NULL to page by them",
                ));
            }
        }
        self.check_distinct()?;
        let mut prev = std::mem::take(&mut self.prev);
        prev.resize_with(self.keys.len() + 1, Vec::new);
        for (p, &i) in prev
            .iter_mut()
            .zip([&self.updated_at].into_iter().chain(&self.keys))
        {
            p.clear();
            p.extend_from_slice(self.text(i));
        }
        self.prev = prev;
        let ua = self.text(self.updated_at);
        if ua > self.newest.as_slice() {
            self.newest = ua.to_vec();
        }
        self.line.extend_from_slice(&self.shard);
        if self.mark_deletes {
            let deleted = self
                .soft_delete
                .is_some_and(|i| !matches!(self.text(i), b"null" | b"false" | b"0"));
            self.line.extend_from_slice(if deleted {
                b",\"_op\":\"d\""
            } else {
                b",\"_op\":\"u\""
            });
        }
        self.line.extend_from_slice(b"}\n");
        Ok(&self.line)
    }

    /// The position of the last finished row: `(updated_at, key)` in a range, the key in a dump.
    pub(crate) fn cursor(&self, dump: bool) -> Result<Cursor, ShardError> {
        // Position 0 of `prev` is updated_at, then the keys in order.
        let parse = |pos: usize| {
            let i = if pos == 0 {
                self.updated_at
            } else {
                self.keys[pos - 1]
            };
            let text = self.prev.get(pos).map_or(&b""[..], |t| t.as_slice());
            serde_json::from_slice::<Value>(text)
                .map_err(|e| ShardError::column(&self.names[i], e.to_string()))
        };
        let key = (1..=self.keys.len())
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?;
        if dump {
            return Ok(Cursor::AfterKeys(key));
        }
        match parse(0)? {
            Value::String(updated_at) => Ok(Cursor::After {
                updated_at,
                key: Some(key),
            }),
            _ => Err(ShardError::column(
                &self.names[self.updated_at],
                "is not a timestamp string",
            )),
        }
    }

    /// The greatest `updated_at` written so far.
    pub(crate) fn newest(&self) -> Option<String> {
        serde_json::from_slice(&self.newest).ok()
    }
}

/// A part being written.
struct OpenPart {
    gz: GzEncoder<BufWriter<File>>,
    path: TempPath,
    rows: u64,
}

/// Uploads rows as parts `part-<index>` of one run, `part_rows` rows each.
pub(crate) struct PartSink<'a> {
    store: &'a dyn ObjectStore,
    run_prefix: String,
    part_rows: u64,
    next_index: u32,
    open: Option<OpenPart>,
    /// Keys of the parts uploaded, rows in them, and their compressed bytes.
    pub parts: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
}

fn temp_err(e: std::io::Error) -> ShardError {
    ShardError::TempFile {
        reason: e.to_string(),
    }
}

impl<'a> PartSink<'a> {
    pub(crate) fn new(
        store: &'a dyn ObjectStore,
        run_prefix: String,
        part_rows: u32,
        next_index: u32,
    ) -> Self {
        Self {
            store,
            run_prefix,
            part_rows: u64::from(part_rows.max(1)),
            next_index,
            open: None,
            parts: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds one line; uploads the part when it is full.
    pub(crate) async fn push(&mut self, line: &[u8]) -> Result<(), ShardError> {
        let open = match &mut self.open {
            Some(o) => o,
            None => {
                let (file, path) = tempfile::NamedTempFile::new()
                    .map_err(temp_err)?
                    .into_parts();
                // Level 1: several times faster than the default for about 20% more bytes;
                // extract is bound by its compression, the lake is not by size.
                let gz =
                    GzEncoder::new(BufWriter::with_capacity(1 << 16, file), Compression::fast());
                self.open.insert(OpenPart { gz, path, rows: 0 })
            }
        };
        open.gz.write_all(line).map_err(temp_err)?;
        open.rows += 1;
        if open.rows >= self.part_rows {
            self.flush().await?;
        }
        Ok(())
    }

    /// Uploads the part in progress, if it has rows.
    pub(crate) async fn flush(&mut self) -> Result<(), ShardError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let file = open
            .gz
            .finish()
            .map_err(temp_err)?
            .into_inner()
            .map_err(|e| temp_err(e.into_error()))?;
        let bytes = file.metadata().map_err(temp_err)?.len();
        drop(file);
        let key = extract_part_key(&self.run_prefix, self.next_index);
        self.upload(&key, &open.path, bytes).await?;
        tracing::info!(key = %key, rows = open.rows, bytes, "extract part written");
        self.next_index += 1;
        self.rows += open.rows;
        self.bytes += bytes;
        self.parts.push(key);
        Ok(())
    }
}

impl PartSink<'_> {
    /// Writes a part only where none is: a resumed run continues with the next index, so an
    /// existing key means another run took the shard over. Up to `CREATE_MAX_BYTES` the part
    /// goes up with create-if-absent; a larger one (the lake's file upload has no condition) is
    /// checked first, which leaves a window only as wide as its upload.
    async fn upload(
        &self,
        key: &str,
        path: &std::path::Path,
        bytes: u64,
    ) -> Result<(), ShardError> {
        let lake = |e| ShardError::lake(key, e);
        let exists = || ShardError::PartExists {
            key: key.to_string(),
        };
        if bytes <= CREATE_MAX_BYTES {
            let body = std::fs::read(path).map_err(temp_err)?;
            return match self.store.put(key, body.into(), PutMode::Create).await {
                Ok(_) => Ok(()),
                Err(LakeError::AlreadyExists { .. }) => Err(exists()),
                Err(e) => Err(lake(e)),
            };
        }
        match self.store.head(key).await {
            Ok(_) => return Err(exists()),
            Err(LakeError::NotFound { .. }) => {}
            Err(e) => return Err(lake(e)),
        }
        self.store.put_file_moving(key, path).await.map_err(lake)?;
        Ok(())
    }
}

/// The largest part written with create-if-absent, read into memory for it (a part of the
/// default 100,000 rows is a few MB compressed).
const CREATE_MAX_BYTES: u64 = 64 << 20;

/// The rows of a part, in order: what the transform will read (for tests and tools).
pub fn read_part(gz: &[u8]) -> Result<Vec<Map<String, Value>>, String> {
    let mut rows = Vec::new();
    for_each_line(gz, |line| {
        match serde_json::from_slice(line) {
            Ok(Value::Object(m)) => rows.push(m),
            Ok(_) => return Err(format!("line {} is not an object", rows.len() + 1)),
            Err(e) => return Err(format!("line {}: {e}", rows.len() + 1)),
        }
        Ok(())
    })?;
    Ok(rows)
}

/// The last row of a part, decompressed as a stream (a resumed run continues after it).
pub(crate) fn last_row(gz: &[u8]) -> Result<Option<Map<String, Value>>, String> {
    let mut last = Vec::new();
    for_each_line(gz, |line| {
        last.clear();
        last.extend_from_slice(line);
        Ok(())
    })?;
    if last.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice(&last) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err("the last line is not an object".into()),
        Err(e) => Err(format!("the last line: {e}")),
    }
}

fn for_each_line(gz: &[u8], mut f: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
    let mut r = BufReader::new(flate2::bufread::MultiGzDecoder::new(gz));
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| format!("not gzip JSON lines: {e}"))?
            == 0
        {
            return Ok(());
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if !line.is_empty() {
            f(&line)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::columns::ColumnInfo;
    use crate::lake::LocalStore;

    fn described() -> Described {
        let c = |n: &str, kind| ColumnInfo {
            name: n.into(),
            kind,
            sql_type: String::new(),
        };
        Described {
            columns: vec![
                c(
                    "id",
                    Kind::MyInt {
                        bytes: 4,
                        signed: true,
                    },
                ),
                c("updated_at", Kind::MyDateTime),
                c(
                    "deleted",
                    Kind::MyInt {
                        bytes: 1,
                        signed: true,
                    },
                ),
            ],
            updated_at: 1,
            keys: vec![0],
            soft_delete: Some(2),
        }
    }

    fn row(
        enc: &mut RowEncoder,
        id: i32,
        minute: u8,
        deleted: Option<i8>,
    ) -> Result<Vec<u8>, ShardError> {
        enc.value(
            0,
            Kind::MyInt {
                bytes: 4,
                signed: true,
            },
            Some(&id.to_le_bytes()),
        )?;
        enc.value(
            1,
            Kind::MyDateTime,
            Some(&[7, 0xe8, 0x07, 1, 2, 3, minute, 0]),
        )?;
        let d = deleted.map(|d| d.to_le_bytes());
        enc.value(
            2,
            Kind::MyInt {
                bytes: 1,
                signed: true,
            },
            d.as_ref().map(|d| &d[..]),
        )?;
        enc.finish().map(<[u8]>::to_vec)
    }

    #[tokio::test]
    async fn rows_become_gzip_parts_of_part_rows_and_read_back() {
        let d = described();
        let mut enc = RowEncoder::new(&d, "eu\"1");
        let line = row(&mut enc, 7, 4, None).unwrap();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            "{\"id\":7,\"updated_at\":\"2024-01-02T03:04:00.000000Z\",\"deleted\":null,\"_shard\":\"eu\\\"1\",\"_op\":\"u\"}\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let mut sink = PartSink::new(&store, "raw/t/shard=s/r1/".into(), 2, 3);
        sink.push(&line).await.unwrap();
        let deleted = row(&mut enc, 8, 2, Some(1)).unwrap();
        assert!(String::from_utf8_lossy(&deleted).ends_with("\"_op\":\"d\"}\n"));
        sink.push(&deleted).await.unwrap();
        assert_eq!(
            enc.cursor(false).unwrap(),
            Cursor::After {
                updated_at: "2024-01-02T03:02:00.000000Z".into(),
                key: Some(vec![Value::from(8)])
            }
        );
        assert_eq!(
            enc.cursor(true).unwrap(),
            Cursor::AfterKeys(vec![Value::from(8)])
        );
        assert_eq!(enc.newest().as_deref(), Some("2024-01-02T03:04:00.000000Z"));
        sink.push(&row(&mut enc, 9, 5, Some(0)).unwrap())
            .await
            .unwrap();
        sink.flush().await.unwrap();
        sink.flush().await.unwrap();
        assert_eq!(
            sink.parts,
            vec![
                "raw/t/shard=s/r1/part-00003.jsonl.gz",
                "raw/t/shard=s/r1/part-00004.jsonl.gz"
            ]
        );
        assert_eq!(sink.rows, 3);
        let first = store.get_bytes(&sink.parts[0]).await.unwrap();
        let rows = read_part(&first).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["_op"], "d");
        assert_eq!(rows[0]["deleted"], Value::Null);
        let last = store.get_bytes(&sink.parts[1]).await.unwrap();
        assert_eq!(last_row(&last).unwrap().unwrap()["id"], 9);
        assert_eq!(sink.bytes, first.len() as u64 + last.len() as u64);
    }

    #[test]
    fn null_keys_and_watermarks_are_refused_by_name() {
        let d = described();
        let mut enc = RowEncoder::new(&d, "s");
        enc.value(
            0,
            Kind::MyInt {
                bytes: 4,
                signed: true,
            },
            None,
        )
        .unwrap();
        enc.value(1, Kind::MyDateTime, Some(&[0])).unwrap();
        enc.value(2, Kind::Null, None).unwrap();
        let e = enc.finish().unwrap_err().to_string();
        assert!(e.contains("column `id`") && e.contains("NOT NULL"), "{e}");
        assert!(read_part(b"not gzip").is_err());
    }
}

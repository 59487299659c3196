//! `sluice cdc peek`: the slot's pending changes decoded into change events, one JSON line
//! each, written to any writer — the events a run would put on the stream, without Kinesis
//! and without moving the slot (a peek never consumes). For debugging, and the decoding speed
//! benchmark (`bench/cdc.sh`).
//!
//! The COPY stream goes chunk by chunk through [`CopyFrames`] and the [`ChangeDecoder`]'s fast
//! path (`fastjson.rs`: each event's JSON written straight from the tuple's text, the same
//! events as the `ChangeEvent`s of a run) into the writer: nothing is collected, and memory
//! stays that of one row and its events whatever the size of a transaction. Differences from a run: an event over 1 MiB is
//! written whole (a run spills it and sends a pointer), a transaction part of which a run has
//! already sent is written whole, and no heartbeat is emitted.
//!
//! While the peek lasts, its backend holds the slot: a run of the wal-decoder started meanwhile
//! fails (and the next one goes ahead).

use std::collections::HashMap;
use std::io::Write;

use futures::StreamExt;
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, Row};

use super::source::{self, lsn_text};
use super::WalError;
use crate::cdc::copy::{peek_copy_sql, CopyFrames};
use crate::cdc::decode::{ChangeDecoder, Decoded, DecoderOptions};
use crate::cdc::fastjson::JsonEvents;
use crate::cdc::pgoutput::CdcDecodeError;

/// Primary-key columns per source `(schema, table)`.
pub type PrimaryKeys = HashMap<(String, String), Vec<String>>;

/// What one peek read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeekStats {
    /// The slot's confirmed position: the peek read the changes after it.
    pub from_lsn: u64,
    /// Change events written (one line each).
    pub changes: u64,
    /// Transactions read to their commit.
    pub transactions: u64,
    /// Logical messages read (the decoder's heartbeats among them); not written.
    pub messages: u64,
    /// End of the last transaction read: where a run that sent all of them would advance to.
    pub last_commit_end: Option<u64>,
}

/// Why a peek failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeekError {
    /// Reading or decoding the slot.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The writer refused the events (a full disk, a closed pipe).
    #[error("writing the events: {0}")]
    Write(#[source] std::io::Error),
}

impl From<CdcDecodeError> for PeekError {
    fn from(e: CdcDecodeError) -> Self {
        PeekError::Wal(WalError::Decode(e))
    }
}

/// Connection options from a `postgres://` URL given on the command line. The error does not
/// repeat the URL: it may hold a password.
pub fn url_options(url: &str) -> Result<PgConnectOptions, WalError> {
    use std::str::FromStr;
    let options = PgConnectOptions::from_str(url).map_err(|_| WalError::Config {
        reason: "the source URL is not a valid postgres:// URL".into(),
    })?;
    Ok(options.application_name("sluice-cdc-peek"))
}

/// Writes the pending changes of `slot` for `publications` to `writer` as JSON lines, without
/// advancing the slot. `upto` caps the peek like a run's `max_changes_per_peek` (PostgreSQL's
/// `upto_nchanges`: it stops at the first commit after that many rows, never inside a
/// transaction); `None` reads everything pending. `primary_keys` as the pipeline declares them,
/// or `None` to read each published table's primary key from the catalog. The writer is
/// flushed at the end.
pub async fn peek_to<W: Write + ?Sized>(
    options: &PgConnectOptions,
    slot: &str,
    publications: &[String],
    primary_keys: Option<PrimaryKeys>,
    upto: Option<u64>,
    writer: &mut W,
) -> Result<PeekStats, PeekError> {
    let sql = peek_copy_sql(slot, publications, upto)?;
    let mut conn = source::connect(options).await?;
    let info = source::slot_info(&mut conn, slot).await?;
    if info.plugin != "pgoutput" {
        return Err(WalError::WrongPlugin {
            slot: slot.to_string(),
            plugin: info.plugin,
        }
        .into());
    }
    let db = source::database_name(&mut conn).await?;
    let primary_keys = match primary_keys {
        Some(keys) => keys,
        None => publication_primary_keys(&mut conn, publications).await?,
    };
    let mut lines = EventLines::new(DecoderOptions { db, primary_keys });
    lines.stats.from_lsn = info.confirmed_flush_lsn;
    let what = || {
        format!(
            "peeking slot {slot} (from {})",
            lsn_text(info.confirmed_flush_lsn)
        )
    };
    let mut stream = conn
        .copy_out_raw(&sql)
        .await
        .map_err(|e| WalError::db(&what(), e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| WalError::db(&what(), e))?;
        lines.push(&chunk, writer)?;
    }
    lines.finish(writer)
}

/// The primary-key columns of every table in `publications`, in key order.
pub async fn publication_primary_keys(
    conn: &mut PgConnection,
    publications: &[String],
) -> Result<PrimaryKeys, WalError> {
    let what = "reading the published tables' primary keys";
    let rows = sqlx::query(
        "SELECT pt.schemaname::text, pt.tablename::text, a.attname::text \
         FROM pg_publication_tables pt \
              JOIN pg_namespace n ON n.nspname = pt.schemaname \
              JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
              JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
              CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
         WHERE pt.pubname = ANY($1) \
         ORDER BY 1, 2, k.ord",
    )
    .bind(publications)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| WalError::db(what, e))?;
    let mut keys = PrimaryKeys::new();
    for r in rows {
        let get = |i| r.try_get::<String, _>(i).map_err(|e| WalError::db(what, e));
        let (schema, table, column) = (get(0)?, get(1)?, get(2)?);
        let columns = keys.entry((schema, table)).or_default();
        // A table in two of the publications is listed twice.
        if !columns.contains(&column) {
            columns.push(column);
        }
    }
    Ok(keys)
}

/// The push side of the peek: COPY bytes in, event lines out.
struct EventLines {
    frames: CopyFrames,
    decoder: ChangeDecoder,
    /// Reused for every row: the row's Begin, Commit or Message.
    out: Vec<Decoded>,
    /// Reused for every row: its change events as JSON lines (the decoder's fast path).
    json: JsonEvents,
    stats: PeekStats,
}

impl EventLines {
    fn new(options: DecoderOptions) -> Self {
        EventLines {
            frames: CopyFrames::new(),
            decoder: ChangeDecoder::new(options),
            out: Vec::with_capacity(1),
            json: JsonEvents::default(),
            stats: PeekStats::default(),
        }
    }

    /// Decodes the complete rows of the bytes so far and writes their events.
    fn push<W: Write + ?Sized>(&mut self, chunk: &[u8], writer: &mut W) -> Result<(), PeekError> {
        self.frames.push(chunk);
        while let Some(row) = self.frames.next_row()? {
            self.decoder
                .decode_json(&row, &mut self.out, &mut self.json)?;
            // Compact JSON, the same events a run puts in the Kinesis records.
            writer
                .write_all(&self.json.bytes)
                .map_err(PeekError::Write)?;
            self.stats.changes += self.json.events.len() as u64;
            self.json.clear();
            for d in self.out.drain(..) {
                match d {
                    Decoded::Commit { end_lsn, .. } => {
                        self.stats.transactions += 1;
                        self.stats.last_commit_end = Some(end_lsn);
                    }
                    Decoded::Message { .. } => self.stats.messages += 1,
                    Decoded::Begin { .. } | Decoded::Change(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Checks that the stream ended where COPY ends, and flushes the writer.
    fn finish<W: Write + ?Sized>(self, writer: &mut W) -> Result<PeekStats, PeekError> {
        self.frames.finish()?;
        writer.flush().map_err(PeekError::Write)?;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::copy::tests::{rows_chunked, FIXTURE};
    use crate::cdc::event::ChangeEvent;

    fn options() -> DecoderOptions {
        DecoderOptions {
            db: "postgres".into(),
            primary_keys: HashMap::from([
                (("cdcfx".into(), "a".into()), vec!["id".into()]),
                (("cdcfx".into(), "b".into()), vec!["id".into()]),
            ]),
        }
    }

    fn lines(chunk: usize) -> (Vec<u8>, PeekStats) {
        let mut l = EventLines::new(options());
        let mut written = Vec::new();
        for c in FIXTURE.chunks(chunk) {
            l.push(c, &mut written).expect("the fixture decodes");
        }
        let stats = l.finish(&mut written).expect("the fixture ends");
        (written, stats)
    }

    /// The lines are the decoder's events, in order, one per line, whatever the chunking.
    #[test]
    fn lines_are_the_decoders_events_whatever_the_chunking() {
        let rows = rows_chunked(FIXTURE, 1 << 20).expect("rows");
        let mut d = ChangeDecoder::new(options());
        let mut decoded = Vec::new();
        for r in &rows {
            d.decode(r, &mut decoded).expect("decodes");
        }
        let events: Vec<ChangeEvent> = decoded
            .into_iter()
            .filter_map(|d| match d {
                Decoded::Change(e) => Some(e),
                _ => None,
            })
            .collect();
        let (whole, stats) = lines(1 << 20);
        let text = String::from_utf8(whole.clone()).expect("utf-8");
        let got: Vec<ChangeEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("an event per line"))
            .collect();
        assert_eq!(got, events);
        assert!(text.ends_with('\n'));
        assert_eq!(stats.changes, events.len() as u64);
        assert!(stats.transactions > 0 && stats.last_commit_end.is_some());
        for chunk in [1, 3, 100, 4096] {
            let (bytes, s) = lines(chunk);
            assert_eq!(bytes, whole, "chunk {chunk}");
            assert_eq!(s, stats, "chunk {chunk}");
        }
    }

    /// A stream cut short is an error, not a silent end.
    #[test]
    fn a_truncated_stream_is_an_error() {
        let mut l = EventLines::new(options());
        let mut written = Vec::new();
        l.push(&FIXTURE[..FIXTURE.len() - 1], &mut written)
            .expect("the rows so far decode");
        let e = l.finish(&mut written).expect_err("truncated");
        assert!(e.to_string().contains("input ends"), "{e}");
    }

    /// A writer that fails is reported as such.
    #[test]
    fn a_failing_writer_is_a_write_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut l = EventLines::new(options());
        let e = l.push(FIXTURE, &mut Closed).expect_err("the writer fails");
        assert!(
            matches!(&e, PeekError::Write(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            "{e:?}"
        );
    }

    #[test]
    fn url_errors_do_not_repeat_the_url() {
        let e = url_options("postgres://u:hunter2@h:port/db")
            .map(|_| ())
            .expect_err("not postgres");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

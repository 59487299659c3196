//! A shard's state in the lake, under `state/extract/<table>/<shard>/`:
//!
//! - `lease`: one run per shard at a time. Taken with the lake's create-if-absent write, the
//!   expiry in the body (the object store has no usable modification time); an expired lease
//!   is taken over with an update-if-match on the ETag read, and released by overwriting it
//!   with an expired body, if-match on our own ETag (the approach of `warehouse::lease`,
//!   keyed by table and shard here).
//! - `state.json`: the committed watermark and the run in progress (its range), written
//!   if-match on the ETag read at the start of the run, so a run that lost its lease can never
//!   commit over the one that took it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ShardError;
use crate::lake::{LakeError, ObjectStore, PutMode};

/// Where a range or a dump continues from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cursor {
    /// An incremental range from the first row.
    Start,
    /// After this position in `(updated_at, key…)` order; `key: None` is after every row of
    /// that instant (where a dump leaves the watermark).
    After {
        updated_at: String,
        key: Option<Vec<Value>>,
    },
    /// A dump from its first key.
    DumpStart,
    /// A dump after this key, in key order.
    AfterKeys(Vec<Value>),
}

impl Cursor {
    /// Whether this cursor pages in key order (a historical dump).
    pub fn is_dump(&self) -> bool {
        matches!(self, Cursor::DumpStart | Cursor::AfterKeys(_))
    }

    /// The watermark's instant, for the lag of an idle shard.
    pub fn updated_at(&self) -> Option<&str> {
        match self {
            Cursor::After { updated_at, .. } => Some(updated_at),
            _ => None,
        }
    }
}

/// Incremental range or historical dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Incremental,
    Historical,
}

/// A run's range, recorded before its first part is written: a re-run after a crash reads
/// the same range and names its parts the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub kind: RunKind,
    /// Names the run's folder of parts: the upper bound, then a hash of the whole range.
    pub id: String,
    /// Where the range starts (exclusive).
    pub from: Cursor,
    /// The range's upper bound on `updated_at` (inclusive), ISO-8601 UTC.
    pub upper: String,
    /// The source's clock when the range was chosen.
    pub source_now: String,
}

impl RunRecord {
    /// A new run from `from` up to `upper`; its id is a function of the range alone.
    pub fn new(kind: RunKind, from: Cursor, upper: String, source_now: String) -> Self {
        let range = serde_json::json!([kind, from, upper]).to_string();
        let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(range.as_bytes()));
        let compact: String = upper.chars().filter(|c| *c != '-' && *c != ':').collect();
        Self {
            kind,
            id: format!("{compact}-{hash}"),
            from,
            upper,
            source_now,
        }
    }
}

/// The state object of one shard of one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardState {
    /// Every row at or before this position has been extracted (None: nothing yet).
    pub watermark: Option<Cursor>,
    /// The run whose range is not finished yet.
    pub run: Option<RunRecord>,
}

/// The state as read, with the ETag the next write is conditional on (None: no object yet).
pub(crate) async fn read_state(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<(ShardState, Option<String>), ShardError> {
    let meta = match store.head(key).await {
        Ok(m) => m,
        Err(LakeError::NotFound { .. }) => return Ok((ShardState::default(), None)),
        Err(e) => return Err(ShardError::lake(key, e)),
    };
    let body = store
        .get_bytes(key)
        .await
        .map_err(|e| ShardError::lake(key, e))?;
    let state = serde_json::from_slice(&body).map_err(|e| ShardError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    let etag = meta.etag.ok_or_else(|| ShardError::Corrupt {
        key: key.to_string(),
        reason: "the store reports no ETag, so the state cannot be written conditionally".into(),
    })?;
    Ok((state, Some(etag)))
}

/// Writes the state if it is still the version read (`etag`; None: if there is none yet);
/// returns the new ETag. Someone else's write in between is `Concurrent`.
pub(crate) async fn write_state(
    store: &dyn ObjectStore,
    key: &str,
    state: &ShardState,
    etag: Option<String>,
) -> Result<String, ShardError> {
    let body = serde_json::to_vec_pretty(state).map_err(|e| ShardError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    let mode = match etag {
        Some(e) => PutMode::UpdateIfMatch(e),
        None => PutMode::Create,
    };
    match store.put(key, Bytes::from(body), mode).await {
        Ok(r) => match r.etag {
            Some(e) => Ok(e),
            None => store
                .head(key)
                .await
                .ok()
                .and_then(|m| m.etag)
                .ok_or_else(|| ShardError::Corrupt {
                    key: key.to_string(),
                    reason: "no ETag after the write".into(),
                }),
        },
        Err(
            LakeError::AlreadyExists { .. }
            | LakeError::Precondition { .. }
            | LakeError::NotFound { .. },
        ) => Err(ShardError::Concurrent {
            key: key.to_string(),
        }),
        Err(e) => Err(ShardError::lake(key, e)),
    }
}

pub use crate::lake::lease::{acquire as acquire_lease, release as release_lease, Acquired, Lease};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::LocalStore;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let ttl = Duration::from_secs(60);
        let t0 = 1_700_000_000_000;
        let Acquired::Held(a) = acquire_lease(&store, "state/extract/t/s1/lease", "a", ttl, t0)
            .await
            .unwrap()
        else {
            panic!("free lease")
        };
        assert_eq!(
            acquire_lease(&store, "state/extract/t/s1/lease", "b", ttl, t0 + 1)
                .await
                .unwrap(),
            Acquired::Busy {
                owner: "a".into(),
                until_ms: t0 + 60_000
            }
        );
        assert!(matches!(
            acquire_lease(&store, "state/extract/t/s2/lease", "b", ttl, t0)
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
        // Expired: taken over; a's late release leaves b's lease.
        let Acquired::Held(b) = acquire_lease(&store, &a.key, "b", ttl, t0 + 61_000)
            .await
            .unwrap()
        else {
            panic!("takeover")
        };
        release_lease(&store, &a).await.unwrap();
        assert!(
            matches!(acquire_lease(&store, &a.key, "c", ttl, t0 + 62_000).await.unwrap(), Acquired::Busy { ref owner, .. } if owner == "b")
        );
        release_lease(&store, &b).await.unwrap();
        assert!(matches!(
            acquire_lease(&store, &a.key, "c", ttl, t0 + 63_000)
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
    }

    #[tokio::test]
    async fn state_writes_are_conditional() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let key = "state/extract/t/s1/state.json";
        let (s, etag) = read_state(&store, key).await.unwrap();
        assert_eq!((s.clone(), etag.clone()), (ShardState::default(), None));
        let run = RunRecord::new(
            RunKind::Incremental,
            Cursor::Start,
            "2024-01-01T00:00:00.000000Z".into(),
            "2024-01-01T00:05:00.000000Z".into(),
        );
        assert!(run.id.starts_with("20240101T000000.000000Z-"), "{}", run.id);
        let next = ShardState {
            run: Some(run.clone()),
            ..s
        };
        let e1 = write_state(&store, key, &next, None).await.unwrap();
        // A second writer that read "nothing" loses.
        assert!(matches!(
            write_state(&store, key, &next, None).await,
            Err(ShardError::Concurrent { .. })
        ));
        let (read, e) = read_state(&store, key).await.unwrap();
        assert_eq!((read, e.as_deref()), (next.clone(), Some(e1.as_str())));
        let done = ShardState {
            watermark: Some(Cursor::After {
                updated_at: run.upper.clone(),
                key: Some(vec![Value::from(3)]),
            }),
            run: None,
        };
        let e2 = write_state(&store, key, &done, Some(e1.clone()))
            .await
            .unwrap();
        assert_ne!(e1, e2);
        assert!(matches!(
            write_state(&store, key, &next, Some(e1)).await,
            Err(ShardError::Concurrent { .. })
        ));
        // Another range, another id.
        let other = RunRecord::new(
            RunKind::Incremental,
            done.watermark.clone().unwrap(),
            run.upper.clone(),
            run.source_now.clone(),
        );
        assert_ne!(other.id, run.id);
    }
}

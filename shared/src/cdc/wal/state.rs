//! The decoder's state in the lake, `state/cdc/<slot>.json`: where it left the slot, how far
//! into a transaction too large for one run Kinesis has acknowledged, and when it last wrote a
//! heartbeat. Written with a conditional put, so two runs that overlapped (a manual run beside
//! the schedule) cannot both believe they own the slot.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::WalError;
use crate::lake::{layout, LakeError, ObjectStore, PutMode};

/// `state/cdc/<slot>.json`.
pub fn state_key(slot: &str) -> String {
    layout::state_key(&format!("cdc/{slot}.json"))
}

/// A transaction part of which is on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partial {
    /// The transaction's commit LSN (Begin's final LSN): identifies it when decoded again.
    pub commit_lsn: u64,
    pub xid: u32,
    /// Its first `acked_changes` change events are on the stream: skipped when decoded again.
    pub acked_changes: u64,
}

/// What one run leaves for the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalState {
    pub slot: String,
    /// The slot's confirmed position as this decoder last set it (at set-up: the slot's
    /// consistent point). Any other position at the start of a run means someone else moved,
    /// dropped or recreated the slot: changes may be lost, so the run stops with an error.
    pub confirmed_lsn: u64,
    /// The position before the last advance. The state is written before the slot is advanced;
    /// a run that died in between leaves the slot here, and the next run finishes the advance.
    pub previous_lsn: u64,
    #[serde(default)]
    pub partial: Option<Partial>,
    /// When the last heartbeat was written (ms since the epoch).
    #[serde(default)]
    pub last_heartbeat_ms: Option<u64>,
    /// The slot's consistent point when `sluice cdc setup` created it: names the snapshot of
    /// this slot (its objects and progress), which must not follow the moving position.
    #[serde(default)]
    pub created_lsn: Option<u64>,
}

impl WalState {
    /// The snapshot's identity: the slot's consistent point at set-up (older states, written
    /// before it was recorded, fall back to the current position).
    pub fn snapshot_lsn(&self) -> u64 {
        self.created_lsn.unwrap_or(self.confirmed_lsn)
    }

    /// The state of a slot just created at `consistent_lsn`.
    pub fn new(slot: &str, consistent_lsn: u64) -> Self {
        Self {
            slot: slot.to_string(),
            confirmed_lsn: consistent_lsn,
            previous_lsn: consistent_lsn,
            partial: None,
            last_heartbeat_ms: None,
            created_lsn: Some(consistent_lsn),
        }
    }
}

/// The state as read, with the ETag a conditional write needs.
#[derive(Debug, Clone)]
pub struct Stored {
    pub state: WalState,
    pub etag: Option<String>,
}

/// Reads the slot's state; `None` when the slot was never set up.
pub async fn load(lake: &dyn ObjectStore, slot: &str) -> Result<Option<Stored>, WalError> {
    let key = state_key(slot);
    let meta = match lake.head(&key).await {
        Ok(m) => m,
        Err(LakeError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(WalError::lake(&key, e)),
    };
    let body = lake
        .get_bytes(&key)
        .await
        .map_err(|e| WalError::lake(&key, e))?;
    let state: WalState = serde_json::from_slice(&body).map_err(|e| WalError::State {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    if state.slot != slot {
        return Err(WalError::State {
            key,
            reason: format!("it names slot {}, not {slot}", state.slot),
        });
    }
    Ok(Some(Stored {
        state,
        etag: meta.etag,
    }))
}

/// Writes the state: created when `previous` is `None`, else only if nobody wrote it since it
/// was read. Returns what was written, with its new ETag.
pub async fn save(
    lake: &dyn ObjectStore,
    previous: Option<&Stored>,
    state: WalState,
) -> Result<Stored, WalError> {
    let key = state_key(&state.slot);
    let body = serde_json::to_vec_pretty(&state).map_err(|e| WalError::State {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let mode = match previous {
        None => PutMode::Create,
        Some(Stored { etag: Some(t), .. }) => PutMode::UpdateIfMatch(t.clone()),
        Some(Stored { etag: None, .. }) => PutMode::Overwrite,
    };
    let put = lake
        .put(&key, Bytes::from(body), mode)
        .await
        .map_err(|e| match e {
            LakeError::Precondition { .. } | LakeError::AlreadyExists { .. } => {
                WalError::Concurrent { key: key.clone() }
            }
            e => WalError::lake(&key, e),
        })?;
    Ok(Stored {
        state,
        etag: put.etag,
    })
}

/// Overwrites the state unconditionally: `sluice cdc setup` after it (re)created the slot.
pub async fn reset(lake: &dyn ObjectStore, state: WalState) -> Result<Stored, WalError> {
    let key = state_key(&state.slot);
    let body = serde_json::to_vec_pretty(&state).map_err(|e| WalError::State {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    let put = lake
        .put(&key, Bytes::from(body), PutMode::Overwrite)
        .await
        .map_err(|e| WalError::lake(&key, e))?;
    Ok(Stored {
        state,
        etag: put.etag,
    })
}

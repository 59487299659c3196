//! One run at a time per lease key (a table's load, an extract shard): a lease object under
//! `state/`, taken with the lake's create-if-absent write and, once expired, taken over with an update-if-match on the
//! ETag that was read. Whoever loses either race backs off; nobody runs beside the holder. The expiry is in the body, so a crashed holder blocks for one TTL at most.
//!
//! Release is a write too, never a delete: the holder overwrites the lease with an already
//! expired body, if-match on the ETag it wrote. A delete cannot be made conditional on every
//! store, and a read-then-delete races with a takeover (our lease expires, another run takes
//! it over between our read and our delete, and the delete removes *its* lease, letting a third
//! run in beside it). The released object stays; the next `acquire` takes it over as expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{LakeError, ObjectStore, PutMode};

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseBody {
    pub(crate) owner: String,
    pub(crate) expires_at_ms: u64,
}

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    /// ETag of the lease as we wrote it: release overwrites only this version.
    pub(crate) etag: Option<String>,
}

/// What an attempt to take a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Held(Lease),
    /// Another run holds it until `until_ms` (milliseconds since the epoch; `owner` is empty
    /// when it won a race just now).
    Busy {
        owner: String,
        until_ms: u64,
    },
}

fn lease_body(owner: &str, expires_at_ms: u64) -> Bytes {
    let b = LeaseBody {
        owner: owner.to_string(),
        expires_at_ms,
    };
    // Two plain fields always serialise.
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

/// Takes the lease at `key` for `ttl`, unless another owner holds an unexpired one.
pub async fn acquire(
    store: &dyn ObjectStore,
    key: &str,
    owner: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Acquired, LakeError> {
    let until = now_ms.saturating_add(ttl.as_millis() as u64);
    let held = |etag| {
        Acquired::Held(Lease {
            key: key.to_string(),
            owner: owner.to_string(),
            etag,
        })
    };
    let raced = Acquired::Busy {
        owner: String::new(),
        until_ms: now_ms,
    };
    match store
        .put(key, lease_body(owner, until), PutMode::Create)
        .await
    {
        Ok(r) => return Ok(held(r.etag)),
        Err(LakeError::AlreadyExists { .. }) => {}
        Err(LakeError::Precondition { .. }) => return Ok(raced),
        Err(e) => return Err(e),
    }
    // The ETag first: if the body changes after, the takeover below fails its condition.
    let meta = match store.head(key).await {
        Ok(m) => m,
        Err(LakeError::NotFound { .. }) => return Ok(raced),
        Err(e) => return Err(e),
    };
    let current: Option<LeaseBody> = match store.get_bytes(key).await {
        Ok(b) => serde_json::from_slice(&b).ok(),
        Err(LakeError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    if let Some(b) = current.filter(|b| b.expires_at_ms > now_ms) {
        return Ok(Acquired::Busy {
            owner: b.owner,
            until_ms: b.expires_at_ms,
        });
    }
    let Some(etag) = meta.etag else {
        return Ok(raced);
    };
    match store
        .put(key, lease_body(owner, until), PutMode::UpdateIfMatch(etag))
        .await
    {
        Ok(r) => Ok(held(r.etag)),
        Err(LakeError::Precondition { .. } | LakeError::NotFound { .. }) => Ok(raced),
        Err(e) => Err(e),
    }
}

/// Gives the lease back by writing an expired body over our own version (never a delete,
/// which could remove a newer holder's lease). A lease taken over after our expiry is left.
pub async fn release(store: &dyn ObjectStore, lease: &Lease) -> Result<(), LakeError> {
    let Some(etag) = &lease.etag else {
        tracing::warn!(key = %lease.key, "lease without an ETag: left to expire");
        return Ok(());
    };
    match store
        .put(
            &lease.key,
            lease_body(&lease.owner, 0),
            PutMode::UpdateIfMatch(etag.clone()),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(LakeError::Precondition { .. }) => {
            tracing::info!(key = %lease.key, owner = %lease.owner, "lease taken over after its expiry: not released");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

//! One load per table at a time: a lease object under `state/loads/<table>/lease`, taken with the
//! lake's create-if-absent write and, once expired, taken over with an update-if-match on the
//! ETag that was read. Whoever loses either race backs off; nobody runs a second transaction on
//! the same keys. The expiry is in the body, so a crashed holder blocks for one TTL at most.
//!
//! Release is a write too, never a delete: the holder overwrites the lease with an already
//! expired body, if-match on the ETag it wrote. A delete cannot be made conditional on every
//! store, and a read-then-delete races with a takeover (our lease expires, another load takes
//! it over between our read and our delete, and the delete removes *its* lease, letting a third
//! load in beside it). The released object stays; the next `acquire` takes it over as expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::lake::layout::load_lease_key;
use crate::lake::{LakeError, ObjectStore, PutMode};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Body {
    owner: String,
    expires_at_ms: u64,
}

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    /// ETag of the lease object as we wrote it: release overwrites only this version.
    etag: Option<String>,
}

/// What an attempt to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Held(Lease),
    /// Another load holds it until then (milliseconds since the epoch).
    Busy {
        owner: String,
        until_ms: u64,
    },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A lease body: `owner` holds it until `expires_at_ms` (0: released).
fn body(owner: &str, expires_at_ms: u64) -> Bytes {
    let b = Body {
        owner: owner.to_string(),
        expires_at_ms,
    };
    // Two plain fields always serialise.
    Bytes::from(serde_json::to_vec(&b).unwrap_or_default())
}

/// Takes the lease of `table` for `ttl`, unless another owner holds an unexpired one.
pub async fn acquire(
    store: &dyn ObjectStore,
    table: &str,
    owner: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Acquired, LakeError> {
    let key = load_lease_key(table);
    let until = now_ms + ttl.as_millis() as u64;
    let held = |etag| {
        Acquired::Held(Lease {
            key: key.clone(),
            owner: owner.to_string(),
            etag,
        })
    };
    match store.put(&key, body(owner, until), PutMode::Create).await {
        Ok(r) => return Ok(held(r.etag)),
        Err(LakeError::AlreadyExists { .. }) => {}
        // Another conditional write to the key was in flight (S3's 409): it won.
        Err(LakeError::Precondition { .. }) => {
            return Ok(Acquired::Busy {
                owner: String::new(),
                until_ms: now_ms,
            })
        }
        Err(e) => return Err(e),
    }
    // Someone has it, or had it. The ETag first: if the body changes after, our update fails.
    let meta = match store.head(&key).await {
        Ok(m) => m,
        // Gone in between (a store cleaned by hand; release never deletes): try once more from
        // the start next time.
        Err(LakeError::NotFound { .. }) => {
            return Ok(Acquired::Busy {
                owner: String::new(),
                until_ms: now_ms,
            })
        }
        Err(e) => return Err(e),
    };
    let current: Option<Body> = match store.get_bytes(&key).await {
        Ok(b) => serde_json::from_slice(&b).ok(),
        Err(LakeError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    if let Some(b) = &current {
        if b.expires_at_ms > now_ms {
            return Ok(Acquired::Busy {
                owner: b.owner.clone(),
                until_ms: b.expires_at_ms,
            });
        }
    }
    // Expired or released (or unreadable): take it over, if nobody else did since we looked.
    let Some(etag) = meta.etag else {
        return Ok(Acquired::Busy {
            owner: String::new(),
            until_ms: now_ms,
        });
    };
    match store
        .put(&key, body(owner, until), PutMode::UpdateIfMatch(etag))
        .await
    {
        Ok(r) => Ok(held(r.etag)),
        Err(LakeError::Precondition { .. } | LakeError::NotFound { .. }) => Ok(Acquired::Busy {
            owner: String::new(),
            until_ms: now_ms,
        }),
        Err(e) => Err(e),
    }
}

/// Gives the lease back: overwrites the lease object with an expired body if it is still the
/// version we wrote. After our expiry someone else may hold a newer one: the write then fails
/// its condition and their lease stays (logged, not an error: ours was over anyway).
pub async fn release(store: &dyn ObjectStore, lease: &Lease) -> Result<(), LakeError> {
    let Some(etag) = &lease.etag else {
        // No ETag to make the write conditional: leave the lease to expire rather than risk
        // overwriting a newer holder's.
        tracing::warn!(key = %lease.key, "lease without an ETag: left to expire");
        return Ok(());
    };
    match store
        .put(
            &lease.key,
            body(&lease.owner, 0),
            PutMode::UpdateIfMatch(etag.clone()),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(LakeError::Precondition { .. }) => {
            tracing::info!(
                key = %lease.key,
                owner = %lease.owner,
                "lease already taken over after its expiry: not released"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::LocalStore;

    #[tokio::test]
    async fn one_holder_at_a_time_and_an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let ttl = Duration::from_secs(60);
        let t0 = 1_700_000_000_000;
        let Acquired::Held(a) = acquire(&store, "orders", "a", ttl, t0).await.unwrap() else {
            panic!("free lease not taken")
        };
        assert_eq!(a.key, "state/loads/orders/lease");
        match acquire(&store, "orders", "b", ttl, t0 + 1_000)
            .await
            .unwrap()
        {
            Acquired::Busy { owner, until_ms } => {
                assert_eq!(owner, "a");
                assert_eq!(until_ms, t0 + 60_000);
            }
            other => panic!("second holder: {other:?}"),
        }
        // Another table is independent.
        assert!(matches!(
            acquire(&store, "customers", "b", ttl, t0).await.unwrap(),
            Acquired::Held(_)
        ));
        // After the expiry, b takes it over; a's late release leaves b's lease alone.
        let Acquired::Held(b) = acquire(&store, "orders", "b", ttl, t0 + 61_000)
            .await
            .unwrap()
        else {
            panic!("expired lease not taken over")
        };
        release(&store, &a).await.unwrap();
        match acquire(&store, "orders", "c", ttl, t0 + 62_000)
            .await
            .unwrap()
        {
            Acquired::Busy { owner, until_ms } => {
                assert_eq!(owner, "b", "a's late release left b's lease");
                assert_eq!(until_ms, t0 + 121_000);
            }
            other => panic!("b's lease is gone: {other:?}"),
        }
        release(&store, &b).await.unwrap();
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 63_000)
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
    }

    /// Release writes an expired body instead of deleting: the object stays, the next acquire
    /// takes it over well before its TTL, and a release of an older version (a late or repeated
    /// release) leaves the newer holder's lease as it is.
    #[tokio::test]
    async fn release_expires_the_lease_in_place_and_only_our_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let ttl = Duration::from_secs(60);
        let t0 = 1_700_000_000_000;
        let Acquired::Held(a) = acquire(&store, "orders", "a", ttl, t0).await.unwrap() else {
            panic!("free lease not taken")
        };
        release(&store, &a).await.unwrap();
        let released: Body =
            serde_json::from_slice(&store.get_bytes(&a.key).await.unwrap()).unwrap();
        assert_eq!((released.owner.as_str(), released.expires_at_ms), ("a", 0));
        // Long before a's TTL: the released lease is free.
        let Acquired::Held(b) = acquire(&store, "orders", "b", ttl, t0 + 1_000)
            .await
            .unwrap()
        else {
            panic!("released lease not taken")
        };
        // a releases again (its ETag is older than b's write): nothing changes.
        release(&store, &a).await.unwrap();
        let current: Body =
            serde_json::from_slice(&store.get_bytes(&b.key).await.unwrap()).unwrap();
        assert_eq!(
            (current.owner.as_str(), current.expires_at_ms),
            ("b", t0 + 61_000)
        );
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 2_000).await.unwrap(),
            Acquired::Busy { ref owner, .. } if owner == "b"
        ));
        // A lease without an ETag cannot be released conditionally: it is left to expire.
        let no_etag = Lease {
            etag: None,
            ..b.clone()
        };
        release(&store, &no_etag).await.unwrap();
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 3_000).await.unwrap(),
            Acquired::Busy { ref owner, .. } if owner == "b"
        ));
        release(&store, &b).await.unwrap();
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 4_000)
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
    }
}

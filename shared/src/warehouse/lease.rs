//! One load per table at a time: a lease object under `state/loads/<table>/lease`, taken with the
//! lake's create-if-absent write and, once expired, taken over with an update-if-match on the
//! ETag that was read. Whoever loses either race backs off; nobody runs a second transaction on
//! the same keys. The expiry is in the body, so a crashed holder blocks for one TTL at most.

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
    /// ETag of the lease object as we wrote it: release deletes only this version.
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

fn body(owner: &str, now_ms: u64, ttl: Duration) -> Bytes {
    let b = Body {
        owner: owner.to_string(),
        expires_at_ms: now_ms + ttl.as_millis() as u64,
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
    let held = |etag| {
        Acquired::Held(Lease {
            key: key.clone(),
            owner: owner.to_string(),
            etag,
        })
    };
    match store
        .put(&key, body(owner, now_ms, ttl), PutMode::Create)
        .await
    {
        Ok(r) => return Ok(held(r.etag)),
        Err(LakeError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    // Someone has it, or had it. The ETag first: if the body changes after, our update fails.
    let meta = match store.head(&key).await {
        Ok(m) => m,
        // Released in between: try once more from the start next time.
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
    // Expired (or unreadable): take it over, if nobody else did since we looked.
    let Some(etag) = meta.etag else {
        return Ok(Acquired::Busy {
            owner: String::new(),
            until_ms: now_ms,
        });
    };
    match store
        .put(&key, body(owner, now_ms, ttl), PutMode::UpdateIfMatch(etag))
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

/// Gives the lease back: deletes the lease object if it is still the one we wrote (after an
/// expiry someone else may hold a newer one, which stays).
pub async fn release(store: &dyn ObjectStore, lease: &Lease) -> Result<(), LakeError> {
    match store.head(&lease.key).await {
        Ok(m) if m.etag == lease.etag => store.delete(&lease.key).await,
        Ok(_) | Err(LakeError::NotFound { .. }) => Ok(()),
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
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 62_000)
                .await
                .unwrap(),
            Acquired::Busy { .. }
        ));
        release(&store, &b).await.unwrap();
        assert!(matches!(
            acquire(&store, "orders", "c", ttl, t0 + 63_000)
                .await
                .unwrap(),
            Acquired::Held(_)
        ));
    }
}

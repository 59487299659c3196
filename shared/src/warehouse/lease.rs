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

use std::time::Duration;

use crate::lake::layout::load_lease_key;
use crate::lake::{LakeError, ObjectStore};

pub use crate::lake::lease::{now_ms, release, Acquired, Lease};

/// Takes the lease of `table`'s loads (`state/loads/<table>/lease`) for `ttl`, unless another
/// owner holds an unexpired one.
pub async fn acquire(
    store: &dyn ObjectStore,
    table: &str,
    owner: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Acquired, LakeError> {
    crate::lake::lease::acquire(store, &load_lease_key(table), owner, ttl, now_ms).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::lease::LeaseBody as Body;
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

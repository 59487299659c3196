//! The dedup index: 128-bit key hashes in a compact open-addressing table.
//!
//! Why not `HashMap`: it doubles on growth and keeps 16 bytes of key plus control bytes at a
//! load that falls to under half after each doubling — about 40 bytes a key in practice. Here
//! the table grows by half at 80% load (20–30 bytes a key for a set), and is split into 16
//! shards by the hash's top bits so a resize copies a sixteenth of the index, not all of it.

const SHARDS: usize = 16;
/// 80%: linear probing's probe count climbs steeply beyond it.
const MAX_LOAD_NUM: usize = 4;
const MAX_LOAD_DEN: usize = 5;

struct Shard<V> {
    /// 0 marks an empty slot (a real hash of 0 is stored as 1: the two alias, which for
    /// 128-bit hashes is a 2^-127 event).
    keys: Vec<u128>,
    vals: Vec<V>,
    len: usize,
}

impl<V: Copy + Default> Shard<V> {
    fn slot(&self, h: u128) -> (usize, bool) {
        let cap = self.keys.len();
        // Lemire's range reduction: no power-of-two capacity needed.
        let mut i = (((h as u64) as u128 * cap as u128) >> 64) as usize;
        loop {
            let k = self.keys[i];
            if k == h {
                return (i, true);
            }
            if k == 0 {
                return (i, false);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    fn grow(&mut self) {
        let new_cap = (self.keys.len() * 3 / 2).max(16);
        let old_keys = std::mem::replace(&mut self.keys, vec![0; new_cap]);
        advise_huge_pages(&self.keys);
        let old_vals = std::mem::replace(&mut self.vals, vec![V::default(); new_cap]);
        for (k, v) in old_keys.into_iter().zip(old_vals) {
            if k != 0 {
                let (i, _) = self.slot(k);
                self.keys[i] = k;
                self.vals[i] = v;
            }
        }
    }

    fn entry(&mut self, h: u128) -> (&mut V, bool) {
        if (self.len + 1) * MAX_LOAD_DEN > self.keys.len() * MAX_LOAD_NUM {
            self.grow();
        }
        let (i, found) = self.slot(h);
        if !found {
            self.keys[i] = h;
            self.vals[i] = V::default();
            self.len += 1;
        }
        (&mut self.vals[i], found)
    }
}

/// Asks for transparent huge pages on a large table: probes land anywhere in it, and with 4 KiB
/// pages nearly every probe would also miss the TLB.
#[cfg(target_os = "linux")]
fn advise_huge_pages(keys: &[u128]) {
    let bytes = std::mem::size_of_val(keys);
    if bytes < 4 << 20 {
        return;
    }
    // Only the 2 MiB-aligned interior of the allocation can be backed by huge pages.
    let start = keys.as_ptr() as usize;
    let aligned = (start + (2 << 20) - 1) & !((2 << 20) - 1);
    let len = (start + bytes).saturating_sub(aligned) & !((2 << 20) - 1);
    if len > 0 {
        // SAFETY: the range lies inside the live allocation `keys`; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents. Failure is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_keys: &[u128]) {}

/// A map from 128-bit key hash to `V` (use `()` for a set).
pub(crate) struct KeyTable<V> {
    shards: Vec<Shard<V>>,
}

impl<V: Copy + Default> KeyTable<V> {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    keys: Vec::new(),
                    vals: Vec::new(),
                    len: 0,
                })
                .collect(),
        }
    }

    fn norm(h: u128) -> u128 {
        if h == 0 {
            1
        } else {
            h
        }
    }

    /// The value for `h`, inserted as `V::default()` when absent; the flag says it was present.
    pub fn entry(&mut self, h: u128) -> (&mut V, bool) {
        let h = Self::norm(h);
        self.shards[(h >> 124) as usize].entry(h)
    }

    pub fn get(&self, h: u128) -> Option<&V> {
        let h = Self::norm(h);
        let s = &self.shards[(h >> 124) as usize];
        if s.keys.is_empty() {
            return None;
        }
        match s.slot(h) {
            (i, true) => Some(&s.vals[i]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyTable;

    #[test]
    fn behaves_like_a_hashmap() {
        let mut t: KeyTable<u64> = KeyTable::new();
        let mut m = std::collections::HashMap::new();
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for i in 0..200_000u64 {
            x = x
                .wrapping_mul(0x2545_f491_4f6c_dd1d_2545_f491_4f6c_dd1d)
                .wrapping_add(1);
            let h = if i % 7 == 0 { x % 5000 + 2 } else { x }; // repeats and small hashes
            let (v, present) = t.entry(h);
            assert_eq!(present, m.contains_key(&h));
            *v += 1;
            *m.entry(h).or_insert(0) += 1;
        }
        for (h, n) in &m {
            assert_eq!(t.get(*h), Some(n));
        }
        assert_eq!(t.get(12345678901234567890), m.get(&12345678901234567890));
        // 0 is stored as 1 (the empty-slot marker): the two alias, a 2^-127 event for a hash.
        assert!(!t.entry(0).1);
        assert!(t.get(0).is_some() && t.get(1).is_some());
    }
}

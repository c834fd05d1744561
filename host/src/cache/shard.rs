//! Small building blocks for lock-sharded state: a mutex-per-shard map and a hasher for keys that
//! are already uniform digests.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;

/// Number of shards: a power of two well above the core count, so two tasks rarely meet on one.
const SHARDS: usize = 64;

/// A map split over independently locked shards. The locks are `std` mutexes held only for a
/// few map operations, never across an `.await`.
pub(crate) struct Sharded<K, V, S = std::hash::RandomState> {
    shards: Box<[Mutex<HashMap<K, V, S>>]>,
    hasher: S,
}

impl<K: Hash + Eq, V, S: BuildHasher + Clone + Default> Sharded<K, V, S> {
    pub(crate) fn new() -> Self {
        let hasher = S::default();
        Sharded {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }

    /// Runs `f` on the shard that holds `key`.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut HashMap<K, V, S>) -> R) -> R
    where
        Q: Hash + ?Sized,
    {
        // Middle bits pick the shard: hashbrown uses the low bits (bucket) and the top 7 (tag).
        let index = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        // A panic while holding a shard leaves plain data behind: keep using it.
        let mut guard = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }
}

/// Hashes a `u128` digest by taking its bits: the digest is already uniform (SHA-256), so
/// SipHash would only add latency to every lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; FNV-1a keeps it correct for anything else.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64).rotate_left(32);
    }
}

pub(crate) type DigestState = BuildHasherDefault<DigestHasher>;

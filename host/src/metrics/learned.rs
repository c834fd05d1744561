//! Statement shapes learnt to write: a read sent to a replica that failed there because it wrote
//! (SQLSTATE 25006, "cannot execute … in a read-only transaction", typically a user function
//! that updates) is re-run on the primary, and its fingerprint is remembered here so later ones
//! go straight to the primary. Shown by `GET /digests`.
//!
//! Bounded: past `capacity` fingerprints nothing more is learnt (each of those statements is
//! still re-run on the primary, one failed attempt on a replica each time), so a flood of unique
//! writing statements cannot grow the process. Sharded like the digest table: a lookup per
//! routed read takes one shard's read lock.

use std::collections::HashSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::Protocol;

const SHARDS: usize = 16;

type Shard = RwLock<HashSet<(Protocol, u64)>>;

#[derive(Debug)]
pub struct LearnedWrites {
    shards: Box<[Shard]>,
    per_shard: usize,
    /// Fingerprints not learnt because the table was full.
    refused: AtomicU64,
    /// Fast exit for the common case: nothing learnt yet (most deployments).
    len: AtomicU64,
}

impl LearnedWrites {
    pub fn new(capacity: usize) -> Self {
        LearnedWrites {
            shards: (0..SHARDS).map(|_| RwLock::new(HashSet::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            refused: AtomicU64::new(0),
            len: AtomicU64::new(0),
        }
    }

    fn shard(&self, fingerprint: u64) -> &Shard {
        // The fingerprint is a hash already: its low bits spread well.
        &self.shards[(fingerprint as usize) % SHARDS]
    }

    /// Whether statements of this shape are known to write.
    pub fn contains(&self, protocol: Protocol, fingerprint: u64) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.shard(fingerprint)
            .read()
            .is_ok_and(|s| s.contains(&(protocol, fingerprint)))
    }

    /// Remembers a shape that wrote; false when the table is full.
    pub fn learn(&self, protocol: Protocol, fingerprint: u64) -> bool {
        let Ok(mut shard) = self.shard(fingerprint).write() else {
            return false;
        };
        if shard.contains(&(protocol, fingerprint)) {
            return true;
        }
        if shard.len() >= self.per_shard {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        shard.insert((protocol, fingerprint));
        self.len.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Every learnt fingerprint, sorted.
    pub fn list(&self) -> Vec<(Protocol, u64)> {
        let mut all: Vec<_> = self
            .shards
            .iter()
            .filter_map(|s| s.read().ok().map(|s| s.iter().copied().collect::<Vec<_>>()))
            .flatten()
            .collect();
        all.sort_by_key(|&(p, f)| (p.as_str(), f));
        all
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Forgets everything (`DELETE /digests`).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            if let Ok(mut s) = shard.write() {
                s.clear();
            }
        }
        self.len.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_up_to_its_capacity() {
        let learned = LearnedWrites::new(SHARDS);
        assert!(!learned.contains(Protocol::Postgres, 7));
        assert!(learned.learn(Protocol::Postgres, 7));
        assert!(learned.contains(Protocol::Postgres, 7));
        assert!(!learned.contains(Protocol::Mysql, 7));
        // One per shard: a second fingerprint of the same shard is refused.
        assert!(!learned.learn(Protocol::Postgres, 7 + SHARDS as u64));
        assert_eq!(learned.refused(), 1);
        assert_eq!(learned.list(), vec![(Protocol::Postgres, 7)]);
        learned.clear();
        assert!(!learned.contains(Protocol::Postgres, 7));
    }
}

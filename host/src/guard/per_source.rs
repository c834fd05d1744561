//! Connections held at once per client address, with a cap. Taken once per connection (never
//! per query), over a few independently locked shards so that accepting on many cores does not
//! queue on one lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::canonical_ip;

const SHARDS: usize = 16;

/// Counts per address; see [`PerSource::try_take`].
#[derive(Debug)]
pub struct PerSource {
    limit: u32,
    hasher: std::collections::hash_map::RandomState,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

/// One connection counted against its address; uncounted on drop.
#[derive(Debug)]
pub struct SourceSlot {
    owner: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    pub fn new(limit: u32) -> Arc<PerSource> {
        Arc::new(PerSource {
            limit,
            hasher: Default::default(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let index = self.hasher.hash_one(ip) as usize % SHARDS;
        &self.shards[index]
    }

    /// Counts one more connection from `ip`, or `None` when it holds `limit` already.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = canonical_ip(ip);
        // A poisoned shard only means another thread panicked mid-update of plain integers:
        // the counts are still usable.
        let mut shard = self
            .shard(&ip)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = shard.entry(ip).or_insert(0);
        if *held >= self.limit {
            if *held == 0 {
                shard.remove(&ip);
            }
            return None;
        }
        *held += 1;
        Some(SourceSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Connections `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        let ip = canonical_ip(ip);
        let shard = self
            .shard(&ip)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shard.get(&ip).copied().unwrap_or(0)
    }

    /// Addresses with at least one connection (entries are removed at zero, so this is what
    /// the map costs).
    pub fn sources(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut shard = self
            .owner
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = shard.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                shard.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_its_limit_and_others_are_not_affected() {
        let counts = PerSource::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.try_take(a).expect("first");
        let second = counts.try_take(a).expect("second");
        assert!(counts.try_take(a).is_none(), "a third is over the limit");
        assert!(
            counts.try_take(b).is_some(),
            "another address has its own count"
        );
        drop(first);
        let third = counts.try_take(a).expect("room again after one closed");
        assert_eq!(counts.held(a), 2);
        drop((second, third));
        assert_eq!(counts.held(a), 0);
        assert_eq!(counts.sources(), 0, "no entry is left behind");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let counts = PerSource::new(1);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let _slot = counts.try_take(v4).expect("first");
        assert!(counts.try_take(mapped).is_none());
    }
}

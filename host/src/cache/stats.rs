//! Counters for metrics. Relaxed atomics: each counter is exact, a snapshot is not a consistent
//! cut across counters (nor does it need to be for metrics).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct CacheStats {
    pub(crate) hits_local: AtomicU64,
    pub(crate) hits_redis: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) stale_fills: AtomicU64,
    pub(crate) coalesced_waits: AtomicU64,
    pub(crate) concurrent_failures: AtomicU64,
    pub(crate) bypass: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) redis_skipped: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

/// A point-in-time copy of [`CacheStats`], plus the local tier's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatsSnapshot {
    /// Lookups answered by the local tier.
    pub hits_local: u64,
    /// Lookups answered by Redis (the local tier was filled from it).
    pub hits_redis: u64,
    /// Lookups that made the caller the leader: it runs the query.
    pub misses: u64,
    /// Responses stored in the local tier.
    pub stores: u64,
    /// Responses larger than `max_payload_size`, not stored.
    pub too_large: u64,
    /// Responses not stored because a table they read was invalidated while they ran.
    pub stale_fills: u64,
    /// Lookups answered by waiting for a concurrent identical query.
    pub coalesced_waits: u64,
    /// Waiters that received the leader's error.
    pub concurrent_failures: u64,
    /// Lookups that gave up waiting (grace time) and ran the query themselves.
    pub bypass: u64,
    /// Redis operations that failed or timed out (each one degraded, none failed a query).
    pub redis_errors: u64,
    /// Redis operations skipped while the circuit breaker was open.
    pub redis_skipped: u64,
    /// Invalidations applied locally (table, namespace or all; local or from pub/sub).
    pub invalidations: u64,
    /// Entries evicted by the byte bound.
    pub evictions: u64,
    /// Weighted size of the local tier in bytes (approximate until moka runs pending tasks).
    pub bytes: u64,
    /// Entries in the local tier (approximate likewise).
    pub entries: u64,
}

impl CacheStats {
    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters; `bytes` and `entries` are left at zero (the local tier fills them in).
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStatsSnapshot {
            hits_local: get(&self.hits_local),
            hits_redis: get(&self.hits_redis),
            misses: get(&self.misses),
            stores: get(&self.stores),
            too_large: get(&self.too_large),
            stale_fills: get(&self.stale_fills),
            coalesced_waits: get(&self.coalesced_waits),
            concurrent_failures: get(&self.concurrent_failures),
            bypass: get(&self.bypass),
            redis_errors: get(&self.redis_errors),
            redis_skipped: get(&self.redis_skipped),
            invalidations: get(&self.invalidations),
            evictions: get(&self.evictions),
            bytes: 0,
            entries: 0,
        }
    }
}

//! The local tier: a moka cache bounded by bytes, with a TTL per entry.
//!
//! `moka::sync::Cache` rather than `future::Cache`: a hit is a plain function call, with no
//! future to poll, which keeps the hit path short; moka's housekeeping runs inline on callers for
//! a few microseconds at most, never blocking on I/O.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::CachedResponse;
use super::generation::Stamp;
use super::shard::DigestState;
use super::stats::CacheStats;

/// Bytes charged per entry besides its payload: the key, our `Entry` and response structs and
/// moka's node, roughly. The bound is on payload plus this, so many tiny entries still count.
const ENTRY_OVERHEAD: usize =
    256 + std::mem::size_of::<Entry>() + std::mem::size_of::<CachedResponse>();

/// One stored response with what decides whether it may still be served.
pub(crate) struct Entry {
    response: Arc<CachedResponse>,
    stamp: Stamp,
    /// Time to live from insertion; shorter than `response.ttl` when filled from Redis late in
    /// the entry's life.
    expires_in: Duration,
    weight: u32,
}

pub(crate) struct LocalTier {
    cache: Cache<u128, Arc<Entry>, DigestState>,
}

impl LocalTier {
    pub(crate) fn new(max_size: u64, stats: Arc<CacheStats>) -> Self {
        let cache = Cache::builder()
            .name("switchyard-query-cache")
            .max_capacity(max_size)
            .weigher(|_key: &u128, entry: &Arc<Entry>| entry.weight)
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    CacheStats::incr(&stats.evictions);
                }
            })
            .build_with_hasher(DigestState::default());
        LocalTier { cache }
    }

    /// A fresh entry. An entry whose tables or namespace were invalidated is removed and reported
    /// as absent.
    pub(crate) fn get(&self, digest: u128) -> Option<Arc<CachedResponse>> {
        let entry = self.cache.get(&digest)?;
        if entry.stamp.is_fresh() {
            return Some(entry.response.clone());
        }
        // Remove only the stale entry we saw: a new leader may have replaced it meanwhile.
        self.cache
            .entry(digest)
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(current.value(), &entry) => Op::Remove,
                _ => Op::Nop,
            });
        None
    }

    /// Stores `response` for `expires_in`. The caller has checked the size bound.
    pub(crate) fn insert(
        &self,
        digest: u128,
        response: Arc<CachedResponse>,
        stamp: Stamp,
        expires_in: Duration,
    ) {
        let weight = ENTRY_OVERHEAD + stamp.len() * 24 + response.size();
        let entry = Entry {
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
            response,
            stamp,
            expires_in,
        };
        self.cache.insert(digest, Arc::new(entry));
    }

    /// Removes the entry of `digest` if it still holds `response` (a later fill may have
    /// replaced it).
    pub(crate) fn remove_if(&self, digest: u128, response: &Arc<CachedResponse>) {
        self.cache
            .entry(digest)
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(&current.value().response, response) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Drops every entry (purge-all also bumps the generation, which covers fills in flight).
    pub(crate) fn clear(&self) {
        self.cache.invalidate_all();
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Applies moka's pending evictions now (tests and stats).
    pub(crate) fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }
}

struct PerEntryTtl;

impl moka::Expiry<u128, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &u128,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.expires_in)
    }

    fn expire_after_update(
        &self,
        _key: &u128,
        entry: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires_in)
    }
}

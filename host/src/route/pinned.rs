//! Clients pinned to one server connection of a pool by state that lives on it (temp tables,
//! SQL PREPARE, WITH HOLD cursors, LISTEN, session advisory locks, ...): how many now, how many
//! ever, for how long, and the pool's cap on them. Lock-free counters; a client takes a place
//! when it first creates such state and gives it back when the state is gone or it leaves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Pool;

#[derive(Debug, Default)]
pub struct PinnedStats {
    now: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    micros: AtomicU64,
}

/// A client's place among the pool's pinned clients; given back by [`Pool::unpin`].
#[derive(Debug)]
pub struct PinnedPlace {
    since: std::time::Instant,
}

impl Pool {
    /// Takes a pinned place if the pool's cap (`max_pinned`) allows one more.
    pub fn pin(&self) -> Option<PinnedPlace> {
        let limit = u64::from(self.config().pinned_limit());
        let stats = &self.pinned;
        let taken = stats
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        stats.total.fetch_add(1, Ordering::Relaxed);
        Some(PinnedPlace {
            since: std::time::Instant::now(),
        })
    }

    /// Gives a pinned place back; returns how long it was held.
    pub fn unpin(&self, place: PinnedPlace) -> Duration {
        let held = place.since.elapsed();
        let stats = &self.pinned;
        stats.now.fetch_sub(1, Ordering::AcqRel);
        stats.micros.fetch_add(
            u64::try_from(held.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        held
    }

    /// Clients pinned now.
    pub fn pinned_now(&self) -> u64 {
        self.pinned.now.load(Ordering::Relaxed)
    }

    /// Clients ever pinned, refused a pin by the cap, and seconds pinned in all.
    pub fn pinned_totals(&self) -> (u64, u64, f64) {
        let s = &self.pinned;
        (
            s.total.load(Ordering::Relaxed),
            s.refused.load(Ordering::Relaxed),
            s.micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

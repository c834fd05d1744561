//! Shadow traffic: the counters of a pool used as a mirror target, and the ticket a mirrored
//! query holds while it runs.
//!
//! The in-flight cap is taken with a compare-and-swap, never waited for: a shadow that is slow
//! or down makes mirroring skip (counted as dropped), it never queues work behind the real query.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::Router;
use super::pool::Pool;
use crate::model::StatementKind;

/// In-flight cap when the policy asks for a mirror the source pool's config does not describe.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 64;

impl Router {
    /// Whether (and where) to mirror a statement that runs on `source`: the policy's `requested`
    /// pool, else the source pool's `mirror` config (sampled by its `fraction`). Only reads
    /// outside a transaction are mirrored: a mirrored write would run twice. `None` also when
    /// the shadow already runs its cap of mirrors (counted as a drop) or is unknown (counted).
    pub fn mirror(
        &self,
        source: &Pool,
        requested: Option<&str>,
        kind: StatementKind,
        in_transaction: bool,
    ) -> Option<MirrorTicket> {
        if kind != StatementKind::Read || in_transaction {
            return None;
        }
        let config = source.config().mirror.as_ref();
        let (name, max) = match requested {
            Some(name) => (
                name,
                config
                    .filter(|m| m.pool == name)
                    .map_or(DEFAULT_MAX_IN_FLIGHT, |m| m.max_in_flight),
            ),
            None => {
                let m = config?;
                if !source.sample(m.fraction) {
                    return None;
                }
                (m.pool.as_str(), m.max_in_flight)
            }
        };
        let Some(shadow) = self.pools.get(name) else {
            self.unknown_mirror_pool.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                cluster = self.cluster,
                pool = name,
                "policy asked to mirror to an unknown pool"
            );
            return None;
        };
        if shadow.name() == source.name() {
            return None;
        }
        MirrorTicket::take(shadow, max)
    }
}

/// Counters of mirrored queries sent to one pool (all atomics: read them from anywhere).
#[derive(Debug, Default)]
pub struct MirrorStats {
    in_flight: AtomicU32,
    started: AtomicU64,
    dropped: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Sum of the latencies of finished mirrored queries (succeeded or failed), microseconds.
    latency_us: AtomicU64,
}

impl MirrorStats {
    /// Mirrored queries running now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Mirrored queries started (each ends as succeeded or failed).
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Mirrors skipped because `max_in_flight` were already running.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }

    /// Mirrored queries that failed: no connection, an error from the server, a timeout.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Total latency of finished mirrored queries, in microseconds (divide by
    /// `succeeded + failed` for the mean).
    pub fn latency_us_total(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }

    /// Takes one of `max` in-flight slots, or counts a drop.
    fn try_enter(&self, max: u32) -> bool {
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if entered {
            self.started.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        entered
    }
}

/// One mirrored query's slot on its shadow pool. Dropped without an outcome (the task was
/// cancelled) it counts as failed.
#[derive(Debug)]
pub struct MirrorTicket {
    pool: Arc<Pool>,
    started: Instant,
    done: bool,
}

impl MirrorTicket {
    /// A slot on `pool` if fewer than `max` mirrors run there now.
    pub(super) fn take(pool: &Arc<Pool>, max: u32) -> Option<MirrorTicket> {
        pool.mirror_stats().try_enter(max).then(|| MirrorTicket {
            pool: pool.clone(),
            started: Instant::now(),
            done: false,
        })
    }

    /// The shadow pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn succeeded(mut self) {
        self.finish(true);
    }

    pub fn failed(mut self, why: &str) {
        tracing::debug!(
            pool = self.pool.name(),
            reason = why,
            "mirrored query failed"
        );
        self.finish(false);
    }

    fn finish(&mut self, ok: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let stats = self.pool.mirror_stats();
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.fetch_add(us, Ordering::Relaxed);
        if ok {
            stats.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for MirrorTicket {
    fn drop(&mut self) {
        self.finish(false);
        self.pool
            .mirror_stats()
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

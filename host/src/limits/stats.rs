//! Counters of one [`Limits`](super::Limits): plain atomics, read by the admin API and metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::LimitErrorKind;

#[derive(Debug, Default)]
pub struct LimitStats {
    admitted: AtomicU64,
    queued: AtomicU64,
    wait_us: AtomicU64,
    rejected_concurrency: AtomicU64,
    rejected_queue_full: AtomicU64,
    rejected_queue_timeout: AtomicU64,
    rejected_rate: AtomicU64,
}

impl LimitStats {
    /// Queries that got a concurrency slot (at once or after queueing).
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Queries that had to wait in the queue (whatever the outcome).
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Total time queries spent in the queue, in microseconds.
    pub fn wait_us(&self) -> u64 {
        self.wait_us.load(Ordering::Relaxed)
    }

    /// Queries refused, by the limit that refused them.
    pub fn rejected(&self, kind: LimitErrorKind) -> u64 {
        self.counter(kind).load(Ordering::Relaxed)
    }

    pub(super) fn count_admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn add_wait(&self, waited: Duration) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.wait_us.fetch_add(us, Ordering::Relaxed);
    }

    pub(super) fn count_rejected(&self, kind: &LimitErrorKind) {
        self.counter(*kind).fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, kind: LimitErrorKind) -> &AtomicU64 {
        match kind {
            LimitErrorKind::Concurrency => &self.rejected_concurrency,
            LimitErrorKind::QueueFull => &self.rejected_queue_full,
            LimitErrorKind::QueueTimeout => &self.rejected_queue_timeout,
            LimitErrorKind::Rate => &self.rejected_rate,
        }
    }
}

//! Keeps a failing Redis from slowing every query: a circuit breaker and a rate-limited warning.
//!
//! After `breaker_failures` consecutive failures the breaker opens and Redis is skipped for
//! `breaker_cooldown`. After the cool-down operations go through again; the failure count is
//! still at the threshold, so one more failure re-opens the breaker at once (half-open), and one
//! success closes it. All state is in atomics: the hot path takes no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::CacheError;

pub(crate) struct Health {
    threshold: u32,
    cooldown: Duration,
    warn_interval: Duration,
    base: Instant,
    consecutive_failures: AtomicU32,
    /// Nanoseconds since `base` until which Redis is skipped.
    open_until: AtomicU64,
    /// Nanoseconds since `base` of the last warning, plus one (0 = never warned).
    last_warn: AtomicU64,
    /// Failures since the last warning.
    unreported: AtomicU64,
}

impl Health {
    pub(crate) fn new(threshold: u32, cooldown: Duration, warn_interval: Duration) -> Self {
        Health {
            threshold: threshold.max(1),
            cooldown,
            warn_interval,
            base: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    /// Whether an operation may go to Redis now.
    pub(crate) fn allow(&self) -> bool {
        self.now() >= self.open_until.load(Ordering::Relaxed)
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.allow()
    }

    pub(crate) fn success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn failure(&self, error: &CacheError) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let opened = failures >= self.threshold;
        if opened {
            let until = self.now().saturating_add(nanos(self.cooldown));
            self.open_until.fetch_max(until, Ordering::Relaxed);
        }
        self.unreported.fetch_add(1, Ordering::Relaxed);
        self.warn(error, opened);
    }

    /// At most one line per `warn_interval`, counting what it did not report.
    fn warn(&self, error: &CacheError, opened: bool) {
        let now = self.now() + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < nanos(self.warn_interval) {
            return;
        }
        if self
            .last_warn
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another task is warning right now
        }
        let failures = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            error = %error,
            failures_since_last_warning = failures,
            circuit_open = opened,
            cooldown_ms = self.cooldown.as_millis() as u64,
            "redis cache tier degraded: serving from the local tier and backends"
        );
    }

    fn now(&self) -> u64 {
        nanos(self.base.elapsed())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

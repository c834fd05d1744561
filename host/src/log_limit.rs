//! Rate limits for log lines that a client or a failing dependency can cause once per query
//! or per connection (a Redis outage during a burst of writes, a node going down under load,
//! a client sending garbage in a loop): at most a few lines of each kind per interval, and the
//! next line that gets through says how many were left out (`suppressed = N`), as the kernel's
//! `printk_ratelimit` does. Each kind is a `static` [`LogLimit`] at its call site; deciding is
//! a few atomic operations, never a lock.
//!
//! ```ignore
//! static LOST: LogLimit = LogLimit::standard();
//! warn_limited!(LOST, error = %e, "cache invalidation did not reach every replica");
//! ```

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most `burst` lines per `interval` for one kind of line.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    interval_ms: u64,
    /// Start of the current interval (ms on [`now_ms`]'s clock).
    window_start: AtomicU64,
    /// Lines asked for in the current interval.
    asked: AtomicU32,
    /// Lines left out since the last one logged.
    suppressed: AtomicU64,
}

/// Lines of one kind per [`STANDARD_INTERVAL`] when a call site has no reason to differ.
pub const STANDARD_BURST: u32 = 5;
pub const STANDARD_INTERVAL: Duration = Duration::from_secs(10);

impl LogLimit {
    pub const fn new(burst: u32, interval: Duration) -> LogLimit {
        LogLimit {
            burst,
            interval_ms: interval.as_millis() as u64,
            window_start: AtomicU64::new(0),
            asked: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// [`STANDARD_BURST`] lines per [`STANDARD_INTERVAL`].
    pub const fn standard() -> LogLimit {
        LogLimit::new(STANDARD_BURST, STANDARD_INTERVAL)
    }

    /// Whether a line may be logged now: `Some(n)` with the lines left out since the last one
    /// (to log with it), `None` to leave this one out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(now_ms())
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let start = self.window_start.load(Ordering::Acquire);
        if now.saturating_sub(start) >= self.interval_ms
            && self
                .window_start
                .compare_exchange(start, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // Racing callers may count a line into the old or the new interval: one line more
            // or less, never a flood.
            self.asked.store(0, Ordering::Release);
        }
        if self.asked.fetch_add(1, Ordering::AcqRel) < self.burst {
            Some(self.suppressed.swap(0, Ordering::AcqRel))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Milliseconds since the first call, on the monotonic clock.
fn now_ms() -> u64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `tracing::warn!` through a [`LogLimit`]: the line is logged only when the limit admits it,
/// with `suppressed = N` when lines of its kind were left out before it.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, $($arg:tt)+) => {
        if let Some(suppressed) = $limit.admit() {
            if suppressed > 0 {
                ::tracing::warn!(suppressed, $($arg)+);
            } else {
                ::tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_burst_lines_per_interval_then_the_count_of_the_rest() {
        let limit = LogLimit::new(3, Duration::from_secs(10));
        let mut logged = Vec::new();
        // 1,000 events in the first second.
        for i in 0..1_000u64 {
            if let Some(suppressed) = limit.admit_at(i) {
                logged.push((i, suppressed));
            }
        }
        assert_eq!(logged, vec![(0, 0), (1, 0), (2, 0)]);
        // The next interval: the first line carries the count left out.
        assert_eq!(limit.admit_at(10_500), Some(997));
        assert_eq!(limit.admit_at(10_501), Some(0));
        assert_eq!(limit.admit_at(10_502), Some(0));
        assert_eq!(limit.admit_at(10_503), None);
    }

    #[test]
    fn a_steady_trickle_below_the_limit_is_all_logged() {
        let limit = LogLimit::new(2, Duration::from_secs(1));
        let logged = (0..100u64)
            .filter(|i| limit.admit_at(i * 600).is_some())
            .count();
        assert_eq!(logged, 100);
    }

    #[test]
    fn many_threads_together_log_at_most_the_burst() {
        let limit = std::sync::Arc::new(LogLimit::new(5, Duration::from_secs(3600)));
        let logged = std::sync::Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limit, logged) = (limit.clone(), logged.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if limit.admit().is_some() {
                            logged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(logged.load(Ordering::Relaxed), 5);
        assert_eq!(limit.suppressed.load(Ordering::Relaxed), 80_000 - 5);
    }
}

//! One backend node's live state: health, bans, queries in flight, a latency average, and its
//! WAL position with the replication lag derived from it.
//!
//! Everything is atomics: the hot path (pick a node, count it in and out) takes no lock, and the
//! health checker and the position poller write the same fields from their own tasks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::position::WalPosition;
use crate::config::{HealthConfig, Node};
use crate::model::Lsn;

fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// Milliseconds since the first call, on the monotonic clock (bans are stored as atomics).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(anchor().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `at` in nanoseconds on the same clock (0 for instants before its start), for instants that
/// must be stored in atomics and compared exactly.
pub(crate) fn clock_ns(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(anchor()).as_nanos()).unwrap_or(u64::MAX)
}

/// A node of a pool, as the router and the backends see it.
#[derive(Debug)]
pub struct NodeState {
    /// Position in its pool.
    index: usize,
    /// `host:port`.
    addr: String,
    host: String,
    port: u16,
    weight: u32,
    /// False from a ban until a health check succeeds (when checks are enabled).
    healthy: AtomicBool,
    /// Consecutive failed checks or connection attempts.
    failures: AtomicU32,
    /// No traffic and no checks before this (`now_ms` clock).
    banned_until: AtomicU64,
    in_flight: AtomicU32,
    /// Exponentially weighted moving average of response times, in microseconds (0: unknown),
    /// as of `ewma_at_ms`; it decays towards 0 from then on (see [`decay`]).
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicU64,
    /// Whether a health checker runs for it: a ban then lasts until a check succeeds.
    checked: bool,
    /// Replication lag derived from the WAL positions (see `lag.rs`); `u64::MAX`: not a
    /// standby, or its position or the primary's is unknown.
    lag_ms: AtomicU64,
    lag_bytes: AtomicU64,
    /// A replica lagging over its pool's limit leaves rotation until it catches up; unlike a
    /// ban this is decided by every check, so it returns as soon as it has caught up.
    lagging: AtomicBool,
    /// What the last health check said of `pg_is_in_recovery()`: one of the `RECOVERY_*`.
    recovery: AtomicU8,
    /// Where its log is, as the position poller last saw it.
    wal: WalPosition,
}

const RECOVERY_UNKNOWN: u8 = 0;
const RECOVERY_STANDBY: u8 = 1;
const RECOVERY_WRITABLE: u8 = 2;

impl NodeState {
    pub fn new(index: usize, node: &Node, checked: bool) -> Self {
        NodeState {
            index,
            addr: node.addr(),
            host: node.host.clone(),
            port: node.port,
            weight: node.weight.max(1),
            healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            banned_until: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            ewma_at_ms: AtomicU64::new(0),
            checked,
            lag_ms: AtomicU64::new(u64::MAX),
            lag_bytes: AtomicU64::new(u64::MAX),
            lagging: AtomicBool::new(false),
            recovery: AtomicU8::new(RECOVERY_UNKNOWN),
            wal: WalPosition::default(),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// `host:port` (IPv6 hosts in brackets).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency average now, decayed since its last sample.
    pub fn ewma_us(&self) -> u64 {
        self.ewma_us_at(now_ms())
    }

    /// [`ewma_us`](Self::ewma_us) at `now` (`now_ms` clock).
    pub fn ewma_us_at(&self, now: u64) -> u64 {
        let at = self.ewma_at_ms.load(Ordering::Relaxed);
        decay(self.ewma_us.load(Ordering::Relaxed), now.saturating_sub(at))
    }

    /// Whether it takes traffic now: not banned, healthy, and not lagging too far behind.
    pub fn is_available(&self) -> bool {
        self.is_available_at(now_ms())
    }

    /// [`is_available`](Self::is_available) at `now` (`now_ms` clock): a pick reads the clock
    /// once for all its nodes, not once per node.
    pub fn is_available_at(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Acquire)
            && !self.lagging.load(Ordering::Acquire)
            && now >= self.banned_until.load(Ordering::Acquire)
    }

    /// The node's WAL position and the signals of its position poller.
    pub fn wal(&self) -> &WalPosition {
        &self.wal
    }

    /// The last known WAL position: replayed on a standby, inserted on a writable node.
    pub fn position(&self) -> Option<Lsn> {
        self.wal.lsn()
    }

    /// Asks the node's position poller for a poll now (coalesced: see
    /// [`WalPosition::request_poll`]).
    pub fn request_poll(&self) {
        self.wal.request_poll();
    }

    /// Records a replication lag measurement and whether it is over the pool's limit.
    pub fn set_lag(&self, lag_ms: Option<u64>, lag_bytes: Option<u64>, too_far: bool) {
        self.lag_ms
            .store(lag_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.lag_bytes
            .store(lag_bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
        let was = self.lagging.swap(too_far, Ordering::AcqRel);
        if was != too_far {
            if too_far {
                tracing::warn!(node = %self.addr, ?lag_ms, ?lag_bytes, "replica lags too far behind: out of read rotation");
            } else {
                tracing::info!(node = %self.addr, ?lag_ms, ?lag_bytes, "replica caught up: back in read rotation");
            }
        }
    }

    /// How long the node has been behind the primary, estimated from the positions (0 when it
    /// has reached the primary's last known position), if known.
    pub fn lag_ms(&self) -> Option<u64> {
        Some(self.lag_ms.load(Ordering::Relaxed)).filter(|&v| v != u64::MAX)
    }

    /// Bytes of WAL between the primary's last known position and the node's (0 when reached),
    /// if known.
    pub fn lag_bytes(&self) -> Option<u64> {
        Some(self.lag_bytes.load(Ordering::Relaxed)).filter(|&v| v != u64::MAX)
    }

    /// Records whether the node is in recovery (a standby) or takes writes; returns whether
    /// that changed since the last check (a promotion or a demotion).
    pub fn set_in_recovery(&self, in_recovery: bool) -> bool {
        let new = if in_recovery {
            RECOVERY_STANDBY
        } else {
            RECOVERY_WRITABLE
        };
        let old = self.recovery.swap(new, Ordering::AcqRel);
        old != RECOVERY_UNKNOWN && old != new
    }

    /// `Some(true)`: a standby; `Some(false)`: takes writes; `None`: never checked (ClickHouse,
    /// health checks off, or no check has succeeded yet).
    pub fn in_recovery(&self) -> Option<bool> {
        match self.recovery.load(Ordering::Acquire) {
            RECOVERY_STANDBY => Some(true),
            RECOVERY_WRITABLE => Some(false),
            _ => None,
        }
    }

    pub fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Whether a ban is running (the health checker leaves the node alone meanwhile).
    pub fn is_banned(&self) -> bool {
        now_ms() < self.banned_until.load(Ordering::Acquire)
    }

    /// A check or a request reached the node: it is healthy again.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(node = %self.addr, "node is healthy again");
        }
    }

    /// A check failed or the node could not be reached. After `failures_before_ban` in a row
    /// the node is banned for `ban_time`; returns whether this call banned it.
    pub fn record_failure(&self, health: &HealthConfig, why: &str) -> bool {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures < health.failures_before_ban || self.is_banned() {
            return false;
        }
        self.ban(health.ban_time);
        tracing::warn!(node = %self.addr, failures, ban = ?health.ban_time, reason = why, "node banned");
        true
    }

    /// Takes the node out of rotation for `time`; with health checks on, it comes back only
    /// when a check after the ban succeeds.
    pub fn ban(&self, time: Duration) {
        let until = now_ms().saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        self.banned_until.store(until, Ordering::Release);
        if self.checked {
            self.healthy.store(false, Ordering::Release);
        }
    }

    /// Counts a query in; it is counted out (and its latency recorded) when the guard drops.
    pub fn begin(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            node: self.clone(),
            started: Instant::now(),
        }
    }

    pub(crate) fn observe(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let now = now_ms();
        let age = now.saturating_sub(self.ewma_at_ms.swap(now, Ordering::Relaxed));
        // Peak EWMA: a slower sample is taken at once, faster ones are averaged in (weight 1/8),
        // so a node that just got slow loses traffic immediately. The two atomics are not
        // updated together: a race costs one sample's precision, never correctness.
        let _ = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let old = decay(old, age);
                Some(if old == 0 || sample > old {
                    sample
                } else {
                    old - (old - sample) / 8
                })
            });
    }
}

/// Half-life of a latency average without new samples. Without decay, a node that was slow
/// once would keep its bad average while it gets no traffic to correct it (under light load,
/// forever); decaying makes it look cheap again after a while, so it is probed.
const EWMA_HALF_LIFE_MS: f64 = 5_000.0;

/// `value` after `age_ms` of decay.
pub(crate) fn decay(value: u64, age_ms: u64) -> u64 {
    if age_ms == 0 || value == 0 {
        return value;
    }
    (value as f64 * (-(age_ms as f64) / EWMA_HALF_LIFE_MS).exp2()) as u64
}

/// A query in flight on a node.
#[derive(Debug)]
pub struct InFlight {
    node: std::sync::Arc<NodeState>,
    started: Instant,
}

impl InFlight {
    pub fn node(&self) -> &std::sync::Arc<NodeState> {
        &self.node
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.node.observe(self.started.elapsed());
    }
}

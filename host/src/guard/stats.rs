//! What the guards did, for the metrics (`switchyard_connections_refused_total`,
//! `switchyard_login_failures_total`, ...; see `metrics::export`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every listener; plain atomics, bumped off the query path.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// PostgreSQL connections refused because the listener had `max_pending_logins` already.
    pub refused_pending_logins: AtomicU64,
    /// ... because their address had `max_pending_logins_per_source` already.
    pub refused_pending_logins_per_source: AtomicU64,
    /// ... because their address failed to log in too often (`max_login_failures_per_source`).
    pub refused_login_failures: AtomicU64,
    /// HTTP connections refused because their address had `max_connections_per_source`.
    pub refused_connections_per_source: AtomicU64,
    /// Failed PostgreSQL logins (wrong password, unknown user, not allowed).
    pub login_failures: AtomicU64,
    /// PostgreSQL connections closed for not logging in within `login_timeout`.
    pub login_timeouts: AtomicU64,
    /// HTTP connections closed for not sending a request head within `header_timeout`.
    pub header_timeouts: AtomicU64,
    /// HTTP connections closed after `idle_timeout` between requests.
    pub idle_timeouts: AtomicU64,
    /// PostgreSQL clients disconnected for a protocol violation (a message type no client may
    /// send, an invalid length).
    pub protocol_violations: AtomicU64,
}

impl GuardStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

//! What a PostgreSQL client may hold before it has logged in. Until then anyone can connect,
//! so the proxy bounds how many such connections a listener and one address hold at once
//! (each also bounded in time by `login_timeout` and in memory by the startup and
//! authentication message limits), and refuses an address that failed to log in too often for
//! the rest of a window, so that passwords cannot be guessed at the speed of the network.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::per_source::{PerSource, SourceSlot};
use super::{GuardStats, canonical_ip};
use crate::config::ListenerConfig;

/// Addresses whose failures are remembered at once; beyond it the oldest are forgotten first.
const MAX_TRACKED_SOURCES: u64 = 100_000;

/// One listener's gate; see the module docs.
pub struct LoginGate {
    pending: Arc<Semaphore>,
    per_source: Arc<PerSource>,
    /// Failed logins per address in its current window (the window starts with its first
    /// failure and the entry expires with it). `None`: not throttled.
    failures: Option<moka::sync::Cache<IpAddr, Arc<AtomicU32>>>,
    max_failures: u32,
    stats: Arc<GuardStats>,
}

/// Why a connection was refused before it could log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections waiting to log in (listener max_pending_logins)")]
    Pending,
    #[error(
        "too many connections waiting to log in from this address (listener max_pending_logins_per_source)"
    )]
    PendingFromSource,
    #[error(
        "too many failed logins from this address: try again later (listener max_login_failures_per_source)"
    )]
    TooManyFailures,
}

/// A connection that has not logged in yet, counted until it drops (on login, or when the
/// connection ends).
pub struct PendingLogin {
    gate: Arc<LoginGate>,
    ip: IpAddr,
    _source: SourceSlot,
    _pending: OwnedSemaphorePermit,
}

impl LoginGate {
    pub fn new(listener: &ListenerConfig, stats: Arc<GuardStats>) -> Arc<LoginGate> {
        Self::with_limits(
            listener.max_pending_logins(),
            listener.max_pending_logins_per_source(),
            listener.max_login_failures_per_source(),
            listener.login_failure_window(),
            stats,
        )
    }

    pub fn with_limits(
        max_pending: u32,
        max_pending_per_source: u32,
        max_failures: u32,
        window: Duration,
        stats: Arc<GuardStats>,
    ) -> Arc<LoginGate> {
        let failures = (max_failures > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED_SOURCES)
                .time_to_live(window)
                .build()
        });
        Arc::new(LoginGate {
            pending: Arc::new(Semaphore::new(max_pending as usize)),
            per_source: PerSource::new(max_pending_per_source),
            failures,
            max_failures,
            stats,
        })
    }

    /// Lets a new connection from `ip` start logging in, or says why not (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<PendingLogin, Refusal> {
        let ip = canonical_ip(ip);
        let refuse = |reason: Refusal| -> Result<PendingLogin, Refusal> {
            let counter = match reason {
                Refusal::Pending => &self.stats.refused_pending_logins,
                Refusal::PendingFromSource => &self.stats.refused_pending_logins_per_source,
                Refusal::TooManyFailures => &self.stats.refused_login_failures,
            };
            GuardStats::bump(counter);
            Err(reason)
        };
        if let Some(failures) = &self.failures
            && failures
                .get(&ip)
                .is_some_and(|n| n.load(Ordering::Relaxed) >= self.max_failures)
        {
            return refuse(Refusal::TooManyFailures);
        }
        let Ok(pending) = self.pending.clone().try_acquire_owned() else {
            return refuse(Refusal::Pending);
        };
        let Some(source) = self.per_source.try_take(ip) else {
            return refuse(Refusal::PendingFromSource);
        };
        Ok(PendingLogin {
            gate: self.clone(),
            ip,
            _source: source,
            _pending: pending,
        })
    }

    /// Connections from `ip` waiting to log in now.
    pub fn pending_from(&self, ip: IpAddr) -> u32 {
        self.per_source.held(ip)
    }
}

impl PendingLogin {
    /// This connection failed to log in: counted against its address.
    pub fn failed(&self) {
        GuardStats::bump(&self.gate.stats.login_failures);
        if let Some(failures) = &self.gate.failures {
            failures
                .get_with(self.ip, || Arc::new(AtomicU32::new(0)))
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This connection did not log in within `login_timeout`.
    pub fn timed_out(&self) {
        GuardStats::bump(&self.gate.stats.login_timeouts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(pending: u32, per_source: u32, failures: u32) -> Arc<LoginGate> {
        LoginGate::with_limits(
            pending,
            per_source,
            failures,
            Duration::from_millis(200),
            Arc::default(),
        )
    }

    #[test]
    fn pending_logins_are_capped_per_listener_and_per_address() {
        let gate = gate(3, 2, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).expect("a1");
        let _a2 = gate.admit(a).expect("a2");
        assert_eq!(gate.admit(a).err(), Some(Refusal::PendingFromSource));
        let _b1 = gate.admit(b).expect("b1");
        assert_eq!(gate.admit(b).err(), Some(Refusal::Pending), "listener full");
        drop(a1);
        assert!(gate.admit(b).is_ok(), "a slot freed by a login that ended");
        assert_eq!(GuardStats::get(&gate.stats.refused_pending_logins), 1);
        assert_eq!(
            GuardStats::get(&gate.stats.refused_pending_logins_per_source),
            1
        );
    }

    #[test]
    fn an_address_that_keeps_failing_is_refused_until_its_window_passes() {
        let gate = gate(100, 100, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            gate.admit(a).expect("still admitted").failed();
        }
        assert_eq!(gate.admit(a).err(), Some(Refusal::TooManyFailures));
        assert!(gate.admit(b).is_ok(), "other addresses are not affected");
        std::thread::sleep(Duration::from_millis(300));
        assert!(gate.admit(a).is_ok(), "the window passed");
        assert_eq!(GuardStats::get(&gate.stats.login_failures), 3);
    }

    #[test]
    fn zero_failures_turns_throttling_off() {
        let gate = gate(100, 100, 0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..50 {
            gate.admit(a).expect("admitted").failed();
        }
        assert!(gate.admit(a).is_ok());
    }
}

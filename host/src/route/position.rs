//! A node's WAL position as its position poller last saw it, and the two signals around a poll:
//! requests that wake the poller before its next tick, and the news that a poll finished.
//!
//! Readers (routing, every query) load atomics; only a caller that has to wait for a poll
//! touches the `Notify`s.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::node::clock_ns;
use crate::model::Lsn;

/// What one successful poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionSample {
    /// Normalised with [`Lsn::record_end`], so positions of every node compare.
    pub lsn: Lsn,
    /// The node takes writes, and `lsn` is its insert position; otherwise it is a standby and
    /// `lsn` is what it has replayed.
    pub writable: bool,
    /// When the poll started: the node's log was at least at `lsn` from then on.
    pub started: Instant,
}

const ROLE_UNKNOWN: u8 = 0;
const ROLE_STANDBY: u8 = 1;
const ROLE_WRITABLE: u8 = 2;

#[derive(Debug, Default)]
pub struct WalPosition {
    /// The last successful poll's position; 0 (never a real position): unknown, because no
    /// poll has succeeded yet or the last one failed.
    lsn: AtomicU64,
    /// `ROLE_*` of the last successful poll.
    role: AtomicU8,
    /// When the poll behind `lsn` started (`clock_ns`); written after `lsn` and `role`.
    started_ns: AtomicU64,
    /// Poll requests: a permit wakes the poller (one stored permit, however many requests).
    requests: Notify,
    /// Woken after every poll, successful or not.
    polled: Notify,
}

impl WalPosition {
    /// The last known position (a lower bound: a node's log only moves forward), `None` when
    /// unknown.
    pub fn lsn(&self) -> Option<Lsn> {
        Some(self.lsn.load(Ordering::Acquire))
            .filter(|&v| v != 0)
            .map(Lsn)
    }

    /// Whether the last successful poll found the node taking writes (`None`: no position).
    pub fn is_writable(&self) -> Option<bool> {
        match self.role.load(Ordering::Acquire) {
            ROLE_WRITABLE => Some(true),
            ROLE_STANDBY => Some(false),
            _ => None,
        }
    }

    /// The position, when it is known and was sampled by a poll that found the node writable
    /// and started after `since_ns` (`clock_ns`).
    pub(super) fn writable_since(&self, since_ns: u64) -> Option<Lsn> {
        // Acquire on the time, stored last: the position and role read next are the ones of
        // that poll or of a later one (later is as good: positions only grow).
        if self.started_ns.load(Ordering::Acquire) <= since_ns {
            return None;
        }
        match self.is_writable() {
            Some(true) => self.lsn(),
            _ => None,
        }
    }

    /// Asks the poller for a poll now. Requests coalesce: while a poll runs, any number of them
    /// cause exactly one more poll after it.
    pub fn request_poll(&self) {
        self.requests.notify_one();
    }

    /// Resolves when a poll is requested (for the poller).
    pub(crate) fn requested(&self) -> Notified<'_> {
        self.requests.notified()
    }

    /// Consumes a pending request, if any; the poll about to start answers it.
    pub(crate) fn take_request(&self) -> bool {
        let notified = self.requests.notified();
        tokio::pin!(notified);
        notified.enable()
    }

    /// Resolves after the next poll of the node finishes. It counts from the call, not from
    /// the first `.await`: create it before checking what it waits for.
    pub(crate) fn polled(&self) -> Notified<'_> {
        self.polled.notified()
    }

    pub(super) fn store(&self, sample: Option<PositionSample>) {
        match sample {
            Some(s) => {
                self.lsn.store(s.lsn.0, Ordering::Release);
                let role = if s.writable {
                    ROLE_WRITABLE
                } else {
                    ROLE_STANDBY
                };
                self.role.store(role, Ordering::Release);
                self.started_ns
                    .store(clock_ns(s.started), Ordering::Release);
            }
            None => {
                self.lsn.store(0, Ordering::Release);
                self.role.store(ROLE_UNKNOWN, Ordering::Release);
            }
        }
    }

    pub(super) fn notify_polled(&self) {
        self.polled.notify_waiters();
    }
}

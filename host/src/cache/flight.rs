//! The in-flight table behind single-flight: one entry per key whose query is running.
//!
//! The first lookup of a key inserts a [`Flight`] and holds its [`Leadership`]; concurrent lookups
//! of the same key find the flight and wait on its `watch` channel. The leader publishes one
//! final state. If the leader goes away without publishing (its task was cancelled, the client
//! hung up), `Leadership`'s `Drop` publishes `Abandoned` and the waiters compete again: the first
//! to re-insert becomes the new leader (the pingora-cache lock does the same).
//!
//! A flight remembers the invalidation snapshot its leader took before its query was sent. A
//! lookup whose key was invalidated after that snapshot does not join it: the flight's answer may
//! predate the write behind the invalidation, and the looking-up session may be the writer (its
//! write completed, then it reads). It replaces the flight with its own instead; the old leader
//! still answers its own waiters, and removes only its own flight from the table.
//!
//! The table is sharded (see `shard.rs`), so lookups of different keys rarely share a lock, and a
//! lock is held only for one map operation. Waiting is cancel-safe: a waiter owns only a
//! `watch::Receiver`, which it drops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::CachedResponse;
use super::shard::{DigestState, Sharded};

/// What a flight ended with, as seen by its waiters.
#[derive(Clone)]
pub(crate) enum FlightState {
    Pending,
    /// The leader's response (stored or not: waiters get it either way).
    Done(Arc<CachedResponse>),
    /// The leader's error, already prefixed for waiters.
    Failed(Arc<str>),
    /// The leader cannot give a reusable response (it streamed it, or gave up waiting on another
    /// replica): waiters run the query themselves.
    Bypass,
    /// The leader went away without an answer: compete for leadership again.
    Abandoned,
}

pub(crate) struct Flight {
    state: watch::Sender<FlightState>,
    started: Instant,
    /// The leader's invalidation snapshot (`Generations::snapshot`), taken before its query.
    since: u64,
}

pub(crate) enum Join {
    /// The caller inserted the flight and must resolve it.
    Lead(Leadership),
    /// Another caller is running the query.
    Wait(Arc<Flight>),
    /// The running query is older than the caller's grace time: do not wait on it.
    TooOld,
}

/// How waiting on a flight ended.
pub(crate) enum Waited {
    State(FlightState),
    TimedOut,
}

pub(crate) struct Flights {
    map: Sharded<u128, Arc<Flight>, DigestState>,
}

impl Flights {
    pub(crate) fn new() -> Self {
        Flights {
            map: Sharded::new(),
        }
    }

    /// Joins the flight of `digest`, or starts one whose leader took the invalidation snapshot
    /// `since`. A flight for which `outdated(flight_since)` holds (the key was invalidated after
    /// its leader's snapshot) is replaced by a new one that the caller leads. A flight running
    /// for longer than `grace` is not joined: a waiter would likely time out, and a stuck leader
    /// must not add `grace` to every later request.
    pub(crate) fn join(
        self: &Arc<Self>,
        digest: u128,
        grace: Duration,
        since: u64,
        outdated: impl FnOnce(u64) -> bool,
    ) -> Join {
        self.map.with(&digest, |map| {
            match map.get(&digest) {
                Some(flight) if outdated(flight.since) => {}
                Some(flight) if flight.started.elapsed() >= grace => return Join::TooOld,
                Some(flight) => return Join::Wait(flight.clone()),
                None => {}
            }
            let flight = Arc::new(Flight {
                state: watch::Sender::new(FlightState::Pending),
                started: Instant::now(),
                since,
            });
            map.insert(digest, flight.clone());
            Join::Lead(Leadership {
                flights: self.clone(),
                digest,
                flight,
                resolved: false,
            })
        })
    }
}

impl Flight {
    /// Waits until the flight resolves or `deadline` passes.
    pub(crate) async fn wait(&self, deadline: Instant) -> Waited {
        let mut rx = self.state.subscribe();
        loop {
            // A receiver starts with the current value marked seen, so look before waiting: the
            // flight may have resolved between `join` and here.
            let state = rx.borrow_and_update().clone();
            if !matches!(state, FlightState::Pending) {
                return Waited::State(state);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the flight we hold, so this cannot happen; treat it as gone.
                Ok(Err(_)) => return Waited::State(FlightState::Abandoned),
                Err(_) => return Waited::TimedOut,
            }
        }
    }
}

/// The right and duty to resolve one flight. Dropping it unresolved abandons the flight.
pub(crate) struct Leadership {
    flights: Arc<Flights>,
    digest: u128,
    flight: Arc<Flight>,
    resolved: bool,
}

impl Leadership {
    pub(crate) fn resolve(mut self, state: FlightState) {
        self.resolved = true;
        self.publish(state);
    }

    /// Removes the flight from the table, then tells the waiters. In that order: a waiter told
    /// `Abandoned` re-joins and must not find this flight again; a lookup arriving after a `Done`
    /// finds the stored entry (the caller stores before resolving).
    fn publish(&self, state: FlightState) {
        self.flights.map.with(&self.digest, |map| {
            if map
                .get(&self.digest)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.digest);
            }
        });
        self.flight.state.send_replace(state);
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if !self.resolved {
            self.publish(FlightState::Abandoned);
        }
    }
}

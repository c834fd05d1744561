//! Context-aware pinning in transaction pooling. State a client creates that lives on its
//! server connection and cannot be re-created on another one — a TEMP table, a SQL `PREPARE`, a
//! `DECLARE … WITH HOLD` cursor, `LISTEN`, a session-level advisory lock, `SET SESSION
//! AUTHORIZATION`, `LOAD` — keeps the client on that connection (on the primary) until the state
//! is gone; then it shares connections again. Settings and protocol-level prepared statements
//! are not resident: they are replayed on whichever connection runs next (see `settings`,
//! `extended`).
//!
//! What a statement creates or ends comes from the classifier (`Classification::resident`). A
//! pin is taken before the statement that creates state is sent (so the pool's cap can refuse
//! it with a clear error instead of pinning), and given back once nothing is left. A pinned
//! client that leaves has its connection reset with `DISCARD ALL` before the connection is
//! pooled again (closed instead when a library was loaded: nothing unloads it).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::model::{Resident, ResidentEffect, ResidentSort, Route};
use crate::pipeline::Verdict;
use crate::postgres::protocol::ErrorFields;
use crate::route::{PinnedPlace, Pool};

use super::Session;

/// The resident state a session holds on its server connection.
#[derive(Debug, Default)]
pub(super) struct ResidentState {
    temp: HashSet<Arc<str>>,
    prepared: HashSet<Arc<str>>,
    cursors: HashSet<Arc<str>>,
    channels: HashSet<Arc<str>>,
    /// Session advisory locks taken. Unlocks of one key are not counted down: the key is not
    /// known here, so an unlock of a lock not held must not unpin a client that still holds
    /// another; only `pg_advisory_unlock_all()` (or `DISCARD ALL`) ends them.
    advisory: bool,
    authorization: bool,
    library: bool,
    /// A statement that may have created state the classifier could not tell.
    unknown: bool,
}

impl ResidentState {
    /// Applies what a statement did. `succeeded`: its answer had no error (a failed statement
    /// releases nothing; it may still have created state when it was one of several).
    pub(super) fn apply(&mut self, effects: &[ResidentEffect], succeeded: bool, several: bool) {
        for effect in effects {
            match effect {
                ResidentEffect::Create(r) if succeeded || several => self.create(r),
                ResidentEffect::Unknown if succeeded || several => self.unknown = true,
                ResidentEffect::Release(r) if succeeded => self.release(r),
                ResidentEffect::ReleaseAll(sort) if succeeded => self.release_all(*sort),
                _ => {}
            }
        }
    }

    fn create(&mut self, r: &Resident) {
        match r {
            Resident::TempObject(n) => {
                self.temp.insert(n.clone());
            }
            Resident::Prepared(n) => {
                self.prepared.insert(n.clone());
            }
            Resident::Cursor(n) => {
                self.cursors.insert(n.clone());
            }
            Resident::Channel(n) => {
                self.channels.insert(n.clone());
            }
            Resident::AdvisoryLock => self.advisory = true,
            Resident::SessionAuthorization => self.authorization = true,
            Resident::Library => self.library = true,
        }
    }

    fn release(&mut self, r: &Resident) {
        match r {
            Resident::TempObject(n) => {
                self.temp.remove(n);
            }
            Resident::Prepared(n) => {
                self.prepared.remove(n);
            }
            Resident::Cursor(n) => {
                self.cursors.remove(n);
            }
            Resident::Channel(n) => {
                self.channels.remove(n);
            }
            Resident::SessionAuthorization => self.authorization = false,
            Resident::AdvisoryLock | Resident::Library => {}
        }
    }

    fn release_all(&mut self, sort: ResidentSort) {
        match sort {
            ResidentSort::TempObjects => self.temp.clear(),
            ResidentSort::Prepared => self.prepared.clear(),
            ResidentSort::Cursors => self.cursors.clear(),
            ResidentSort::Channels => self.channels.clear(),
            ResidentSort::AdvisoryLocks => self.advisory = false,
            ResidentSort::All => {
                let library = self.library;
                *self = ResidentState::default();
                self.library = library;
            }
        }
    }

    /// Why the client must keep its connection, if it must (the first reason found).
    pub(super) fn reason(&self) -> Option<&'static str> {
        if !self.temp.is_empty() {
            Some("temporary table")
        } else if !self.prepared.is_empty() {
            Some("SQL prepared statement")
        } else if !self.cursors.is_empty() {
            Some("cursor WITH HOLD")
        } else if !self.channels.is_empty() {
            Some("LISTEN")
        } else if self.advisory {
            Some("session advisory lock")
        } else if self.authorization {
            Some("SET SESSION AUTHORIZATION")
        } else if self.library {
            Some("LOAD")
        } else if self.unknown {
            Some("session state the proxy could not read")
        } else {
            None
        }
    }

    /// Whether `DISCARD ALL` returns the connection to a clean state.
    pub(super) fn resettable(&self) -> bool {
        !self.library
    }
}

/// A session's pin: its place in the pool's count, and the pool it was taken in.
#[derive(Debug)]
pub(super) struct Pin {
    pool: Arc<Pool>,
    place: Option<PinnedPlace>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.pool.unpin(place);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Whether the session keeps its server connection because of resident state.
    pub(super) fn is_pinned(&self) -> bool {
        self.pin.is_some()
    }

    /// The route of a statement that creates resident state: the primary (a standby refuses
    /// temp tables and LISTEN means nothing there), unless the policy named a pool or the
    /// session is pinned already (then it stays where it is).
    pub(super) fn resident_route(&self, verdict: &Verdict, route: Route) -> Route {
        let creates = verdict
            .effective
            .resident
            .iter()
            .any(ResidentEffect::creates);
        if creates && route.is_read_routing() {
            Route::Primary
        } else {
            route
        }
    }

    /// Before a statement that creates resident state is sent on `pool`: takes the pin, or
    /// answers why the pool cannot pin one more client.
    pub(super) fn pin_for(
        &mut self,
        verdict: &Verdict,
        pool: &Arc<Pool>,
    ) -> Result<(), ErrorFields> {
        if self.pin.is_some()
            || !verdict
                .effective
                .resident
                .iter()
                .any(ResidentEffect::creates)
        {
            return Ok(());
        }
        if pool.config().mode == crate::config::PoolMode::Session {
            // The connection is the client's anyway.
            return Ok(());
        }
        let Some(place) = pool.pin() else {
            return Err(ErrorFields::error(
                "53300",
                format!(
                    "too many clients hold session state in pool \"{}\" (max_pinned = {}): this statement would keep a server connection for this client",
                    pool.name(),
                    pool.config().pinned_limit()
                ),
            )
            .hint("end the session state (DISCARD ALL, DEALLOCATE, CLOSE, UNLISTEN, DROP of temp tables) in other clients, or raise max_pinned or use session pooling"));
        };
        self.pin = Some(Pin {
            pool: pool.clone(),
            place: Some(place),
        });
        self.cancel.slot.set_pinned(Some("session state"));
        Ok(())
    }

    /// After a unit's answer: records what it did to resident state, and gives the pin back
    /// when nothing is left.
    pub(super) fn resident_completed(
        &mut self,
        effects: &[ResidentEffect],
        failed: bool,
        several: bool,
    ) {
        if effects.is_empty() {
            return;
        }
        self.resident.apply(effects, !failed, several);
        if effects.iter().any(|e| {
            matches!(
                e,
                ResidentEffect::ReleaseAll(ResidentSort::All | ResidentSort::Prepared)
            )
        }) && !failed
            && let Some(held) = self.held.as_mut()
        {
            // DISCARD ALL / DEALLOCATE ALL also dropped the statements the proxy prepared on
            // this connection for its clients.
            let conn = held.conn.conn();
            conn.prepared.clear();
            conn.unnamed = 0;
        }
        match self.resident.reason() {
            Some(reason) => self.cancel.slot.set_pinned(Some(reason)),
            None => {
                self.pin = None;
                self.cancel.slot.set_pinned(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn state_comes_and_goes() {
        let mut s = ResidentState::default();
        s.apply(
            &[ResidentEffect::Create(Resident::TempObject(name("t")))],
            true,
            false,
        );
        assert_eq!(s.reason(), Some("temporary table"));
        // A failed DROP releases nothing.
        s.apply(
            &[ResidentEffect::Release(Resident::TempObject(name("t")))],
            false,
            false,
        );
        assert!(s.reason().is_some());
        s.apply(
            &[ResidentEffect::Release(Resident::TempObject(name("t")))],
            true,
            false,
        );
        assert_eq!(s.reason(), None);
        // A failed single CREATE creates nothing; one of several may have.
        s.apply(
            &[ResidentEffect::Create(Resident::Prepared(name("p")))],
            false,
            false,
        );
        assert_eq!(s.reason(), None);
        s.apply(
            &[ResidentEffect::Create(Resident::Prepared(name("p")))],
            false,
            true,
        );
        assert_eq!(s.reason(), Some("SQL prepared statement"));
        s.apply(
            &[ResidentEffect::ReleaseAll(ResidentSort::Prepared)],
            true,
            false,
        );
        assert_eq!(s.reason(), None);
    }

    #[test]
    fn advisory_locks_end_only_with_unlock_all_and_load_never() {
        let mut s = ResidentState::default();
        s.apply(
            &[ResidentEffect::Create(Resident::AdvisoryLock)],
            true,
            false,
        );
        s.apply(
            &[ResidentEffect::Release(Resident::AdvisoryLock)],
            true,
            false,
        );
        assert_eq!(s.reason(), Some("session advisory lock"));
        s.apply(
            &[ResidentEffect::ReleaseAll(ResidentSort::AdvisoryLocks)],
            true,
            false,
        );
        assert_eq!(s.reason(), None);
        s.apply(
            &[
                ResidentEffect::Create(Resident::Library),
                ResidentEffect::Create(Resident::Channel(name("c"))),
                ResidentEffect::Unknown,
            ],
            true,
            true,
        );
        s.apply(
            &[ResidentEffect::ReleaseAll(ResidentSort::All)],
            true,
            false,
        );
        assert_eq!(s.reason(), Some("LOAD"));
        assert!(!s.resettable());
    }
}

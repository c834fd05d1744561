//! CancelRequest routing. Each client session gets a random (pid, key) of the proxy's own; while
//! it runs a query, its slot names the server connection doing it. A CancelRequest with the
//! session's key is forwarded to that server with the server's key — never to anyone else's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::backend::postgres::CancelTarget;
use crate::backend::postgres::multiplex::{Board, CancelRide, RideTicket};

/// Where a session's query runs now.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<CancelTarget>>,
    /// The statement runs on another session's connection (multiplexing): only while it is the
    /// one the server works on is a cancel forwarded.
    ride: Mutex<Option<Arc<RideTicket>>>,
    /// The session holds a connection others' statements ride on: a cancel is forwarded only
    /// while one of its own units is the one the server works on.
    own_running: Mutex<Option<Arc<Board>>>,
    /// Why the session keeps its server connection between transactions, for SHOW CLIENTS.
    pinned: Mutex<Option<&'static str>>,
}

impl CancelSlot {
    pub fn set(&self, target: CancelTarget) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(target);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut t) = self.target.lock() {
            *t = None;
        }
        if let Ok(mut r) = self.ride.lock() {
            *r = None;
        }
        if let Ok(mut g) = self.own_running.lock() {
            *g = None;
        }
    }

    /// The session's statements run on `target`, which others' statements may ride on too.
    pub fn set_carrying(&self, target: CancelTarget, board: Arc<Board>) {
        self.set(target);
        if let Ok(mut g) = self.own_running.lock() {
            *g = Some(board);
        }
    }

    /// The session's statement rides on the connection `target` names.
    pub fn set_ride(&self, target: CancelTarget, ticket: Arc<RideTicket>) {
        self.set(target);
        if let Ok(mut r) = self.ride.lock() {
            *r = Some(ticket);
        }
    }

    /// The session's statement waits in a bucket's queue of rides: its carrier, once one
    /// takes it, is told through the ticket.
    pub fn set_queued_ride(&self, ticket: Arc<RideTicket>) {
        if let Ok(mut r) = self.ride.lock() {
            *r = Some(ticket);
        }
    }

    pub fn set_pinned(&self, reason: Option<&'static str>) {
        if let Ok(mut p) = self.pinned.lock() {
            *p = reason;
        }
    }

    fn pinned(&self) -> Option<&'static str> {
        self.pinned.lock().ok().and_then(|p| *p)
    }

    fn get(&self) -> Option<CancelTarget> {
        self.target.lock().ok().and_then(|t| t.clone())
    }
}

/// Who a session is, for SHOW CLIENTS.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: String,
    pub since: std::time::SystemTime,
}

/// A session's cancel key, slot and identity, by its pid.
type SessionEntry = (i32, Arc<CancelSlot>, Arc<ClientInfo>);

/// A session for SHOW CLIENTS: pid, who, the server connection running its query if any, and
/// why it is pinned to its server connection, if it is.
pub type ClientRow = (
    i32,
    Arc<ClientInfo>,
    Option<(String, i32)>,
    Option<&'static str>,
);

/// Sessions by their proxy-issued (pid, key). Touched at login, logout and cancel only.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, SessionEntry>>,
}

impl CancelRegistry {
    /// Registers a new session under a fresh random pid and key.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> CancelHandle {
        let slot = Arc::new(CancelSlot::default());
        let key: i32 = rand::random();
        let mut pid: i32 = rand::random::<i32>() & 0x3fff_ffff;
        if let Ok(mut sessions) = self.sessions.lock() {
            while pid == 0 || sessions.contains_key(&pid) {
                pid = rand::random::<i32>() & 0x3fff_ffff;
            }
            sessions.insert(pid, (key, slot.clone(), Arc::new(info)));
        }
        CancelHandle {
            registry: self.clone(),
            pid,
            key,
            slot,
        }
    }

    /// Forwards a cancel for (pid, key); a wrong key is ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, key: i32) {
        let slot = self.sessions.lock().ok().and_then(|s| {
            s.get(&pid)
                .filter(|(k, _, _)| *k == key)
                .map(|(_, slot, _)| slot.clone())
        });
        let Some(slot) = slot else {
            return;
        };
        let ride = slot.ride.lock().ok().and_then(|r| r.clone());
        let mut target = None;
        if let Some(ticket) = ride {
            if ticket.cancel() == CancelRide::Withdrawn {
                // Queued behind other clients' statements: answered as cancelled where it
                // waits; the server, working on someone else's statement, must not be told.
                tracing::debug!(
                    pid,
                    "cancel request for a statement not running yet: withdrawn"
                );
                return;
            }
            // Taken from its bucket's queue: the carrier's connection runs it now.
            target = ticket.carrier().cloned();
        }
        let gate = slot.own_running.lock().ok().and_then(|g| g.clone());
        if gate.is_some_and(|board| !board.own_running()) {
            tracing::debug!(
                pid,
                "cancel request while another client's statement runs: not forwarded"
            );
            return;
        }
        let Some(target) = target.or_else(|| slot.get()) else {
            tracing::debug!(pid, "cancel request for no running query");
            return;
        };
        if let Err(e) = crate::backend::postgres::send_cancel(&target).await {
            static NOT_FORWARDED: crate::log_limit::LogLimit =
                crate::log_limit::LogLimit::standard();
            crate::warn_limited!(NOT_FORWARDED, server = target.endpoint.addr, error = %e, "cannot forward a cancel request");
        }
    }

    /// Every session: (pid, who, the server connection running its query if any).
    pub fn clients(&self) -> Vec<ClientRow> {
        let mut out: Vec<_> = self
            .sessions
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(pid, (_, slot, info))| {
                        (
                            *pid,
                            info.clone(),
                            slot.get().map(|t| (t.endpoint.addr.clone(), t.pid)),
                            slot.pinned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(pid, _, _, _)| *pid);
        out
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's registration; unregisters on drop.
#[derive(Debug)]
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub key: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        if let Ok(mut s) = self.registry.sessions.lock() {
            s.remove(&self.pid);
        }
    }
}

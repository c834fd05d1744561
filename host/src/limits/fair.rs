//! A counting semaphore whose waiters are served round-robin across tenants: each tenant has its
//! own FIFO queue, and a freed permit goes to the head of the next tenant's queue in turn. A
//! tenant with a hundred queued queries therefore delays another tenant's single query by at
//! most one grant, not by a hundred.
//!
//! Turns are counted in grants, not in time held: what a query will cost is unknown when it is
//! granted, so deficit round robin by cost would need estimates the proxy does not have. A
//! tenant of long queries may therefore hold more of the resource than one of short queries;
//! per-tenant concurrency limits (`[[limit]]`) bound that.
//!
//! A freed permit is handed straight to a waiter (never put back while someone waits), so a new
//! arrival cannot overtake the queue. The state sits behind a std mutex held for a few queue
//! operations and never across an await; a semaphore is per resource (a bucket of connections,
//! one owner's limit), never process-wide.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Who a waiter queues for: the tag value of a tag limit (`tenant=acme`) or the user
/// (`user:alice`). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    pub fn new(key: impl Into<Arc<str>>) -> Tenant {
        Tenant(key.into())
    }

    pub fn user(name: &str) -> Tenant {
        Tenant(format!("user:{name}").into())
    }

    pub fn tag(tag: &str, value: &str) -> Tenant {
        Tenant(format!("{tag}={value}").into())
    }

    /// The proxy's own work (fetching server parameters at login).
    pub fn internal() -> Tenant {
        Tenant(Arc::from("internal"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a wait ended without a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// `max_waiting` waiters were queued already.
    QueueFull,
    /// No permit within the wait time.
    TimedOut,
}

#[derive(Debug)]
pub struct FairSemaphore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    available: u32,
    waiting: u32,
    next_id: u64,
    queues: HashMap<Tenant, VecDeque<Waiter>>,
    /// Tenants with waiters, in serving order.
    ring: VecDeque<Tenant>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

impl State {
    /// The next waiter in round-robin order.
    fn pop_next(&mut self) -> Option<Waiter> {
        while let Some(tenant) = self.ring.pop_front() {
            let Some(queue) = self.queues.get_mut(&tenant) else {
                continue;
            };
            let Some(waiter) = queue.pop_front() else {
                self.queues.remove(&tenant);
                continue;
            };
            if queue.is_empty() {
                self.queues.remove(&tenant);
            } else {
                self.ring.push_back(tenant);
            }
            self.waiting -= 1;
            return Some(waiter);
        }
        None
    }

    /// Removes a cancelled waiter; false when it is no longer queued (it was granted).
    fn remove(&mut self, tenant: &Tenant, id: u64) -> bool {
        let Some(queue) = self.queues.get_mut(tenant) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        self.waiting -= 1;
        if queue.is_empty() {
            self.queues.remove(tenant);
            self.ring.retain(|t| t != tenant);
        }
        true
    }
}

/// A permit; gives itself back (to the next waiter in turn) on drop.
#[derive(Debug)]
pub struct FairPermit {
    sem: Arc<FairSemaphore>,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl FairSemaphore {
    pub fn new(permits: u32) -> FairSemaphore {
        FairSemaphore {
            state: Mutex::new(State {
                available: permits,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Permits free now.
    pub fn available(&self) -> u32 {
        self.lock().available
    }

    /// Waiters queued now, over all tenants.
    pub fn waiting(&self) -> u32 {
        self.lock().waiting
    }

    /// Tenants with at least one waiter now.
    pub fn waiting_tenants(&self) -> usize {
        self.lock().queues.len()
    }

    /// A permit if one is free (and, by construction, nobody waits).
    pub fn try_acquire(self: &Arc<Self>) -> Option<FairPermit> {
        let mut state = self.lock();
        if state.available == 0 {
            return None;
        }
        state.available -= 1;
        Some(FairPermit { sem: self.clone() })
    }

    /// Takes a permit, queueing behind `tenant`'s earlier waiters for at most `max_wait` when
    /// none is free. Cancel-safe: a dropped future leaves the queue, or passes on a permit it
    /// was granted in the meantime.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &Tenant,
        max_wait: Duration,
        max_waiting: u32,
    ) -> Result<FairPermit, WaitError> {
        let (id, rx) = {
            let mut state = self.lock();
            if state.available > 0 {
                state.available -= 1;
                return Ok(FairPermit { sem: self.clone() });
            }
            if state.waiting >= max_waiting {
                return Err(WaitError::QueueFull);
            }
            let id = state.next_id;
            state.next_id += 1;
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter { id, grant: tx };
            match state.queues.get_mut(tenant) {
                Some(queue) => queue.push_back(waiter),
                None => {
                    state
                        .queues
                        .insert(tenant.clone(), VecDeque::from([waiter]));
                    state.ring.push_back(tenant.clone());
                }
            }
            state.waiting += 1;
            (id, rx)
        };
        let mut queued = Queued {
            sem: self,
            tenant,
            id,
            rx,
            done: false,
        };
        match tokio::time::timeout(max_wait, &mut queued.rx).await {
            Ok(Ok(())) => {
                queued.done = true;
                Ok(FairPermit { sem: self.clone() })
            }
            // The sender is only dropped after a send or with the semaphore, which this future
            // keeps alive: treat it like a timeout should it ever happen.
            Ok(Err(_)) | Err(_) => Err(WaitError::TimedOut),
        }
    }

    fn release(&self) {
        let mut state = self.lock();
        // Granted under the lock, so a waiter being cancelled either still finds itself queued
        // or finds the grant in its channel (see `Queued::drop`).
        while let Some(waiter) = state.pop_next() {
            if waiter.grant.send(()).is_ok() {
                return;
            }
        }
        state.available += 1;
    }
}

/// A waiter's place in the queue while its future lives.
struct Queued<'a> {
    sem: &'a FairSemaphore,
    tenant: &'a Tenant,
    id: u64,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let removed = self.sem.lock().remove(self.tenant, self.id);
        // Not queued any more: a permit was granted after the wait gave up; pass it on.
        if !removed && self.rx.try_recv().is_ok() {
            self.sem.release();
        }
    }
}

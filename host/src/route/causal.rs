//! Causal routing questions over WAL positions: which nodes of a pool have not reached a
//! position, waiting until one has, and the primary's position now or as of an instant.
//!
//! Positions are lower bounds (a node's log only moves forward), so "reached" is never wrong
//! about a node, only late: a node is behind until a poll has seen it past the position. A
//! waiter asks the nodes' pollers for a poll at once rather than waiting for their tick.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tokio::sync::futures::Notified;

use super::node::{clock_ns, now_ms};
use super::{NodeState, Pool, Router};
use crate::model::{Lsn, WalLayout};

/// Nodes of a pool, as a checkout's exclude list.
pub type NodeIndices = SmallVec<[usize; 4]>;

impl Pool {
    /// Positions (as in [`Pool::nodes`]) of the nodes whose last known position is below `lsn`
    /// or unknown: a read that must see `lsn` passes them to the checkout as `exclude`.
    pub fn nodes_behind(&self, lsn: Lsn) -> NodeIndices {
        self.nodes()
            .iter()
            .filter(|n| n.wal().lsn().is_none_or(|at| at < lsn))
            .map(|n| n.index())
            .collect()
    }

    /// Whether an available node has reached `lsn`.
    pub fn reached(&self, lsn: Lsn) -> bool {
        let now = now_ms();
        self.nodes()
            .iter()
            .any(|n| n.is_available_at(now) && n.wal().lsn().is_some_and(|at| at >= lsn))
    }

    /// Waits until an available node has reached `lsn` or `timeout` passes; true if one has.
    /// Answers at once when one already has. Otherwise it asks the pollers of the nodes still
    /// behind for a poll now (also with a zero timeout, which only checks: a later read may
    /// then find the node there) and re-checks after each poll.
    pub async fn wait_reached(&self, lsn: Lsn, timeout: Duration) -> bool {
        if self.reached(lsn) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Listen before checking: a poll ending between the check and the wait still
            // wakes this waiter.
            let mut polled = listen(self.nodes().iter());
            if self.reached(lsn) {
                return true;
            }
            let now = now_ms();
            for node in self.nodes() {
                if node.is_available_at(now) && node.wal().lsn().is_none_or(|at| at < lsn) {
                    node.request_poll();
                }
            }
            if timeout.is_zero()
                || tokio::time::timeout_at(deadline.into(), any(&mut polled))
                    .await
                    .is_err()
            {
                return self.reached(lsn);
            }
        }
    }
}

impl Router {
    /// The primary's last known position: the newest a poll of a writable node has seen.
    /// `None` before the first such poll.
    pub fn primary_position(&self) -> Option<Lsn> {
        Some(self.primary_lsn.load(std::sync::atomic::Ordering::Acquire))
            .filter(|&v| v != 0)
            .map(Lsn)
    }

    /// A primary position sampled by a poll that started after `started`, so every write
    /// committed before `started` is at or below it (for reads that must see everything
    /// committed before they began). Asks the pollers for a poll now; `None` when no writable
    /// node answered within `timeout`.
    pub async fn primary_position_since(&self, started: Instant, timeout: Duration) -> Option<Lsn> {
        let since = clock_ns(started);
        let deadline = Instant::now() + timeout;
        let fresh = || {
            self.all_nodes()
                .filter_map(|n| n.wal().writable_since(since))
                .max()
        };
        loop {
            let mut polled = listen(self.all_nodes());
            if let Some(lsn) = fresh() {
                return Some(lsn);
            }
            for node in self.primary_candidates() {
                node.request_poll();
            }
            if timeout.is_zero()
                || tokio::time::timeout_at(deadline.into(), any(&mut polled))
                    .await
                    .is_err()
            {
                return fresh();
            }
        }
    }

    /// `lsn` as the pollers normalise positions ([`Lsn::record_end`]), with the cluster's WAL
    /// layout once a poller has learnt it (PostgreSQL's defaults until then).
    pub fn normalize(&self, lsn: Lsn) -> Lsn {
        lsn.record_end(self.wal_layout())
    }

    /// The cluster's WAL layout as a poller read it from a server (the defaults until then).
    pub fn wal_layout(&self) -> WalLayout {
        self.wal_layout.get().copied().unwrap_or_default()
    }

    /// Records the cluster's WAL layout (the first poller to read it wins: physical replicas
    /// share their primary's).
    pub fn set_wal_layout(&self, layout: WalLayout) {
        let _ = self.wal_layout.set(layout);
    }

    fn all_nodes(&self) -> impl Iterator<Item = &std::sync::Arc<NodeState>> {
        self.pools().flat_map(|p| p.nodes())
    }

    /// Nodes that may take writes: those last seen writable, and the primary pool's.
    fn primary_candidates(&self) -> impl Iterator<Item = &std::sync::Arc<NodeState>> {
        self.pools().flat_map(|pool| {
            let primary_pool = pool.role() == crate::model::PoolRole::Primary;
            pool.nodes()
                .iter()
                .filter(move |n| primary_pool || n.wal().is_writable() == Some(true))
        })
    }
}

/// One "a poll finished" listener per node; they count from now.
fn listen<'a>(
    nodes: impl Iterator<Item = &'a std::sync::Arc<NodeState>>,
) -> SmallVec<[Pin<Box<Notified<'a>>>; 4]> {
    nodes.map(|n| Box::pin(n.wal().polled())).collect()
}

/// Resolves when any of `polled` does.
async fn any(polled: &mut [Pin<Box<Notified<'_>>>]) {
    if polled.is_empty() {
        // No node to poll: nothing will ever come.
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        if polled.iter_mut().any(|p| p.as_mut().poll(cx).is_ready()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

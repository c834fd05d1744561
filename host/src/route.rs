//! Protocol-neutral routing: from a cluster's config, pools of nodes with live health state; from
//! the policy's [`Route`], the pool a statement runs on; inside it, a node by the pool's strategy.
//!
//! Rules:
//! - `Route::Default`: a read outside a transaction goes to the replica pool, everything else to
//!   the primary pool.
//! - `Route::Replica` (and a default-routed read) falls back to the primary pool when the cluster
//!   has no replica pool or none of its nodes is available.
//! - `Route::Pool(name)`: that pool; an unknown name is an error (the policy is wrong, and
//!   guessing could send a tenant's query to another tenant's servers).
//! - A chosen pool with no available node is replaced by its `fallback_pool` (followed as a
//!   chain, cycles are refused by the config check).
//! - A cluster without a primary pool (ClickHouse allows that) sends "primary" traffic to its
//!   replica pool, else to its first pool.
//! - PostgreSQL failover: "primary" traffic goes to the primary pool while one of its nodes is
//!   available and not in recovery; otherwise to a node of another pool that the health checks
//!   saw leave recovery (a promoted replica), pinned in a [`Target`]. With neither, the primary
//!   pool is returned and its checkout fails fast, naming the pool.
//! - Mirroring ([`Router::mirror`]) is decided here too, so both frontends count and cap it the
//!   same way.
//! - Causal reads: every node's WAL position is known as of its last poll; [`Pool::nodes_behind`],
//!   [`Pool::wait_reached`] and [`Router::primary_position_since`] answer "which nodes have
//!   reached P?" (module `causal`); replica lag is derived from the same positions (`lag`).
//!
//! The [`Router`] is also the policy's window on the backends ([`BackendStateSource`]).

mod causal;
mod failover;
mod lag;
mod mirror;
mod node;
mod pinned;
mod pool;
mod position;
mod strategy;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_balance;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use causal::NodeIndices;
pub use mirror::{DEFAULT_MAX_IN_FLIGHT, MirrorStats, MirrorTicket};
pub use node::{InFlight, NodeState};
pub use pinned::{PinnedPlace, PinnedStats};
pub use pool::Pool;
pub use position::{PositionSample, WalPosition};

use crate::config::{ClusterConfig, Consistency};
use crate::model::{PoolRole, PoolState, Protocol, Route, StatementKind, WalLayout};
use crate::policy::BackendStateSource;

/// Why no pool could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("cluster `{cluster}` has no pool named `{name}` (known: {known})")]
    UnknownPool {
        cluster: String,
        name: String,
        known: String,
    },
    #[error("cluster `{cluster}` has no {role} pool")]
    NoPool { cluster: String, role: &'static str },
}

/// Where a statement runs: a pool, and possibly one node of it (a promoted replica taking the
/// writes while the primary pool is down).
#[derive(Debug, Clone)]
pub struct Target {
    pub pool: Arc<Pool>,
    pub node: Option<usize>,
}

impl Target {
    /// The nodes a checkout must skip to honour the pin.
    pub fn exclude(&self) -> Vec<usize> {
        match self.node {
            Some(pin) => (0..self.pool.nodes().len()).filter(|&i| i != pin).collect(),
            None => Vec::new(),
        }
    }
}

/// The pools of one cluster.
#[derive(Debug)]
pub struct Router {
    cluster: String,
    protocol: Protocol,
    database: Option<String>,
    pools: BTreeMap<String, Arc<Pool>>,
    /// Policy routes naming a pool the cluster does not have.
    unknown_pool: AtomicU64,
    /// Policy mirror requests naming a pool the cluster does not have (the query still runs).
    unknown_mirror_pool: AtomicU64,
    /// The promoted node writes go to, as `1 + pool position * 2^32 + node` (0: none), so a
    /// change is logged and counted once.
    promoted: AtomicU64,
    write_failovers: AtomicU64,
    consistency: Consistency,
    causal_wait: Duration,
    wal_poll_interval: Duration,
    /// The primary's positions over time (for replica lag in time); written once per poll.
    history: Mutex<lag::PrimaryHistory>,
    /// The newest position in `history` (0: none), for readers that take no lock.
    primary_lsn: AtomicU64,
    wal_layout: OnceLock<WalLayout>,
}

impl Router {
    pub fn new(cluster: impl Into<String>, config: &ClusterConfig) -> Self {
        let pools = config
            .pools
            .iter()
            .map(|(name, pool)| (name.clone(), Arc::new(Pool::new(name.clone(), pool))))
            .collect();
        Router {
            cluster: cluster.into(),
            protocol: config.protocol,
            database: config.database.clone(),
            pools,
            unknown_pool: AtomicU64::new(0),
            unknown_mirror_pool: AtomicU64::new(0),
            promoted: AtomicU64::new(0),
            write_failovers: AtomicU64::new(0),
            consistency: config.consistency,
            causal_wait: config.causal_wait,
            wal_poll_interval: config.wal_poll_interval,
            history: Mutex::new(lag::PrimaryHistory::default()),
            primary_lsn: AtomicU64::new(0),
            wal_layout: OnceLock::new(),
        }
    }

    /// What a read must have seen (`consistency`).
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// How long a read may wait for a replica to reach the position it needs before it goes
    /// to the primary (`causal_wait`).
    pub fn causal_wait(&self) -> Duration {
        self.causal_wait
    }

    /// How often each node's WAL position is polled (`wal_poll_interval`).
    pub fn wal_poll_interval(&self) -> Duration {
        self.wal_poll_interval
    }

    /// Statements refused because the policy routed them to a pool that does not exist.
    pub fn unknown_pool_errors(&self) -> u64 {
        self.unknown_pool.load(Ordering::Relaxed)
    }

    /// Mirror requests from the policy naming a pool that does not exist (ignored).
    pub fn unknown_mirror_pools(&self) -> u64 {
        self.unknown_mirror_pool.load(Ordering::Relaxed)
    }

    /// Times writes moved to a newly promoted node (PostgreSQL failover).
    pub fn write_failovers(&self) -> u64 {
        self.write_failovers.load(Ordering::Relaxed)
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The cluster's default database, if it names one.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    fn with_role(&self, role: PoolRole) -> Option<&Arc<Pool>> {
        self.pools.values().find(|p| p.role() == role)
    }

    /// The pool "primary" traffic goes to.
    fn primary(&self) -> Option<&Arc<Pool>> {
        self.with_role(PoolRole::Primary)
            .or_else(|| self.with_role(PoolRole::Replica))
            .or_else(|| self.pools.values().next())
    }

    /// The pool a statement of `kind` runs on under `route` (ignoring a failover pin: for
    /// callers that cannot pin a node, such as ClickHouse, whose clusters have no promotion).
    pub fn resolve(
        &self,
        route: &Route,
        kind: StatementKind,
        in_transaction: bool,
    ) -> Result<Arc<Pool>, RouteError> {
        self.resolve_target(route, kind, in_transaction)
            .map(|t| t.pool)
    }

    /// Where a statement of `kind` runs under `route`.
    pub fn resolve_target(
        &self,
        route: &Route,
        kind: StatementKind,
        in_transaction: bool,
    ) -> Result<Target, RouteError> {
        let no_pool = |role| RouteError::NoPool {
            cluster: self.cluster.clone(),
            role,
        };
        let unpinned = |pool: &Arc<Pool>| Target {
            pool: self.follow_fallbacks(pool).clone(),
            node: None,
        };
        match route {
            Route::Default if kind == StatementKind::Read && !in_transaction => self
                .replica_or_primary()
                .map(unpinned)
                .ok_or_else(|| no_pool("primary")),
            Route::Default | Route::Primary => self.writes().ok_or_else(|| no_pool("primary")),
            Route::Replica => self
                .replica_or_primary()
                .map(unpinned)
                .ok_or_else(|| no_pool("replica")),
            Route::Pool(name) => match self.pools.get(name) {
                Some(pool) => Ok(unpinned(pool)),
                None => {
                    self.unknown_pool.fetch_add(1, Ordering::Relaxed);
                    Err(RouteError::UnknownPool {
                        cluster: self.cluster.clone(),
                        name: name.clone(),
                        known: self.pools.keys().cloned().collect::<Vec<_>>().join(", "),
                    })
                }
            },
        }
    }

    fn replica_or_primary(&self) -> Option<&Arc<Pool>> {
        match self.with_role(PoolRole::Replica) {
            Some(replica) if replica.has_available() => Some(replica),
            Some(replica) => self.with_role(PoolRole::Primary).or(Some(replica)),
            None => self.primary(),
        }
    }

    /// While the pool has no available node and names a fallback, move to the fallback.
    fn follow_fallbacks<'a>(&'a self, mut pool: &'a Arc<Pool>) -> &'a Arc<Pool> {
        for _ in 0..self.pools.len() {
            if pool.has_available() {
                break;
            }
            let Some(next) = pool
                .config()
                .fallback_pool
                .as_deref()
                .and_then(|name| self.pools.get(name))
            else {
                break;
            };
            pool = next;
        }
        pool
    }
}

impl BackendStateSource for Router {
    fn pool_states(&self) -> Vec<PoolState> {
        self.pools.values().map(|p| p.state()).collect()
    }
}

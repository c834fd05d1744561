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
//!
//! The [`Router`] is also the policy's window on the backends ([`BackendStateSource`]).

mod node;
mod pool;
mod strategy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use node::{InFlight, NodeState};
pub use pool::Pool;

use crate::config::ClusterConfig;
use crate::model::{PoolRole, PoolState, Protocol, Route, StatementKind};
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

/// The pools of one cluster.
#[derive(Debug)]
pub struct Router {
    cluster: String,
    protocol: Protocol,
    database: Option<String>,
    pools: BTreeMap<String, Arc<Pool>>,
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
        }
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

    /// The pool a statement of `kind` runs on under `route`.
    pub fn resolve(
        &self,
        route: &Route,
        kind: StatementKind,
        in_transaction: bool,
    ) -> Result<Arc<Pool>, RouteError> {
        let no_pool = |role| RouteError::NoPool {
            cluster: self.cluster.clone(),
            role,
        };
        let chosen = match route {
            Route::Default if kind == StatementKind::Read && !in_transaction => {
                self.replica_or_primary()
            }
            Route::Default | Route::Primary => self.primary(),
            Route::Replica => self.replica_or_primary(),
            Route::Pool(name) => {
                Some(
                    self.pools
                        .get(name)
                        .ok_or_else(|| RouteError::UnknownPool {
                            cluster: self.cluster.clone(),
                            name: name.clone(),
                            known: self.pools.keys().cloned().collect::<Vec<_>>().join(", "),
                        })?,
                )
            }
        };
        let chosen = chosen.ok_or_else(|| {
            no_pool(if *route == Route::Replica {
                "replica"
            } else {
                "primary"
            })
        })?;
        Ok(self.follow_fallbacks(chosen).clone())
    }

    fn replica_or_primary(&self) -> Option<&Arc<Pool>> {
        match self.with_role(PoolRole::Replica) {
            Some(replica) if replica.healthy_nodes() > 0 => Some(replica),
            Some(replica) => self.with_role(PoolRole::Primary).or(Some(replica)),
            None => self.primary(),
        }
    }

    /// While the pool has no available node and names a fallback, move to the fallback.
    fn follow_fallbacks<'a>(&'a self, mut pool: &'a Arc<Pool>) -> &'a Arc<Pool> {
        for _ in 0..self.pools.len() {
            if pool.healthy_nodes() > 0 {
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

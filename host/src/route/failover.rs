//! PostgreSQL failover: where "primary" traffic goes when the primary pool is down and the health
//! checks saw another pool's node leave recovery (see the rules in the parent module).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::node::now_ms;
use super::{NodeState, Pool, Router, Target};
use crate::model::Protocol;

impl Router {
    /// Where "primary" traffic goes now (see the module's failover rule).
    pub(super) fn writes(&self) -> Option<Target> {
        let primary = self.primary()?;
        let now = now_ms();
        let writable = |n: &NodeState| n.is_available_at(now) && n.in_recovery() != Some(true);
        if self.protocol != Protocol::Postgres || primary.nodes().iter().any(|n| writable(n)) {
            self.note_promoted(None);
            return Some(Target {
                pool: self.follow_fallbacks(primary).clone(),
                node: None,
            });
        }
        let promoted = self
            .pools
            .values()
            .enumerate()
            .filter(|(_, pool)| pool.name() != primary.name())
            .find_map(|(p, pool)| {
                pool.nodes()
                    .iter()
                    .find(|n| n.is_available_at(now) && n.in_recovery() == Some(false))
                    .map(|n| (p, pool, n.index()))
            });
        match promoted {
            Some((p, pool, node)) => {
                self.note_promoted(Some((p, pool, node)));
                Some(Target {
                    pool: pool.clone(),
                    node: Some(node),
                })
            }
            // Nothing takes writes: the primary pool (or its fallback), whose checkout fails
            // fast naming it.
            None => Some(Target {
                pool: self.follow_fallbacks(primary).clone(),
                node: None,
            }),
        }
    }

    fn note_promoted(&self, now: Option<(usize, &Arc<Pool>, usize)>) {
        let code = now.map_or(0, |(p, _, n)| 1 + ((p as u64) << 32) + n as u64);
        // Read first: every write passes here, and a store on each would bounce the cache line
        // between cores.
        if self.promoted.load(Ordering::Relaxed) == code
            || self.promoted.swap(code, Ordering::Relaxed) == code
        {
            return;
        }
        match now {
            Some((_, pool, node)) => {
                self.write_failovers.fetch_add(1, Ordering::Relaxed);
                let addr = pool.nodes().get(node).map_or("?", |n| n.addr());
                tracing::warn!(
                    cluster = self.cluster,
                    pool = pool.name(),
                    node = addr,
                    "primary pool unavailable: writes go to the promoted node"
                );
            }
            None => {
                tracing::info!(
                    cluster = self.cluster,
                    "writes go to the primary pool again"
                );
            }
        }
    }
}

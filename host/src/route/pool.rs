//! A pool: interchangeable nodes, a strategy to pick among the available ones, and the pool's
//! config (credentials, limits, health checks) for whoever sends it queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::mirror::MirrorStats;
use super::node::{NodeState, now_ms};
use super::strategy::{self, Candidate, Draw};
use crate::config::{PoolConfig, Strategy};
use crate::limits::Limits;
use crate::model::{PoolRole, PoolState};

/// Pools up to this many nodes pick without allocating.
const STACK_NODES: usize = 16;

#[derive(Debug)]
pub struct Pool {
    name: String,
    config: PoolConfig,
    nodes: Vec<Arc<NodeState>>,
    addr_hashes: Vec<u64>,
    tick: AtomicU64,
    random: AtomicU64,
    /// Picks that found no available node (all banned, unhealthy, lagging or already tried).
    no_node: AtomicU64,
    /// This pool as a mirror target.
    mirror: MirrorStats,
    /// `max_concurrent_queries`, here rather than in a frontend so every listener in front of
    /// the cluster counts against the same slots.
    limits: Option<Limits>,
    /// Clients pinned to a server connection of this pool by their session state.
    pub(super) pinned: super::pinned::PinnedStats,
}

impl Pool {
    pub fn new(name: impl Into<String>, config: &PoolConfig) -> Self {
        let checked = config.health.enabled;
        let nodes: Vec<Arc<NodeState>> = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Arc::new(NodeState::new(i, node, checked)))
            .collect();
        let addr_hashes = nodes.iter().map(|n| strategy::hash_str(n.addr())).collect();
        let name = name.into();
        Pool {
            limits: Limits::for_pool(&name, config),
            random: AtomicU64::new(strategy::hash_str(&name) | 1),
            name,
            config: config.clone(),
            nodes,
            addr_hashes,
            tick: AtomicU64::new(0),
            no_node: AtomicU64::new(0),
            mirror: MirrorStats::default(),
            pinned: Default::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's `max_concurrent_queries` slots, if it sets that limit.
    pub fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }

    pub fn role(&self) -> PoolRole {
        self.config.role
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn nodes(&self) -> &[Arc<NodeState>] {
        &self.nodes
    }

    pub fn healthy_nodes(&self) -> usize {
        let now = now_ms();
        self.nodes.iter().filter(|n| n.is_available_at(now)).count()
    }

    /// Whether any node is available (stops at the first: routing asks this per query).
    pub fn has_available(&self) -> bool {
        let now = now_ms();
        self.nodes.iter().any(|n| n.is_available_at(now))
    }

    /// Picks an available node that is not in `exclude` (positions of nodes already tried), by
    /// the pool's strategy; `affinity` feeds consistent hashing. `None`: no node is available.
    pub fn pick(&self, affinity: Option<&str>, exclude: &[usize]) -> Option<Arc<NodeState>> {
        self.pick_with(self.config.strategy, affinity, exclude)
    }

    /// Picks by consistent hashing of `key` whatever the pool's strategy: for state that lives on
    /// one node (a ClickHouse HTTP `session_id`).
    pub fn pick_sticky(&self, key: &str, exclude: &[usize]) -> Option<Arc<NodeState>> {
        self.pick_with(Strategy::ConsistentHash, Some(key), exclude)
    }

    fn pick_with(
        &self,
        strategy: Strategy,
        affinity: Option<&str>,
        exclude: &[usize],
    ) -> Option<Arc<NodeState>> {
        // Pools are small: the snapshot lives on the stack (no allocation per query) unless the
        // pool has more than `STACK_NODES` nodes.
        let mut stack = [Candidate::default(); STACK_NODES];
        let mut heap = Vec::new();
        let slots: &mut [Candidate] = if self.nodes.len() <= STACK_NODES {
            &mut stack
        } else {
            heap.resize(self.nodes.len(), Candidate::default());
            &mut heap
        };
        let now = now_ms();
        let mut len = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if exclude.contains(&i) || !node.is_available_at(now) {
                continue;
            }
            slots[len] = Candidate {
                index: i,
                in_flight: node.in_flight(),
                weight: node.weight(),
                // Only the strategy that uses the latency average pays for its decay.
                ewma_us: if strategy == Strategy::PeakEwma {
                    node.ewma_us_at(now)
                } else {
                    0
                },
                addr_hash: self.addr_hashes[i],
            };
            len += 1;
        }
        let candidates = &slots[..len];
        if candidates.is_empty() {
            self.no_node.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let draw = Draw {
            tick: self.tick.fetch_add(1, Ordering::Relaxed),
            random: self.next_random(),
        };
        let at = strategy::select(strategy, candidates, draw, affinity.map(strategy::hash_str));
        let index = candidates.get(at).map_or(candidates[0].index, |c| c.index);
        self.nodes.get(index).cloned()
    }

    /// Times a query found no available node here (the pool was down for it).
    pub fn no_node_count(&self) -> u64 {
        self.no_node.load(Ordering::Relaxed)
    }

    /// Counters of the queries mirrored to this pool.
    pub fn mirror_stats(&self) -> &MirrorStats {
        &self.mirror
    }

    /// Whether this pool mirrors a `fraction` share: one draw of the pool's generator.
    pub(super) fn sample(&self, fraction: f64) -> bool {
        if fraction >= 1.0 {
            return true;
        }
        // 53 random bits as a float in [0, 1).
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        unit < fraction
    }

    fn next_random(&self) -> u64 {
        // Weyl sequence through SplitMix: good enough to spread load, no lock, no dependency.
        let x = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        strategy::mix(x)
    }

    pub fn state(&self) -> PoolState {
        PoolState {
            name: self.name.clone(),
            role: self.config.role,
            healthy_nodes: u32::try_from(self.healthy_nodes()).unwrap_or(u32::MAX),
            total_nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            replica_lag_ms: self.nodes.iter().filter_map(|n| n.lag_ms()).max(),
            replica_lag_bytes: self.nodes.iter().filter_map(|n| n.lag_bytes()).max(),
        }
    }
}

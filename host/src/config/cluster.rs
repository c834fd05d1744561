//! `[cluster.<name>]`: a set of backend pools speaking one protocol, and
//! `[cluster.<name>.pool.<pool>]`: nodes plus how to connect to, balance over and check them.
//!
//! `[cluster.<name>.defaults]` (any pool key) is merged into every pool of the cluster before
//! deserialization (see `source::inherit_pool_defaults`), so it never appears in these types.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::backend_tls::TlsMode;
use super::error::{KeyPath, Reason};
use super::health::HealthConfig;
use super::net::Node;
use super::secret::Secret;
use super::units;
use super::validate::Problems;
use crate::model::{PoolRole, Protocol};

/// A backend cluster: pools of nodes that speak one protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub protocol: Protocol,
    /// Database used when the client names none (PostgreSQL: the startup `database`;
    /// ClickHouse: the `database` parameter). `None`: the client's choice, else the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The databases clients may open (`"*"`: any). `None`: only `database`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// After a client writes, its reads go to the primary for this long (read-your-writes).
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub read_your_writes: Option<Duration>,
    /// What a read routed to a replica must have seen (PostgreSQL).
    #[serde(default)]
    pub consistency: Consistency,
    /// How long a read waits for a replica to reach the position it needs before it goes to
    /// the primary (`0s`: it does not wait).
    #[serde(default, with = "units::duration")]
    pub causal_wait: Duration,
    /// How often every node's WAL position is polled (PostgreSQL).
    #[serde(default = "defaults::wal_poll_interval", with = "units::duration")]
    pub wal_poll_interval: Duration,
    /// The pools, by name (names are unique by construction: they are TOML keys).
    #[serde(default, rename = "pool")]
    pub pools: BTreeMap<String, PoolConfig>,
}

/// What a read on a replica must have seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Whatever the replica has replayed.
    Eventual,
    /// At least the client's own writes.
    #[default]
    Session,
    /// Everything committed on the primary before the read started.
    Global,
}

/// One pool of interchangeable nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub role: PoolRole,
    pub nodes: Vec<Node>,
    /// Server connections per node, per (backend user, database).
    #[serde(default = "defaults::size")]
    pub size: u32,
    /// Server connections kept open per node even when idle.
    #[serde(default)]
    pub min_size: u32,
    /// PostgreSQL pooling mode (ignored by ClickHouse HTTP, which is stateless per request).
    #[serde(default)]
    pub mode: PoolMode,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "defaults::connect_timeout", with = "units::duration")]
    pub connect_timeout: Duration,
    /// How long a query waits for a free server connection (PgBouncer's `query_wait_timeout`).
    #[serde(default = "defaults::checkout_timeout", with = "units::duration")]
    pub checkout_timeout: Duration,
    /// Close server connections idle this long (`0s`: never).
    #[serde(default = "defaults::idle_timeout", with = "units::duration")]
    pub idle_timeout: Duration,
    /// Close server connections this old once they are idle (`0s`: never).
    #[serde(default = "defaults::server_lifetime", with = "units::duration")]
    pub server_lifetime: Duration,
    /// Replica pools: a node lagging more than this leaves read rotation.
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_replica_lag: Option<Duration>,
    /// Replica pools: the same in bytes of WAL not yet replayed (catches paused replay).
    #[serde(
        default,
        with = "units::size_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_replica_lag_bytes: Option<u64>,
    #[serde(default)]
    pub health: HealthConfig,
    /// Backend credentials for this pool, unless a user's `backend` overrides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Credentials>,
    /// Where queries for this pool go when none of its nodes is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_pool: Option<String>,
    /// Copy reads on this pool to a shadow pool (responses discarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorConfig>,
    /// Queries running at once on this pool, over all users (more wait in the queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    /// PostgreSQL transaction pooling: server connections per node that clients holding
    /// session state (temp tables, SQL PREPARE, WITH HOLD cursors, LISTEN, ...) may keep at
    /// once; `None`: half of `size` (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pinned: Option<u32>,
    /// Queries running longer are cancelled (PostgreSQL) or killed (ClickHouse).
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_execution_time: Option<Duration>,
    /// Encryption of the connections to this pool's nodes (libpq's `sslmode`).
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of the certificate authorities a node's certificate must chain to under
    /// `verify-ca` and `verify-full` (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate under `verify-full`, instead
    /// of each node's host (for nodes listed by IP whose certificate names a host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// PostgreSQL transaction pooling: autocommit reads written onto busy server connections
    /// behind the work already there, when every connection is busy.
    #[serde(default)]
    pub multiplex: MultiplexConfig,
}

/// Pipelining other clients' autocommit reads onto busy server connections (PostgreSQL,
/// transaction mode): see CONFIG.md, "Multiplexing".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplexConfig {
    #[serde(default = "defaults::multiplex")]
    pub enabled: bool,
    /// Units of work in flight on one server connection at most (its own included).
    #[serde(default = "defaults::max_depth")]
    pub max_depth: u32,
    /// A statement shape whose mean server time (from the digests) is at least this neither
    /// rides behind others nor lets others ride behind it.
    #[serde(default = "defaults::slow_statement", with = "units::duration")]
    pub slow_statement: Duration,
}

impl Default for MultiplexConfig {
    fn default() -> Self {
        MultiplexConfig {
            enabled: defaults::multiplex(),
            max_depth: defaults::max_depth(),
            slow_statement: defaults::slow_statement(),
        }
    }
}

/// PostgreSQL pooling mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// A server connection is held for one transaction, then shared (PgBouncer's transaction mode).
    #[default]
    Transaction,
    /// A server connection is held for the whole client session.
    Session,
}

/// How a node is picked inside a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    /// Fewest outstanding queries.
    LeastConn,
    Random,
    /// Round-robin in proportion to node weights (canary and A/B splits).
    Weighted,
    /// By the policy's affinity key, so a key sticks to a node and only a leaving node's keys
    /// move; queries without a key fall back to round-robin.
    ConsistentHash,
    /// Latency-aware: peak exponentially weighted moving average of response times.
    PeakEwma,
}

/// A backend user name and password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

/// Mirroring of a pool's reads to a shadow pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The shadow pool (same cluster).
    pub pool: String,
    /// Share of reads mirrored, 0.0..=1.0.
    #[serde(default = "defaults::fraction")]
    pub fraction: f64,
    /// Mirrored queries in flight at once; beyond it mirroring is skipped, never waited for.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: u32,
}

mod defaults {
    use std::time::Duration;

    pub fn size() -> u32 {
        20
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn checkout_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub fn server_lifetime() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn fraction() -> f64 {
        1.0
    }
    pub fn max_in_flight() -> u32 {
        64
    }
    pub fn multiplex() -> bool {
        true
    }
    pub fn max_depth() -> u32 {
        8
    }
    pub fn slow_statement() -> Duration {
        Duration::from_millis(5)
    }
    pub fn wal_poll_interval() -> Duration {
        Duration::from_millis(100)
    }
}

// === impl ClusterConfig ===

impl ClusterConfig {
    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.get(name)
    }

    /// The (first) pool with `role`, with its name.
    pub fn pool_with_role(&self, role: PoolRole) -> Option<(&str, &PoolConfig)> {
        self.pools
            .iter()
            .find(|(_, pool)| pool.role == role)
            .map(|(name, pool)| (name.as_str(), pool))
    }

    /// The databases clients may open on this cluster before any user's own list narrows it:
    /// `databases`, else `database` alone; `None` when the cluster names neither.
    pub fn allowed_databases(&self) -> Option<&[String]> {
        self.databases
            .as_deref()
            .or_else(|| self.database.as_ref().map(std::slice::from_ref))
    }

    pub fn primary(&self) -> Option<(&str, &PoolConfig)> {
        self.pool_with_role(PoolRole::Primary)
    }

    pub fn replica(&self) -> Option<(&str, &PoolConfig)> {
        self.pool_with_role(PoolRole::Replica)
    }

    /// Fills what the text may leave out and depends on the protocol (node ports).
    pub(crate) fn finalize(&mut self) {
        for pool in self.pools.values_mut() {
            let port = match (self.protocol, pool.tls) {
                // ClickHouse serves HTTPS on a port of its own (`https_port`, 8443 by default);
                // PostgreSQL negotiates TLS on its usual port.
                (Protocol::ClickhouseHttp, mode) if mode != TlsMode::Disable => 8443,
                (protocol, _) => default_port(protocol),
            };
            for node in &mut pool.nodes {
                if node.port == 0 {
                    node.port = port;
                }
            }
        }
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.database.as_deref() == Some("") {
            problems.add(path.key("database"), Reason::Empty);
        }
        super::databases::check_list(self.databases.as_deref(), &path.key("databases"), problems);
        if let (Some(database), Some(list)) = (&self.database, &self.databases)
            && !database.is_empty()
            && !list
                .iter()
                .any(|d| d == database || d == super::databases::ANY_DATABASE)
        {
            problems.add(
                path.key("database"),
                Reason::Incompatible(format!(
                    "`{database}` is not in `databases`, so clients could not open the database \
                     they get by default (add it to `databases`)"
                )),
            );
        }
        if let Some(window) = self.read_your_writes {
            problems.duration(
                path.key("read_your_writes"),
                window,
                Duration::from_millis(1),
                Duration::from_secs(3600),
            );
        }
        problems.duration(
            path.key("causal_wait"),
            self.causal_wait,
            Duration::ZERO,
            Duration::from_secs(60),
        );
        problems.duration(
            path.key("wal_poll_interval"),
            self.wal_poll_interval,
            Duration::from_millis(1),
            Duration::from_secs(10),
        );
        let pools_path = path.key("pool");
        if self.pools.is_empty() {
            problems.add(
                pools_path.clone(),
                Reason::NoneDefined {
                    what: "pool (a [cluster.<name>.pool.<pool>] table)",
                },
            );
        }
        self.check_roles(&pools_path, problems);
        for (name, pool) in &self.pools {
            let path = pools_path.key(name.as_str());
            problems.name(path.clone(), name);
            pool.check(&path, problems);
            pool.check_tls(self.protocol, &path, problems);
            self.check_references(name, pool, &path, problems);
        }
    }

    fn check_roles(&self, path: &KeyPath, problems: &mut Problems) {
        for role in [PoolRole::Primary, PoolRole::Replica] {
            let pools: Vec<String> = self
                .pools
                .iter()
                .filter(|(_, pool)| pool.role == role)
                .map(|(name, _)| name.clone())
                .collect();
            if role == PoolRole::Primary && self.protocol == Protocol::Postgres && pools.len() != 1
            {
                problems.add(path.clone(), Reason::PrimaryCount { found: pools.len() });
            } else if pools.len() > 1 {
                problems.add(path.clone(), Reason::RoleTaken { role, pools });
            }
        }
    }

    /// `fallback_pool` and `mirror.pool` must name another pool of this cluster, without cycles.
    fn check_references(
        &self,
        name: &str,
        pool: &PoolConfig,
        path: &KeyPath,
        problems: &mut Problems,
    ) {
        let refs = [
            (path.key("fallback_pool"), pool.fallback_pool.as_deref()),
            (
                path.key("mirror").key("pool"),
                pool.mirror.as_ref().map(|m| m.pool.as_str()),
            ),
        ];
        for (ref_path, target) in refs {
            let Some(target) = target else { continue };
            if target == name {
                problems.add(ref_path, Reason::SelfReference);
            } else if !self.pools.contains_key(target) {
                problems.add(
                    ref_path,
                    Reason::Unknown {
                        kind: "pool",
                        name: target.to_string(),
                        known: self.pools.keys().cloned().collect(),
                    },
                );
            }
        }
        // Follow the fallback chain; one that comes back here is a cycle. Report it once, at
        // its alphabetically first pool (a self-reference was reported above).
        let mut chain = vec![name];
        let mut next = pool.fallback_pool.as_deref();
        while let Some(target) = next {
            if target == name {
                if chain.len() > 1 && chain.iter().all(|pool| *pool >= name) {
                    chain.push(name);
                    let chain = chain.iter().map(|pool| pool.to_string()).collect();
                    problems.add(path.key("fallback_pool"), Reason::FallbackCycle { chain });
                }
                break;
            }
            if chain.contains(&target) {
                break;
            }
            chain.push(target);
            next = self
                .pools
                .get(target)
                .and_then(|p| p.fallback_pool.as_deref());
        }
    }
}

/// The port a node gets when the config gives none.
pub fn default_port(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Postgres => 5432,
        Protocol::ClickhouseHttp => 8123,
        Protocol::Mysql => 3306,
    }
}

// === impl PoolConfig ===

impl PoolConfig {
    /// `max_pinned`, or its default: half of `size`, at least one.
    pub fn pinned_limit(&self) -> u32 {
        self.max_pinned.unwrap_or((self.size / 2).max(1))
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        let nodes_path = path.key("nodes");
        if self.nodes.is_empty() {
            problems.add(nodes_path.clone(), Reason::Empty);
        }
        let mut seen = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let path = nodes_path.index(i);
            if node.host.is_empty() {
                problems.add(path.key("host"), Reason::Empty);
            }
            problems.range(path.key("port"), node.port, 1, u16::MAX);
            if self.strategy == Strategy::Weighted {
                problems.at_least(path.key("weight"), node.weight, 1);
            }
            if let Some(first) = seen.insert(node.addr(), path.clone()) {
                problems.add(
                    path,
                    Reason::Duplicate {
                        kind: "node",
                        name: node.addr(),
                        first,
                    },
                );
            }
        }
        problems.range(path.key("size"), self.size, 1, 10_000);
        if self.min_size > self.size {
            problems.add(
                path.key("min_size"),
                Reason::Exceeds {
                    other: "size".to_string(),
                    limit: self.size.to_string(),
                },
            );
        }
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        problems.duration(path.key("connect_timeout"), self.connect_timeout, ms, hour);
        problems.duration(
            path.key("checkout_timeout"),
            self.checkout_timeout,
            ms,
            hour,
        );
        if self.role != PoolRole::Replica {
            let only_replicas = || Reason::OnlyFor {
                condition: "role = \"replica\"".to_string(),
            };
            if self.max_replica_lag.is_some() {
                problems.add(path.key("max_replica_lag"), only_replicas());
            }
            if self.max_replica_lag_bytes.is_some() {
                problems.add(path.key("max_replica_lag_bytes"), only_replicas());
            }
        }
        self.health.check(&path.key("health"), problems);
        if let Some(auth) = &self.auth
            && auth.user.is_empty()
        {
            problems.add(path.key("auth").key("user"), Reason::Empty);
        }
        if let Some(mirror) = &self.mirror {
            let path = path.key("mirror");
            problems.range(path.key("fraction"), mirror.fraction, 0.0, 1.0);
            problems.at_least(path.key("max_in_flight"), mirror.max_in_flight, 1);
        }
        problems.positive(
            path.key("max_concurrent_queries"),
            self.max_concurrent_queries,
        );
        problems.positive(path.key("max_pinned"), self.max_pinned);
        let multiplex = path.key("multiplex");
        problems.range(multiplex.key("max_depth"), self.multiplex.max_depth, 2, 64);
        problems.duration(
            multiplex.key("slow_statement"),
            self.multiplex.slow_statement,
            Duration::from_micros(1),
            hour,
        );
        if let Some(limit) = self.max_execution_time {
            problems.duration(
                path.key("max_execution_time"),
                limit,
                ms,
                Duration::from_secs(86_400),
            );
        }
    }
}

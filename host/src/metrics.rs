//! What the proxy counts and times, per query and per component, for `GET /metrics` (Prometheus)
//! and `GET /digests`.
//!
//! Frontends report each finished statement as a [`QueryEvent`]; [`Metrics::record`] turns it into
//! counters, latency histograms, policy-tag counts, a digest row, and (past
//! `log.slow_query_threshold`) a slow-query log line. Everything recorded per query is atomics
//! behind lock-free lookups ([`labels::LabelMap`], [`histogram::AtomicHistogram`]); state that
//! already lives elsewhere (pools, nodes, cache, policy counters) is read at scrape time from the
//! [`Sources`] by the exporter instead of being copied on the hot path.

mod digests;
mod export;
mod histogram;
mod labels;
mod learned;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

pub use digests::{DigestOrder, DigestRow, Digests};
pub use export::render;
pub use histogram::AtomicHistogram;

use crate::backend::clickhouse_http::ChBackend;
use crate::backend::postgres::PgBackend;
use crate::cache::QueryCache;
use crate::limits::Admission;
use crate::model::{Action, Protocol};
use crate::policy::PolicyHandle;
use histogram::{POLICY_BUCKETS, QUERY_BUCKETS};
use labels::LabelMap;

/// Distinct label sets kept per family before new ones are counted as `_other`.
const MAX_LABEL_SETS: usize = 10_000;
/// Distinct fingerprints kept in the digest table.
const MAX_DIGESTS: usize = 10_000;

/// What the policy's decision amounted to, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forward,
    Rewrite,
    Block,
    /// The policy failed and `fail-closed` refused the statement.
    PolicyError,
    /// Refused by the proxy before a backend saw it: a limit, an unknown pool, no node.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forward => "forward",
            Outcome::Rewrite => "rewrite",
            Outcome::Block => "block",
            Outcome::PolicyError => "policy_error",
            Outcome::Refused => "refused",
        }
    }

    pub fn of(action: &Action) -> Outcome {
        match action {
            Action::Forward => Outcome::Forward,
            Action::Rewrite(_) => Outcome::Rewrite,
            Action::Block(_) => Outcome::Block,
        }
    }
}

/// What the cache did for a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The policy asked for no caching (or the cache is off).
    Off,
    Hit,
    Miss,
    /// The policy asked to cache, but the statement may not be (a write, volatile, a session,
    /// `no_cache`, a user with caching off).
    NotCacheable,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Off => "off",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::NotCacheable => "not_cacheable",
        }
    }
}

/// One finished statement, as a frontend reports it.
#[derive(Debug, Clone, Copy)]
pub struct QueryEvent<'a> {
    pub query_id: u64,
    pub protocol: Protocol,
    pub user: &'a str,
    /// The policy's route: default | primary | replica | pool (`none` when the policy failed).
    pub route: &'static str,
    /// The pool it ran on (`""`: none, e.g. blocked or a cache hit).
    pub pool: &'a str,
    pub outcome: Outcome,
    pub cache: CacheOutcome,
    pub fingerprint: u64,
    pub sql: &'a str,
    pub tags: &'a [(String, String)],
    /// From the statement's arrival to its last answer byte handed to the client.
    pub elapsed: Duration,
    /// Time on the backend (sent to answered), when one ran it.
    pub backend: Option<Duration>,
    /// The policy call (zero when none was made, e.g. a Bind of a prepared statement).
    pub policy: Duration,
    /// The client got an error.
    pub failed: bool,
}

#[derive(Debug, Default)]
struct QueryCell {
    total: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct Latency(AtomicHistogram);

impl Default for Latency {
    fn default() -> Self {
        Latency(AtomicHistogram::new(QUERY_BUCKETS))
    }
}

/// Per-query metrics and the digest table, shared by every frontend.
pub struct Metrics {
    queries: LabelMap<QueryCell>,
    latency: LabelMap<Latency>,
    backend_latency: LabelMap<Latency>,
    policy_latency: AtomicHistogram,
    tags: LabelMap<AtomicU64>,
    digests: Digests,
    /// Statement shapes that turned out to write on a replica: routed to the primary.
    pub learned_writes: learned::LearnedWrites,
    next_query_id: AtomicU64,
    slow_query_threshold: ArcSwapOption<Duration>,
    slow_queries: AtomicU64,
    /// Logins and requests refused a database the config does not open to them, by frontend
    /// and user (configured, authenticated users only, so the label sets are bounded).
    database_refusals: LabelMap<AtomicU64>,
    /// Statements written onto a busy server connection (multiplexing), by pool and by how
    /// many units were in flight there when they joined.
    rides: LabelMap<AtomicU64>,
    /// Where the exporter reads live state.
    pub sources: Sources,
    /// What the connection guards refused or closed (see `guard`).
    pub guard: Arc<crate::guard::GuardStats>,
}

impl Metrics {
    pub fn new(policy: Arc<PolicyHandle>, slow_query_threshold: Option<Duration>) -> Self {
        Metrics {
            queries: LabelMap::new(MAX_LABEL_SETS),
            latency: LabelMap::new(16),
            backend_latency: LabelMap::new(MAX_LABEL_SETS),
            policy_latency: AtomicHistogram::new(POLICY_BUCKETS),
            tags: LabelMap::new(MAX_LABEL_SETS),
            digests: Digests::new(MAX_DIGESTS),
            learned_writes: learned::LearnedWrites::new(MAX_DIGESTS),
            next_query_id: AtomicU64::new(1),
            slow_query_threshold: ArcSwapOption::from(slow_query_threshold.map(Arc::new)),
            slow_queries: AtomicU64::new(0),
            database_refusals: LabelMap::new(MAX_LABEL_SETS),
            rides: LabelMap::new(MAX_LABEL_SETS),
            sources: Sources::new(policy),
            guard: Arc::default(),
        }
    }

    /// A process-unique id for a statement: in logs (`query_id`) and the slow-query log.
    pub fn next_query_id(&self) -> u64 {
        self.next_query_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Changes the slow-query threshold (config reload).
    pub fn set_slow_query_threshold(&self, threshold: Option<Duration>) {
        self.slow_query_threshold.store(threshold.map(Arc::new));
    }

    /// Counts a client refused a database (cluster / user `databases`).
    pub fn database_refused(&self, protocol: Protocol, user: &str) {
        self.database_refusals
            .with(&[protocol.as_str(), user], |c| {
                c.fetch_add(1, Ordering::Relaxed);
            });
    }

    /// Counts a statement that rode on a busy server connection of `pool` behind `depth`
    /// units of work.
    pub fn ride(&self, pool: &str, depth: u32) {
        const DEPTHS: [&str; 9] = ["0", "1", "2", "3", "4", "5", "6", "7", "8+"];
        let depth = DEPTHS[(depth as usize).min(DEPTHS.len() - 1)];
        self.rides.with(&[pool, depth], |c| {
            c.fetch_add(1, Ordering::Relaxed);
        });
    }

    pub fn digests(&self) -> &Digests {
        &self.digests
    }

    pub fn record(&self, e: &QueryEvent<'_>) {
        let frontend = e.protocol.as_str();
        self.queries.with(
            &[
                frontend,
                e.user,
                e.route,
                e.pool,
                e.outcome.as_str(),
                e.cache.as_str(),
            ],
            |c| {
                c.total.fetch_add(1, Ordering::Relaxed);
                if e.failed {
                    c.errors.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        self.latency.with(&[frontend], |h| h.0.observe(e.elapsed));
        if let Some(backend) = e.backend {
            self.backend_latency
                .with(&[frontend, e.pool], |h| h.0.observe(backend));
        }
        if !e.policy.is_zero() {
            self.policy_latency.observe(e.policy);
        }
        for (key, value) in e.tags {
            self.tags.with(&[key, value], |c| {
                c.fetch_add(1, Ordering::Relaxed);
            });
        }
        self.digests.record(
            e.protocol,
            e.fingerprint,
            e.sql,
            e.elapsed,
            e.backend,
            e.failed,
        );
        tracing::debug!(
            query_id = e.query_id,
            protocol = frontend,
            user = e.user,
            route = e.route,
            pool = e.pool,
            outcome = e.outcome.as_str(),
            cache = e.cache.as_str(),
            elapsed_us = e.elapsed.as_micros() as u64,
            failed = e.failed,
            tags = ?e.tags,
            "query finished"
        );
        if let Some(threshold) = self.slow_query_threshold.load().as_deref()
            && e.elapsed >= *threshold
        {
            self.slow_queries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "switchyard::slow_query",
                query_id = e.query_id,
                protocol = frontend,
                user = e.user,
                pool = e.pool,
                fingerprint = %format_args!("{:016x}", e.fingerprint),
                elapsed_ms = e.elapsed.as_secs_f64() * 1e3,
                backend_ms = e.backend.map(|b| b.as_secs_f64() * 1e3),
                policy_us = e.policy.as_micros() as u64,
                failed = e.failed,
                tags = ?e.tags,
                statement = %crate::classify::digest_text(e.protocol, e.sql, 512),
                "slow query"
            );
        }
    }
}

/// The live objects the exporter reads at scrape time; the server fills them at start and on
/// config reload.
pub struct Sources {
    pub policy: Arc<PolicyHandle>,
    pub cache: ArcSwapOption<QueryCache>,
    pub postgres: ArcSwap<Vec<Arc<PgBackend>>>,
    pub clickhouse: ArcSwap<Vec<Arc<ChBackend>>>,
    pub mysql: ArcSwap<Vec<Arc<crate::backend::mysql::MyBackend>>>,
    /// User and tag limits (QoS).
    pub admission: ArcSwapOption<Admission>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Sources {
    /// The router of every cluster, PostgreSQL first.
    pub fn routers(&self) -> Vec<Arc<crate::route::Router>> {
        self.postgres
            .load()
            .iter()
            .map(|b| b.router().clone())
            .chain(self.clickhouse.load().iter().map(|b| b.router().clone()))
            .chain(self.mysql.load().iter().map(|b| b.router().clone()))
            .collect()
    }

    /// Every pooled bucket (PostgreSQL and MySQL) with its cluster's name.
    pub fn bucket_views(&self) -> Vec<(String, crate::backend::pool::BucketView)> {
        let pg = self.postgres.load();
        let my = self.mysql.load();
        pg.iter()
            .map(|b| (b.router().cluster().to_owned(), b.bucket_views()))
            .chain(
                my.iter()
                    .map(|b| (b.router().cluster().to_owned(), b.bucket_views())),
            )
            .flat_map(|(cluster, views)| views.into_iter().map(move |v| (cluster.clone(), v)))
            .collect()
    }

    fn new(policy: Arc<PolicyHandle>) -> Self {
        Sources {
            policy,
            cache: ArcSwapOption::empty(),
            postgres: ArcSwap::from_pointee(Vec::new()),
            clickhouse: ArcSwap::from_pointee(Vec::new()),
            mysql: ArcSwap::from_pointee(Vec::new()),
            admission: ArcSwapOption::empty(),
        }
    }
}

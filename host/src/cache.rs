//! The protocol-neutral query cache: a byte-bounded local tier, an optional Redis tier shared by
//! replicas, single-flight coalescing of identical queries, and invalidation by table.
//!
//! # How a frontend uses it
//!
//! ```text
//! let key = CacheKey::builder(protocol, database, user)
//!     .shared(directive.shared || config.shared).namespace(directive.namespace)
//!     .sql(final_sql).settings(result_settings).tables(tables_read).build();
//! match cache.lookup(&key).await {
//!     Lookup::Hit(response)   => replay response.meta / response.body,
//!     Lookup::Leader(fill)    => run the query; fill.complete(CachedResponse::new(meta, body, ttl)).await
//!                                (or fill.fail(error), or fill.skip() when it was streamed),
//!     Lookup::Failed(message) => answer the client with this error,
//!     Lookup::Bypass          => run the query and do not store it,
//! }
//! // after a write through the proxy succeeded:
//! cache.invalidate_tables(database, &tables_written).await;
//! ```
//!
//! # Decisions
//!
//! - **Key**: SHA-256 (truncated to 128 bits) of protocol, scope (user, or shared), namespace,
//!   database, final SQL and sorted result-changing settings; see `key.rs` for why not xxh3. The
//!   tables travel with the key (not inside [`CachedResponse`]): the Redis tier needs their
//!   generations at lookup time, before the query runs.
//! - **Local tier**: `moka::sync::Cache` weighed in bytes (payload + fixed overhead), TTL per
//!   entry from the directive capped by `max_ttl`; responses above `max_payload_size` are not
//!   stored (`StoreOutcome::TooLarge`), but concurrent waiters still receive them.
//! - **Single-flight**: a sharded in-flight table with a `watch` channel per key (`flight.rs`).
//!   Waiters wait at most `grace_time`; a leader that fails passes its error to the waiters
//!   prefixed `[concurrent query failed] `; a leader dropped without an answer hands over to the
//!   waiters, which compete again. A lookup that finds a flight already older than its grace time
//!   does not wait at all.
//! - **Bypass does not store**: the caller runs the query itself but the leader is still running
//!   and will store; letting every bypassing caller store too would multiply writes of the same
//!   entry exactly when the backend is slow.
//! - **Distributed single-flight** (`RedisConfig::coalesce`): the local leader reads Redis, then
//!   takes `SET <p>:lock:<k> <token> NX PX <grace>`, then reads once more (a fill elsewhere may
//!   have stored and unlocked in between). A replica that finds the lock taken polls Redis for the
//!   value until its grace time, taking the lock itself if it is released, and bypasses at the
//!   deadline. Errors do not cross replicas: a failed or cancelled remote leader just releases
//!   the lock. A lookup cancelled after taking the lock leaves it to expire (`grace`).
//! - **Invalidation**: generation counters, locally (`generation.rs`) and in Redis (`redis.rs`);
//!   no scan, O(tags) per hit, and a fill that raced an invalidation is not stored, nor joined
//!   by a lookup that follows the invalidation (a writer's next read). Redis refuses such a
//!   fill too, and a replica does not read Redis while its own invalidations are on their way
//!   there. A fill answered by a database replica shortly after a write to its tables is
//!   neither stored nor shared (`FillGuard::served_by_replica`). Replicas
//!   learn of invalidations through pub/sub and drop their local tier after any gap in it.
//!   Invalidation across replicas is eventually consistent (pub/sub latency); while Redis is
//!   unreachable, other replicas' invalidations are not seen until re-subscription, which then
//!   drops the local tier.
//! - **Positions**: an entry carries the backend log position its data reflects
//!   (`CachedResponse::position`; complete for a primary's answer), in both tiers. The cache only
//!   keeps it: a frontend whose reader must see a position ignores older entries (a PostgreSQL
//!   session after its own write: an entry another session filled from a lagging replica, after
//!   the write's invalidation, passes every generation check yet lacks the write).
//! - **Redis never fails a query**: each operation has a timeout; errors are counted, logged at
//!   most once per `warn_interval`, open a circuit breaker after consecutive failures, and turn
//!   into misses; fred reconnects by itself.

mod config;
mod error;
mod fill;
mod flight;
mod generation;
mod key;
mod local;
mod lookup;
mod redis;
mod response;
mod shard;
mod stats;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use config::{CacheConfig, Compression, RedisConfig, parse_redis_url};
pub use error::CacheError;

/// Warnings that an invalidation missed other replicas: one per write while Redis is slow or
/// its breaker is open, from either frontend, so they share one limit.
pub static INVALIDATION_MISSED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::standard();
pub use fill::{CONCURRENT_FAILURE_PREFIX, FillGuard};
pub use key::{CacheKey, CacheKeyBuilder, KeyEncoder, TableRef};
pub use response::CachedResponse;
pub use stats::{CacheStats, CacheStatsSnapshot};

use flight::Flights;
use generation::Generations;
use local::LocalTier;
use redis::RedisTier;

/// The answer to a lookup.
#[derive(Debug)]
pub enum Lookup {
    /// A stored response, or the response of the concurrent identical query this lookup waited
    /// for.
    Hit(Arc<CachedResponse>),
    /// Nobody has it: the caller runs the query and must resolve the guard.
    Leader(FillGuard),
    /// The concurrent identical query this lookup waited for failed; its error, prefixed with
    /// `[concurrent query failed] `. The caller answers its client with it.
    Failed(String),
    /// The caller runs the query itself and does not store the result: the cache is disabled,
    /// waiting exceeded the grace time, or the leader could not share its response.
    Bypass,
}

/// What `FillGuard::complete` did with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// Larger than `max_payload_size`: not stored (report it as not cacheable).
    TooLarge,
    /// A table it read was invalidated while the query ran: not stored, it may be stale.
    Invalidated,
    /// The directive's TTL was zero.
    ZeroTtl,
    /// Served by a replica that may not have a recent write to a table it read
    /// (`FillGuard::served_by_replica`): neither stored nor shared.
    ReplicaMayLag,
}

/// The query cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct QueryCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    core: Arc<Core>,
    flights: Arc<Flights>,
    redis: Option<RedisTier>,
    /// Identifies this instance in lock tokens and pub/sub messages.
    origin: u64,
    next_token: AtomicU64,
}

/// What the Redis invalidation listener needs too.
pub(crate) struct Core {
    local: LocalTier,
    generations: Generations,
    stats: Arc<CacheStats>,
}

/// Something to invalidate, locally or from another replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    Tables {
        database: String,
        tables: Vec<String>,
    },
    Namespace(String),
    All,
}

impl Core {
    pub(crate) fn apply(&self, invalidation: &Invalidation) {
        CacheStats::incr(&self.stats.invalidations);
        match invalidation {
            Invalidation::Tables { database, tables } => {
                self.generations.invalidate_tables(database, tables)
            }
            Invalidation::Namespace(ns) => self.generations.invalidate_namespace(ns),
            Invalidation::All => {
                self.generations.invalidate_all();
                self.local.clear();
            }
        }
    }
}

impl QueryCache {
    /// Validates `config` and builds the cache; with Redis configured, starts connecting (a
    /// Redis that is down is not an error: the cache starts degraded and recovers by itself).
    pub async fn new(config: CacheConfig) -> Result<QueryCache, CacheError> {
        config.validate()?;
        let stats = Arc::new(CacheStats::default());
        let core = Arc::new(Core {
            local: LocalTier::new(config.max_size, stats.clone()),
            generations: Generations::new(),
            stats,
        });
        let origin = random_id();
        let redis = match &config.redis {
            Some(redis) => Some(
                RedisTier::connect(redis, core.clone(), origin, config.max_payload_size).await?,
            ),
            None => None,
        };
        Ok(QueryCache {
            inner: Arc::new(Inner {
                config,
                core,
                flights: Arc::new(Flights::new()),
                redis,
                origin,
                next_token: AtomicU64::new(0),
            }),
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Frontends buffer a response up to this size; past it they stream it and call
    /// `FillGuard::skip`.
    pub fn max_payload_size(&self) -> u64 {
        self.inner.config.max_payload_size
    }

    /// Drops entries that read any of `tables` of `database`, here and (with Redis) on every
    /// replica. Call it after the write succeeded. The local part always applies; an error means
    /// the other replicas may not have been told.
    pub async fn invalidate_tables<T: AsRef<str>>(
        &self,
        database: &str,
        tables: &[T],
    ) -> Result<(), CacheError> {
        self.invalidate(Invalidation::Tables {
            database: database.to_owned(),
            tables: tables.iter().map(|t| t.as_ref().to_owned()).collect(),
        })
        .await
    }

    /// [`invalidate_tables`](Self::invalidate_tables) with the local part done before this
    /// returns (a client told its write is done must not get a stale entry from this
    /// replica); the returned future tells the other replicas through Redis — spawn it.
    pub fn invalidate_tables_now<T: AsRef<str>>(
        &self,
        database: &str,
        tables: &[T],
    ) -> impl Future<Output = Result<(), CacheError>> + Send + 'static {
        let invalidation = Invalidation::Tables {
            database: database.to_owned(),
            tables: tables.iter().map(|t| t.as_ref().to_owned()).collect(),
        };
        self.invalidate_locally(invalidation)
    }

    /// Drops the entries of one policy namespace (admin API).
    pub async fn purge_namespace(&self, namespace: &str) -> Result<(), CacheError> {
        self.invalidate(Invalidation::Namespace(namespace.to_owned()))
            .await
    }

    /// Drops every entry (admin API).
    pub async fn purge_all(&self) -> Result<(), CacheError> {
        self.invalidate(Invalidation::All).await
    }

    async fn invalidate(&self, invalidation: Invalidation) -> Result<(), CacheError> {
        self.invalidate_locally(invalidation).await
    }

    /// Applies `invalidation` here now; the future applies it in Redis. Until Redis has it, this
    /// replica's lookups of the tables involved do not read Redis: it would still validate
    /// entries older than the write (registered before the local part, so no lookup falls
    /// between the two).
    fn invalidate_locally(
        &self,
        invalidation: Invalidation,
    ) -> impl Future<Output = Result<(), CacheError>> + Send + 'static {
        let in_flight = self.inner.redis.as_ref().map(|r| r.register(&invalidation));
        self.inner.core.apply(&invalidation);
        let this = self.clone();
        async move {
            match (&this.inner.redis, in_flight) {
                // Boxed: fred's futures are kilobytes (see `lookup`).
                (Some(redis), Some(in_flight)) => {
                    Box::pin(redis.invalidate(&invalidation, in_flight)).await
                }
                _ => Ok(()),
            }
        }
    }

    /// Counters plus the local tier's current size.
    pub fn stats(&self) -> CacheStatsSnapshot {
        let local = &self.inner.core.local;
        let mut snapshot = self.inner.core.stats.snapshot();
        snapshot.bytes = local.weighted_size();
        snapshot.entries = local.entry_count();
        snapshot
    }

    /// Applies the local tier's pending evictions and expirations now, so that `stats()` is
    /// exact (moka applies them lazily).
    pub fn run_pending_tasks(&self) {
        self.inner.core.local.run_pending_tasks();
    }

    /// Drops the local tier's entries only: Redis and the generations are untouched, so this is
    /// always safe (later lookups miss locally). For memory pressure, and benchmarks of the Redis
    /// path.
    pub fn clear_local(&self) {
        self.inner.core.local.clear();
    }

    /// Whether a Redis tier is configured (causal positions can be shared).
    pub fn has_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Raises the shared causal position `name` to `position` in Redis (see
    /// `redis/positions.rs`). Without a Redis tier there is nothing to share: `Ok`.
    pub async fn raise_shared_position(
        &self,
        name: &str,
        position: u64,
        ttl: std::time::Duration,
    ) -> Result<(), CacheError> {
        match &self.inner.redis {
            Some(redis) => redis.raise_position(name, position, ttl).await,
            None => Ok(()),
        }
    }

    /// The shared causal position `name` from Redis (`None`: none stored, or no Redis tier).
    pub async fn shared_position(&self, name: &str) -> Result<Option<u64>, CacheError> {
        match &self.inner.redis {
            Some(redis) => redis.position(name).await,
            None => Ok(None),
        }
    }

    /// Whether the Redis tier is configured and its circuit breaker currently skips it.
    pub fn redis_degraded(&self) -> bool {
        self.inner
            .redis
            .as_ref()
            .is_some_and(RedisTier::circuit_open)
    }

    fn new_token(&self) -> String {
        let n = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n}", self.inner.origin)
    }
}

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

fn random_id() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
}

/// Poll interval while another replica fills: fine enough for short grace times, coarse enough
/// not to hammer Redis for long ones.
fn poll_interval(grace: Duration) -> Duration {
    (grace / 20).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

/// The Redis tier's codecs, for the fuzz targets (`host/fuzz`): an entry value and a pub/sub
/// invalidation message as Redis hands them back.
#[cfg(any(fuzzing, test))]
pub fn fuzz_redis_codecs(data: &[u8]) {
    let _ = redis::decode_value(bytes::Bytes::copy_from_slice(data), 1 << 20);
    let _ = redis::decode_invalidation(data);
}

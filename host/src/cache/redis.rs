//! The optional shared tier: entries, generation counters and fill locks in Redis (fred client).
//!
//! Keys (`<p>` = `key_prefix`, `<k>` = the key's 32 hex digits):
//! - `<p>:v:<k>` the encoded entry (`codec.rs`), with a `PX` TTL;
//! - `<p>:lock:<k>` the distributed fill lock, `SET NX PX <grace>` holding a per-fill token;
//! - `<p>:g:all`, `<p>:g:ns:<ns>`, `<p>:g:t:<len(db)>:<db>:<table>` generation counters, bumped
//!   with `INCR` on invalidation and never expiring;
//! - `<p>:pos:<name>` a client's causal position shared between instances (`positions.rs`);
//! - channel `<p>:invalidate` (`pubsub.rs`).
//!
//! Generations rather than deleting entries: an entry stores the counters it was built with, and
//! a lookup reads the entry and the current counters in one `MGET`, so a lookup costs one round
//! trip, an invalidation costs one `INCR` per table whatever the number of entries, and a fill
//! racing an invalidation is caught (its counters were read before its query was sent). It is
//! caught twice: the store is a script that writes the entry only if the counters are still the
//! ones it was stamped with (so Redis never holds an entry known to be stale, and an older fill
//! cannot overwrite a newer one), and a lookup rejects an entry whose counters moved since.
//! Invalidations of this replica that Redis may not have yet keep lookups of the tables involved
//! off Redis (`unconfirmed.rs`). Deployments
//! with `maxmemory` must use a `volatile-*` eviction policy (or `noeviction`): evicting a counter
//! would reset it and could revive stale entries; entries carry a TTL, counters do not.
//!
//! Commands go round robin over a pool of `pool_size` connections (fred's `Pool`, preferring
//! connected ones); pub/sub has a connection of its own, which a subscribed connection must be.
//! Every operation is bounded by `timeout` and goes through the circuit breaker (`health.rs`);
//! failures are counted and degrade to a miss. fred reconnects by itself. An invalidation that
//! fails is made good by a purge of everything once Redis answers again (`pubsub.rs`).

mod codec;
mod health;
mod positions;
mod pubsub;
mod unconfirmed;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Pool, SubscriberClient};
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::config::{Config, Options, ReconnectPolicy};
use fred::types::{Builder, Expiration, SetOptions, Value};
use tokio::task::JoinHandle;

use super::config::{fred_config_tls, redact};
use super::stats::CacheStats;
use super::{CacheError, CacheKey, CachedResponse, Compression, Core, Invalidation, RedisConfig};
use health::Health;
pub(crate) use unconfirmed::InFlight;
use unconfirmed::Unconfirmed;

pub(crate) use codec::{decode as decode_value, encode as encode_value};
#[cfg(any(fuzzing, test))]
pub(crate) use pubsub::decode as decode_invalidation;

/// Deletes the lock only if it still holds our token (it may have expired and been taken).
const UNLOCK_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Stores an entry only if the generation counters are still those it was stamped with, read
/// before its query was sent: otherwise a table it read was invalidated since, and the entry may
/// predate that write. Atomic, so no `INCR` lands between the check and the `SET`.
/// KEYS: the value key, then the generation keys; ARGV: the value, its TTL in ms, then the
/// generations in the keys' order (decimal, as `GET` returns a counter; a missing counter is 0).
const STORE_SCRIPT: &str = "\
for i = 2, #KEYS do
  if (redis.call('get', KEYS[i]) or '0') ~= ARGV[i + 1] then return 0 end
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1";

/// What a lookup found in Redis.
pub(crate) struct Fetched {
    /// A fresh entry, if any.
    pub(crate) hit: Option<CachedResponse>,
    /// The current generations of the key's tags: a fill stores them with its entry.
    pub(crate) generations: Vec<u64>,
}

pub(crate) struct RedisTier {
    pool: Pool,
    /// The same pool with per-command options: fail fast when disconnected, one attempt.
    cmd: fred::clients::WithOptions<Pool>,
    subscriber: SubscriberClient,
    prefix: String,
    /// Whether to take the distributed fill lock.
    pub(crate) coalesce: bool,
    timeout: Duration,
    compression: Compression,
    compress_threshold: usize,
    /// Largest decoded value accepted.
    max_value: usize,
    health: Health,
    stats: Arc<CacheStats>,
    origin: u64,
    /// This replica's invalidations that Redis may not have: in flight, or lost (the listener
    /// then purges everything once it can).
    unconfirmed: Arc<Unconfirmed>,
    listener: JoinHandle<()>,
}

impl RedisTier {
    /// Builds the clients and starts connecting. A Redis that is down at start is not an error:
    /// the tier starts degraded and connects when Redis comes up.
    pub(crate) async fn connect(
        config: &RedisConfig,
        core: Arc<Core>,
        origin: u64,
        max_payload_size: u64,
    ) -> Result<Self, CacheError> {
        let bad_url = |e: fred::error::Error| CacheError::Config {
            key: "redis.url",
            reason: e.to_string(),
        };
        let mut settings: Config = fred_config_tls(config).map_err(bad_url)?;
        // Keep retrying when the first connection fails instead of giving up.
        settings.fail_fast = false;
        let mut builder = Builder::from_config(settings);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = config.connect_timeout;
                c.internal_command_timeout = config.connect_timeout;
                c.max_command_attempts = 1;
            })
            .with_performance_config(|p| p.default_command_timeout = config.timeout)
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let pool = builder.build_pool(config.pool_size).map_err(bad_url)?;
        let subscriber = builder.build_subscriber_client().map_err(bad_url)?;
        let cmd = pool.with_options(&Options {
            max_attempts: Some(1),
            timeout: Some(config.timeout),
            fail_fast: true,
            ..Options::default()
        });

        let stats = core.stats.clone();
        let prefix = config.key_prefix.trim_end_matches(':').to_owned();
        pool.connect();
        let connected = tokio::time::timeout(config.connect_timeout, pool.wait_for_connect());
        let unconfirmed = Arc::new(Unconfirmed::new());
        let redelivery = pubsub::Redelivery {
            pool: pool.clone(),
            all_key: format!("{prefix}:g:all"),
            channel: format!("{prefix}:invalidate"),
            origin,
            timeout: config.timeout.max(Duration::from_secs(1)),
            unconfirmed: unconfirmed.clone(),
        };
        let subscribed =
            pubsub::listen(subscriber.clone(), redelivery, core, config.connect_timeout);
        let (connected, listener) = tokio::join!(connected, subscribed);
        if !matches!(connected, Ok(Ok(()))) {
            tracing::warn!(
                url = %redact(&config.url),
                "redis cache tier not reachable at start; continuing with the local tier"
            );
        }
        Ok(RedisTier {
            pool,
            cmd,
            subscriber,
            prefix,
            coalesce: config.coalesce,
            timeout: config.timeout,
            compression: config.compression,
            compress_threshold: config.compress_threshold,
            max_value: usize::try_from(max_payload_size)
                .unwrap_or(usize::MAX)
                .saturating_add(64 * 1024),
            health: Health::new(
                config.breaker_failures,
                config.breaker_cooldown,
                config.warn_interval,
            ),
            stats,
            origin,
            unconfirmed,
            listener,
        })
    }

    /// Reads the entry and the current generations of its tags in one round trip.
    pub(crate) async fn fetch(&self, key: &CacheKey) -> Result<Fetched, CacheError> {
        let mut keys = Vec::with_capacity(3 + key.tables().len());
        keys.push(self.value_key(key));
        keys.extend(self.generation_keys(key));
        let expected = keys.len();
        let values: Vec<Value> = self.run("MGET", self.cmd.mget(keys)).await?;
        if values.len() != expected {
            return Err(CacheError::Corrupt(
                "MGET returned a different number of values",
            ));
        }
        let mut values = values.into_iter();
        let value = values.next().and_then(Value::into_bytes);
        let generations: Vec<u64> = values.map(|v| v.as_u64().unwrap_or(0)).collect();
        let hit = match value {
            None => None,
            Some(bytes) => match decode_value(bytes, self.max_value) {
                Ok(Some((response, stored))) if stored == generations => {
                    response.remaining_ttl().is_some().then_some(response)
                }
                // Stale: a table was invalidated since; or of another payload version. The next
                // fill overwrites it.
                Ok(_) => None,
                Err(e) => {
                    self.record_failure(&e);
                    None
                }
            },
        };
        Ok(Fetched { hit, generations })
    }

    /// Takes the fill lock of `key` for `ttl`; `false` if another fill holds it.
    pub(crate) async fn try_lock(
        &self,
        key: &CacheKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let set = self.cmd.set(
            self.lock_key(key),
            token,
            Some(Expiration::PX(millis(ttl))),
            Some(SetOptions::NX),
            false,
        );
        let reply: Option<String> = self.run("SET NX", set).await?;
        Ok(reply.is_some())
    }

    pub(crate) async fn unlock(&self, key: &CacheKey, token: &str) -> Result<(), CacheError> {
        let eval = self.cmd.eval(
            UNLOCK_SCRIPT,
            vec![self.lock_key(key)],
            vec![token.to_owned()],
        );
        let _: i64 = self.run("EVAL unlock", eval).await?;
        Ok(())
    }

    /// Stores an entry built with `generations` (read by [`Self::fetch`] before the query was
    /// sent) for `ttl`, unless a counter moved since: `Ok(false)`, the entry may be stale.
    pub(crate) async fn store(
        &self,
        key: &CacheKey,
        response: &CachedResponse,
        generations: &[u64],
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let value: Bytes = encode_value(
            response,
            generations,
            self.compression,
            self.compress_threshold,
        );
        let mut keys = Vec::with_capacity(3 + key.tables().len());
        keys.push(self.value_key(key));
        keys.extend(self.generation_keys(key));
        let mut args: Vec<Value> = Vec::with_capacity(2 + generations.len());
        args.push(Value::Bytes(value));
        args.push(Value::Integer(millis(ttl)));
        args.extend(generations.iter().map(|g| Value::from(g.to_string())));
        let eval = self.cmd.eval(STORE_SCRIPT, keys, args);
        let stored: i64 = self.run("EVAL store", eval).await?;
        Ok(stored == 1)
    }

    /// Registers `invalidation` as not yet in Redis; call it before applying it locally and
    /// pass the guard to [`Self::invalidate`].
    pub(crate) fn register(&self, invalidation: &Invalidation) -> InFlight {
        self.unconfirmed.register(invalidation)
    }

    /// Whether Redis may lack an invalidation of this replica that `key` depends on: its entries
    /// for `key` may be older than a write this replica has already answered.
    pub(crate) fn may_be_behind(&self, key: &CacheKey) -> bool {
        self.unconfirmed.covers(key)
    }

    /// Bumps the generations in Redis and tells the other replicas; then releases `in_flight`.
    pub(crate) async fn invalidate(
        &self,
        invalidation: &Invalidation,
        in_flight: InFlight,
    ) -> Result<(), CacheError> {
        let keys: Vec<String> = match invalidation {
            Invalidation::All => vec![self.all_key()],
            Invalidation::Namespace(ns) => vec![self.namespace_key(ns)],
            Invalidation::Tables { database, tables } => {
                tables.iter().map(|t| self.table_key(database, t)).collect()
            }
        };
        let message = pubsub::encode(self.origin, invalidation);
        let work = pubsub::incr_and_publish(&self.pool, keys, self.channel(), message);
        let result = self.run("INCR+PUBLISH", work).await;
        in_flight.finish(result.is_ok());
        result
    }

    /// Whether the breaker currently skips Redis.
    pub(crate) fn circuit_open(&self) -> bool {
        self.health.is_open()
    }

    async fn run<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, CacheError> {
        if !self.health.allow() {
            CacheStats::incr(&self.stats.redis_skipped);
            return Err(CacheError::RedisCircuitOpen);
        }
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(CacheError::Redis { op, source }),
            Err(_) => Err(CacheError::RedisTimeout {
                op,
                timeout: self.timeout,
            }),
        };
        match &result {
            Ok(_) => self.health.success(),
            Err(e) => self.record_failure(e),
        }
        result
    }

    fn record_failure(&self, error: &CacheError) {
        CacheStats::incr(&self.stats.redis_errors);
        self.health.failure(error);
    }

    fn value_key(&self, key: &CacheKey) -> String {
        format!("{}:v:{key}", self.prefix)
    }

    fn lock_key(&self, key: &CacheKey) -> String {
        format!("{}:lock:{key}", self.prefix)
    }

    /// In the order the stored generations are compared: all, namespace, tables.
    fn generation_keys(&self, key: &CacheKey) -> impl Iterator<Item = String> {
        std::iter::once(self.all_key())
            .chain(key.namespace().map(|ns| self.namespace_key(ns)))
            .chain(
                key.tables()
                    .iter()
                    .map(|t| self.table_key(&t.database, &t.table)),
            )
    }

    fn all_key(&self) -> String {
        format!("{}:g:all", self.prefix)
    }

    fn namespace_key(&self, namespace: &str) -> String {
        format!("{}:g:ns:{namespace}", self.prefix)
    }

    /// The database's length keeps `("a:b", "c")` and `("a", "b:c")` apart.
    fn table_key(&self, database: &str, table: &str) -> String {
        format!("{}:g:t:{}:{database}:{table}", self.prefix, database.len())
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.prefix)
    }
}

impl Drop for RedisTier {
    fn drop(&mut self) {
        self.listener.abort();
        // Without QUIT, fred keeps reconnecting forever in its own tasks.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            let subscriber = self.subscriber.clone();
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), pool.quit()).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), subscriber.quit()).await;
            });
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

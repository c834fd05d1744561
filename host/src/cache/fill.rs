//! The leader's side of single-flight: [`FillGuard`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::{FlightState, Leadership};
use super::redis::RedisTier;
use super::{CacheKey, CacheStats, CachedResponse, Inner, StoreOutcome};

/// The prefix of the error that waiters receive when the query they waited for failed.
pub const CONCURRENT_FAILURE_PREFIX: &str = "[concurrent query failed] ";

/// What a fill carries from its lookup to its store.
pub(super) struct FillState {
    /// Local invalidation sequence when the lookup started.
    pub(super) since: u64,
    /// Redis generations read before the query ran; `None` when Redis was unreachable then (the
    /// entry is then not written to Redis: there is nothing valid to stamp it with).
    pub(super) redis_generations: Option<Vec<u64>>,
    /// The distributed fill lock's token, when we hold it.
    pub(super) lock_token: Option<String>,
    /// When the lookup started (before the query was sent).
    pub(super) started: Instant,
    /// Set by [`FillGuard::served_by_replica`]: how far behind the replica may be.
    pub(super) replica_lag: Option<Duration>,
}

/// Handed to the one caller that runs a query for everyone waiting on the same key.
///
/// Resolve it with exactly one of [`complete`](Self::complete), [`fail`](Self::fail) or
/// [`skip`](Self::skip). Dropping it unresolved (the client went away, the task was cancelled)
/// hands the query over: one of the waiters becomes the leader.
#[must_use = "the waiters wait until the guard is completed, failed, skipped or dropped"]
pub struct FillGuard {
    inner: Arc<Inner>,
    key: CacheKey,
    leadership: Option<Leadership>,
    state: FillState,
}

impl FillGuard {
    pub(super) fn new(
        inner: Arc<Inner>,
        key: CacheKey,
        leadership: Leadership,
        state: FillState,
    ) -> Self {
        FillGuard {
            inner,
            key,
            leadership: Some(leadership),
            state,
        }
    }

    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The query is answered by a replica, which the frontend trusts to be at most `lag`
    /// behind the primary (its read-your-writes window). If a table the key reads was written
    /// from `lag` before this fill began on, the replica may not have that write yet: the
    /// response is neither stored nor handed to the waiters (they run the query themselves,
    /// each routed for its own session). Otherwise the writer, whose reads go to the primary
    /// during that window precisely because the replica may lag, would get the replica's older
    /// rows from the cache, which answers before any routing. (The generations do not catch
    /// this: the write was invalidated before the fill began, and the query indeed ran after it,
    /// on a server that had not seen it.)
    pub fn served_by_replica(&mut self, lag: Duration) {
        self.state.replica_lag = Some(lag);
    }

    /// Whether the response may predate a recent write (see [`Self::served_by_replica`]).
    fn replica_may_lag(&self) -> bool {
        let Some(lag) = self.state.replica_lag else {
            return false;
        };
        let from = self.state.started.checked_sub(lag);
        // An `Instant` that far back does not exist (just after boot): every write is recent.
        from.is_none_or(|from| self.inner.core.generations.written_since(&self.key, from))
    }

    /// Stores the response (TTL capped by `max_ttl`) and hands it to the waiters, which are
    /// released before the Redis write. With Redis, awaits the write (bounded by the Redis
    /// timeout); use [`complete_now`](Self::complete_now) if the caller must not wait.
    pub async fn complete(self, response: CachedResponse) -> StoreOutcome {
        self.complete_now(response).await
    }

    /// [`complete`](Self::complete) with the local part done before this returns: the entry is
    /// in the local tier (if its stamp is valid) and the waiters have it. The returned future
    /// writes it to Redis; spawn it. It returns the final outcome: `Invalidated` when Redis
    /// refused the entry because another replica invalidated a table it read since the query
    /// was sent (the local copy is then dropped too, without waiting for that replica's message).
    ///
    /// Why frontends should not spawn [`complete`](Self::complete) instead: until the spawned
    /// task runs, the flight stays in the table, and lookups keep joining it. Those that
    /// follow a write are refused by the flight's snapshot (see `flight.rs`), but every other
    /// one waits for a task that the runtime may not schedule for a while on a loaded machine.
    pub fn complete_now(
        mut self,
        mut response: CachedResponse,
    ) -> impl Future<Output = StoreOutcome> + Send + 'static {
        let inner = self.inner.clone();
        let core = &inner.core;
        response.ttl = response.ttl.min(inner.config.max_ttl);
        let response = Arc::new(response);

        let outcome = if self.replica_may_lag() {
            CacheStats::incr(&core.stats.stale_fills);
            StoreOutcome::ReplicaMayLag
        } else if response.ttl.is_zero() {
            StoreOutcome::ZeroTtl
        } else if response.size() as u64 > inner.config.max_payload_size {
            CacheStats::incr(&core.stats.too_large);
            StoreOutcome::TooLarge
        } else {
            match core.generations.stamp(&self.key, self.state.since) {
                Some(stamp) => {
                    core.local
                        .insert(self.key.digest(), response.clone(), stamp, response.ttl);
                    CacheStats::incr(&core.stats.stores);
                    StoreOutcome::Stored
                }
                None => {
                    CacheStats::incr(&core.stats.stale_fills);
                    StoreOutcome::Invalidated
                }
            }
        };
        if let Some(leadership) = self.leadership.take() {
            leadership.resolve(match outcome {
                StoreOutcome::ReplicaMayLag => FlightState::Bypass,
                _ => FlightState::Done(response.clone()),
            });
        }

        let token = self.state.lock_token.take();
        let generations = self
            .state
            .redis_generations
            .take()
            .filter(|_| outcome == StoreOutcome::Stored);
        let key = self.key.clone();
        async move {
            let Some(redis) = &inner.redis else {
                return outcome;
            };
            // Boxed for the same reason as in `lookup`: fred's futures are large.
            let refused = Box::pin(store_remote(redis, &key, &response, generations, token)).await;
            if !refused {
                return outcome;
            }
            // A replica invalidated a table this entry read after our query was sent; its message
            // may not have reached us yet, and until it does our local copy would pass its
            // stamp. Drop it now (unless a newer fill replaced it).
            inner.core.local.remove_if(key.digest(), &response);
            CacheStats::incr(&inner.core.stats.stale_fills);
            StoreOutcome::Invalidated
        }
    }

    /// The query failed: each waiter gets `[concurrent query failed] <error>`. Nothing is
    /// stored.
    pub fn fail(mut self, error: impl fmt::Display) {
        if let Some(leadership) = self.leadership.take() {
            let message = format!("{CONCURRENT_FAILURE_PREFIX}{error}");
            leadership.resolve(FlightState::Failed(message.into()));
        }
    }

    /// The response will not be shared (it was streamed past `max_payload_size`, or is not
    /// cacheable after all): the waiters run the query themselves.
    pub fn skip(mut self) {
        if let Some(leadership) = self.leadership.take() {
            leadership.resolve(FlightState::Bypass);
        }
    }
}

/// Writes the entry (if it has a valid stamp), then releases the lock: in that order, so a
/// replica polling for the value finds either the lock or the value. Returns whether Redis
/// refused the entry as stale. Errors degrade (counted and logged by the tier).
async fn store_remote(
    redis: &RedisTier,
    key: &CacheKey,
    response: &CachedResponse,
    generations: Option<Vec<u64>>,
    token: Option<String>,
) -> bool {
    let refused = match generations {
        Some(generations) => matches!(
            redis.store(key, response, &generations, response.ttl).await,
            Ok(false)
        ),
        None => false,
    };
    if let Some(token) = token {
        let _ = redis.unlock(key, &token).await;
    }
    refused
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        // Dropping `leadership` (if still here) abandons the flight; release the remote lock so
        // another replica need not wait for it to expire.
        let Some(token) = self.state.lock_token.take() else {
            return;
        };
        if self.inner.redis.is_none() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = self.inner.clone();
            let key = self.key.clone();
            runtime.spawn(async move {
                if let Some(redis) = &inner.redis {
                    let _ = redis.unlock(&key, &token).await;
                }
            });
        }
    }
}

impl fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FillGuard")
            .field("key", &self.key)
            .field("resolved", &self.leadership.is_none())
            .finish()
    }
}

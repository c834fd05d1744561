//! `QueryCache::lookup`: local tier → in-flight table → (leader only) Redis and the distributed
//! fill lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::fill::FillState;
use super::flight::{FlightState, Join, Leadership, Waited};
use super::redis::RedisTier;
use super::{CacheKey, CacheStats, CachedResponse, FillGuard, Lookup, QueryCache, poll_interval};

/// What the leader learned from Redis.
enum Remote {
    Hit(Arc<CachedResponse>),
    /// Another replica is still filling after our grace time.
    Bypass,
    Lead {
        generations: Option<Vec<u64>>,
        token: Option<String>,
    },
}

impl QueryCache {
    /// Looks `key` up, waiting at most the configured `grace_time` for a concurrent identical
    /// query. Cancel-safe: a dropped waiter leaves no trace, and a dropped leader hands its
    /// flight over to its waiters (a Redis fill lock it took expires after the grace time).
    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        self.lookup_with_grace(key, self.inner.config.grace_time)
            .await
    }

    /// [`lookup`](Self::lookup) with a grace time of the caller's choosing.
    pub async fn lookup_with_grace(&self, key: &CacheKey, grace: Duration) -> Lookup {
        if let Some(hit) = self.lookup_local(key) {
            return Lookup::Hit(hit);
        }
        self.lookup_past_local(key, grace).await
    }

    /// The first step of [`lookup`](Self::lookup) on its own: a hit in the local tier, counted
    /// as `lookup` counts it, without creating (and moving) `lookup`'s future, which is the
    /// size of its slowest path. `None`: continue with [`Self::lookup_past_local`].
    pub fn lookup_local(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        let inner = &*self.inner;
        if !inner.config.enabled {
            return None;
        }
        let hit = inner.core.local.get(key.digest())?;
        CacheStats::incr(&inner.core.stats.hits_local);
        Some(hit)
    }

    /// The rest of [`lookup_with_grace`](Self::lookup_with_grace) after [`Self::lookup_local`]
    /// found nothing: the in-flight table, then (as leader) Redis.
    pub async fn lookup_past_local(&self, key: &CacheKey, grace: Duration) -> Lookup {
        let inner = &*self.inner;
        if !inner.config.enabled {
            return Lookup::Bypass;
        }
        let stats = &inner.core.stats;
        let started = std::time::Instant::now();
        let deadline = Instant::now() + grace;
        let generations = &inner.core.generations;
        loop {
            // Before anything is read or sent: invalidations after this point veto the store,
            // and keep later lookups from joining this flight.
            let since = generations.snapshot();
            let outdated = |flight_since| generations.changed_since(key, flight_since);
            let flight = match inner.flights.join(key.digest(), grace, since, outdated) {
                Join::Lead(leadership) => {
                    let start = (since, started);
                    return self.lead(key, leadership, start, grace, deadline).await;
                }
                Join::TooOld => break,
                Join::Wait(flight) => flight,
            };
            match flight.wait(deadline).await {
                Waited::State(FlightState::Done(response)) => {
                    CacheStats::incr(&stats.coalesced_waits);
                    return Lookup::Hit(response);
                }
                Waited::State(FlightState::Failed(message)) => {
                    CacheStats::incr(&stats.concurrent_failures);
                    return Lookup::Failed(message.to_string());
                }
                // The leader went away: compete for leadership again.
                Waited::State(FlightState::Abandoned | FlightState::Pending) => continue,
                Waited::State(FlightState::Bypass) | Waited::TimedOut => break,
            }
        }
        CacheStats::incr(&stats.bypass);
        Lookup::Bypass
    }

    async fn lead(
        &self,
        key: &CacheKey,
        leadership: Leadership,
        (since, started): (u64, std::time::Instant),
        grace: Duration,
        deadline: Instant,
    ) -> Lookup {
        let inner = &*self.inner;
        let stats = &inner.core.stats;

        // The previous leader stores before it leaves the table; we may have missed it by a hair.
        if let Some(hit) = inner.core.local.get(key.digest()) {
            leadership.resolve(FlightState::Done(hit.clone()));
            CacheStats::incr(&stats.hits_local);
            return Lookup::Hit(hit);
        }

        let mut state = FillState {
            since,
            redis_generations: None,
            lock_token: None,
            started,
            replica_lag: None,
        };
        if let Some(redis) = &inner.redis {
            // Boxed: fred's futures are kilobytes, and would otherwise inflate every lookup's
            // future (and each frontend task holding one), hits included.
            let remote = Box::pin(self.lead_with_redis(redis, key, since, grace, deadline));
            match remote.await {
                Remote::Hit(response) => {
                    leadership.resolve(FlightState::Done(response.clone()));
                    CacheStats::incr(&stats.hits_redis);
                    return Lookup::Hit(response);
                }
                Remote::Bypass => {
                    leadership.resolve(FlightState::Bypass);
                    CacheStats::incr(&stats.bypass);
                    return Lookup::Bypass;
                }
                Remote::Lead { generations, token } => {
                    state.redis_generations = generations;
                    state.lock_token = token;
                }
            }
        }
        CacheStats::incr(&stats.misses);
        Lookup::Leader(FillGuard::new(
            self.inner.clone(),
            key.clone(),
            leadership,
            state,
        ))
    }

    /// Redis read, then the distributed fill lock. Any Redis error makes us lead locally (with
    /// the generations read so far, which predate the query and so remain a valid stamp).
    async fn lead_with_redis(
        &self,
        redis: &RedisTier,
        key: &CacheKey,
        since: u64,
        grace: Duration,
        deadline: Instant,
    ) -> Remote {
        let local_lead = |generations| Remote::Lead {
            generations,
            token: None,
        };
        // An invalidation of ours that Redis may not have yet (it is sent after the writer's
        // client was answered): Redis could still hold, and validate, an entry older than that
        // write, and the writer may be the one reading now. Lead without Redis; not storing there
        // either, as there are no generations to stamp the entry with that postdate the write.
        if redis.may_be_behind(key) {
            return local_lead(None);
        }
        let mut generations = match redis.fetch(key).await {
            Ok(fetched) => match fetched.hit {
                Some(hit) => return Remote::Hit(self.fill_from_redis(key, hit, since)),
                None => fetched.generations,
            },
            Err(_) => return local_lead(None),
        };
        if !redis.coalesce {
            return local_lead(Some(generations));
        }
        let token = self.new_token();
        let poll = poll_interval(grace);
        loop {
            match redis.try_lock(key, &token, grace).await {
                Err(_) => return local_lead(Some(generations)),
                Ok(true) => {
                    // A fill elsewhere may have stored and unlocked since our read.
                    if let Ok(fetched) = redis.fetch(key).await {
                        if let Some(hit) = fetched.hit {
                            let _ = redis.unlock(key, &token).await;
                            return Remote::Hit(self.fill_from_redis(key, hit, since));
                        }
                        generations = fetched.generations;
                    }
                    return Remote::Lead {
                        generations: Some(generations),
                        token: Some(token),
                    };
                }
                Ok(false) => {
                    // Another replica is filling: wait for its value, or for its lock to go.
                    if Instant::now() + poll >= deadline {
                        return Remote::Bypass;
                    }
                    tokio::time::sleep(poll).await;
                    match redis.fetch(key).await {
                        Ok(fetched) => match fetched.hit {
                            Some(hit) => return Remote::Hit(self.fill_from_redis(key, hit, since)),
                            None => generations = fetched.generations,
                        },
                        Err(_) => return local_lead(Some(generations)),
                    }
                }
            }
        }
    }

    /// Copies a Redis hit into the local tier for the rest of its life.
    fn fill_from_redis(
        &self,
        key: &CacheKey,
        response: CachedResponse,
        since: u64,
    ) -> Arc<CachedResponse> {
        let inner = &*self.inner;
        let response = Arc::new(response);
        let remaining = response
            .remaining_ttl()
            .map(|d| d.min(inner.config.max_ttl));
        let fits = response.size() as u64 <= inner.config.max_payload_size;
        if let (Some(remaining), true) = (remaining, fits)
            && let Some(stamp) = inner.core.generations.stamp(key, since)
        {
            inner
                .core
                .local
                .insert(key.digest(), response.clone(), stamp, remaining);
        }
        response
    }
}

//! Tests of the cache. `key`, `local`, `flight` and `consistency` need no server; `redis` and
//! `redis_consistency` start their own `redis-server` processes through the integration tests'
//! helper.

mod consistency;
mod flight;
mod key;
mod local;
mod redis;
mod redis_consistency;

#[path = "../../../tests/src/redis.rs"]
mod redis_server;

use std::time::Duration;

use bytes::Bytes;

use super::{CacheConfig, CacheKey, CachedResponse, Lookup, QueryCache, StoreOutcome};
use crate::model::Protocol;

pub(super) fn local_config() -> CacheConfig {
    CacheConfig {
        max_size: 64 * 1024 * 1024,
        max_payload_size: 4 * 1024 * 1024,
        grace_time: Duration::from_secs(5),
        ..CacheConfig::default()
    }
}

pub(super) async fn local_cache() -> QueryCache {
    QueryCache::new(local_config()).await.expect("cache")
}

/// A key of user `alice` in database `app` reading `app.users`.
pub(super) fn key(sql: &str) -> CacheKey {
    key_as(sql, "alice", false)
}

pub(super) fn key_as(sql: &str, user: &str, shared: bool) -> CacheKey {
    CacheKey::builder(Protocol::Postgres, "app", user)
        .shared(shared)
        .sql(sql)
        .table("app", "users")
        .build()
}

pub(super) fn response(body: &str, ttl: Duration) -> CachedResponse {
    CachedResponse::new(
        Bytes::from_static(b"meta"),
        Bytes::copy_from_slice(body.as_bytes()),
        ttl,
    )
}

pub(super) const MINUTE: Duration = Duration::from_secs(60);

/// Expects to lead and stores `body`.
pub(super) async fn fill(cache: &QueryCache, key: &CacheKey, body: &str) -> StoreOutcome {
    match cache.lookup(key).await {
        Lookup::Leader(guard) => guard.complete(response(body, MINUTE)).await,
        other => panic!("expected to lead for {key:?}, got {other:?}"),
    }
}

/// The body of a hit; panics otherwise (dropping a guard on the way).
pub(super) async fn hit_body(cache: &QueryCache, key: &CacheKey) -> Bytes {
    match cache.lookup(key).await {
        Lookup::Hit(response) => response.body.clone(),
        other => panic!("expected a hit for {key:?}, got {other:?}"),
    }
}

/// Whether the lookup hits (a leader guard is dropped, which leaves nothing behind).
pub(super) async fn is_hit(cache: &QueryCache, key: &CacheKey) -> bool {
    matches!(cache.lookup(key).await, Lookup::Hit(_))
}

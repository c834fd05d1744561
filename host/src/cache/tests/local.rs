//! The local tier through the public API: TTLs, size bounds, scopes, invalidation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{MINUTE, fill, hit_body, is_hit, key, key_as, local_cache, local_config, response};
use crate::cache::{
    CacheConfig, CacheError, CacheKey, CachedResponse, Lookup, QueryCache, RedisConfig,
    StoreOutcome,
};
use crate::model::Protocol;

#[tokio::test]
async fn a_stored_response_is_a_hit() {
    let cache = local_cache().await;
    let k = key("SELECT * FROM users");
    assert_eq!(fill(&cache, &k, "rows").await, StoreOutcome::Stored);
    assert_eq!(hit_body(&cache, &k).await, "rows");
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.stores, stats.hits_local), (1, 1, 1));
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let cache = local_cache().await;
    let k = key("SELECT ttl");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let outcome = guard
        .complete(response("x", Duration::from_millis(150)))
        .await;
    assert_eq!(outcome, StoreOutcome::Stored);
    assert!(is_hit(&cache, &k).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!is_hit(&cache, &k).await, "entry outlived its TTL");
}

#[tokio::test]
async fn max_ttl_caps_the_directive() {
    let cache = QueryCache::new(CacheConfig {
        max_ttl: Duration::from_millis(150),
        ..local_config()
    })
    .await
    .unwrap();
    let k = key("SELECT capped");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    guard
        .complete(response("x", Duration::from_secs(3600)))
        .await;
    match cache.lookup(&k).await {
        Lookup::Hit(r) => assert_eq!(r.ttl, Duration::from_millis(150)),
        other => panic!("expected a hit, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!is_hit(&cache, &k).await, "max_ttl not applied");
}

#[tokio::test]
async fn zero_ttl_is_not_stored() {
    let cache = local_cache().await;
    let k = key("SELECT zero");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    assert_eq!(
        guard.complete(response("x", Duration::ZERO)).await,
        StoreOutcome::ZeroTtl
    );
    assert!(!is_hit(&cache, &k).await);
}

#[tokio::test]
async fn too_large_responses_are_not_stored_but_reach_waiters() {
    let cache = QueryCache::new(CacheConfig {
        max_payload_size: 1024,
        ..local_config()
    })
    .await
    .unwrap();
    let k = key("SELECT big");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let big = "y".repeat(2048);
    assert_eq!(
        guard.complete(response(&big, MINUTE)).await,
        StoreOutcome::TooLarge
    );
    match waiter.await.unwrap() {
        Lookup::Hit(r) => assert_eq!(r.body.len(), 2048),
        other => panic!("waiter got {other:?}"),
    }
    assert!(!is_hit(&cache, &k).await, "too large response was stored");
    assert_eq!(cache.stats().too_large, 1);
}

/// The weighted size never exceeds `max_size`, whatever the churn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_bound_holds_under_churn() {
    const MAX: u64 = 1024 * 1024;
    let cache = QueryCache::new(CacheConfig {
        max_size: MAX,
        max_payload_size: 64 * 1024,
        ..local_config()
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let k = key(&format!("SELECT {t}, {i}"));
                let size = 1024 + ((t * 7919 + i * 104_729) % (60 * 1024)) as usize;
                if let Lookup::Leader(guard) = cache.lookup(&k).await {
                    let body = Bytes::from(vec![b'z'; size]);
                    let r = CachedResponse::new(Bytes::new(), body, MINUTE);
                    assert_eq!(guard.complete(r).await, StoreOutcome::Stored);
                }
                if i % 50 == 0 {
                    cache.run_pending_tasks();
                    let bytes = cache.stats().bytes;
                    assert!(bytes <= MAX, "{bytes} bytes above the {MAX} bound");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert!(stats.bytes <= MAX, "{} bytes above the bound", stats.bytes);
    assert!(stats.bytes > MAX / 2, "cache barely used: {stats:?}");
    assert!(stats.evictions > 0, "churn evicted nothing: {stats:?}");
    assert_eq!(stats.stores, 2000);
}

#[tokio::test]
async fn entries_are_private_to_their_user_unless_shared() {
    let cache = local_cache().await;
    let sql = "SELECT salary FROM users";
    fill(&cache, &key_as(sql, "alice", false), "alice's").await;
    assert!(!is_hit(&cache, &key_as(sql, "bob", false)).await);
    assert!(is_hit(&cache, &key_as(sql, "alice", false)).await);

    fill(&cache, &key_as(sql, "alice", true), "shared").await;
    assert_eq!(hit_body(&cache, &key_as(sql, "bob", true)).await, "shared");
    assert_eq!(
        hit_body(&cache, &key_as(sql, "alice", false)).await,
        "alice's"
    );
}

fn key_on(sql: &str, tables: &[&str], namespace: Option<&str>) -> CacheKey {
    let mut b = CacheKey::builder(Protocol::Postgres, "app", "alice")
        .sql(sql)
        .namespace(namespace);
    for t in tables {
        b = b.table("app", *t);
    }
    b.build()
}

#[tokio::test]
async fn invalidating_a_table_drops_only_its_entries() {
    let cache = local_cache().await;
    let users = key_on("SELECT u", &["users"], None);
    let join = key_on("SELECT j", &["orders", "users"], None);
    let orders = key_on("SELECT o", &["orders"], None);
    for k in [&users, &join, &orders] {
        fill(&cache, k, "r").await;
    }
    // Same table name in another database: untouched.
    cache.invalidate_tables("other", &["users"]).await.unwrap();
    assert!(is_hit(&cache, &users).await);

    cache.invalidate_tables("app", &["users"]).await.unwrap();
    assert!(!is_hit(&cache, &users).await);
    assert!(!is_hit(&cache, &join).await);
    assert!(is_hit(&cache, &orders).await);
    // A refill after the invalidation is served again.
    fill(&cache, &users, "new").await;
    assert_eq!(hit_body(&cache, &users).await, "new");
}

#[tokio::test]
async fn namespace_and_full_purges() {
    let cache = local_cache().await;
    let reports = key_on("SELECT r", &["t"], Some("reports"));
    let other = key_on("SELECT o", &["t"], Some("other"));
    let plain = key_on("SELECT p", &["t"], None);
    for k in [&reports, &other, &plain] {
        fill(&cache, k, "r").await;
    }
    cache.purge_namespace("reports").await.unwrap();
    assert!(!is_hit(&cache, &reports).await);
    assert!(is_hit(&cache, &other).await);
    assert!(is_hit(&cache, &plain).await);

    cache.purge_all().await.unwrap();
    assert!(!is_hit(&cache, &other).await);
    assert!(!is_hit(&cache, &plain).await);
}

/// A query that read the table before a write and finishes after the write's invalidation must
/// not be stored: its result may predate the write.
#[tokio::test]
async fn a_fill_racing_an_invalidation_is_not_stored() {
    let cache = local_cache().await;
    let k = key("SELECT * FROM users");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    cache.invalidate_tables("app", &["users"]).await.unwrap();
    assert_eq!(
        guard.complete(response("old", MINUTE)).await,
        StoreOutcome::Invalidated
    );
    assert!(!is_hit(&cache, &k).await);
    assert_eq!(cache.stats().stale_fills, 1);
}

#[tokio::test]
async fn a_disabled_cache_bypasses() {
    let cache = QueryCache::new(CacheConfig {
        enabled: false,
        ..local_config()
    })
    .await
    .unwrap();
    assert!(matches!(cache.lookup(&key("x")).await, Lookup::Bypass));
}

#[tokio::test]
async fn hits_share_one_allocation() {
    let cache = local_cache().await;
    let k = key("SELECT shared");
    fill(&cache, &k, "r").await;
    let (Lookup::Hit(a), Lookup::Hit(b)) = (cache.lookup(&k).await, cache.lookup(&k).await) else {
        panic!("expected hits")
    };
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn validation_names_the_offending_key() {
    let check = |config: CacheConfig, expected: &str| match config.validate() {
        Err(CacheError::Config { key, .. }) => assert_eq!(key, expected),
        other => panic!("expected an error on {expected}, got {other:?}"),
    };
    check(
        CacheConfig {
            max_payload_size: 2,
            max_size: 1,
            ..CacheConfig::default()
        },
        "max_payload_size",
    );
    check(
        CacheConfig {
            max_ttl: Duration::ZERO,
            ..CacheConfig::default()
        },
        "max_ttl",
    );
    let redis = |r: RedisConfig| CacheConfig {
        redis: Some(r),
        ..CacheConfig::default()
    };
    check(
        redis(RedisConfig {
            url: "http://nope".into(),
            ..RedisConfig::default()
        }),
        "redis.url",
    );
    for url in ["unix://", "unix://localhost", "redis://r/zero"] {
        check(
            redis(RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            }),
            "redis.url",
        );
    }
    check(
        redis(RedisConfig {
            pool_size: 0,
            ..RedisConfig::default()
        }),
        "redis.pool_size",
    );
    check(
        redis(RedisConfig {
            timeout: Duration::ZERO,
            ..RedisConfig::default()
        }),
        "redis.timeout",
    );
    check(
        redis(RedisConfig {
            key_prefix: "a b".into(),
            ..RedisConfig::default()
        }),
        "redis.key_prefix",
    );
    assert!(CacheConfig::default().validate().is_ok());
    for url in [
        "unix:///run/redis.sock",
        "unix://:pw@localhost/run/redis.sock",
    ] {
        let config = redis(RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        });
        assert!(config.validate().is_ok(), "{url}");
    }
}

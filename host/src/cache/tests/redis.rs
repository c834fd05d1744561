//! The Redis tier against real `redis-server` processes that each test starts and stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Barrier;

use super::redis_server::RedisServer;
use super::{MINUTE, fill, hit_body, is_hit, key, key_as, local_config, response};
use crate::cache::{
    CacheConfig, CacheKey, CachedResponse, Lookup, QueryCache, RedisConfig, StoreOutcome,
};

const PREFIX: &str = "test:cache";

fn redis_config(server: &RedisServer) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig {
            url: server.url(),
            // Generous: two tests may share the two cores with a build.
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            compress_threshold: 1024,
            key_prefix: format!("{PREFIX}:"),
            coalesce: true,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(200),
            warn_interval: Duration::from_secs(1),
        }),
        ..local_config()
    }
}

async fn cache_on(server: &RedisServer) -> QueryCache {
    QueryCache::new(redis_config(server)).await.expect("cache")
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` clients listen on the invalidation channel.
async fn wait_for_subscribers(server: &RedisServer, n: usize) {
    let command = format!("PUBSUB NUMSUB {PREFIX}:invalidate");
    let expected = format!(":{n}\r\n");
    let ok = eventually(Duration::from_secs(10), || {
        let done = server
            .command(&command)
            .is_ok_and(|reply| reply.ends_with(&expected));
        async move { done }
    })
    .await;
    assert!(ok, "{n} subscribers never appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_hits_through_redis() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    let k = key("SELECT * FROM users");
    assert_eq!(fill(&a, &k, "rows").await, StoreOutcome::Stored);

    assert_eq!(hit_body(&b, &k).await, "rows");
    assert_eq!(b.stats().hits_redis, 1);
    // The Redis hit filled B's local tier.
    assert_eq!(hit_body(&b, &k).await, "rows");
    assert_eq!(b.stats().hits_local, 1);
    assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_compressed_in_redis() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    let k = key("SELECT big");
    let body: String = (0..20_000).map(|i| format!("row {}\n", i % 100)).collect();
    assert_eq!(fill(&a, &k, &body).await, StoreOutcome::Stored);

    let reply = server.command(&format!("STRLEN {PREFIX}:v:{k}")).unwrap();
    let stored: usize = reply.trim().trim_start_matches(':').parse().unwrap();
    assert!(
        stored * 5 < body.len(),
        "{stored} bytes in redis for a {} byte body",
        body.len()
    );
    assert_eq!(hit_body(&b, &k).await, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_in_redis_are_private_to_their_user() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    let sql = "SELECT salary FROM users";
    fill(&a, &key_as(sql, "alice", false), "alice's").await;
    assert!(!is_hit(&b, &key_as(sql, "bob", false)).await);
    assert!(!is_hit(&b, &key_as(sql, "bob", true)).await);
    assert!(is_hit(&b, &key_as(sql, "alice", false)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_by_table_reaches_every_instance() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    wait_for_subscribers(&server, 2).await;
    let users = key("SELECT * FROM users");
    let orders = CacheKey::builder(crate::model::Protocol::Postgres, "app", "alice")
        .sql("SELECT * FROM orders")
        .table("app", "orders")
        .build();
    for k in [&users, &orders] {
        fill(&a, k, "v1").await;
        assert!(is_hit(&b, k).await, "B should hit through redis");
    }

    a.invalidate_tables("app", &["users"]).await.unwrap();
    // A: at once. B: through pub/sub for its local tier, through generations for Redis.
    assert!(!is_hit(&a, &users).await);
    let b_saw_it = eventually(Duration::from_secs(5), || async {
        match b.lookup(&users).await {
            Lookup::Hit(_) => false,
            Lookup::Leader(guard) => {
                drop(guard);
                true
            }
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
    assert!(b_saw_it, "B kept serving an invalidated entry");
    assert!(b.stats().invalidations >= 1);
    // Other tables are untouched on both.
    assert!(is_hit(&a, &orders).await && is_hit(&b, &orders).await);
    // A newcomer with an empty local tier is protected by the generations in Redis alone.
    let c = cache_on(&server).await;
    assert!(!is_hit(&c, &users).await, "stale entry served from redis");
    assert!(is_hit(&c, &orders).await);
    for cache in [&a, &b, &c] {
        assert_eq!(cache.stats().redis_errors, 0);
    }

    // A refill by B is seen by A through Redis.
    fill(&b, &users, "v2").await;
    assert_eq!(hit_body(&a, &users).await, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_every_instance() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    wait_for_subscribers(&server, 2).await;
    let k = key("SELECT p");
    fill(&a, &k, "v").await;
    assert!(is_hit(&b, &k).await);
    b.purge_all().await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { !is_hit(&a, &k).await }).await,
        "A kept an entry after purge_all"
    );
}

/// Two replicas, 20 concurrent identical misses each: the backend runs once in total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_spans_instances() {
    let server = RedisServer::start();
    let caches = [cache_on(&server).await, cache_on(&server).await];
    let k = key("SELECT expensive");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(40));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let cache = caches[i % 2].clone();
        let (k, runs, barrier) = (k.clone(), runs.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            match cache.lookup(&k).await {
                Lookup::Hit(r) => r.body.clone(),
                Lookup::Leader(guard) => {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    guard.complete(response("result", MINUTE)).await;
                    Bytes::from_static(b"result")
                }
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "result");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "backend ran more than once");
}

/// Redis dies mid-run: no lookup or store fails, each degrades; when a server comes back on the
/// same port the tier (and the invalidation channel) recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_nothing_and_recovers() {
    let mut server = RedisServer::start();
    let mut config = redis_config(&server);
    if let Some(redis) = config.redis.as_mut() {
        redis.timeout = Duration::from_millis(50);
    }
    let a = QueryCache::new(config.clone()).await.unwrap();
    let b = QueryCache::new(config).await.unwrap();
    let k0 = key("SELECT before");
    fill(&a, &k0, "v").await;
    assert!(is_hit(&b, &k0).await);

    server.kill();
    let started = Instant::now();
    for i in 0..100 {
        let k = key(&format!("SELECT during {i}"));
        match a.lookup(&k).await {
            Lookup::Leader(guard) => {
                let outcome = guard.complete(response("v", MINUTE)).await;
                assert_eq!(outcome, StoreOutcome::Stored, "store {i} during the outage");
            }
            other => panic!("lookup {i} during the outage: {other:?}"),
        }
        assert!(is_hit(&a, &k).await, "local tier must keep working");
    }
    let outage = started.elapsed();
    assert!(
        outage < Duration::from_secs(10),
        "outage lookups took {outage:?}"
    );
    let stats = a.stats();
    assert!(stats.redis_errors > 0, "{stats:?}");
    assert!(stats.redis_skipped > 0, "breaker never opened: {stats:?}");
    assert!(a.redis_degraded() || stats.redis_errors > 0);

    server.restart();
    let mut n = 0;
    let recovered = eventually(Duration::from_secs(20), || {
        n += 1;
        let k = key(&format!("SELECT after {n}"));
        let (a, b) = (a.clone(), b.clone());
        async move {
            fill(&a, &k, "v").await;
            let before = b.stats().hits_redis;
            is_hit(&b, &k).await && b.stats().hits_redis == before + 1
        }
    })
    .await;
    assert!(recovered, "redis tier did not recover after the restart");

    // Pub/sub recovered too: an invalidation from A reaches B's local tier.
    wait_for_subscribers(&server, 2).await;
    let k = key("SELECT after pubsub");
    fill(&a, &k, "v").await;
    assert!(is_hit(&b, &k).await);
    a.invalidate_tables("app", &["users"]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { !is_hit(&b, &k).await }).await,
        "invalidation did not reach B after recovery"
    );
}

/// An invalidation that never reaches Redis (here: skipped by A's open circuit breaker) is made
/// good once Redis answers again: A purges every replica and the entries in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_is_made_good_by_a_purge() {
    let server = RedisServer::start();
    let mut config = redis_config(&server);
    if let Some(redis) = config.redis.as_mut() {
        redis.timeout = Duration::from_millis(50);
        redis.breaker_cooldown = Duration::from_secs(1);
    }
    let a = QueryCache::new(config.clone()).await.unwrap();
    let b = QueryCache::new(config).await.unwrap();
    let k = key("SELECT lost");
    fill(&a, &k, "v1").await;
    assert!(is_hit(&b, &k).await);

    // Redis stalls: A's lookups time out until its breaker opens.
    let paused = server.command("CLIENT PAUSE 400 ALL").unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    for i in 0..3 {
        assert!(!is_hit(&a, &key(&format!("SELECT stalled {i}"))).await);
    }
    assert!(a.redis_degraded(), "breaker should be open");
    let lost = a.invalidate_tables("app", &["users"]).await;
    assert!(
        lost.is_err_and(|e| e.is_redis()),
        "the invalidation should be skipped"
    );
    assert!(is_hit(&b, &k).await, "nothing reached B yet");

    assert!(
        eventually(Duration::from_secs(10), || async { !is_hit(&b, &k).await }).await,
        "B never learned of the lost invalidation"
    );
    let c = cache_on(&server).await;
    assert!(!is_hit(&c, &k).await, "stale entry served from redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_is_not_an_error() {
    let mut server = RedisServer::start();
    server.kill();
    let mut config = redis_config(&server);
    if let Some(redis) = config.redis.as_mut() {
        redis.connect_timeout = Duration::from_millis(300);
    }
    let started = Instant::now();
    let a = QueryCache::new(config).await.expect("starts degraded");
    assert!(started.elapsed() < Duration::from_secs(3));
    let k = key("SELECT degraded");
    assert_eq!(fill(&a, &k, "v").await, StoreOutcome::Stored);
    assert!(is_hit(&a, &k).await);

    server.restart();
    let b = cache_on(&server).await;
    let mut n = 0;
    let recovered = eventually(Duration::from_secs(20), || {
        n += 1;
        let k = key(&format!("SELECT later {n}"));
        let (a, b) = (a.clone(), b.clone());
        async move {
            fill(&a, &k, "v").await;
            is_hit(&b, &k).await
        }
    })
    .await;
    assert!(recovered, "tier never connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_redis_entry_is_a_miss() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    let k = key("SELECT short");
    let Lookup::Leader(guard) = a.lookup(&k).await else {
        panic!("expected to lead")
    };
    let r = CachedResponse::new(
        Bytes::new(),
        Bytes::from_static(b"x"),
        Duration::from_millis(200),
    );
    guard.complete(r).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!is_hit(&b, &k).await);
}

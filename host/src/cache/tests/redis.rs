//! The Redis tier against real `redis-server` processes that each test starts and stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Barrier;

use super::redis_server::RedisServer;
use super::{MINUTE, fill, hit_body, is_hit, key, key_as, local_config, response};
use crate::cache::{
    CacheConfig, CacheKey, CachedResponse, Compression, Lookup, QueryCache, RedisConfig,
    StoreOutcome,
};

pub(super) const PREFIX: &str = "test:cache";

pub(super) fn redis_config(server: &RedisServer) -> CacheConfig {
    redis_config_at(server.url())
}

fn redis_config_at(url: String) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig {
            url,
            // Generous: two tests may share the two cores with a build.
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            pool_size: 2,
            compress_threshold: 1024,
            compression: Compression::Lz4,
            key_prefix: format!("{PREFIX}:"),
            coalesce: true,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(200),
            warn_interval: Duration::from_secs(1),
            tls_ca_file: None,
        }),
        ..local_config()
    }
}

pub(super) async fn cache_on(server: &RedisServer) -> QueryCache {
    QueryCache::new(redis_config(server)).await.expect("cache")
}

/// A cache on `server` with its Redis settings changed by `change`.
async fn cache_with(server: &RedisServer, change: impl FnOnce(&mut RedisConfig)) -> QueryCache {
    let mut config = redis_config(server);
    if let Some(redis) = config.redis.as_mut() {
        change(redis);
    }
    QueryCache::new(config).await.expect("cache")
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

/// `rediss://`: the server's certificate is verified against `tls_ca_file`, and with it the
/// tier works as over plain TCP; against another authority nothing is stored or read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_server_is_verified_and_used() {
    let server = RedisServer::start_with_tls();
    let over_tls = |ca: std::path::PathBuf| {
        let mut config = redis_config_at(server.tls_url());
        if let Some(redis) = config.redis.as_mut() {
            redis.tls_ca_file = Some(ca);
        }
        QueryCache::new(config)
    };
    let (a, b) = (
        over_tls(server.ca_file()).await.expect("cache"),
        over_tls(server.ca_file()).await.expect("cache"),
    );
    let k = key("SELECT * FROM users");
    assert_eq!(fill(&a, &k, "rows").await, StoreOutcome::Stored);
    assert_eq!(hit_body(&b, &k).await, "rows");
    assert_eq!(b.stats().hits_redis, 1);
    assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);
    assert!(server.command("DBSIZE").is_ok_and(|r| r == ":1\r\n"));

    // A server whose certificate another authority signed is not trusted: queries still get
    // answers (a miss, then the local tier), but nothing reaches that Redis.
    let other = RedisServer::start_with_tls();
    let distrustful = over_tls(other.ca_file()).await.expect("cache");
    let k2 = key("SELECT * FROM orders");
    fill(&distrustful, &k2, "rows").await;
    assert_eq!(distrustful.stats().hits_redis, 0);
    assert!(server.command("DBSIZE").is_ok_and(|r| r == ":1\r\n"));
}

/// What an entry's data reflects travels with it, through Redis and into the local tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entrys_position_travels_through_redis() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    for (sql, position) in [
        ("SELECT 1", 0x16_B374_D848),
        ("SELECT 2", CachedResponse::COMPLETE),
    ] {
        let k = key(sql);
        let stored = match a.lookup(&k).await {
            Lookup::Leader(guard) => {
                guard
                    .complete(response("rows", MINUTE).with_position(position))
                    .await
            }
            other => panic!("expected to lead, got {other:?}"),
        };
        assert_eq!(stored, StoreOutcome::Stored);
        for (cache, tier) in [(&a, "local"), (&b, "redis"), (&b, "local copy")] {
            match cache.lookup(&k).await {
                Lookup::Hit(hit) => assert_eq!(hit.position, position, "{tier}"),
                other => panic!("{tier}: expected a hit, got {other:?}"),
            }
        }
    }
    assert_eq!(b.stats().hits_redis, 2);
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

/// The number in `INFO clients`' `connected_clients` (our own inline connection included).
fn connected_clients(server: &RedisServer) -> usize {
    let info = server.command("INFO clients").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `pool_size` connections for commands plus one for pub/sub, and the tier works on both sizes,
/// under concurrency too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_has_pool_size_connections() {
    for pool_size in [1, 4] {
        let server = RedisServer::start();
        let a = cache_with(&server, |r| r.pool_size = pool_size).await;
        let b = cache_with(&server, |r| r.pool_size = pool_size).await;
        let expected = 2 * (pool_size + 1) + 1;
        let all_there = eventually(Duration::from_secs(5), || {
            let n = connected_clients(&server);
            async move { n == expected }
        })
        .await;
        assert!(
            all_there,
            "pool_size {pool_size}: {} clients, expected {expected}",
            connected_clients(&server)
        );

        let mut tasks = Vec::new();
        for i in 0..40 {
            let (a, b) = (a.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                let k = key(&format!("SELECT pooled {i}"));
                assert_eq!(fill(&a, &k, &format!("v{i}")).await, StoreOutcome::Stored);
                assert_eq!(hit_body(&b, &k).await, format!("v{i}").as_bytes());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(b.stats().hits_redis, 40, "pool_size {pool_size}");
        // Invalidations (a pipeline on one pooled connection) still reach the other replica.
        wait_for_subscribers(&server, 2).await;
        let k = key("SELECT pooled 0");
        a.invalidate_tables("app", &["users"]).await.unwrap();
        assert!(
            eventually(Duration::from_secs(5), || async { !is_hit(&b, &k).await }).await,
            "pool_size {pool_size}: invalidation did not reach B"
        );
        assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);
    }
}

/// `coalesce = false`: no fill lock in Redis, so each replica runs the query once; within a
/// replica identical misses still wait for one leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalesce_only_local_single_flight_remains() {
    let server = RedisServer::start();
    let caches = [
        cache_with(&server, |r| r.coalesce = false).await,
        cache_with(&server, |r| r.coalesce = false).await,
    ];
    let k = key("SELECT uncoalesced");
    let lock_exists = format!("EXISTS {PREFIX}:lock:{k}");
    let runs = Arc::new(AtomicUsize::new(0));
    let locked = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let cache = caches[i % 2].clone();
        let (k, runs, locked, barrier) = (k.clone(), runs.clone(), locked.clone(), barrier.clone());
        let (server_port, lock_exists) = (server.port(), lock_exists.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            match cache.lookup(&k).await {
                Lookup::Hit(r) => r.body.clone(),
                Lookup::Leader(guard) => {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let reply = raw_command(server_port, &lock_exists);
                    if reply != ":0\r\n" {
                        locked.fetch_add(1, Ordering::SeqCst);
                    }
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
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per replica");
    assert_eq!(locked.load(Ordering::SeqCst), 0, "a fill lock was taken");

    // The same with coalescing: the leader holds the lock while it runs.
    let coalescing = cache_on(&server).await;
    let k = key("SELECT coalesced");
    let Lookup::Leader(guard) = coalescing.lookup(&k).await else {
        panic!("expected to lead")
    };
    let reply = server
        .command(&format!("EXISTS {PREFIX}:lock:{k}"))
        .unwrap();
    assert_eq!(reply, ":1\r\n");
    guard.complete(response("r", MINUTE)).await;
}

/// `RedisServer::command` from inside a spawned task (the server itself stays in the test).
fn raw_command(port: u16, line: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Replicas with different `compression` read each other's entries; each stores with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_different_compression_share_entries() {
    let server = RedisServer::start();
    let codecs = [
        (Compression::None, 0u8),
        (Compression::Lz4, 1),
        (Compression::Zstd, 2),
    ];
    let mut caches = Vec::new();
    for (compression, _) in codecs {
        caches.push(cache_with(&server, |r| r.compression = compression).await);
    }
    let body: String = (0..20_000).map(|i| format!("row {}\n", i % 100)).collect();
    for (i, (compression, flag)) in codecs.iter().enumerate() {
        let k = key(&format!("SELECT written with {compression:?}"));
        assert_eq!(fill(&caches[i], &k, &body).await, StoreOutcome::Stored);
        let first = server
            .command(&format!("GETRANGE {PREFIX}:v:{k} 0 0"))
            .unwrap();
        assert_eq!(
            first.as_bytes(),
            [b'$', b'1', b'\r', b'\n', *flag, b'\r', b'\n'],
            "{compression:?}"
        );
        for (j, reader) in caches.iter().enumerate() {
            if j != i {
                assert_eq!(hit_body(reader, &k).await, body.as_bytes(), "{j} reads {i}");
            }
        }
    }
    // A small value is stored raw whatever the setting.
    let k = key("SELECT small");
    fill(&caches[2], &k, "tiny").await;
    let first = server
        .command(&format!("GETRANGE {PREFIX}:v:{k} 0 0"))
        .unwrap();
    assert_eq!(first.as_bytes(), b"$1\r\n\0\r\n");
    for cache in &caches {
        assert_eq!(cache.stats().redis_errors, 0);
    }
}

/// A value that does not decode (another program's, or damaged) is a miss: the lookup leads and
/// its fill replaces the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_in_redis_is_a_miss() {
    let server = RedisServer::start();
    let (a, b) = (cache_on(&server).await, cache_on(&server).await);
    for (n, garbage) in [
        r#""\x02\x28\xb5\x2f\xfdgarbage""#,
        "not-a-cache-value",
        r#""\x01\xff""#,
    ]
    .into_iter()
    .enumerate()
    {
        let k = key(&format!("SELECT corrupt {n}"));
        let reply = server
            .command(&format!("SET {PREFIX}:v:{k} {garbage}"))
            .unwrap();
        assert!(reply.starts_with("+OK"), "{reply}");
        let errors = a.stats().redis_errors;
        match a.lookup(&k).await {
            Lookup::Leader(guard) => {
                assert_eq!(
                    guard.complete(response("fresh", MINUTE)).await,
                    StoreOutcome::Stored
                );
            }
            other => panic!("{garbage}: expected a miss, got {other:?}"),
        }
        // Counted (the leader reads once more after taking the fill lock, so twice).
        assert!(a.stats().redis_errors > errors, "{garbage}: not counted");
        assert_eq!(hit_body(&b, &k).await, "fresh", "{garbage}: replaced");
    }
    assert!(
        !a.redis_degraded(),
        "corrupt values must not open the breaker"
    );
}

/// `unix:///path`: commands, and pub/sub invalidations, over a Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_url_works() {
    let server = RedisServer::start_with_unix_socket();
    let config = redis_config_at(server.unix_url());
    let a = QueryCache::new(config.clone()).await.expect("cache");
    let b = QueryCache::new(config).await.expect("cache");
    wait_for_subscribers(&server, 2).await;
    let k = key("SELECT over unix");
    assert_eq!(fill(&a, &k, "rows").await, StoreOutcome::Stored);
    assert_eq!(hit_body(&b, &k).await, "rows");
    assert_eq!(b.stats().hits_redis, 1);
    a.invalidate_tables("app", &["users"]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { !is_hit(&b, &k).await }).await,
        "invalidation did not reach B over the unix socket"
    );
    // Every connection of both tiers (pool of 2, subscriber) is on the socket.
    let clients = server.command("CLIENT LIST").unwrap();
    assert_eq!(
        clients.lines().filter(|l| l.contains("redis.sock")).count(),
        2 * (2 + 1),
        "{clients}"
    );
    assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);
}

//! Read-your-writes with the Redis tier: an entry stored by a fill whose query was sent before a
//! write is neither served after that write (by the writer's replica, even before Redis has the
//! write's invalidation) nor accepted by Redis once the invalidation is there.

use std::time::Duration;

use super::redis::{PREFIX, cache_on, redis_config};
use super::redis_server::RedisServer;
use super::{MINUTE, fill, key, response};
use crate::cache::{Lookup, QueryCache, StoreOutcome};

/// A write's invalidation reaches Redis after its client is answered (`invalidate_tables_now`'s
/// future is spawned). The writer's next read misses locally, asks Redis, and Redis (not bumped
/// yet) still validates the entry from before the write: it was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_skips_redis_until_the_invalidation_lands() {
    let server = RedisServer::start();
    let a = cache_on(&server).await;
    let k = key("SELECT v FROM users WHERE id = 1");
    assert_eq!(fill(&a, &k, "38").await, StoreOutcome::Stored);

    // The write completes; the Redis part of its invalidation has not run yet.
    let remote = a.invalidate_tables_now("app", &["users"]);
    match a.lookup(&k).await {
        Lookup::Leader(guard) => {
            // Led without Redis: the entry is stored locally only (Redis has no generations
            // that postdate the write to stamp it with).
            assert_eq!(
                guard.complete(response("39", MINUTE)).await,
                StoreOutcome::Stored
            );
        }
        Lookup::Hit(r) => panic!("served {:?} from redis after the write", r.body),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(a.stats().hits_redis, 0);
    remote.await.unwrap();

    // Once Redis has it, lookups use Redis again, and the old entry there is stale.
    let b = cache_on(&server).await;
    assert!(matches!(b.lookup(&k).await, Lookup::Leader(_)));
    let other = key("SELECT v FROM users WHERE id = 2");
    assert_eq!(fill(&b, &other, "7").await, StoreOutcome::Stored);
    assert!(matches!(a.lookup(&other).await, Lookup::Hit(r) if r.body == "7"));
    assert_eq!(a.stats().hits_redis, 1);
}

/// A fill on replica A read the generations, sent its query, and meanwhile replica B's write was
/// invalidated in Redis; B's message has not reached A yet. A's store must be refused by Redis
/// (not stored stamped with the old generations) and its local copy dropped, without waiting for
/// B's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_a_fill_whose_tables_moved_since_its_query_was_sent() {
    let server = RedisServer::start();
    let a = cache_on(&server).await;
    let k = key("SELECT v FROM users WHERE id = 1");
    let Lookup::Leader(guard) = a.lookup(&k).await else {
        panic!("expected to lead")
    };
    // B's invalidation of app.users, as Redis sees it, with its pub/sub message still on the way.
    let bumped = server
        .command(&format!("INCR {PREFIX}:g:t:3:app:users"))
        .unwrap();
    assert_eq!(bumped, ":1\r\n");

    assert_eq!(
        guard.complete(response("old", MINUTE)).await,
        StoreOutcome::Invalidated
    );
    let exists = server.command(&format!("EXISTS {PREFIX}:v:{k}")).unwrap();
    assert_eq!(exists, ":0\r\n", "redis accepted a stale entry");
    assert!(
        a.lookup_local(&k).is_none(),
        "the local copy outlived the refusal"
    );
    assert_eq!(a.stats().stale_fills, 1);

    // A fill that read the current generations is stored.
    assert_eq!(fill(&a, &k, "new").await, StoreOutcome::Stored);
    let exists = server.command(&format!("EXISTS {PREFIX}:v:{k}")).unwrap();
    assert_eq!(exists, ":1\r\n");
}

/// An invalidation that never reached Redis leaves entries there that Redis still validates,
/// until the purge that makes it good lands. The replica that lost it must not read them
/// meanwhile: its client was told the write is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_invalidation_keeps_its_replica_off_redis_until_repaired() {
    let server = RedisServer::start();
    let mut config = redis_config(&server);
    if let Some(redis) = config.redis.as_mut() {
        redis.timeout = Duration::from_millis(50);
        redis.breaker_cooldown = Duration::from_millis(300);
        // The listener's tick (which delivers the repairing purge) follows this: far away.
        redis.connect_timeout = Duration::from_secs(20);
    }
    let a = QueryCache::new(config).await.unwrap();
    let k = key("SELECT v FROM users WHERE id = 1");
    assert_eq!(fill(&a, &k, "old").await, StoreOutcome::Stored);

    let paused = server.command("CLIENT PAUSE 300 ALL").unwrap();
    assert!(paused.starts_with("+OK"), "{paused}");
    for i in 0..3 {
        let _ = a.lookup(&key(&format!("SELECT stalled {i}"))).await;
    }
    assert!(a.redis_degraded(), "breaker should be open");
    let lost = a.invalidate_tables("app", &["users"]).await;
    assert!(lost.is_err(), "the invalidation should be lost");

    // Redis answers again and the breaker lets lookups through; the purge has not run yet.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let still = server.command(&format!("EXISTS {PREFIX}:v:{k}")).unwrap();
    assert_eq!(still, ":1\r\n", "the old entry is still in redis");
    match a.lookup(&k).await {
        Lookup::Hit(r) => panic!("served {:?} from redis after a lost invalidation", r.body),
        Lookup::Leader(guard) => drop(guard),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(a.stats().hits_redis, 0);
}

//! Read-your-writes in the local tier: a lookup that follows an invalidation never gets an answer
//! to a query sent before it, whether stored or still in flight.
//!
//! Each test plays one session's "write, then read" against a fill that started before the write;
//! the write's invalidation is what the frontends apply before answering the write.

use std::time::Duration;

use super::{MINUTE, hit_body, key, local_cache, response};
use crate::cache::{Lookup, StoreOutcome};

/// How long a lookup may take before it counts as waiting on a flight.
const NO_WAIT: Duration = Duration::from_millis(500);

/// `postgres_policy::writes_through_the_proxy_invalidate_only_their_tables`, round 29: the
/// extended read of round 28 led a fill whose completion (spawned by the session) had not run
/// yet; round 29's UPDATE invalidated the table; round 29's extended read found no entry, joined
/// round 28's flight, and was handed 38 after writing 39.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_does_not_join_a_flight_from_before_it() {
    let cache = local_cache().await;
    let k = key("SELECT v FROM users WHERE id = 1");
    let Lookup::Leader(before) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    // The write completes: its invalidation is applied before the client hears of it.
    cache.invalidate_tables("app", &["users"]).await.unwrap();

    let after = match tokio::time::timeout(NO_WAIT, cache.lookup(&k)).await {
        Ok(Lookup::Leader(guard)) => guard,
        Ok(other) => panic!("the read after the write got {other:?}"),
        Err(_) => panic!("the read after the write waited on a flight older than the write"),
    };
    // Later reads join the new flight, not the old one, even once the old leader resolves.
    let joiner = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        before.complete(response("38", MINUTE)).await,
        StoreOutcome::Invalidated,
        "the fill from before the write is not stored"
    );
    assert!(
        !joiner.is_finished(),
        "the old leader resolved the new flight"
    );
    assert_eq!(
        after.complete(response("39", MINUTE)).await,
        StoreOutcome::Stored
    );
    match joiner.await.unwrap() {
        Lookup::Hit(r) => assert_eq!(r.body, "39"),
        other => panic!("the joiner got {other:?}"),
    }
    assert_eq!(hit_body(&cache, &k).await, "39");
}

/// The same with the purge of a namespace and of everything: the flight's snapshot covers every
/// counter the entry would be stamped with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_purge_does_not_join_a_flight_from_before_it() {
    let cache = local_cache().await;
    let namespaced = crate::cache::CacheKey::builder(crate::model::Protocol::Postgres, "app", "u")
        .namespace(Some("reports"))
        .sql("SELECT 1")
        .table("app", "users")
        .build();
    for purge_all in [false, true] {
        let Lookup::Leader(before) = cache.lookup(&namespaced).await else {
            panic!("expected to lead")
        };
        if purge_all {
            cache.purge_all().await.unwrap();
        } else {
            cache.purge_namespace("reports").await.unwrap();
        }
        match tokio::time::timeout(NO_WAIT, cache.lookup(&namespaced)).await {
            Ok(Lookup::Leader(after)) => drop(after),
            Ok(other) => panic!("the read after the purge got {other:?}"),
            Err(_) => panic!("the read after the purge waited on a flight older than it"),
        }
        before.fail("gone");
    }
}

/// A flight that started after the write is joined as before (the check is not a blanket
/// refusal to coalesce after any invalidation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flight_that_started_after_the_write_is_joined() {
    let cache = local_cache().await;
    let k = key("SELECT v FROM users WHERE id = 2");
    cache.invalidate_tables("app", &["users"]).await.unwrap();
    let Lookup::Leader(leader) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    // Another table's invalidation does not concern this key.
    cache.invalidate_tables("app", &["orders"]).await.unwrap();
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "the waiter did not join");
    assert_eq!(
        leader.complete(response("fresh", MINUTE)).await,
        StoreOutcome::Stored
    );
    assert!(matches!(waiter.await.unwrap(), Lookup::Hit(r) if r.body == "fresh"));
    assert_eq!(cache.stats().coalesced_waits, 1);
}

/// `complete_now` stores and hands the response to the waiters before its future is polled:
/// what the frontends rely on to answer their client only after the flight is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_now_closes_the_flight_before_its_future_runs() {
    let cache = local_cache().await;
    let k = key("SELECT v FROM users WHERE id = 3");
    let Lookup::Leader(leader) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let remote = leader.complete_now(response("now", MINUTE));
    assert!(cache.lookup_local(&k).is_some(), "not stored yet");
    assert!(matches!(waiter.await.unwrap(), Lookup::Hit(r) if r.body == "now"));
    assert_eq!(remote.await, StoreOutcome::Stored);
}

/// A fill that a replica answered shortly after a write to a table it reads: the replica may not
/// have the write yet, though the generations cannot tell (the invalidation came first). Neither
/// stored nor handed to the waiters, who run their own query; past the lag window it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fill_right_after_a_write_is_neither_stored_nor_shared() {
    let cache = local_cache().await;
    let k = key("SELECT v FROM users WHERE id = 4");
    let lag = Duration::from_millis(300);
    cache.invalidate_tables("app", &["users"]).await.unwrap();
    let Lookup::Leader(mut fill) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    fill.served_by_replica(lag);
    assert_eq!(
        fill.complete(response("old", MINUTE)).await,
        StoreOutcome::ReplicaMayLag
    );
    assert!(matches!(waiter.await.unwrap(), Lookup::Bypass));
    assert!(cache.lookup_local(&k).is_none());

    // The primary's answer is stored at once; a replica's once the window has passed.
    let Lookup::Leader(fill) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    assert_eq!(
        fill.complete(response("primary", MINUTE)).await,
        StoreOutcome::Stored
    );
    cache.invalidate_tables("app", &["users"]).await.unwrap();
    tokio::time::sleep(lag + Duration::from_millis(100)).await;
    let Lookup::Leader(mut fill) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    fill.served_by_replica(lag);
    assert_eq!(
        fill.complete(response("replica", MINUTE)).await,
        StoreOutcome::Stored
    );
    assert_eq!(hit_body(&cache, &k).await, "replica");
}

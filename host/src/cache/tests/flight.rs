//! Single-flight: coalescing, failure propagation, cancelled leaders, grace time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use super::{MINUTE, is_hit, key, local_cache, response};
use crate::cache::{CONCURRENT_FAILURE_PREFIX, Lookup, QueryCache};

/// Runs the "backend": counts executions, takes `delay`, then completes.
async fn lead_and_complete(guard: crate::cache::FillGuard, runs: &AtomicUsize, delay: Duration) {
    runs.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    guard.complete(response("result", MINUTE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_identical_misses_run_the_backend_once() {
    let cache = local_cache().await;
    let k = key("SELECT count(*) FROM users");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, k, runs, barrier) = (cache.clone(), k.clone(), runs.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            match cache.lookup(&k).await {
                Lookup::Hit(r) => r.body.clone(),
                Lookup::Leader(guard) => {
                    lead_and_complete(guard, &runs, Duration::from_millis(100)).await;
                    bytes::Bytes::from_static(b"result")
                }
                other => panic!("unexpected {other:?}"),
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "result");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "backend ran more than once");
    let stats = cache.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.coalesced_waits + stats.hits_local, 99, "{stats:?}");
    assert!(stats.coalesced_waits > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_receive_the_leaders_error_with_a_prefix() {
    let cache = local_cache().await;
    let k = key("SELECT fails");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (cache, k) = (cache.clone(), k.clone());
            tokio::spawn(async move { cache.lookup(&k).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    guard.fail("relation \"users\" does not exist");
    for w in waiters {
        match w.await.unwrap() {
            Lookup::Failed(message) => assert_eq!(
                message,
                format!("{CONCURRENT_FAILURE_PREFIX}relation \"users\" does not exist")
            ),
            other => panic!("waiter got {other:?}"),
        }
    }
    assert_eq!(CONCURRENT_FAILURE_PREFIX, "[concurrent query failed] ");
    assert_eq!(cache.stats().concurrent_failures, 10);
    // Failures are not cached: the next lookup leads.
    assert!(matches!(cache.lookup(&k).await, Lookup::Leader(_)));
}

/// The leader's client goes away (guard dropped, or its task aborted): one waiter takes over,
/// runs the query, and the others get its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    for abort_task in [false, true] {
        let cache = local_cache().await;
        let k = key("SELECT slow");
        let runs = Arc::new(AtomicUsize::new(0));
        let hold = if abort_task {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(100)
        };
        let leader = {
            let (cache, k) = (cache.clone(), k.clone());
            tokio::spawn(async move {
                let Lookup::Leader(guard) = cache.lookup(&k).await else {
                    panic!("expected to lead")
                };
                tokio::time::sleep(hold).await;
                drop(guard);
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let (cache, k, runs) = (cache.clone(), k.clone(), runs.clone());
                tokio::spawn(async move {
                    match cache.lookup(&k).await {
                        Lookup::Hit(r) => r.body.clone(),
                        Lookup::Leader(guard) => {
                            lead_and_complete(guard, &runs, Duration::from_millis(50)).await;
                            bytes::Bytes::from_static(b"result")
                        }
                        other => panic!("waiter got {other:?}"),
                    }
                })
            })
            .collect();
        if abort_task {
            tokio::time::sleep(Duration::from_millis(50)).await;
            leader.abort();
        }
        let _ = leader.await;
        for w in waiters {
            assert_eq!(w.await.unwrap(), "result");
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "exactly one waiter takes over"
        );
        assert!(is_hit(&cache, &k).await);
    }
}

#[tokio::test]
async fn a_dropped_guard_lets_the_next_lookup_lead() {
    let cache = local_cache().await;
    let k = key("SELECT dropped");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    drop(guard);
    assert!(matches!(cache.lookup(&k).await, Lookup::Leader(_)));
}

#[tokio::test]
async fn waiting_is_bounded_by_the_grace_time() {
    let cache = local_cache().await;
    let k = key("SELECT very slow");
    let Lookup::Leader(_guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let started = Instant::now();
    let r = cache
        .lookup_with_grace(&k, Duration::from_millis(100))
        .await;
    assert!(matches!(r, Lookup::Bypass), "got {r:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(90) && waited < Duration::from_secs(2));

    // The flight is now older than a 100 ms grace: the next lookup does not wait at all.
    let started = Instant::now();
    let r = cache
        .lookup_with_grace(&k, Duration::from_millis(100))
        .await;
    assert!(matches!(r, Lookup::Bypass));
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(cache.stats().bypass, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_waiter_does_not_disturb_the_others() {
    let cache = local_cache().await;
    let k = key("SELECT w");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    // A waiter whose client goes away after 20 ms.
    let gone = tokio::time::timeout(Duration::from_millis(20), cache.lookup(&k)).await;
    assert!(gone.is_err());
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    guard.complete(response("r", MINUTE)).await;
    assert!(matches!(waiter.await.unwrap(), Lookup::Hit(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_fill_sends_waiters_to_the_backend() {
    let cache = local_cache().await;
    let k = key("SELECT streamed");
    let Lookup::Leader(guard) = cache.lookup(&k).await else {
        panic!("expected to lead")
    };
    let waiter = {
        let (cache, k) = (cache.clone(), k.clone());
        tokio::spawn(async move { cache.lookup(&k).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    guard.skip();
    assert!(matches!(waiter.await.unwrap(), Lookup::Bypass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_do_not_coalesce() {
    let cache: QueryCache = local_cache().await;
    let (a, b) = (key("SELECT a"), key("SELECT b"));
    let Lookup::Leader(_ga) = cache.lookup(&a).await else {
        panic!()
    };
    let r = tokio::time::timeout(Duration::from_secs(1), cache.lookup(&b)).await;
    assert!(matches!(r, Ok(Lookup::Leader(_))));
}

use std::time::{Duration, Instant};

use super::*;

fn limits(max: u32, queue: Option<QueueConfig>) -> Limits {
    Limits::new(
        "user \"u\"",
        Some(ConcurrencyConfig {
            max_concurrent: max,
            queue,
        }),
        None,
    )
}

#[tokio::test]
async fn without_a_queue_a_busy_limit_refuses_at_once() {
    let l = limits(1, None);
    let _held = l.acquire().await.unwrap();
    let err = l.acquire().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "limits for user \"u\" are exceeded: max_concurrent_queries limit: 1"
    );
}

#[tokio::test]
async fn queued_queries_get_the_slot_when_it_frees() {
    let l = Arc::new(limits(
        1,
        QueueConfig::from_keys(Some(1), Some(Duration::from_secs(5))),
    ));
    let held = l.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let l = l.clone();
        async move { l.acquire().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(l.waiting(), 1);
    // The queue holds one: a third query is refused.
    assert!(matches!(
        l.acquire().await,
        Err(LimitError::QueueFull { limit: 1, .. })
    ));
    drop(held);
    waiter.await.unwrap().unwrap();
    assert_eq!(l.waiting(), 0);
}

#[tokio::test]
async fn queued_queries_time_out_and_cancelled_waiters_leave_the_queue() {
    let l = limits(
        1,
        QueueConfig::from_keys(None, Some(Duration::from_millis(30))),
    );
    let _held = l.acquire().await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        l.acquire().await,
        Err(LimitError::QueueTimeout { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(30));
    let cancelled = tokio::time::timeout(Duration::from_millis(5), l.acquire()).await;
    assert!(cancelled.is_err());
    assert_eq!(l.waiting(), 0);
}

#[test]
fn the_rate_limit_allows_a_minute_worth_then_refills() {
    let rate = RateLimit::per_minute(60);
    let start = Instant::now();
    for _ in 0..60 {
        assert!(rate.try_take_at(start));
    }
    assert!(!rate.try_take_at(start));
    assert!(rate.try_take_at(start + Duration::from_millis(1100)));
    assert!(!rate.try_take_at(start + Duration::from_millis(1100)));

    let l = Limits::new("user \"u\"", None, Some(1));
    assert!(l.check_rate().is_ok());
    assert_eq!(
        l.check_rate().unwrap_err().to_string(),
        "limits for user \"u\" are exceeded: requests_per_minute limit: 1"
    );
}

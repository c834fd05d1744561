use std::time::{Duration, Instant};

use super::tags::{IDLE_AFTER, TagRule};
use super::*;
use crate::config::{TagLimitConfig, TagLimitValues, UserConfig};

mod fair;

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

fn t() -> Tenant {
    Tenant::user("u")
}

#[tokio::test]
async fn without_a_queue_a_busy_limit_refuses_at_once() {
    let l = limits(1, None);
    let _held = l.acquire(&t()).await.unwrap();
    let err = l.acquire(&t()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "limits for user \"u\" are exceeded: max_concurrent_queries limit: 1"
    );
    assert_eq!(l.stats().rejected(LimitErrorKind::Concurrency), 1);
    assert_eq!(l.stats().admitted(), 1);
}

#[tokio::test]
async fn queued_queries_get_the_slot_when_it_frees() {
    let l = Arc::new(limits(
        1,
        QueueConfig::from_keys(Some(1), Some(Duration::from_secs(5))),
    ));
    let held = l.acquire(&t()).await.unwrap();
    let waiter = tokio::spawn({
        let l = l.clone();
        async move { l.acquire(&t()).await.map(|_| ()) }
    });
    while l.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // The queue holds one: a third query is refused.
    assert!(matches!(
        l.acquire(&t()).await,
        Err(LimitError::QueueFull { limit: 1, .. })
    ));
    drop(held);
    waiter.await.unwrap().unwrap();
    assert_eq!(l.waiting(), 0);
    assert_eq!(l.stats().queued(), 1);
    assert_eq!(l.stats().rejected(LimitErrorKind::QueueFull), 1);
}

#[tokio::test]
async fn queued_queries_time_out_and_cancelled_waiters_leave_the_queue() {
    let l = limits(
        1,
        QueueConfig::from_keys(None, Some(Duration::from_millis(30))),
    );
    let _held = l.acquire(&t()).await.unwrap();
    let started = Instant::now();
    assert!(matches!(
        l.acquire(&t()).await,
        Err(LimitError::QueueTimeout { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(30));
    let cancelled = tokio::time::timeout(Duration::from_millis(5), l.acquire(&t())).await;
    assert!(cancelled.is_err());
    assert_eq!(l.waiting(), 0);
    assert_eq!(l.stats().rejected(LimitErrorKind::QueueTimeout), 1);
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
    assert_eq!(l.stats().rejected(LimitErrorKind::Rate), 1);
}

fn rule(max_values: u32) -> TagLimitConfig {
    let mut values = std::collections::BTreeMap::new();
    values.insert(
        "big".to_owned(),
        TagLimitValues {
            max_concurrent_queries: Some(3),
            ..TagLimitValues::default()
        },
    );
    TagLimitConfig {
        tag: "tenant".to_owned(),
        max_concurrent_queries: Some(1),
        max_queue_size: None,
        max_queue_time: None,
        requests_per_minute: Some(2),
        max_values,
        values,
    }
}

#[tokio::test]
async fn each_tag_value_has_its_own_limits_and_overrides_apply() {
    let rule = TagRule::new(&rule(100));
    let a = rule.value("a");
    let _a1 = a.limits.acquire(&a.tenant).await.unwrap();
    assert!(matches!(
        a.limits.acquire(&a.tenant).await,
        Err(LimitError::Concurrency { limit: 1, ref owner }) if owner == "tag tenant=a"
    ));
    // Another value is not affected by a's slot, and is the same state on each lookup.
    let b = rule.value("b");
    let _b1 = b.limits.acquire(&b.tenant).await.unwrap();
    assert!(Arc::ptr_eq(&a, &rule.value("a")));
    // The override raises `big` to 3 and keeps the rule's rate.
    let big = rule.value("big");
    let held: Vec<_> = [0, 1, 2]
        .iter()
        .map(|_| big.limits.acquire(&big.tenant))
        .collect();
    for h in held {
        h.await.unwrap();
    }
    assert!(big.limits.check_rate().is_ok());
    assert!(big.limits.check_rate().is_ok());
    assert!(big.limits.check_rate().is_err());
    assert_eq!(rule.tracked(), 3);
}

#[test]
fn tag_values_are_bounded_and_only_idle_ones_are_forgotten() {
    let rule = TagRule::new(&rule(2));
    let now = Instant::now();
    let a = rule.value_at("a", now);
    drop(rule.value_at("b", now));
    // Full, and nothing idle for long enough: a third value shares the overflow limit.
    let c = rule.value_at("c", now);
    assert!(Arc::ptr_eq(&c, rule.overflow()));
    assert_eq!(c.limits.owner(), "tag tenant=<overflow>");
    drop(c);
    // Later, `b` is idle and forgotten; `a` is still held (a query uses it) and stays.
    let later = now + IDLE_AFTER + Duration::from_secs(2);
    let c = rule.value_at("c", later);
    assert!(!Arc::ptr_eq(&c, rule.overflow()));
    assert_eq!(c.limits.owner(), "tag tenant=c");
    assert!(Arc::ptr_eq(&a, &rule.value_at("a", later)));
    assert_eq!(rule.tracked(), 2);
}

#[tokio::test]
async fn admission_applies_user_and_tag_limits_and_picks_the_tenant() {
    let mut user = UserConfig::new("alice", Some("pw"));
    user.max_concurrent_queries = Some(2);
    let admission = Admission::new(&[user, UserConfig::new("bob", Some("pw"))], &[rule(10)]);
    let alice = admission.user("alice");
    let bob = admission.user("bob");
    let tags = |v: &str| vec![("tenant".to_owned(), v.to_owned())];

    let first = admission.admit(&alice, &tags("a"), true).await.unwrap();
    assert_eq!(first.tenant().as_str(), "tenant=a");
    // Tenant a has one slot, and bob is limited by it too.
    let err = admission.admit(&bob, &tags("a"), true).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "limits for tag tenant=a are exceeded: max_concurrent_queries limit: 1"
    );
    // Without the tag only the user's limits apply, and the user is the tenant.
    let untagged = admission.admit(&alice, &[], true).await.unwrap();
    assert_eq!(untagged.tenant().as_str(), "user:alice");
    let err = admission.admit(&alice, &tags("b"), true).await.unwrap_err();
    assert_eq!(err.kind(), LimitErrorKind::Concurrency);
    assert!(err.to_string().contains("user \"alice\""));
    drop(first);
    // The rate of `a` (2 per minute) was spent by the first two admissions above.
    let err = admission.admit(&bob, &tags("a"), true).await.unwrap_err();
    assert_eq!(err.kind(), LimitErrorKind::Rate);
    // A user without limits and no matching rule pays nothing and gets no slot.
    let free = Admission::new(&[UserConfig::new("carol", Some("pw"))], &[]);
    let carol = free.user("carol");
    for _ in 0..100 {
        assert_eq!(
            free.admit(&carol, &tags("x"), true)
                .await
                .unwrap()
                .tenant()
                .as_str(),
            "user:carol"
        );
    }
}

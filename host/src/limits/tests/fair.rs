//! The fair semaphore: grant order across tenants, queue bounds and cancellation. Orders are
//! observed on a single-threaded runtime, with no timing involved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::limits::{FairSemaphore, Tenant, WaitError};

const LONG: Duration = Duration::from_secs(60);

/// Spawns a waiter that records its label when granted and frees the permit at once, then
/// yields until it is queued.
async fn queue_waiter(
    sem: &Arc<FairSemaphore>,
    tenant: &str,
    label: &str,
    order: &Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    let before = sem.waiting();
    let handle = tokio::spawn({
        let (sem, order) = (sem.clone(), order.clone());
        let (tenant, label) = (Tenant::new(tenant), label.to_owned());
        async move {
            let permit = sem.acquire(&tenant, LONG, u32::MAX).await.unwrap();
            order.lock().unwrap().push(label);
            drop(permit);
        }
    });
    while sem.waiting() == before {
        tokio::task::yield_now().await;
    }
    handle
}

#[tokio::test(flavor = "current_thread")]
async fn waiters_are_served_round_robin_across_tenants() {
    let sem = Arc::new(FairSemaphore::new(1));
    let held = sem.try_acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // The flooding tenant queues five before the others arrive.
    for i in 1..=5 {
        tasks.push(queue_waiter(&sem, "flood", &format!("f{i}"), &order).await);
    }
    tasks.push(queue_waiter(&sem, "quiet", "q1", &order).await);
    tasks.push(queue_waiter(&sem, "other", "o1", &order).await);
    tasks.push(queue_waiter(&sem, "quiet", "q2", &order).await);
    assert_eq!(sem.waiting(), 8);
    assert_eq!(sem.waiting_tenants(), 3);
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    // A single FIFO would give f1..f5 first.
    assert_eq!(
        *order.lock().unwrap(),
        ["f1", "q1", "o1", "f2", "q2", "f3", "f4", "f5"]
    );
    assert_eq!(sem.available(), 1);
    assert_eq!(sem.waiting(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_free_permit_is_not_taken_past_the_queue() {
    let sem = Arc::new(FairSemaphore::new(1));
    let held = sem.try_acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiter = queue_waiter(&sem, "a", "a1", &order).await;
    drop(held);
    // The permit went to the waiter, not back to the pool for a newcomer to grab.
    assert!(sem.try_acquire().is_none());
    waiter.await.unwrap();
    assert!(sem.try_acquire().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn the_queue_is_bounded_and_timed_out_waiters_leave_it() {
    let sem = Arc::new(FairSemaphore::new(1));
    let _held = sem.try_acquire().unwrap();
    let t = Tenant::new("a");
    let timed_out = sem.acquire(&t, Duration::from_millis(1), 1).await;
    assert_eq!(timed_out.unwrap_err(), WaitError::TimedOut);
    assert_eq!(sem.waiting(), 0);
    assert_eq!(sem.waiting_tenants(), 0);

    let order = Arc::new(Mutex::new(Vec::new()));
    let queued = queue_waiter(&sem, "a", "a1", &order).await;
    let full = sem.acquire(&Tenant::new("b"), LONG, 1).await;
    assert_eq!(full.unwrap_err(), WaitError::QueueFull);
    queued.abort();
    let _ = queued.await;
    assert_eq!(sem.waiting(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiter_cancelled_after_its_grant_passes_the_permit_on() {
    let sem = Arc::new(FairSemaphore::new(1));
    let held = sem.try_acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = queue_waiter(&sem, "a", "a1", &order).await;
    let second = queue_waiter(&sem, "b", "b1", &order).await;
    // Granted to `first`, which has not run yet: cancelling it must hand the permit to `second`.
    drop(held);
    first.abort();
    let _ = first.await;
    second.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["b1"]);
    assert_eq!(sem.available(), 1);
}

//! Multi-tenant QoS on the ClickHouse HTTP frontend against a real ClickHouse: per-tag limits
//! from the policy's tags (429 with the ClickHouse codes), and a pool's `max_concurrent_queries`
//! queue served fairly when one user floods it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{Reply, post};
use switchyard_tests::latency::{self, p99};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::proxy::{Proxy, config};

fn assert_refused(r: &Reply, status: u16, code: u32, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let prefix = format!("Code: {code}, e.displayText() = DB::Exception: ");
    assert!(r.text().starts_with(&prefix), "{}", r.text());
    assert!(r.text().contains(needle), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_limits_refuse_per_value() {
    let ch = ClickHouse::start(1);
    // tenant-router tags each query `tenant=<user>` (URL parameters other than the proxy's own
    // reach ClickHouse as settings, so the user is the tenant here).
    let mut extra = String::new();
    for user in ["acme", "globex", "metered"] {
        extra.push_str(&format!(
            "[[user]]\nname = \"{user}\"\npassword = \"pw\"\n\n"
        ));
    }
    extra.push_str(&format!(
        "[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\nwatch = false\n\
         [policy.config]\ntenant_attribute = \"user\"\n\n\
         [[limit]]\ntag = \"tenant\"\nmax_concurrent_queries = 1\n\
         [limit.values.metered]\nrequests_per_minute = 1\n",
        policy_wasm("tenant-router").display()
    ));
    let proxy = Proxy::start(&config(&ch, "", "", &extra)).await;
    let url = |tenant: &str| proxy.url_as(tenant, "pw");

    let running = tokio::spawn({
        let url = url("acme");
        async move { post(&url, "SELECT sleep(1)").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = post(&url("acme"), "SELECT 1").await;
    assert_refused(
        &refused,
        429,
        202,
        "limits for tag tenant=acme are exceeded: max_concurrent_queries limit: 1",
    );
    // Another tenant is not held back.
    let other = post(&url("globex"), "SELECT 2").await;
    assert_eq!((other.status, other.text().as_str()), (200, "2\n"));
    assert_eq!(running.await.unwrap().status, 200);

    assert_eq!(post(&url("metered"), "SELECT 1").await.status, 200);
    let limited = post(&url("metered"), "SELECT 1").await;
    assert_refused(&limited, 429, 201, "tag tenant=metered");
    proxy.stop().await;
}

async fn trickle(url: &str, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = post(url, "SELECT sleep(0.1)").await;
        assert_eq!(r.status, 200, "{}", r.text());
        samples.push(started.elapsed());
    }
    samples
}

/// The reader pool runs two queries at once; one user floods it from many clients while another
/// runs a steady trickle, whose p99 stays within 2× its unloaded p99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_does_not_starve_another_at_a_pool_limit() {
    const SAMPLES: usize = 30;
    let _alone = latency::alone().await;
    let ch = ClickHouse::start(1);
    let users = "[[user]]\nname = \"flood\"\npassword = \"pw\"\n\n[[user]]\nname = \"quiet\"\npassword = \"pw\"\n";
    let reader = "max_concurrent_queries = 2\ncheckout_timeout = \"20s\"";
    let proxy = Proxy::start(&config(&ch, "", reader, users)).await;
    let quiet = proxy.url_as("quiet", "pw");
    trickle(&quiet, 5).await;
    let mut unloaded = trickle(&quiet, SAMPLES).await;
    let unloaded_p99 = p99(&mut unloaded);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (stop, done, url) = (stop.clone(), done.clone(), proxy.url_as("flood", "pw"));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = post(&url, "SELECT sleep(0.02)").await;
                assert_eq!(r.status, 200, "{}", r.text());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = done.load(Ordering::Relaxed);
    let mut loaded = trickle(&quiet, SAMPLES).await;
    let during = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("flood task");
    }
    let loaded_p99 = p99(&mut loaded);
    eprintln!(
        "quiet user p99: unloaded {unloaded_p99:?}, under flood {loaded_p99:?}; flood ran {during} queries meanwhile"
    );
    assert!(during >= 30, "the flood ran only {during} queries");
    assert!(
        loaded_p99 <= unloaded_p99 * 2,
        "quiet user p99 under flood {loaded_p99:?} > 2 × unloaded {unloaded_p99:?}"
    );
    proxy.stop().await;
}

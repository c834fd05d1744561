//! Limits of the ClickHouse HTTP frontend, each with its own status and ClickHouse-style body:
//! max_concurrent_queries (429 without a queue), the queue (waits, then 503 when full or too
//! long), requests_per_minute (429), max_execution_time (504 and KILL QUERY), and a pool's
//! max_concurrent_queries over all users.

use std::time::{Duration, Instant};

use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{Reply, post};
use switchyard_tests::proxy::{Proxy, config};

const USERS: &str = r#"
[[user]]
name = "solo"
password = "pw"
max_concurrent_queries = 1

[[user]]
name = "queued"
password = "pw"
max_concurrent_queries = 1
max_queue_size = 1
max_queue_time = "5s"

[[user]]
name = "impatient"
password = "pw"
max_concurrent_queries = 1
max_queue_time = "300ms"

[[user]]
name = "rpm"
password = "pw"
requests_per_minute = 2

[[user]]
name = "slow"
password = "pw"
max_execution_time = "500ms"

[[user]]
name = "other"
password = "pw"
"#;

fn spawn_query(url: String, sql: &'static str) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move { post(&url, sql).await })
}

fn assert_refused(r: &Reply, status: u16, code: u32, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let prefix = format!("Code: {code}, e.displayText() = DB::Exception: ");
    assert!(r.text().starts_with(&prefix), "{}", r.text());
    assert!(r.text().contains(needle), "{}", r.text());
    assert_eq!(r.x_cache(), "N/A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_refuse_or_queue() {
    let ch = ClickHouse::start(1);
    let proxy = Proxy::start(&config(&ch, "", "", USERS)).await;
    let url = |user: &str| proxy.url_as(user, "pw");
    let pause = || tokio::time::sleep(Duration::from_millis(300));

    // No queue: the second concurrent query is refused at once.
    let running = spawn_query(url("solo"), "SELECT sleep(1)");
    pause().await;
    let refused = post(&url("solo"), "SELECT 1").await;
    assert_refused(
        &refused,
        429,
        202,
        "limits for user \"solo\" are exceeded: max_concurrent_queries limit: 1",
    );
    assert_eq!(running.await.unwrap().status, 200);

    // A queue of one: the second waits and runs, the third finds the queue full.
    let running = spawn_query(url("queued"), "SELECT sleep(1)");
    pause().await;
    let waiting = spawn_query(url("queued"), "SELECT 2");
    pause().await;
    let full = post(&url("queued"), "SELECT 3").await;
    assert_refused(&full, 503, 202, "max_queue_size limit: 1");
    let waited = waiting.await.unwrap();
    assert_eq!((waited.status, waited.text().as_str()), (200, "2\n"));
    assert_eq!(running.await.unwrap().status, 200);

    // The wait is bounded by max_queue_time.
    let running = spawn_query(url("impatient"), "SELECT sleep(1)");
    pause().await;
    let started = Instant::now();
    let expired = post(&url("impatient"), "SELECT 1").await;
    assert_refused(&expired, 503, 202, "max_queue_time");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(running.await.unwrap().status, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_execution_time_limits() {
    let ch = ClickHouse::start(1);
    let proxy = Proxy::start(&config(&ch, "", "", USERS)).await;
    let url = |user: &str| proxy.url_as(user, "pw");

    assert_eq!(post(&url("rpm"), "SELECT 1").await.status, 200);
    assert_eq!(post(&url("rpm"), "SELECT 1").await.status, 200);
    let r = post(&url("rpm"), "SELECT 1").await;
    assert_refused(&r, 429, 201, "requests_per_minute limit: 2");

    let started = Instant::now();
    let r = post(&url("slow"), "SELECT sleep(3)").await;
    assert_refused(&r, 504, 159, "Timeout exceeded");
    assert!(started.elapsed() < Duration::from_secs(2));
    let running = || {
        ch.node(0)
            .query("SELECT count() FROM system.processes WHERE query = 'SELECT sleep(3)'")
    };
    let started = Instant::now();
    while running() != "0\n" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the query was not killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Gone from system.processes is not yet in the query log: settle before counting.
    let killed = ch
        .node(0)
        .failed_queries_settled("SELECT sleep(3)", 394, 1)
        .await;
    assert_eq!(killed, 1, "the query killed for its execution time");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_limit_counts_every_user() {
    let ch = ClickHouse::start(1);
    let reader_pool = "max_concurrent_queries = 1\ncheckout_timeout = \"200ms\"";
    let proxy = Proxy::start(&config(&ch, "", reader_pool, USERS)).await;
    let running = spawn_query(proxy.url_as("other", "pw"), "SELECT sleep(1)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = post(&proxy.url_as("rpm", "pw"), "SELECT 1").await;
    assert_refused(&r, 503, 202, "limits for pool \"reader\" are exceeded");
    // Writes use the other pool.
    let w = post(
        &proxy.url_as("other", "pw"),
        "CREATE TABLE default.p (a UInt8) ENGINE = Memory",
    )
    .await;
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(running.await.unwrap().status, 200);
    proxy.stop().await;
}

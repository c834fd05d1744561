//! Multi-tenant QoS on the PostgreSQL frontend against a real PostgreSQL: per-user limits with
//! their SQLSTATEs, per-tag limits from the policy's tags, and fair queueing for a small pool
//! when one tenant floods it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_tests::latency::{self, p99};
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

/// `[policy]` with tenant-router taking the tenant from `application_name` (no tenant pools:
/// statements go by the default route, tagged `tenant=<application_name>`).
fn tenant_policy() -> String {
    format!(
        "[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\nwatch = false\n[policy.config]\n\
         tenant_attribute = \"startup.application_name\"\n",
        policy_wasm("tenant-router").display()
    )
}

fn user(name: &str, keys: &str) -> String {
    format!("[[user]]\nname = \"{name}\"\npassword = \"pw\"\n{keys}\n")
}

async fn connect_app(
    proxy: std::net::SocketAddr,
    user: &str,
    application_name: &str,
) -> tokio_postgres::Client {
    let conn = format!(
        "{} application_name={application_name}",
        pg::conn_string(proxy, user, "pw")
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}/{application_name}: {}", pg::describe(&e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[track_caller]
fn assert_refused(
    result: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
    code: &str,
    says: &str,
) {
    let e = result.expect_err("the limit should refuse this");
    assert_eq!(pg::sqlstate(&e), code, "{}", pg::describe(&e));
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains(says), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_limits_refuse_with_53300_and_53400_and_the_session_goes_on() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .extra(&user(
            "busy",
            "max_concurrent_queries = 1\nrequests_per_minute = 4",
        ))
        .extra(&user(
            "queued",
            "max_concurrent_queries = 1\nmax_queue_size = 1\nmax_queue_time = \"300ms\"",
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();

    // Concurrency without a queue: a second transaction is refused at once, then the session
    // goes on once the first one ends. Slots are per unit of work: the statements inside the
    // open transaction do not need another one.
    let a = connect_app(addr, "busy", "a").await;
    let b = connect_app(addr, "busy", "b").await;
    a.simple_query("BEGIN").await.expect("begin"); // token 1
    a.simple_query("SELECT 1")
        .await
        .expect("inside the transaction");
    assert_refused(
        b.simple_query("SELECT 1").await,
        "53300",
        "max_concurrent_queries limit: 1",
    ); // token 2
    a.simple_query("COMMIT").await.expect("commit");
    assert_eq!(pg::query_one_text(&b, "SELECT 'again'").await, "again"); // token 3
    assert_eq!(pg::query_one_text(&a, "SELECT 'fourth'").await, "fourth"); // token 4
    // requests_per_minute = 4: the fifth unit of work is refused with 53400.
    assert_refused(
        b.simple_query("SELECT 1").await,
        "53400",
        "requests_per_minute limit: 4",
    );

    // With a queue: a waiter gets the slot when it frees, a second waiter finds the queue full,
    // and a waiter that waits out max_queue_time is refused.
    let holder = connect_app(addr, "queued", "h").await;
    let waiter = connect_app(addr, "queued", "w").await;
    let extra = connect_app(addr, "queued", "x").await;
    holder.simple_query("BEGIN").await.expect("begin");
    let started = Instant::now();
    assert_refused(
        waiter.simple_query("SELECT 1").await,
        "53300",
        "max_queue_time",
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let queued = tokio::spawn(async move {
        let r = waiter.simple_query("SELECT 'waited'").await.map(|_| ());
        (waiter, r)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_refused(
        extra.simple_query("SELECT 1").await,
        "53300",
        "max_queue_size limit: 1",
    );
    holder.simple_query("COMMIT").await.expect("commit");
    let (_waiter, result) = queued.await.expect("join");
    result.unwrap_or_else(|e| panic!("the queued query should run: {}", pg::describe(&e)));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_limits_apply_per_value_with_overrides() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .extra(&user("shared", ""))
        .extra(&tenant_policy())
        .extra("[[limit]]\ntag = \"tenant\"\nmax_concurrent_queries = 1\n[limit.values.big]\nmax_concurrent_queries = 2\n")
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let acme1 = connect_app(addr, "shared", "acme").await;
    let acme2 = connect_app(addr, "shared", "acme").await;
    let globex = connect_app(addr, "shared", "globex").await;
    acme1.simple_query("BEGIN").await.expect("begin");
    assert_refused(
        acme2.simple_query("SELECT 1").await,
        "53300",
        "tag tenant=acme",
    );
    // Another value of the tag (same user) has its own slot.
    assert_eq!(
        pg::query_one_text(&globex, "SELECT 'globex'").await,
        "globex"
    );
    acme1.simple_query("COMMIT").await.expect("commit");
    assert_eq!(pg::query_one_text(&acme2, "SELECT 'acme'").await, "acme");
    // The override gives `big` two slots.
    let big: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| connect_app(addr, "shared", "big"))).await;
    big[0].simple_query("BEGIN").await.expect("begin");
    big[1]
        .simple_query("BEGIN")
        .await
        .expect("second slot of big");
    assert_refused(
        big[2].simple_query("SELECT 1").await,
        "53300",
        "tag tenant=big",
    );
    proxy.stop().await;
}

/// A pool's `max_concurrent_queries` belongs to the pool: two listeners in front of the same
/// cluster share its slots (each listener used to count its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_limit_is_shared_by_every_listener_of_the_cluster() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .defaults("max_concurrent_queries = 1\ncheckout_timeout = \"300ms\"")
        .extra(&format!(
            "[[listener]]\nname = \"second\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:0\"\ncluster = \"{}\"\n",
            pg::CLUSTER
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let second = proxy
        .server()
        .and_then(|s| s.local_addr("second"))
        .expect("the second listener's address");
    assert_ne!(second, proxy.addr());
    let first = pg::connect(proxy.addr()).await;
    let other = pg::connect(second).await;
    first.simple_query("BEGIN").await.expect("begin");
    first
        .simple_query("SELECT 1")
        .await
        .expect("inside the transaction");
    assert_refused(
        other.simple_query("BEGIN; SELECT 1; COMMIT").await,
        "53300",
        "pool \"primary\"",
    );
    first.simple_query("COMMIT").await.expect("commit");
    assert_eq!(pg::query_one_text(&other, "SELECT 'freed'").await, "freed");
    proxy.stop().await;
}

/// `n` sequential `SELECT pg_sleep(0.1)` latencies through `client` (long enough that the
/// machine's scheduling noise is small beside it).
async fn trickle(client: &tokio_postgres::Client, n: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .simple_query("SELECT pg_sleep(0.1)")
            .await
            .unwrap_or_else(|e| panic!("trickle query: {}", pg::describe(&e)));
        samples.push(started.elapsed());
    }
    samples
}

/// One tenant floods a 2-connection pool from many clients with short queries while another
/// runs a steady trickle: the trickle's p99 stays within 2× its unloaded p99. With one FIFO
/// for the pool it would wait behind the whole flood (about 20 queued × 20 ms / 2 connections).
async fn flood_leaves_the_quiet_tenant_its_latency(
    flood: Vec<tokio_postgres::Client>,
    quiet: &tokio_postgres::Client,
) {
    const SAMPLES: usize = 30;
    // Warm up the pool's connections, then measure unloaded.
    trickle(quiet, 5).await;
    let mut unloaded = trickle(quiet, SAMPLES).await;
    let unloaded_p99 = p99(&mut unloaded);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in flood {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client
                    .simple_query("SELECT pg_sleep(0.02)")
                    .await
                    .unwrap_or_else(|e| panic!("flood query: {}", pg::describe(&e)));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Let the flood fill the queue before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flood_before = done.load(Ordering::Relaxed);
    let mut loaded = trickle(quiet, SAMPLES).await;
    let flood_during = done.load(Ordering::Relaxed) - flood_before;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("flood task");
    }
    let loaded_p99 = p99(&mut loaded);
    eprintln!(
        "quiet tenant p99: unloaded {unloaded_p99:?}, under flood {loaded_p99:?}; flood ran {flood_during} queries meanwhile"
    );
    // The flood really kept the pool busy: at 2 connections × 20 ms it can run at most ~100/s.
    assert!(
        flood_during >= 40,
        "the flood ran only {flood_during} queries"
    );
    assert!(
        loaded_p99 <= unloaded_p99 * 2,
        "quiet tenant p99 under flood {loaded_p99:?} > 2 × unloaded {unloaded_p99:?}"
    );
}

const FLOOD_CLIENTS: usize = 24;

const SMALL_POOL: &str = "size = 2\ncheckout_timeout = \"20s\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_does_not_starve_another_user() {
    let _alone = latency::alone().await;
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .replica_pool(SMALL_POOL)
        .extra(&user("flood", ""))
        .extra(&user("quiet", ""))
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let flood =
        futures_util::future::join_all((0..FLOOD_CLIENTS).map(|_| connect_app(addr, "flood", "f")))
            .await;
    let quiet = connect_app(addr, "quiet", "q").await;
    flood_leaves_the_quiet_tenant_its_latency(flood, &quiet).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tag_value_does_not_starve_another_of_the_same_user() {
    let _alone = latency::alone().await;
    let pg = PgCluster::start(1);
    // A generous tag limit: it never refuses here, but makes the tag value the tenant.
    let config = PgConfig::new(&pg)
        .replica_pool(SMALL_POOL)
        .extra(&user("shared", ""))
        .extra(&tenant_policy())
        .extra("[[limit]]\ntag = \"tenant\"\nmax_concurrent_queries = 1000\n")
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let flood = futures_util::future::join_all(
        (0..FLOOD_CLIENTS).map(|_| connect_app(addr, "shared", "noisy")),
    )
    .await;
    let quiet = connect_app(addr, "shared", "calm").await;
    flood_leaves_the_quiet_tenant_its_latency(flood, &quiet).await;
    proxy.stop().await;
}

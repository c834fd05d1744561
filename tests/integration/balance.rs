//! Issue 7 against real servers: PostgreSQL failover to a promoted replica without restarting
//! the proxy, mirroring to a slow shadow (PostgreSQL and ClickHouse) that never slows the client,
//! and the balancing strategies over real ClickHouse nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use switchyard::route::Router;
use switchyard_tests::clickhouse::{ClickHouse, READER_PASSWORD};
use switchyard_tests::http::post;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::slow::{SlowHttp, SlowRelay};

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The router of the proxy's PostgreSQL cluster.
fn pg_router(proxy: &Proxy) -> Arc<Router> {
    proxy
        .server()
        .and_then(|s| s.pg_frontends().first().cloned())
        .map(|f| f.backend().router().clone())
        .expect("a PostgreSQL frontend")
}

/// The cells of the first row of `sql` through `client` (simple protocol).
async fn row(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| pg::describe(&e))?;
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok((0..r.len())
                .map(|i| r.get(i).unwrap_or("").to_owned())
                .collect());
        }
    }
    Err(format!("`{sql}` returned no row"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_follow_a_promoted_replica_without_a_restart() {
    let mut pg = PgCluster::start(2);
    let primary = pg.primary_port();
    let replicas = pg.replica_ports();
    pg.psql(primary, "CREATE TABLE failover_t (id int, at int)");
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(&PgConfig::new(&pg).build()).await;
    let client = pg::connect(proxy.addr()).await;
    let router = pg_router(&proxy);

    let at = row(
        &client,
        "INSERT INTO failover_t VALUES (1, inet_server_port()) RETURNING at",
    )
    .await
    .expect("a write before the failover");
    assert_eq!(at, [primary.to_string()]);

    block(|| pg.stop_primary());
    // A write sent on a pooled connection at the very moment its server dies loses the session
    // (FATAL 08006 naming the pool: whether it ran is unknown). Connections idle for over
    // 100 ms are probed before reuse, so from here on the dead primary is seen at checkout.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reads keep working from the replicas.
    for i in 0..10 {
        let r = row(&client, "SELECT pg_is_in_recovery(), inet_server_port()")
            .await
            .unwrap_or_else(|e| panic!("read {i} with the primary down: {e}"));
        assert_eq!(r[0], "t", "read {i} ran on {r:?}");
    }
    // Writes fail fast, with a connection-failure SQLSTATE and a message naming the pool.
    for i in 0..5 {
        let started = Instant::now();
        let e = client
            .simple_query("INSERT INTO failover_t VALUES (2, inet_server_port())")
            .await
            .expect_err("a write with the primary down");
        let elapsed = started.elapsed();
        let state = pg::sqlstate(&e);
        let text = pg::describe(&e);
        assert!(
            state == "08006" || state == "57P03",
            "write {i}: SQLSTATE {state}: {text}"
        );
        assert!(text.contains("pool \"primary\""), "write {i}: {text}");
        assert!(
            elapsed < Duration::from_secs(1),
            "write {i} took {elapsed:?}"
        );
    }
    assert_eq!(router.write_failovers(), 0);

    block(|| pg.promote_replica(0));
    // Health checks (every 700 ms) see pg_is_in_recovery() turn false: writes resume through the
    // same proxy and the same client session.
    let started = Instant::now();
    let at = loop {
        match row(
            &client,
            "INSERT INTO failover_t VALUES (3, inet_server_port()) RETURNING at",
        )
        .await
        {
            Ok(at) => break at,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "writes did not resume after the promotion: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(at, [replicas[0].to_string()]);
    assert_eq!(router.write_failovers(), 1);
    // A new client too, and the written row is there.
    let other = pg::connect(proxy.addr()).await;
    let r = row(
        &other,
        "UPDATE failover_t SET id = 4 WHERE id = 3 RETURNING inet_server_port()",
    )
    .await
    .expect("a write from a new client");
    assert_eq!(r, [replicas[0].to_string()]);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirroring_to_a_slow_shadow_does_not_slow_the_client() {
    const DELAY: Duration = Duration::from_millis(800);
    let pg = PgCluster::start(2);
    pg.psql(pg.primary_port(), "CREATE TABLE mirror_w (a int)");
    block(|| pg.wait_replicated());
    // The shadow is replica 1 behind a link that holds every answer for 800 ms: a login there
    // takes three of those, a query one more.
    let target = format!("127.0.0.1:{}", pg.replica_ports()[1])
        .parse()
        .expect("address");
    let relay = SlowRelay::start(target, DELAY).await;
    // A read right after the client's own write waits for the replica to replay it (rather than
    // going to the primary), so the last read below is mirrored like the others.
    let config = PgConfig::new(&pg)
        .cluster("causal_wait = \"5s\"")
        .replica_pool("mirror = { pool = \"shadow\", max_in_flight = 2 }")
        .extra(&format!(
            "[cluster.pg.pool.shadow]\nrole = \"other\"\nnodes = [\"{}\"]\nconnect_timeout = \"10s\"\nhealth = {{ enabled = false }}\n",
            relay.addr()
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let router = pg_router(&proxy);
    let client = pg::connect(proxy.addr()).await;
    let stats = || router.pool("shadow").expect("shadow pool").mirror_stats();

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let t = Instant::now();
        let r = row(&client, "SELECT pg_is_in_recovery()")
            .await
            .unwrap_or_else(|e| panic!("read {i}: {e}"));
        assert_eq!(r, ["t"]);
        slowest = slowest.max(t.elapsed());
        assert!(stats().in_flight() <= 2, "more mirrors than max_in_flight");
    }
    let total = started.elapsed();
    assert!(
        slowest < DELAY && total < DELAY * 3,
        "reads waited for the shadow: slowest {slowest:?}, 40 reads in {total:?}"
    );
    // Two slots, each busy for longer than all 40 reads took: the other mirrors were skipped.
    assert_eq!(stats().started(), 2, "started");
    assert_eq!(stats().dropped(), 38, "dropped");

    let drained = |want: u64| async move {
        let started = Instant::now();
        while stats().succeeded() + stats().failed() < want || stats().in_flight() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mirrors did not finish: {} succeeded, {} failed, {} in flight",
                stats().succeeded(),
                stats().failed(),
                stats().in_flight()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    drained(2).await;
    assert_eq!((stats().succeeded(), stats().failed()), (2, 0));
    assert!(
        stats().latency_us_total() >= 2 * DELAY.as_micros() as u64,
        "mirror latency {} µs",
        stats().latency_us_total()
    );
    assert!(relay.connections() >= 1);

    // The extended protocol is mirrored as a self-contained Parse/Bind/Execute.
    let rows = client
        .query("SELECT $1::int + 1", &[&41i32])
        .await
        .expect("extended read");
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    drained(3).await;
    assert_eq!((stats().succeeded(), stats().failed()), (3, 0));

    // Writes and reads inside a transaction are never mirrored.
    for sql in [
        "INSERT INTO mirror_w VALUES (1)",
        "BEGIN",
        "SELECT 1",
        "COMMIT",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg::describe(&e)));
    }
    client.simple_query("SELECT 2").await.expect("a read");
    drained(4).await;
    assert_eq!(stats().started(), 4, "only the last read was mirrored");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_policy_asks_for_mirroring() {
    let pg = PgCluster::start(2);
    pg.psql(pg.primary_port(), "CREATE TABLE mirror_p (a int)");
    block(|| pg.wait_replicated());
    // No `mirror` in the config: the mirror-reads policy asks for every statement, the host
    // mirrors the reads. The shadow is replica 1, listed in a pool of its own.
    let config = PgConfig::new(&pg)
        .extra(&format!(
            "[cluster.pg.pool.shadow]\nrole = \"other\"\nnodes = [\"127.0.0.1:{}\"]\n\n\
             [policy]\npath = \"{}\"\n[policy.config]\npool = \"shadow\"\n",
            pg.replica_ports()[1],
            policy_wasm("mirror-reads").display()
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let router = pg_router(&proxy);
    let stats = || router.pool("shadow").expect("shadow pool").mirror_stats();
    let client = pg::connect(proxy.addr()).await;
    for i in 0..5 {
        row(&client, "SELECT count(*) FROM mirror_p")
            .await
            .unwrap_or_else(|e| panic!("read {i}: {e}"));
        let started = Instant::now();
        while stats().succeeded() + stats().failed() < i + 1 {
            assert!(started.elapsed() < Duration::from_secs(10), "mirror {i}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    client
        .simple_query("INSERT INTO mirror_p VALUES (1)")
        .await
        .expect("a write");
    assert_eq!(
        (stats().started(), stats().succeeded(), stats().failed()),
        (5, 5, 0)
    );
    assert_eq!(router.unknown_mirror_pools(), 0);
    proxy.stop().await;
}

/// A ClickHouse config: pool `reader` (replica) with `reader` (its `nodes` and `strategy`
/// lines), user `alice`, fast health checks, and `extra`.
fn ch_config(reader: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:0"
cluster = "ch"

[server]
drain_timeout = "2s"

[cluster.ch]
protocol = "clickhouse-http"

[cluster.ch.pool.reader]
role = "replica"
auth = {{ user = "reader", password = "{READER_PASSWORD}" }}
health = {{ interval = "200ms", timeout = "150ms", failures_before_ban = 1, ban_time = "300ms" }}
{reader}

[[user]]
name = "alice"
password = "alice_pw"

{extra}
"#
    )
}

/// Which node answered each of `n` reads (`SELECT 1`, `params` appended to the URL per read).
async fn nodes_of(proxy: &Proxy, n: usize, params: impl Fn(usize) -> String) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("{}{}", proxy.url_as("alice", "alice_pw"), params(i));
        let r = post(&url, "SELECT 1").await;
        assert_eq!((r.status, r.text().as_str()), (200, "1\n"), "read {i}");
        out.push(r.node().to_owned());
    }
    out
}

fn counts(nodes: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in nodes {
        *out.entry(n.clone()).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_strategies_over_real_nodes() {
    const N: usize = 200;
    let mut ch = ClickHouse::start(2);
    let (a, b) = (ch.node(0).addr(), ch.node(1).addr());
    let within = |got: &BTreeMap<String, usize>, node: &str, want: usize, tolerance: usize| {
        let n = got.get(node).copied().unwrap_or(0);
        assert!(
            n.abs_diff(want) <= tolerance,
            "{node}: {n} of {N}, want {want} ± {tolerance} ({got:?})"
        );
    };
    for (strategy, want0, tolerance) in [
        ("round-robin", N / 2, 1),
        ("least-conn", N / 2, 2),
        ("random", N / 2, N / 8),
    ] {
        let proxy = Proxy::start(&ch_config(
            &format!("strategy = \"{strategy}\"\nnodes = [\"{a}\", \"{b}\"]"),
            "",
        ))
        .await;
        let got = counts(&nodes_of(&proxy, N, |_| String::new()).await);
        within(&got, "ch0", want0, tolerance);
        within(&got, "ch1", N - want0, tolerance);
        proxy.stop().await;
    }

    // Latency-aware: node 1 behind a link adding 30 ms to every answer gets (almost) nothing.
    let slow = SlowRelay::start(b.parse().expect("node address"), Duration::from_millis(30)).await;
    let proxy = Proxy::start(&ch_config(
        &format!(
            "strategy = \"peak-ewma\"\nnodes = [\"{a}\", \"{}\"]",
            slow.addr()
        ),
        "",
    ))
    .await;
    let got = counts(&nodes_of(&proxy, N, |_| String::new()).await);
    assert!(
        got.get("ch1").copied().unwrap_or(0) <= N / 20,
        "peak-ewma sent to the slow node: {got:?}"
    );
    proxy.stop().await;
    drop(slow);

    // A 75/25 canary split.
    let proxy = Proxy::start(&ch_config(
        &format!(
            "strategy = \"weighted\"\nnodes = [{{ host = \"127.0.0.1\", port = {}, weight = 3 }}, {{ host = \"127.0.0.1\", port = {}, weight = 1 }}]",
            ch.node(0).http_port,
            ch.node(1).http_port
        ),
        "",
    ))
    .await;
    let got = counts(&nodes_of(&proxy, N, |_| String::new()).await);
    within(&got, "ch0", N * 3 / 4, 2);
    proxy.stop().await;

    // Consistent hashing on the policy's affinity key: a tenant stays on one node, tenants spread
    // over both, and when a node stops only its tenants move. The tenant-router policy takes
    // the tenant from a URL parameter; `cache_namespace` is one the proxy keeps to itself (a
    // parameter it forwarded would be a setting, refused for the read-only backend user), and
    // the cache is off here.
    let policy = format!(
        "[policy]\npath = \"{}\"\n[policy.config]\ntenant_attribute = \"param.cache_namespace\"\ndefault_pool = \"reader\"\npool.ghost = \"nope\"\n",
        policy_wasm("tenant-router").display()
    );
    let proxy = Proxy::start(&ch_config(
        &format!("strategy = \"consistent-hash\"\nnodes = [\"{a}\", \"{b}\"]"),
        &policy,
    ))
    .await;
    let tenants = 40;
    let first = nodes_of(&proxy, tenants, |t| format!("&cache_namespace=t{t}")).await;
    let again = nodes_of(&proxy, tenants, |t| format!("&cache_namespace=t{t}")).await;
    assert_eq!(first, again, "a tenant changed node");
    let spread = counts(&first);
    assert!(
        spread.values().all(|&n| n >= tenants / 5),
        "tenants per node: {spread:?}"
    );
    // A policy routing to a pool the cluster does not have: a clear error, never a guess.
    let url = format!(
        "{}&cache_namespace=ghost",
        proxy.url_as("alice", "alice_pw")
    );
    let r = post(&url, "SELECT 1").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text()
            .contains("cluster `ch` has no pool named `nope` (known: reader)"),
        "{}",
        r.text()
    );

    ch.stop(1);
    let mut after = Vec::new();
    for t in 0..tenants {
        // The first read that lands on the stopped node is retried on the other one.
        let url = format!("{}&cache_namespace=t{t}", proxy.url_as("alice", "alice_pw"));
        let r = post(&url, "SELECT 1").await;
        assert_eq!(r.status, 200, "tenant {t}: {}", r.text());
        after.push(r.node().to_owned());
    }
    for t in 0..tenants {
        if first[t] == "ch0" {
            assert_eq!(after[t], "ch0", "tenant t{t} moved off a node that stayed");
        }
    }
    assert!(after.iter().all(|n| n == "ch0"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_mirroring_to_a_slow_shadow_does_not_slow_the_client() {
    const DELAY: Duration = Duration::from_secs(3);
    let ch = ClickHouse::start(1);
    let shadow = SlowHttp::start(DELAY).await;
    let proxy = Proxy::start(&ch_config(
        &format!(
            "nodes = [\"{}\"]\nmirror = {{ pool = \"shadow\", max_in_flight = 2 }}",
            ch.node(0).addr()
        ),
        &format!(
            "[cluster.ch.pool.shadow]\nrole = \"other\"\nnodes = [\"{}\"]\nauth = {{ user = \"reader\", password = \"{READER_PASSWORD}\" }}\nhealth = {{ enabled = false }}\n",
            shadow.addr()
        ),
    ))
    .await;
    let url = proxy.url_as("alice", "alice_pw");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r = post(&format!("{url}&query_id=q{i}"), "SELECT 1 AS mirrored").await;
        assert_eq!((r.status, r.text().as_str()), (200, "1\n"), "read {i}");
        slowest = slowest.max(t.elapsed());
    }
    let total = started.elapsed();
    assert!(
        slowest < DELAY / 3 && total < DELAY,
        "reads waited for the shadow: slowest {slowest:?}, 20 reads in {total:?}"
    );
    // Writes are not mirrored (this one fails: the backend user is read-only; either way it
    // must not reach the shadow).
    post(&url, "CREATE TABLE default.m (a UInt8) ENGINE = Memory").await;
    tokio::time::sleep(DELAY + Duration::from_millis(500)).await;
    let lines = shadow.request_lines();
    assert_eq!(shadow.most_in_progress(), 2, "{lines:?}");
    assert_eq!(
        lines.len(),
        2,
        "two slots, each busy longer than the whole run: {lines:?}"
    );
    for line in &lines {
        assert!(
            line.contains("query_id=q0-mirror") || line.contains("query_id=q1-mirror"),
            "{line}"
        );
    }
    proxy.stop().await;
}

//! WAL positions and exact replica lag against a real primary and two replicas: the positions the
//! proxy polls show in `GET /pools`, `SHOW POOLS` and the metrics, and match what the servers
//! say; a replica whose replay is paused falls behind in bytes and in time while the other keeps
//! up, and returns to 0 when replay resumes. A read waiting for a position gets replicas polled
//! at once, not at their next tick.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

use switchyard::model::{Lsn, WalLayout};
use switchyard::route::Router;
use switchyard_tests::http::request;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

const TOKEN: &str = "p0sitions";

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

/// The primary's insert position now, as the proxy normalises positions.
fn insert_position(pg: &PgCluster, router: &Router) -> Lsn {
    let text = pg.psql(pg.primary_port(), "SELECT pg_current_wal_insert_lsn()");
    router.normalize(text.parse().expect("an LSN"))
}

/// One node of `GET /pools`, by pool and port.
async fn pools_node(proxy: &Proxy, pool: &str, port: u16) -> Value {
    let auth = format!("Bearer {TOKEN}");
    let reply = request(
        Method::GET,
        &format!("{}/pools", proxy.admin_url()),
        &[("authorization", auth.as_str())],
        Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 200, "GET /pools: {}", reply.text());
    let pools: Value = serde_json::from_slice(&reply.body).expect("GET /pools is JSON");
    let addr = format!("127.0.0.1:{port}");
    pools["clusters"][pg::CLUSTER]["pools"][pool]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["addr"] == addr.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("no node {addr} in pool {pool}: {pools}"))
}

/// The gauge `name` of the node on `port`, from the proxy's metrics.
fn node_metric(proxy: &Proxy, name: &str, port: u16) -> Option<f64> {
    let text = switchyard::metrics::render(&proxy.deps.metrics).expect("metrics");
    let node = format!("node=\"127.0.0.1:{port}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&node))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `probe` every 50 ms until it returns `Some`, panicking with `what` after `limit`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn lsn_diff(pg: &PgCluster, ahead: &str, behind: &str) -> u64 {
    pg.psql(
        pg.primary_port(),
        &format!("SELECT pg_wal_lsn_diff('{ahead}', '{behind}')::bigint"),
    )
    .parse()
    .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_positions_and_exact_lag() {
    let mut pg = PgCluster::start(2);
    let primary = pg.primary_port();
    let replicas = pg.replica_ports();
    pg.psql(primary, "CREATE TABLE position_filler (x int)");
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .cluster("wal_poll_interval = \"50ms\"")
            .app_user("admin = true")
            .extra(&format!(
                "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
            ))
            .build(),
    )
    .await;

    // Every node has a position; on an idle cluster the replicas have reached the primary.
    let primary_at = eventually(Duration::from_secs(10), "primary position", || async {
        pools_node(&proxy, "primary", primary).await["position"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    for &port in &replicas {
        eventually(Duration::from_secs(10), "replicas caught up", || async {
            let node = pools_node(&proxy, "replicas", port).await;
            (node["position"].is_string() && node["lag_bytes"] == 0 && node["lag_ms"] == 0)
                .then_some(())
        })
        .await;
    }
    let server_at = pg.psql(primary, "SELECT pg_current_wal_insert_lsn()");
    assert!(
        lsn_diff(&pg, &server_at, &primary_at) < 1 << 20,
        "primary position {primary_at}, server at {server_at}"
    );
    assert!(node_metric(&proxy, "switchyard_node_wal_position", primary).is_some_and(|v| v > 0.0));

    // The admin console shows the same.
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "{} dbname=switchyard",
            pg::conn_string(proxy.addr(), pg::USER, pg::PASSWORD)
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin console login");
    tokio::spawn(connection);
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in client.simple_query("SHOW POOLS").await.expect("SHOW POOLS") {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_owned())
                    .collect::<Vec<_>>(),
            ),
            _ => {}
        }
    }
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("SHOW POOLS has no {name}: {columns:?}"))
    };
    let (node, position, lag_bytes) = (col("node"), col("position"), col("lag_bytes"));
    for &port in &replicas {
        let row = rows
            .iter()
            .find(|r| r[node] == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("no row for {port}: {rows:?}"));
        assert!(row[position].contains('/'), "position of {port}: {row:?}");
        assert_eq!(row[lag_bytes], "0", "{row:?}");
    }

    // Replica 0 stops replaying; the primary writes.
    block(|| pg.pause_replay(0));
    let replayed = pg.psql(replicas[0], "SELECT pg_last_wal_replay_lsn()");
    pg.psql(
        primary,
        "INSERT INTO position_filler SELECT generate_series(1, 5000)",
    );
    block(|| pg.wait_replicated());
    // Replica 0's position is exactly its replay position; its lag in bytes is the primary's
    // position minus it, as the servers count it.
    let lagging = eventually(Duration::from_secs(10), "replica 0 behind", || async {
        let node = pools_node(&proxy, "replicas", replicas[0]).await;
        let primary_at = pools_node(&proxy, "primary", primary).await["position"]
            .as_str()
            .map(str::to_owned)?;
        let bytes = node["lag_bytes"].as_u64()?;
        (bytes > 0 && bytes == lsn_diff(&pg, &primary_at, &replayed)).then_some(node)
    })
    .await;
    assert_eq!(lagging["position"], replayed.as_str(), "{lagging}");
    // Replica 1 kept up.
    eventually(Duration::from_secs(10), "replica 1 caught up", || async {
        let node = pools_node(&proxy, "replicas", replicas[1]).await;
        (node["lag_bytes"] == 0 && node["lag_ms"] == 0).then_some(())
    })
    .await;
    assert!(
        node_metric(&proxy, "switchyard_replica_lag_bytes", replicas[0]).is_some_and(|v| v > 0.0)
    );
    assert_eq!(
        node_metric(&proxy, "switchyard_replica_lag_bytes", replicas[1]),
        Some(0.0)
    );

    // Its lag in time grows with the wall clock while replay stays paused.
    let first = pools_node(&proxy, "replicas", replicas[0]).await["lag_ms"]
        .as_u64()
        .expect("lag_ms known");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = pools_node(&proxy, "replicas", replicas[0]).await["lag_ms"]
        .as_u64()
        .expect("lag_ms known");
    assert!(
        later >= first + 400 && later <= first + 5_000,
        "lag_ms went from {first} to {later} in 600 ms"
    );
    assert!(
        node_metric(&proxy, "switchyard_replica_lag_seconds", replicas[0])
            .is_some_and(|s| s >= 0.4)
    );

    // Replay resumes: back to 0.
    block(|| {
        pg.resume_replay(0);
        pg.wait_replicated();
    });
    eventually(Duration::from_secs(10), "replica 0 caught up", || async {
        let node = pools_node(&proxy, "replicas", replicas[0]).await;
        (node["lag_bytes"] == 0 && node["lag_ms"] == 0).then_some(())
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_read_gets_replicas_polled_at_once() {
    let mut pg = PgCluster::start(2);
    let primary = pg.primary_port();
    pg.psql(primary, "CREATE TABLE waited_for (x int)");
    block(|| pg.wait_replicated());
    // Ticks far apart: after the first polls, positions move only when someone asks.
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .cluster("wal_poll_interval = \"10s\"")
            .build(),
    )
    .await;
    let router = pg_router(&proxy);
    let pool = router.pool("replicas").expect("replica pool").clone();
    eventually(Duration::from_secs(10), "first positions", || async {
        let known = router
            .pools()
            .flat_map(|p| p.nodes())
            .all(|n| n.position().is_some());
        known.then_some(())
    })
    .await;
    // The test servers have 1 MiB WAL segments (`initdb --wal-segsize=1`): the pollers read it.
    assert_eq!(
        router.wal_layout(),
        WalLayout {
            page_size: 8192,
            segment_size: 1 << 20
        }
    );

    block(|| {
        pg.pause_replay(0);
        pg.pause_replay(1);
    });
    pg.psql(
        primary,
        "INSERT INTO waited_for SELECT generate_series(1, 100)",
    );
    let target = insert_position(&pg, &router);

    // The primary's position as of now: polled on demand, at least where the server was.
    let asked = Instant::now();
    let now = router
        .primary_position_since(asked, Duration::from_secs(5))
        .await
        .expect("the primary polled on demand");
    assert!(
        now >= target,
        "primary at {now}, the server was at {target}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(router.primary_position() >= Some(now));

    // Neither replica replays: a zero wait only checks, a short one times out.
    assert!(!pool.wait_reached(target, Duration::ZERO).await);
    let waited = Instant::now();
    assert!(!pool.wait_reached(target, Duration::from_millis(300)).await);
    assert!(waited.elapsed() >= Duration::from_millis(300));
    assert_eq!(pool.nodes_behind(target).as_slice(), &[0, 1]);

    // Replica 1 resumes while a read waits: the waiter's polls see it long before the next tick.
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let started = Instant::now();
            let reached = pool.wait_reached(target, Duration::from_secs(20)).await;
            (reached, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    block(|| pg.resume_replay(1));
    let (reached, took) = waiter.await.expect("waiter");
    assert!(reached, "replica 1 never reached {target}");
    assert!(took < Duration::from_secs(5), "the wait took {took:?}");
    assert_eq!(pool.nodes_behind(target).as_slice(), &[0]);
    block(|| pg.resume_replay(0));
    proxy.stop().await;
}

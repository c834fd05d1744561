//! Transparency of transaction pooling with replicas: reads that turn out to write, reads that
//! must see the session's own writes (causal consistency by WAL position), and session state
//! that pins a client to its server connection. Against a real primary and two streaming
//! replicas, with the README's defaults.

use std::sync::atomic::Ordering;

use switchyard_tests::http::get;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::redis::RedisServer;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// An admin API without a token, for the tests' reads of `/digests` and `/pools`.
const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\n";

/// How often the replicas' logs mention `needle`.
fn replica_log_count(pg: &PgCluster, needle: &str) -> usize {
    pg.replica_ports()
        .iter()
        .map(|&p| pg.log_of(p).matches(needle).count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_writes_runs_on_the_primary_and_is_remembered() {
    let pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO counter VALUES (1, 0);
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS
           'UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n';",
    );
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(ADMIN).build()).await;
    let refused = "read-only transaction";
    let before: usize = replica_log_count(&pg, refused);

    // Classified a read, so first sent to a replica: it refuses (25006), and the proxy runs it
    // again on the primary. The client sees only the primary's answer.
    let out = pg::psql(proxy.addr(), "SELECT bump()")
        .await
        .expect("a writing function through the proxy");
    assert_eq!(out.trim(), "1");
    let after_first: usize = replica_log_count(&pg, refused);
    assert_eq!(after_first, before + 1, "the first call went to a replica");

    // Extended protocol too, and from now on straight to the primary: no replica sees it again.
    let client = pg::connect(proxy.addr()).await;
    for expected in 2..=5 {
        let row = client
            .query_one("SELECT bump()", &[])
            .await
            .unwrap_or_else(|e| panic!("extended protocol: {}", pg::describe(&e)));
        assert_eq!(row.get::<_, i32>(0), expected);
    }
    let out = pg::psql(proxy.addr(), "SELECT bump()")
        .await
        .expect("again");
    assert_eq!(out.trim(), "6");
    let after: usize = replica_log_count(&pg, refused);
    assert!(
        after <= after_first + 1,
        "the learnt shape still reached replicas: {after} refusals after {after_first}"
    );
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT n FROM counter").trim(),
        "6",
        "each call ran exactly once"
    );

    let digests = get(&format!("{}/digests", proxy.admin_url())).await;
    assert_eq!(digests.status, 200, "{}", digests.text());
    let json: serde_json::Value = serde_json::from_str(&digests.text()).expect("json");
    let learned = json["learned_writes"].as_array().expect("a list");
    assert!(!learned.is_empty(), "{json}");

    // An error the statement itself causes is still the client's, on any node.
    let e = pg::psql(proxy.addr(), "SELECT 1/0")
        .await
        .expect_err("an error");
    assert!(e.contains("division by zero"), "{e}");
}

/// The value and server port of `SELECT v FROM t WHERE id = 1` through `client`.
async fn read_v(client: &tokio_postgres::Client) -> (String, u16) {
    let row = client
        .query_one(
            "SELECT v::text, inet_server_port() FROM causal WHERE id = 1",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("read: {}", pg::describe(&e)));
    (row.get(0), row.get::<_, i32>(1) as u16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_miss_the_sessions_own_writes() {
    let mut pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE causal (id int PRIMARY KEY, v int NOT NULL); INSERT INTO causal VALUES (1, 0);",
    );
    block(|| pg.wait_replicated());
    let replicas = pg.replica_ports();
    let primary = pg.primary_port();
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(ADMIN).build()).await;
    let writer = pg::connect(proxy.addr()).await;
    let bystander = pg::connect(proxy.addr()).await;

    // Replica 0 stops replaying: it will never have the writes below.
    block(|| pg.pause_replay(0));
    for round in 1..=30 {
        writer
            .execute("UPDATE causal SET v = $1 WHERE id = 1", &[&round])
            .await
            .unwrap_or_else(|e| panic!("write: {}", pg::describe(&e)));
        // At once, in simple and extended protocol: the session's own write, never from the
        // paused replica.
        let (v, port) = read_v(&writer).await;
        assert_eq!(v, round.to_string(), "round {round}: read on port {port}");
        assert_ne!(
            port, replicas[0],
            "round {round}: the paused replica served"
        );
        let rows = writer
            .simple_query("SELECT v, inet_server_port() FROM causal WHERE id = 1")
            .await
            .expect("simple read");
        let row = rows
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        assert_eq!(row.get(0), Some(round.to_string().as_str()));
    }
    // Replica 1 keeps up: once a poll has seen it past the write, the writer's reads reach it
    // again (polls are asked for by the reads that had to go to the primary).
    let mut on_replica = false;
    for _ in 0..200 {
        let (v, port) = read_v(&writer).await;
        assert_eq!(v, "30");
        assert_ne!(port, replicas[0]);
        if port == replicas[1] {
            on_replica = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        on_replica,
        "no read of the writer reached the replica that caught up"
    );

    // A client that wrote nothing is not held to another session's position: its reads stay on
    // the replicas.
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..20 {
        ports.insert(read_v(&bystander).await.1);
    }
    if ports.contains(&primary) {
        let pools = get(&format!("{}/pools", proxy.admin_url())).await.text();
        panic!("a bystander's read ran on the primary: {ports:?} {pools}");
    }

    // A position stated by the client: the bystander told the writer's commit position.
    let lsn: String = pg
        .psql(primary, "SELECT pg_current_wal_lsn()")
        .trim()
        .to_owned();
    bystander
        .batch_execute(&format!("SET switchyard.min_lsn = '{lsn}'"))
        .await
        .expect("SET switchyard.min_lsn");
    for _ in 0..10 {
        let (v, port) = read_v(&bystander).await;
        assert_eq!(v, "30", "port {port}");
        assert_ne!(port, replicas[0]);
    }
    bystander
        .batch_execute("RESET switchyard.min_lsn")
        .await
        .expect("RESET");

    // Both replicas behind: the writer's reads go to the primary.
    block(|| pg.pause_replay(1));
    writer
        .execute("UPDATE causal SET v = 31 WHERE id = 1", &[])
        .await
        .expect("write");
    for _ in 0..5 {
        assert_eq!(read_v(&writer).await, ("31".to_owned(), primary));
    }
    block(|| {
        pg.resume_replay(0);
        pg.resume_replay(1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_consistency_sees_every_clients_writes() {
    let mut pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE causal (id int PRIMARY KEY, v int NOT NULL); INSERT INTO causal VALUES (1, 0);",
    );
    block(|| pg.wait_replicated());
    let replicas = pg.replica_ports();
    let config = PgConfig::new(&pg)
        .cluster("consistency = \"global\"")
        .build();
    let proxy = Proxy::start(&config).await;
    let reader = pg::connect(proxy.addr()).await;
    block(|| pg.pause_replay(0));
    for round in 1..=10 {
        // Written directly on the primary, not through this client.
        pg.psql(
            pg.primary_port(),
            &format!("UPDATE causal SET v = {round} WHERE id = 1"),
        );
        let (v, port) = read_v(&reader).await;
        assert_eq!(v, round.to_string(), "port {port}");
        assert_ne!(port, replicas[0]);
    }
    block(|| pg.resume_replay(0));
}

/// A proxy in front of `pg` caching reads of `cc_causal` (the `cache-rules` policy), with its
/// cache in `redis` when given.
fn cached_config(pg: &PgCluster, redis: Option<&RedisServer>) -> String {
    let redis = redis.map_or(String::new(), |r| {
        format!(
            "[cache.redis]\nurl = \"{}\"\ntimeout = \"1s\"\nkey_prefix = \"causal\"\n",
            r.url()
        )
    });
    PgConfig::new(pg)
        .extra(&format!("[cache]\nenabled = true\n{redis}"))
        .extra(&format!(
            "[policy]\npath = \"{}\"\nwatch = false\n[policy.config]\n\"ttl.cc_causal\" = 60000\n",
            policy_wasm("cache-rules").display()
        ))
        .build()
}

/// `SELECT v, inet_server_port()` of row 1 through `client`, in the simple protocol, and then
/// in the extended one (each its own cache entry): `(value, port)` of each.
async fn cached_reads(client: &tokio_postgres::Client) -> [(i32, u16); 2] {
    const SQL: &str = "SELECT v, inet_server_port() FROM cc_causal WHERE id = 1";
    let rows = client
        .simple_query(SQL)
        .await
        .unwrap_or_else(|e| panic!("simple read: {}", pg::describe(&e)));
    let simple = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).expect("v").parse().expect("int"),
                r.get(1).expect("port").parse().expect("port"),
            )),
            _ => None,
        })
        .expect("a row");
    let row = client
        .query_one(SQL, &[])
        .await
        .unwrap_or_else(|e| panic!("extended read: {}", pg::describe(&e)));
    [simple, (row.get(0), row.get::<_, i32>(1) as u16)]
}

/// Each round the writer (on `writer_proxy`) writes row 1; a bystander that never wrote (on
/// `bystander_proxy`) then reads it, which fills the cache after the write's invalidation, from
/// a replica, sometimes the one whose replay is paused (so without the write); then the writer
/// reads it: it must get its own write, never the bystander's older entry. Returns how many of
/// the bystander's reads were answered with an older value by the paused replica (so cached).
async fn writer_reads_its_write_despite_bystander_fills(
    pg: &mut PgCluster,
    writer_proxy: &Proxy,
    bystander_proxy: &Proxy,
) -> usize {
    let replicas = pg.replica_ports();
    let writer = pg::connect(writer_proxy.addr()).await;
    let bystander = pg::connect(bystander_proxy.addr()).await;
    let bystander_cache = bystander_proxy.deps.cache.clone().expect("a cache");
    block(|| pg.pause_replay(0));
    let mut stale_fills = 0;
    for round in 1..=12 {
        let invalidations = bystander_cache.stats().invalidations;
        writer
            .execute("UPDATE cc_causal SET v = $1 WHERE id = 1", &[&round])
            .await
            .unwrap_or_else(|e| panic!("write: {}", pg::describe(&e)));
        if !std::ptr::eq(writer_proxy, bystander_proxy) {
            // The bystander's proxy learns of the write through Redis: until then it answers
            // from its own older entry, without filling.
            for _ in 0..200 {
                if bystander_cache.stats().invalidations > invalidations {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        for (v, port) in cached_reads(&bystander).await {
            if port == replicas[0] && v < round {
                stale_fills += 1;
            }
        }
        for (what, (v, port)) in ["simple", "extended"]
            .iter()
            .zip(cached_reads(&writer).await)
        {
            assert_eq!(
                v, round,
                "round {round}: the writer's {what} read got an older value (filled by port {port})"
            );
        }
    }
    block(|| pg.resume_replay(0));
    stale_fills
}

fn cache_bypasses(proxy: &Proxy) -> u64 {
    let server = proxy.server().expect("running");
    server
        .pg_frontends()
        .iter()
        .map(|fe| fe.stats.causal_cache_bypass.load(Ordering::Relaxed))
        .sum()
}

fn setup_cached(pg: &PgCluster) {
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE cc_causal (id int PRIMARY KEY, v int NOT NULL); INSERT INTO cc_causal VALUES (1, 0);",
    );
    block(|| pg.wait_replicated());
}

/// Regression: a cache entry filled by a replica behind a client's write, by a session that
/// had no position to wait for, answered that client's next read with rows older than its
/// write. The entry remembers the replica's position, and the writer does not use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_never_miss_the_sessions_own_writes_local_tier() {
    let mut pg = PgCluster::start(2);
    setup_cached(&pg);
    let proxy = Proxy::start(&cached_config(&pg, None)).await;
    let stale = writer_reads_its_write_despite_bystander_fills(&mut pg, &proxy, &proxy).await;
    let stats = proxy.deps.cache.as_ref().expect("a cache").stats();
    eprintln!("local tier: {stale} stale fills; cache {stats:?}");
    assert!(stale > 0, "no fill came from the paused replica: {stats:?}");
    assert!(cache_bypasses(&proxy) > 0, "{stats:?}");
    proxy.stop().await;
}

/// The same across two proxies sharing Redis: the writer's proxy finds the bystander's entry in
/// Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_never_miss_the_sessions_own_writes_redis_tier() {
    let mut pg = PgCluster::start(2);
    setup_cached(&pg);
    let redis = RedisServer::start();
    let a = Proxy::start(&cached_config(&pg, Some(&redis))).await;
    let b = Proxy::start(&cached_config(&pg, Some(&redis))).await;
    let stale = writer_reads_its_write_despite_bystander_fills(&mut pg, &a, &b).await;
    let stats = a.deps.cache.as_ref().expect("a cache").stats();
    eprintln!("redis tier: {stale} stale fills; writer's proxy cache {stats:?}");
    assert!(stale > 0, "no fill came from the paused replica");
    assert!(
        stats.hits_redis > 0,
        "the writer's proxy never read redis: {stats:?}"
    );
    assert!(cache_bypasses(&a) > 0, "{stats:?}");
    a.stop().await;
    b.stop().await;
}

/// The first column of the first row of `sql` (simple protocol).
async fn first(client: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    let rows = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("{sql}: {}", pg::describe(&e)))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .ok_or_else(|| format!("{sql}: no row"))
}

async fn pinned_now(proxy: &Proxy) -> u64 {
    let pools = get(&format!("{}/pools", proxy.admin_url())).await;
    let json: serde_json::Value = serde_json::from_str(&pools.text()).expect("json");
    json["clusters"]["pg"]["pools"]["primary"]["pinned"]["now"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pinned count: {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_the_client_until_it_is_gone() {
    let pg = PgCluster::start(2);
    let config = PgConfig::new(&pg)
        .defaults("size = 3")
        .primary_pool("max_pinned = 2")
        .app_user("admin = true")
        .extra(ADMIN)
        .build();
    let proxy = Proxy::start(&config).await;
    let a = pg::connect(proxy.addr()).await;
    let b = pg::connect(proxy.addr()).await;

    // Temp tables of the same name in two clients: each keeps its own, across statements.
    for (client, rows) in [(&a, 3), (&b, 1)] {
        client
            .batch_execute("CREATE TEMP TABLE scratch (x int)")
            .await
            .unwrap_or_else(|e| panic!("create temp: {}", pg::describe(&e)));
        client
            .batch_execute(&format!(
                "INSERT INTO scratch SELECT generate_series(1, {rows})"
            ))
            .await
            .expect("insert into temp");
    }
    for _ in 0..5 {
        assert_eq!(
            first(&a, "SELECT count(*) FROM scratch").await.unwrap(),
            "3"
        );
        assert_eq!(
            first(&b, "SELECT count(*) FROM scratch").await.unwrap(),
            "1"
        );
        // Extended protocol on the same connection.
        let row = a
            .query_one("SELECT count(*)::int FROM scratch WHERE x > $1", &[&1i32])
            .await
            .expect("extended read of a temp table");
        assert_eq!(row.get::<_, i32>(0), 2);
    }
    assert_eq!(pinned_now(&proxy).await, 2);

    // The cap: a third client's session state is refused with a clear error, nothing else.
    let c = pg::connect(proxy.addr()).await;
    let e = c
        .batch_execute("CREATE TEMP TABLE other (x int)")
        .await
        .expect_err("over max_pinned");
    assert_eq!(pg::sqlstate(&e), "53300", "{}", pg::describe(&e));
    assert!(
        pg::describe(&e).contains("max_pinned"),
        "{}",
        pg::describe(&e)
    );
    assert_eq!(first(&c, "SELECT 1").await.unwrap(), "1");

    // SHOW CLIENTS names the reason.
    let (console, console_conn) = tokio_postgres::connect(
        &pg::conn_string(proxy.addr(), pg::USER, pg::PASSWORD)
            .replace("dbname=appdb", "dbname=switchyard"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin console login");
    tokio::spawn(console_conn);
    let rows = console
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    let pinned: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("pinned").map(str::to_owned),
            _ => None,
        })
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(pinned, ["temporary table", "temporary table"], "{rows:?}");
    drop(console);

    // Dropping the last temp object unpins; so does DISCARD ALL.
    a.batch_execute("DROP TABLE scratch").await.expect("drop");
    assert_eq!(pinned_now(&proxy).await, 1);
    b.batch_execute("DISCARD ALL").await.expect("discard all");
    assert_eq!(pinned_now(&proxy).await, 0);

    // SQL PREPARE / EXECUTE, a cursor WITH HOLD, LISTEN: each survives between statements.
    a.batch_execute("PREPARE twice(int) AS SELECT $1 * 2")
        .await
        .expect("prepare");
    for i in 0..4 {
        assert_eq!(
            first(&a, &format!("EXECUTE twice({i})")).await.unwrap(),
            (i * 2).to_string()
        );
    }
    a.batch_execute("DEALLOCATE twice")
        .await
        .expect("deallocate");
    assert_eq!(pinned_now(&proxy).await, 0);

    b.batch_execute("DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
        .await
        .expect("declare with hold");
    for i in 1..=3 {
        assert_eq!(first(&b, "FETCH 1 FROM c").await.unwrap(), i.to_string());
    }
    b.batch_execute("CLOSE c").await.expect("close");
    assert_eq!(pinned_now(&proxy).await, 0);

    // A session advisory lock is held by its connection until unlocked.
    a.batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .expect("lock");
    assert_eq!(
        first(&c, "SELECT pg_try_advisory_lock(42)").await.unwrap(),
        "f",
        "the lock must stay with the client that took it"
    );
    a.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    // `c` stays pinned by its try-lock even though it failed (whether a try-lock got its lock
    // is not read from the answer: pinning is conservative).
    assert_eq!(pinned_now(&proxy).await, 1);
    assert_eq!(
        first(&c, "SELECT pg_try_advisory_lock(42)").await.unwrap(),
        "t"
    );
    c.batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .expect("unlock");
    assert_eq!(pinned_now(&proxy).await, 0);

    // A pinned client that leaves: its connection is reset before another client gets it.
    b.batch_execute("CREATE TEMP TABLE leftover (x int)")
        .await
        .expect("temp");
    b.batch_execute("PREPARE leftover_p AS SELECT 1")
        .await
        .expect("prepare");
    drop(b);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(pinned_now(&proxy).await, 0);
    for _ in 0..6 {
        let d = pg::connect(proxy.addr()).await;
        assert_eq!(
            first(
                &d,
                "SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover_p'"
            )
            .await
            .unwrap(),
            "0"
        );
        assert_eq!(
            first(
                &d,
                "SELECT coalesce(to_regclass('pg_temp.leftover')::text, 'none')"
            )
            .await
            .unwrap(),
            "none"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_in_transaction_mode() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("size = 2").build()).await;
    let (listener, mut conn) = tokio_postgres::connect(
        &pg::conn_string(proxy.addr(), pg::USER, pg::PASSWORD),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.expect("listen");
    let sender = pg::connect(proxy.addr()).await;
    for i in 0..3 {
        // Other clients' traffic in between: the listener keeps its connection.
        assert_eq!(first(&sender, "SELECT 1").await.unwrap(), "1");
        sender
            .batch_execute(&format!("NOTIFY jobs, 'n{i}'"))
            .await
            .expect("notify");
        // The listener sees notifications when it next talks to its server.
        listener.batch_execute("SELECT 1").await.expect("poke");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a notification in time");
        assert_eq!(got.as_deref(), Some(format!("n{i}").as_str()));
    }
}

/// `tests/fixtures/ordinary.sql` with psql as `schema`, against `addr`, with PIDs (the proxy's
/// and a server's differ) masked.
async fn run_ordinary(addr: std::net::SocketAddr, schema: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ordinary.sql");
    let out = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-a",
            "-v",
            &format!("schema={schema}"),
            "-f",
            script,
            "-h",
        ])
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", pg::USER, "-d", "appdb"])
        .env("PGPASSWORD", pg::PASSWORD)
        .env_remove("PGOPTIONS")
        .output()
        .await
        .expect("psql runs");
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = regex_lite_mask(&text, "server process with PID ");
    pid.replace(script, "ordinary.sql")
}

/// Replaces the number after each `marker` with `N`.
fn regex_lite_mask(text: &str, marker: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at + marker.len()]);
        rest = &rest[at + marker.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        out.push('N');
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Equal outputs, or a panic showing the first lines that differ.
fn assert_same(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let at = g
        .iter()
        .zip(&w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    let from = at.saturating_sub(3);
    panic!(
        "{what}: output differs at line {at}\n--- through the proxy ---\n{}\n--- PostgreSQL ---\n{}",
        g[from..(at + 4).min(g.len())].join("\n"),
        w[from..(at + 4).min(w.len())].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_psql_scripts_give_the_same_output_as_postgres() {
    let pg = PgCluster::start(2);
    let primary: std::net::SocketAddr = format!("127.0.0.1:{}", pg.primary_port())
        .parse()
        .expect("address");
    pg.psql(pg.primary_port(), "GRANT CREATE ON DATABASE appdb TO app");
    let config = PgConfig::new(&pg)
        .defaults("size = 6")
        .primary_pool("max_pinned = 4")
        .build();
    let proxy = Proxy::start(&config).await;
    let schemas = ["s0", "s1", "s2", "s3"];
    let mut direct = Vec::new();
    for s in schemas {
        direct.push(run_ordinary(primary, s).await);
    }
    assert!(direct[0].contains("hello"), "the script ran: {}", direct[0]);
    // One client, then four at once sharing the pool with the replicas in rotation.
    let alone = run_ordinary(proxy.addr(), "s0").await;
    assert_same(&alone, &direct[0], "one client through the proxy");
    let runs = schemas.map(|s| tokio::spawn(run_ordinary(proxy.addr(), s)));
    for (i, run) in runs.into_iter().enumerate() {
        let got = run.await.expect("psql task");
        assert_same(
            &got,
            &direct[i],
            &format!("client {i} of 4 through the proxy"),
        );
    }
}

/// Several clients, each with a function of its own that updates a row (the same statement
/// text, so one learnt shape), each reading its row back at once: never the value before its
/// own call, whether the call went to a replica first (refused, run again on the primary) or
/// straight to the primary. One replica stops replaying half-way, so a read sent to it after
/// the call would miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_functions_are_read_back_by_their_callers_under_concurrency() {
    let mut pg = PgCluster::start(2);
    pg.psql(pg.primary_port(), "GRANT CREATE ON DATABASE appdb TO app");
    let config = PgConfig::new(&pg).defaults("size = 4").build();
    let proxy = Proxy::start(&config).await;
    let clients = 4;
    let rounds = 60;
    let mut setup = Vec::new();
    for c in 0..clients {
        let client = pg::connect(proxy.addr()).await;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA f{c}; SET search_path TO f{c};
                 CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
                 INSERT INTO items VALUES (2, 0);
                 CREATE FUNCTION bump(i int) RETURNS int LANGUAGE sql AS
                   'UPDATE items SET qty = qty + 1 WHERE id = i RETURNING qty';"
            ))
            .await
            .unwrap_or_else(|e| panic!("setup: {}", pg::describe(&e)));
        setup.push(client);
    }
    let run = |client: tokio_postgres::Client, c: usize| async move {
        for round in 1..=rounds {
            // psql's way: simple protocol, one statement at a time.
            let bumped = pg::query_one_text(&client, "SELECT bump(2)").await;
            assert_eq!(bumped, round.to_string(), "client {c}: bump");
            let read = pg::query_one_text(
                &client,
                "SELECT qty || ' on ' || inet_server_port() FROM items WHERE id = 2",
            )
            .await;
            let (value, port) = read.split_once(" on ").unwrap_or((&read, ""));
            assert_eq!(
                value, bumped,
                "client {c} round {round}: read back on port {port}"
            );
        }
        client
    };
    let tasks: Vec<_> = setup
        .into_iter()
        .enumerate()
        .map(|(c, client)| tokio::spawn(run(client, c)))
        .collect();
    block(|| pg.pause_replay(0));
    for t in tasks {
        t.await.expect("client task");
    }
    block(|| pg.resume_replay(0));
}

/// A client that names a causal key writes through one proxy and reads through another: with
/// Redis between them, its reads see its writes on either; a client without a key, reading
/// through the second proxy, can still be sent to a replica that lacks them (what the key is
/// for). Without Redis, a key makes the client's reads wait for the primary's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_causal_key_carries_the_position_across_proxies() {
    let mut pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE shared_pos (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO shared_pos VALUES (1, 0);",
    );
    block(|| pg.wait_replicated());
    let redis = RedisServer::start();
    let with_redis = PgConfig::new(&pg)
        .extra(&format!(
            "[cache]\nenabled = true\n[cache.redis]\nurl = \"{}\"\ntimeout = \"1s\"\n",
            redis.url()
        ))
        .build();
    let a = Proxy::start(&with_redis).await;
    let b = Proxy::start(&with_redis).await;
    let alone = Proxy::start(&PgConfig::new(&pg).build()).await;
    let primary = pg.primary_port();
    // Both replicas stop replaying: only the primary has the writes below.
    block(|| {
        pg.pause_replay(0);
        pg.pause_replay(1);
    });
    let writer = pg::connect(a.addr()).await;
    writer
        .batch_execute("SET switchyard.causal_key = 'order-42'")
        .await
        .expect("SET causal_key");
    let reader = pg::connect(b.addr()).await;
    reader
        .batch_execute("SET switchyard.causal_key = 'order-42'")
        .await
        .expect("SET causal_key");
    let keyless = pg::connect(b.addr()).await;
    let lone = pg::connect(alone.addr()).await;
    lone.batch_execute("SET switchyard.causal_key = 'order-42'")
        .await
        .expect("SET causal_key");
    let mut keyless_stale = 0;
    for round in 1..=10 {
        writer
            .execute("UPDATE shared_pos SET v = $1 WHERE id = 1", &[&round])
            .await
            .unwrap_or_else(|e| panic!("write: {}", pg::describe(&e)));
        let got = first(
            &reader,
            "SELECT v::text || ' ' || inet_server_port() FROM shared_pos WHERE id = 1",
        )
        .await
        .expect("read through the other proxy");
        assert_eq!(
            got,
            format!("{round} {primary}"),
            "round {round}: the keyed reader"
        );
        // No Redis: the key makes the read wait for the primary's position.
        let got = first(
            &lone,
            "SELECT v::text || ' ' || inet_server_port() FROM shared_pos WHERE id = 1",
        )
        .await
        .expect("read through the proxy without Redis");
        assert_eq!(
            got,
            format!("{round} {primary}"),
            "round {round}: keyed, no Redis"
        );
        let got = first(&keyless, "SELECT v::text FROM shared_pos WHERE id = 1")
            .await
            .expect("keyless read");
        if got != round.to_string() {
            keyless_stale += 1;
        }
    }
    assert!(
        keyless_stale > 0,
        "a keyless client through the other proxy never read a replica: the test shows nothing"
    );
    let stored = redis.command("KEYS *:pos:*").expect("redis KEYS");
    assert!(
        stored.contains("order-42"),
        "no shared position in redis: {stored}"
    );
    block(|| {
        pg.resume_replay(0);
        pg.resume_replay(1);
    });
    a.stop().await;
    b.stop().await;
    alone.stop().await;
}

/// Clients that write and leave at once (the Terminate right behind the write, as a script's
/// last statement) leave their server connection with the position probe still unanswered: the
/// proxy reads the answer and pools the connection rather than closing it, so the next client
/// does not pay for a new server login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_leaves_at_once_gives_its_connection_back() {
    use switchyard_tests::wire::{Wire, message, query};
    let pg = PgCluster::start(2);
    pg.psql(pg.primary_port(), "CREATE TABLE leave_at_once (id int)");
    block(|| pg.wait_replicated());
    let trust = "[[user]]\nname = \"rawtrust\"\nauth = \"trust\"\n";
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(ADMIN).extra(trust).build()).await;
    let connects = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("switchyard_pool_connects_total") && l.contains("primary"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    for i in 0..20 {
        let mut wire = Wire::tcp(proxy.addr()).await;
        wire.login("rawtrust").await;
        let mut bytes = query(format!("INSERT INTO leave_at_once VALUES ({i})").as_bytes());
        bytes.extend_from_slice(&message(b'X', b""));
        wire.send(&bytes).await;
        wire.until_closed().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let metrics = get(&format!("{}/metrics", proxy.admin_url())).await.text();
    let opened = connects(&metrics);
    assert!(opened >= 1, "no primary connects counted: {metrics}");
    assert!(
        opened <= 3,
        "{opened} server connections opened for 20 clients writing one after the other"
    );
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT count(*) FROM leave_at_once")
            .trim(),
        "20"
    );
}

//! Multiplexing on the PostgreSQL frontend against a real PostgreSQL: with one server connection
//! per pool, other clients' autocommit reads are written onto it behind the work in flight. Each
//! client must still get exactly its own answers and errors, never run inside another client's
//! transaction or behind a statement known to be slow, cancel only its own statement, and
//! survive the connection's loss. Every test also checks that statements did ride, so none can
//! pass with multiplexing doing nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use switchyard_tests::http;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

/// One server connection per pool, multiplexed; an admin listener for the metrics.
fn config(pg: &PgCluster, cluster: &str) -> String {
    PgConfig::new(pg)
        .defaults("size = 1\nmultiplex = { enabled = true, max_depth = 8 }")
        .cluster(cluster)
        .extra("[admin]\nbind = \"127.0.0.1:0\"\n")
        .build()
}

/// Statements that rode so far (`switchyard_multiplexed_statements`, every pool and depth).
async fn rides(proxy: &Proxy) -> f64 {
    let reply = http::get(&format!("{}/metrics", proxy.admin_url())).await;
    reply
        .text()
        .lines()
        .filter(|l| l.starts_with("switchyard_multiplexed_statements"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn client(proxy: &Proxy) -> Arc<tokio_postgres::Client> {
    Arc::new(pg::connect(proxy.addr()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_clients_get_their_own_answers_and_errors() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&config(&pg, "")).await;
    let mut tasks = Vec::new();
    for c in 0..12i32 {
        let client = client(&proxy).await;
        tasks.push(tokio::spawn(async move {
            let stmt = client
                .prepare("SELECT $1::int AS c, $2::int AS i, 10 / ($2::int % 7) AS q")
                .await
                .expect("prepare");
            for i in 1..=120i32 {
                // Every seventh statement divides by zero: its error is this client's alone.
                let fails = i % 7 == 0;
                if i % 2 == 0 {
                    let sql = format!("SELECT {c}, {i}, 10 / ({i} % 7)");
                    match client.simple_query(&sql).await {
                        Ok(messages) => {
                            assert!(!fails, "client {c}: {sql} should have failed");
                            let row = messages
                                .iter()
                                .find_map(|m| match m {
                                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                                    _ => None,
                                })
                                .expect("a row");
                            assert_eq!(row.get(0), Some(c.to_string().as_str()), "client {c}");
                            assert_eq!(row.get(1), Some(i.to_string().as_str()), "client {c}");
                        }
                        Err(e) => {
                            assert!(fails, "client {c}: {sql}: {}", pg::describe(&e));
                            assert_eq!(pg::sqlstate(&e), "22012", "client {c}");
                        }
                    }
                } else {
                    match client.query_one(&stmt, &[&c, &i]).await {
                        Ok(row) => {
                            assert!(!fails, "client {c}: statement {i} should have failed");
                            assert_eq!(row.get::<_, i32>(0), c);
                            assert_eq!(row.get::<_, i32>(1), i);
                            assert_eq!(row.get::<_, i32>(2), 10 / (i % 7));
                        }
                        Err(e) => {
                            assert!(fails, "client {c}, statement {i}: {}", pg::describe(&e));
                            assert_eq!(pg::sqlstate(&e), "22012", "client {c}");
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let rode = rides(&proxy).await;
    assert!(rode > 0.0, "no statement rode on a busy connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_rides_inside_a_transaction_or_behind_a_slow_statement() {
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), "CREATE TABLE mx (id int)");
    // Reads after a write stay on the primary, so both clients share its one connection.
    let proxy = Proxy::start(&config(&pg, "read_your_writes = \"1h\"")).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    for c in [&a, &b] {
        c.simple_query("INSERT INTO mx VALUES (1)")
            .await
            .expect("insert");
    }

    // A transaction holds the connection: B's read waits for it instead of joining it.
    a.simple_query("BEGIN").await.expect("begin");
    let in_a = pg::query_one_text(&a, "SELECT now()::text").await;
    let before = rides(&proxy).await;
    let reader = b.clone();
    let read = tokio::spawn(async move {
        let now = pg::query_one_text(&reader, "SELECT now()::text").await;
        (now, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "B's read was answered inside A's transaction"
    );
    let committed = Instant::now();
    a.simple_query("COMMIT").await.expect("commit");
    let (in_b, answered) = read.await.expect("read");
    assert_ne!(in_a, in_b, "B's read ran inside A's transaction");
    assert!(answered >= committed);
    assert_eq!(rides(&proxy).await, before, "a statement rode behind BEGIN");

    // A statement shape known to take 300 ms neither carries nor rides.
    pg::query_one_text(&a, "SELECT pg_sleep(0.3)::text").await;
    let slow = a.clone();
    let sleeping = tokio::spawn(async move {
        pg::query_one_text(&slow, "SELECT pg_sleep(0.3)::text").await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pg::query_one_text(&b, "SELECT 'b'").await, "b");
    sleeping.await.expect("sleep");
    assert_eq!(
        rides(&proxy).await,
        before,
        "a statement rode behind a slow one"
    );

    // The same two clients do ride behind a fast statement (the test above can fail).
    let carrier = a.clone();
    let carrying = tokio::spawn(async move {
        pg::query_one_text(&carrier, "SELECT 'a' || pg_sleep(0.3)::text").await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(pg::query_one_text(&b, "SELECT 'b2'").await, "b2");
    assert_eq!(carrying.await.expect("carrier"), "a");
    assert!(
        rides(&proxy).await > before,
        "B did not ride behind A's read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_only_its_own_statement() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&config(&pg, "")).await;
    let c1 = client(&proxy).await;
    let c2 = client(&proxy).await;

    // Queued behind C1's statement: C2's cancel withdraws it; C1's is not touched.
    let carrier = c1.clone();
    let first = tokio::spawn(async move {
        pg::query_one_text(&carrier, "SELECT 'c1' || pg_sleep(0.8)::text").await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = rides(&proxy).await;
    let rider = c2.clone();
    let queued = tokio::spawn(async move { rider.simple_query("SELECT 'c2'").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rides(&proxy).await > before, "C2 did not ride");
    c2.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel C2");
    let e = queued
        .await
        .expect("task")
        .expect_err("C2's withdrawn statement must be answered as cancelled");
    assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
    assert_eq!(first.await.expect("C1"), "c1", "C1's statement was touched");
    assert_eq!(pg::query_one_text(&c2, "SELECT 'again'").await, "again");

    // Running behind C1's finished statement: C1's late cancel does not reach it, C2's own does.
    // (Shapes not seen above: the one C1 ran above is now known to take 800 ms.)
    let carrier = c1.clone();
    let first = tokio::spawn(async move {
        pg::query_one_text(&carrier, "SELECT pg_sleep(0.2)::text || 'one'").await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rides(&proxy).await;
    let rider = c2.clone();
    let started = Instant::now();
    let running =
        tokio::spawn(async move { rider.simple_query("SELECT pg_sleep(5)::text, 'two'").await });
    assert_eq!(first.await.expect("C1"), "one");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rides(&proxy).await > before, "C2 did not ride");
    c1.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel C1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "C1's cancel reached C2's statement: {:?}",
        running.await
    );
    c2.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel C2");
    let e = running
        .await
        .expect("task")
        .expect_err("C2's running statement must be cancelled");
    assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
    assert!(started.elapsed() < Duration::from_secs(5), "not cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_fails_only_what_was_on_it_and_reads_run_again() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&config(&pg, "")).await;
    let c1 = client(&proxy).await;
    let carrier = c1.clone();
    let first = tokio::spawn(async move {
        carrier
            .simple_query("SELECT 'c1' || pg_sleep(1)::text")
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = rides(&proxy).await;
    let mut riders = Vec::new();
    for name in ["c2", "c3", "c4"] {
        let c = client(&proxy).await;
        riders.push(tokio::spawn(async move {
            (c.simple_query(&format!("SELECT '{name}'")).await, name, c)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rides(&proxy).await > before, "nothing rode");
    let replica = pg.replica_ports()[0];
    pg.psql(
        replica,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(1)%' AND pid <> pg_backend_pid()",
    );
    for r in riders {
        let (answer, name, c) = r.await.expect("rider");
        let messages = answer.unwrap_or_else(|e| {
            panic!(
                "{name}: a read that rode must run again: {}",
                pg::describe(&e)
            )
        });
        let value = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        assert_eq!(value.as_deref(), Some(name));
        assert_eq!(pg::query_one_text(&c, "SELECT 'next'").await, "next");
    }
    // The carrier's own statement was the one the server was killed in.
    assert!(first.await.expect("C1").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_found_no_room_rides_before_later_ones() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .defaults("size = 1\nmultiplex = { enabled = true, max_depth = 3 }")
        .extra("[admin]\nbind = \"127.0.0.1:0\"\n")
        .build();
    let proxy = Proxy::start(&config).await;
    let c1 = client(&proxy).await;
    let (c2, c3, c4) = (
        client(&proxy).await,
        client(&proxy).await,
        client(&proxy).await,
    );
    let before = rides(&proxy).await;
    // C1 pipelines two statements of its own: the connection is C1's until both are answered.
    let (first, second) = (c1.clone(), c1.clone());
    let own = tokio::spawn(async move {
        tokio::join!(
            pg::query_one_text(&first, "SELECT 'a1' || pg_sleep(0.4)::text"),
            pg::query_one_text(&second, "SELECT pg_sleep(0.4)::text || 'a2'"),
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answered = |c: Arc<tokio_postgres::Client>, name: &'static str| {
        tokio::spawn(async move {
            let value = pg::query_one_text(&c, &format!("SELECT '{name}'")).await;
            (value, Instant::now())
        })
    };
    // C2 takes the last room (depth 3); C3 finds none and waits.
    let r2 = answered(c2, "c2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r3 = answered(c3, "c3");
    // Once C1's first statement is answered there is room again, and C4 comes after C3.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r4 = answered(c4, "c4");
    let (v2, _) = r2.await.expect("c2");
    let (v3, at3) = r3.await.expect("c3");
    let (v4, at4) = r4.await.expect("c4");
    assert_eq!((v2.as_str(), v3.as_str(), v4.as_str()), ("c2", "c3", "c4"));
    assert!(
        at3 <= at4,
        "C4 arrived after C3 found no room, yet was answered first"
    );
    let (a1, a2) = own.await.expect("c1");
    assert_eq!((a1.as_str(), a2.as_str()), ("a1", "a2"));
    assert!(
        rides(&proxy).await >= before + 2.0,
        "C3 did not ride when room appeared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_ride_taken_from_the_queue() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .defaults("size = 1\nmultiplex = { enabled = true, max_depth = 3 }")
        .extra("[admin]\nbind = \"127.0.0.1:0\"\n")
        .build();
    let proxy = Proxy::start(&config).await;
    let c1 = client(&proxy).await;
    let (c2, c3) = (client(&proxy).await, client(&proxy).await);
    let before = rides(&proxy).await;
    let (first, second) = (c1.clone(), c1.clone());
    let own = tokio::spawn(async move {
        tokio::join!(
            pg::query_one_text(&first, "SELECT 'a1' || pg_sleep(0.3)::text"),
            pg::query_one_text(&second, "SELECT pg_sleep(0.3)::text || 'a2'"),
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rider = c2.clone();
    let r2 = tokio::spawn(async move { pg::query_one_text(&rider, "SELECT 'c2'").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No room: C3 waits in the queue, and rides once C1's first statement is answered.
    let queued = c3.clone();
    let started = Instant::now();
    let r3 =
        tokio::spawn(async move { queued.simple_query("SELECT pg_sleep(5)::text, 'c3'").await });
    // C1's two statements and C2's are answered by ~0.7 s; C3's then runs on the server.
    let (a1, a2) = own.await.expect("c1");
    assert_eq!((a1.as_str(), a2.as_str()), ("a1", "a2"));
    assert_eq!(r2.await.expect("c2"), "c2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rides(&proxy).await >= before + 2.0,
        "C3 did not ride from the queue"
    );
    assert!(
        !r3.is_finished(),
        "C3's statement ended early: {:?}",
        r3.await
    );
    c3.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel C3");
    let e = r3
        .await
        .expect("task")
        .expect_err("C3's running statement must be cancelled");
    assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the cancel did not reach the carrier's connection"
    );
    assert_eq!(pg::query_one_text(&c1, "SELECT 'after'").await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_cancelled_while_it_waits_for_room_does_not_run() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .defaults("size = 1\nmultiplex = { enabled = true, max_depth = 2 }")
        .extra("[admin]\nbind = \"127.0.0.1:0\"\n")
        .build();
    let proxy = Proxy::start(&config).await;
    let c1 = client(&proxy).await;
    let (c2, c3) = (client(&proxy).await, client(&proxy).await);
    let carrier = c1.clone();
    let first = tokio::spawn(async move {
        pg::query_one_text(&carrier, "SELECT 'c1' || pg_sleep(0.4)::text").await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rider = c2.clone();
    let r2 = tokio::spawn(async move { pg::query_one_text(&rider, "SELECT 'c2'").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The connection is full (C1's statement and C2's): C3 waits for room or a connection.
    let waiting = c3.clone();
    let r3 = tokio::spawn(async move { waiting.simple_query("SELECT pg_sleep(1), 'c3'").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c3.cancel_token()
        .cancel_query(NoTls)
        .await
        .expect("cancel C3");
    let e = r3
        .await
        .expect("task")
        .expect_err("C3's statement was cancelled before it started");
    assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
    assert_eq!(first.await.expect("C1"), "c1");
    assert_eq!(r2.await.expect("C2"), "c2");
    assert_eq!(pg::query_one_text(&c3, "SELECT 'again'").await, "again");
}

//! The PostgreSQL frontend against a real primary and two streaming replicas: read/write
//! routing (psql, pgbench, tokio-postgres, psycopg), prepared statements shared across server
//! connections, COPY, LISTEN/NOTIFY, authentication, pool exhaustion and session mode, replica
//! failover and lag, cancellation, and malformed client input.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::{MD5_PASSWORD, MD5_USER, PgCluster};
use switchyard_tests::proxy::Proxy;

/// `pg_is_in_recovery()` and `inet_server_port()` of one statement through `client` (a simple
/// query: in transaction mode each one is routed and checked out on its own).
async fn where_read(client: &tokio_postgres::Client) -> (bool, u16) {
    let rows = client
        .simple_query("SELECT pg_is_in_recovery(), inet_server_port()")
        .await
        .unwrap_or_else(|e| panic!("read failed: {}", pg::describe(&e)));
    for m in rows {
        if let SimpleQueryMessage::Row(row) = m {
            return (
                row.get(0) == Some("t"),
                row.get(1).and_then(|p| p.parse().ok()).expect("a port"),
            );
        }
    }
    panic!("no row")
}

/// The server ports `n` reads landed on.
async fn read_ports(client: &tokio_postgres::Client, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        ports.push(where_read(client).await.1);
    }
    ports
}

/// Polls (every 100 ms, up to `within`) until `n` reads in a row satisfy `ok`; panics with the
/// last ports seen.
async fn await_reads(
    client: &tokio_postgres::Client,
    n: usize,
    within: Duration,
    what: &str,
    ok: impl Fn(&[u16]) -> bool,
) {
    let started = Instant::now();
    loop {
        let ports = read_ports(client, n).await;
        if ok(&ports) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{what}: reads still landed on {ports:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------------------------
// 1. psql: routing, transactions, multi-statement queries, errors, empty query
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_routes_reads_to_replicas_and_writes_to_primary() {
    let pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE routed (id serial PRIMARY KEY, v text)",
    );
    block(|| pg.wait_replicated());
    let replicas = pg.replica_ports();
    let primary = pg.primary_port().to_string();
    let proxy = Proxy::start(&PgConfig::new(&pg).build()).await;
    let addr = proxy.addr();

    // Reads: on a replica, and over several statements on both.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let out = pg::psql(addr, "SELECT pg_is_in_recovery(), inet_server_port()")
            .await
            .expect("read through the proxy");
        let (recovery, port) = out.split_once('|').expect("two columns");
        assert_eq!(recovery, "t", "a read ran on the primary: {out}");
        let port: u16 = port.parse().expect("a port");
        assert!(replicas.contains(&port), "read on port {port}: {out}");
        seen.insert(port);
    }
    assert_eq!(
        seen.len(),
        2,
        "reads should spread over both replicas: {seen:?}"
    );

    // A write: on the primary.
    let out = pg::psql(
        addr,
        "INSERT INTO routed (v) VALUES ('w') RETURNING inet_server_port()",
    )
    .await
    .expect("write through the proxy");
    assert_eq!(out.lines().next(), Some(primary.as_str()), "{out}");

    // A transaction: every statement, reads included, on the primary.
    let out = pg::psql_args(
        addr,
        pg::USER,
        pg::PASSWORD,
        &[
            "-c",
            "BEGIN",
            "-c",
            "SELECT pg_is_in_recovery(), inet_server_port()",
            "-c",
            "INSERT INTO routed (v) VALUES ('tx') RETURNING pg_is_in_recovery(), inet_server_port()",
            "-c",
            "SELECT pg_is_in_recovery(), inet_server_port(), count(*) FROM routed WHERE v = 'tx'",
            "-c",
            "COMMIT",
        ],
    )
    .await
    .expect("a transaction through the proxy");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains('|')).collect();
    assert_eq!(
        rows,
        vec![
            format!("f|{primary}"),
            format!("f|{primary}"),
            format!("f|{primary}|1")
        ],
        "{out}"
    );

    // Several statements in one simple Query, a write among them: all on the primary, the read
    // sees the write.
    let out = pg::psql(
        addr,
        "INSERT INTO routed (v) VALUES ('multi'); SELECT v, inet_server_port() FROM routed WHERE v = 'multi'",
    )
    .await
    .expect("multi-statement query");
    assert_eq!(
        out.lines().last(),
        Some(format!("multi|{primary}").as_str()),
        "{out}"
    );
    let out = pg::psql(addr, "SELECT 1; SELECT 2; SELECT 'three'")
        .await
        .expect("multi-statement read");
    assert_eq!(out, "1\n2\nthree");

    // An error, then the session goes on (simple and extended protocol); an empty query.
    let client = pg::connect(addr).await;
    let e = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(pg::sqlstate(&e), "22012", "{}", pg::describe(&e));
    assert_eq!(pg::query_one_text(&client, "SELECT 41 + 1").await, "42");
    let e = client
        .query("SELECT 1 / $1::int", &[&0i32])
        .await
        .expect_err("division by zero");
    assert_eq!(pg::sqlstate(&e), "22012", "{}", pg::describe(&e));
    let row = client
        .query_one("SELECT $1::int * 2", &[&21i32])
        .await
        .expect("after an error");
    assert_eq!(row.get::<_, i32>(0), 42);
    let e = client
        .batch_execute("BEGIN; SELECT 1/0")
        .await
        .expect_err("error inside a transaction");
    assert_eq!(pg::sqlstate(&e), "22012");
    let e = client.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(pg::sqlstate(&e), "25P02", "{}", pg::describe(&e));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let empty = client.simple_query("").await.expect("empty query");
    assert!(
        !empty
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(_))),
        "empty query returned rows"
    );
    client.simple_query(";").await.expect("only a semicolon");
    assert_eq!(
        pg::query_one_text(&client, "SELECT 'still here'").await,
        "still here"
    );
    assert_eq!(
        pg::psql(addr, "")
            .await
            .expect("psql with an empty command"),
        ""
    );

    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. pgbench in transaction mode: simple, extended, prepared, TPC-B
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_transaction_pooling() {
    let pg = PgCluster::start(2);
    let init = pg::pgbench(pg.primary_port(), &["-i", "-s", "1", "-q"]).await;
    assert!(init.success, "pgbench -i on the primary failed\n{init}");
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("size = 4").build()).await;
    let port = proxy.addr().port();
    let clients = ["-c", "16", "-j", "2", "-T", "3"];
    for mode in ["simple", "extended", "prepared"] {
        let mut args = vec!["-S", "-M", mode];
        args.extend(clients);
        let run = pg::pgbench(port, &args).await;
        let tps = run.assert_clean(&format!("pgbench -S -M {mode}"));
        eprintln!("pgbench -S -M {mode} through the proxy: {tps:.0} tps");
    }
    // One pgbench thread per client here: in prepared mode pgbench prepares each command with
    // a synchronous PQprepare the first time it runs it, which blocks the whole pgbench thread.
    // With 8 clients per thread and 4 server connections, a thread blocked preparing for one
    // client (waiting for a connection) starves its other clients that hold the connections
    // inside their transactions: a deadlock of the client, as with any transaction pooler.
    let run = pg::pgbench(port, &["-M", "prepared", "-c", "16", "-j", "16", "-T", "3"]).await;
    let tps = run.assert_clean("pgbench TPC-B -M prepared");
    eprintln!("pgbench TPC-B -M prepared through the proxy: {tps:.0} tps");
    // The TPC-B transactions really ran on the primary.
    let history: u64 = pg
        .psql(pg.primary_port(), "SELECT count(*) FROM pgbench_history")
        .parse()
        .expect("a count");
    assert_eq!(Some(history), run.processed(), "{run}");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. tokio-postgres and psycopg
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements_across_server_connections() {
    let pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE counters (client int, n int, PRIMARY KEY (client, n))",
    );
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("size = 2").build()).await;
    let addr = proxy.addr();

    let mut tasks = Vec::new();
    for c in 0..20i32 {
        tasks.push(tokio::spawn(async move {
            let mut client = pg::connect(addr).await;
            let read = client
                .prepare("SELECT $1::int + 1, pg_is_in_recovery()")
                .await
                .map_err(|e| format!("prepare read: {}", pg::describe(&e)))?;
            let insert = client
                .prepare("INSERT INTO counters (client, n) VALUES ($1, $2) RETURNING n")
                .await
                .map_err(|e| format!("prepare insert: {}", pg::describe(&e)))?;
            for n in 0..15i32 {
                let row = client
                    .query_one(&read, &[&n])
                    .await
                    .map_err(|e| format!("client {c} read {n}: {}", pg::describe(&e)))?;
                // The first read runs on a replica; later ones follow the client's own inserts
                // (on a replica that has replayed them, or on the primary).
                if row.get::<_, i32>(0) != n + 1 || (n == 0 && !row.get::<_, bool>(1)) {
                    return Err(format!("client {c} read {n}: wrong row"));
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(|e| format!("client {c} begin: {}", pg::describe(&e)))?;
                let row = tx
                    .query_one(&insert, &[&c, &n])
                    .await
                    .map_err(|e| format!("client {c} insert {n}: {}", pg::describe(&e)))?;
                if row.get::<_, i32>(0) != n {
                    return Err(format!("client {c} insert {n}: wrong row"));
                }
                let row = tx
                    .query_one(&read, &[&n])
                    .await
                    .map_err(|e| format!("client {c} read in tx {n}: {}", pg::describe(&e)))?;
                if row.get::<_, bool>(1) {
                    return Err(format!(
                        "client {c}: a read inside a transaction ran on a replica"
                    ));
                }
                tx.commit()
                    .await
                    .map_err(|e| format!("client {c} commit: {}", pg::describe(&e)))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.expect("client task").expect("client");
    }
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT count(*) FROM counters"),
        (20 * 15).to_string()
    );

    let mut client = pg::connect(addr).await;
    // query_typed: parameter types given, no Parse/Describe round trip; binary parameters and
    // results.
    let bytes: Vec<u8> = vec![0, 1, 2, 255, 0];
    let rows = client
        .query_typed(
            "SELECT $1 * 2, $2 || 'x', $3, $4",
            &[
                (&21i64, Type::INT8),
                (&"ab", Type::TEXT),
                (&bytes, Type::BYTEA),
                (&1.5f64, Type::FLOAT8),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("query_typed: {}", pg::describe(&e)));
    assert_eq!(rows[0].get::<_, i64>(0), 42);
    assert_eq!(rows[0].get::<_, &str>(1), "abx");
    assert_eq!(rows[0].get::<_, Vec<u8>>(2), bytes);
    assert_eq!(rows[0].get::<_, f64>(3), 1.5);
    let arr = client
        .query_one("SELECT $1::int4[]", &[&vec![1i32, 2, 3]])
        .await
        .expect("array parameter");
    assert_eq!(arr.get::<_, Vec<i32>>(0), vec![1, 2, 3]);

    // A rolled-back transaction leaves nothing.
    let tx = client.transaction().await.expect("begin");
    tx.execute("INSERT INTO counters VALUES (999, 1)", &[])
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        pg.psql(
            pg.primary_port(),
            "SELECT count(*) FROM counters WHERE client = 999"
        ),
        "0"
    );
    // The session still works after the rollback, on a fresh transaction.
    let tx = client.transaction().await.expect("begin again");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM counters", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 300);
    tx.commit().await.expect("commit");

    // COPY FROM STDIN and COPY TO STDOUT.
    pg.psql(pg.primary_port(), "CREATE TABLE copied (id int, v text)");
    let sink = client
        .copy_in("COPY copied (id, v) FROM STDIN")
        .await
        .unwrap_or_else(|e| panic!("copy_in: {}", pg::describe(&e)));
    let mut data = String::new();
    for i in 0..1000 {
        data.push_str(&format!("{i}\trow {i}\n"));
    }
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data.clone()))
        .await
        .expect("copy data");
    let copied = sink.finish().await.expect("copy done");
    assert_eq!(copied, 1000);
    block(|| pg.wait_replicated());
    let stream = client
        .copy_out("COPY (SELECT id, v FROM copied ORDER BY id) TO STDOUT")
        .await
        .unwrap_or_else(|e| panic!("copy_out: {}", pg::describe(&e)));
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("copy out data"));
    }
    assert_eq!(String::from_utf8(out).expect("utf-8"), data);
    // A failing COPY (bad data) is an error, and the session goes on.
    let sink = client
        .copy_in("COPY copied (id, v) FROM STDIN")
        .await
        .expect("copy_in");
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"not a number\tx\n"))
        .await
        .expect("copy data");
    let e = sink.finish().await.expect_err("bad COPY data");
    assert_eq!(pg::sqlstate(&e), "22P02", "{}", pg::describe(&e));
    assert_eq!(
        pg::query_one_text(&client, "SELECT 'after copy'").await,
        "after copy"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_in_session_mode() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("mode = \"session\"").build()).await;
    let addr = proxy.addr();
    let (listener, mut connection) =
        tokio_postgres::connect(&pg::conn_string(addr, pg::USER, pg::PASSWORD), NoTls)
            .await
            .expect("connect");
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
            }
        }
    });
    listener
        .batch_execute("LISTEN jobs")
        .await
        .unwrap_or_else(|e| panic!("LISTEN: {}", pg::describe(&e)));
    // Reads in between do not move the session off its server connection.
    let _ = pg::query_one_text(&listener, "SELECT 1").await;

    let notifier = pg::connect(addr).await;
    for i in 0..3 {
        notifier
            .batch_execute(&format!("NOTIFY jobs, 'job {i}'"))
            .await
            .unwrap_or_else(|e| panic!("NOTIFY: {}", pg::describe(&e)));
    }
    for i in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
            .await
            .unwrap_or_else(|_| panic!("notification {i} did not arrive"));
        assert_eq!(got, Some(("jobs".to_string(), format!("job {i}"))));
    }
    proxy.stop().await;
}

/// Where psycopg's virtualenv is (tests/run.sh creates it): `$SWITCHYARD_PYENV` or
/// `<workspace>/target/pyenv`.
pub(crate) fn pyenv_python() -> std::path::PathBuf {
    let dir = std::env::var_os("SWITCHYARD_PYENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv")
        });
    let python = dir.join("bin/python");
    assert!(
        python.exists(),
        "psycopg's virtualenv is missing at {}: run tests/run.sh, or \
         `python3 -m venv target/pyenv && target/pyenv/bin/pip install 'psycopg[binary]'`",
        dir.display()
    );
    python
}

const PSYCOPG_SCRIPT: &str = r#"
import sys, threading, time
import psycopg

dsn = sys.argv[1]
with psycopg.connect(dsn, autocommit=True) as conn:
    # Parameters (psycopg 3 binds server-side, extended protocol).
    row = conn.execute("SELECT %s::int + 1, %s::text || '!', pg_is_in_recovery()", (41, "hi")).fetchone()
    assert row == (42, "hi!", True), row
    # Prepared after prepare_threshold executions (named server-side statements _pg3_N).
    for i in range(10):
        row = conn.execute("SELECT %s::int * 2", (i,), prepare=True).fetchone()
        assert row == (i * 2,), row
    conn.execute("CREATE TABLE py_items (id int PRIMARY KEY, name text)")
    with conn.cursor() as cur:
        # executemany: pipeline mode (many Bind/Execute without a Sync in between).
        cur.executemany("INSERT INTO py_items (id, name) VALUES (%s, %s)",
                        [(i, f"item {i}") for i in range(500)])
    # A transaction with a server-side cursor (DECLARE ... FETCH in chunks).
    with conn.transaction():
        with conn.cursor(name="items_cursor") as cur:
            cur.itersize = 50
            cur.execute("SELECT id, name FROM py_items WHERE id % 2 = 0 ORDER BY id")
            rows = list(cur)
    assert len(rows) == 250 and rows[0] == (0, "item 0") and rows[-1] == (498, "item 498"), len(rows)
    with conn.transaction():
        cur = conn.execute("SELECT count(*) FROM py_items WHERE name LIKE %s", ("item 1%",))
        assert cur.fetchone() == (111,)
    # Cancel a long query from another thread.
    def cancel():
        time.sleep(1.0)
        conn.cancel()
    t = threading.Thread(target=cancel)
    t.start()
    started = time.monotonic()
    try:
        conn.execute("SELECT pg_sleep(30)")
        raise SystemExit("pg_sleep was not cancelled")
    except psycopg.errors.QueryCanceled:
        pass
    t.join()
    assert time.monotonic() - started < 10, "cancel took too long"
    assert conn.execute("SELECT 'alive'").fetchone() == ("alive",)
print("PSYCOPG OK")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_parameters_executemany_cursor_cancel() {
    let python = pyenv_python();
    let pg = PgCluster::start(2);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .cluster("read_your_writes = \"2s\"")
            .build(),
    )
    .await;
    let addr = proxy.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("psycopg_test.py");
    std::fs::write(&script, PSYCOPG_SCRIPT).expect("write the script");
    let dsn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=appdb connect_timeout=10",
        addr.port(),
        pg::USER,
        pg::PASSWORD
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&dsn)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the psycopg script finishes within 60 s")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PSYCOPG OK"),
        "psycopg script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT count(*) FROM py_items"),
        "500"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_methods_and_refusals() {
    let pg = PgCluster::start(1);
    let extra = format!(
        r#"
[[user]]
name = "md5client"
password = "md5client_pw"
auth = "md5"

[[user]]
name = "viamd5"
password = "viamd5_pw"
backend = {{ user = "{MD5_USER}", password = "{MD5_PASSWORD}" }}

[[user]]
name = "trusted"
auth = "trust"
allowed_networks = ["127.0.0.0/8"]

[[user]]
name = "faraway"
password = "faraway_pw"
allowed_networks = ["10.0.0.0/8"]
"#
    );
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(&extra).build()).await;
    let addr = proxy.addr();

    // Wrong password and unknown user: the same 28P01 answer.
    let e = pg::connect_as(addr, pg::USER, "wrong")
        .await
        .map(|_| ())
        .expect_err("a wrong password is refused");
    assert_eq!(pg::sqlstate(&e), "28P01", "{}", pg::describe(&e));
    let wrong_message = e
        .as_db_error()
        .expect("a server error")
        .message()
        .to_owned();
    assert!(
        wrong_message.contains("password authentication failed for user \"app\""),
        "{wrong_message}"
    );
    let e = pg::connect_as(addr, "nobody", "whatever")
        .await
        .map(|_| ())
        .expect_err("an unknown user is refused");
    assert_eq!(pg::sqlstate(&e), "28P01", "{}", pg::describe(&e));
    assert_eq!(
        e.as_db_error().expect("a server error").message(),
        wrong_message.replace("\"app\"", "\"nobody\""),
        "an unknown user must look like a wrong password"
    );
    let out = pg::psql_as(addr, "app", "wrong", "SELECT 1").await;
    assert!(
        out.as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "{out:?}"
    );

    // md5 from the client.
    let client = pg::connect_as(addr, "md5client", "md5client_pw")
        .await
        .unwrap_or_else(|e| panic!("md5 login: {}", pg::describe(&e)));
    assert_eq!(
        pg::query_one_text(&client, "SELECT current_user").await,
        "app"
    );
    let e = pg::connect_as(addr, "md5client", "nope")
        .await
        .map(|_| ())
        .expect_err("a wrong md5 password is refused");
    assert_eq!(pg::sqlstate(&e), "28P01", "{}", pg::describe(&e));

    // md5 towards the server (md5user is authenticated with md5 by PostgreSQL), reads and
    // writes.
    let client = pg::connect_as(addr, "viamd5", "viamd5_pw")
        .await
        .unwrap_or_else(|e| panic!("login: {}", pg::describe(&e)));
    assert_eq!(
        pg::query_one_text(&client, "SELECT current_user").await,
        MD5_USER
    );
    assert_eq!(
        pg::query_one_text(
            &client,
            "CREATE TABLE md5_made (x int); INSERT INTO md5_made VALUES (1); SELECT current_user"
        )
        .await,
        MD5_USER
    );

    // trust: no password asked.
    let client = pg::connect_as(addr, "trusted", "")
        .await
        .unwrap_or_else(|e| panic!("trust login: {}", pg::describe(&e)));
    assert_eq!(
        pg::query_one_text(&client, "SELECT 'trusted'").await,
        "trusted"
    );
    let out = pg::psql_as(addr, "trusted", "", "SELECT 2").await;
    assert_eq!(out, Ok("2".into()));

    // allowed_networks: refused like a wrong password, even with the right one, so that the
    // answer does not tell a client outside the network which names exist.
    let e = pg::connect_as(addr, "faraway", "faraway_pw")
        .await
        .map(|_| ())
        .expect_err("a client outside allowed_networks is refused");
    assert_eq!(pg::sqlstate(&e), "28P01", "{}", pg::describe(&e));

    // The refusals did not hurt the others.
    let client = pg::connect(addr).await;
    assert_eq!(pg::query_one_text(&client, "SELECT 'ok'").await, "ok");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Pool exhaustion and session mode
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_fails_with_53300_then_recovers() {
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), "CREATE TABLE exhaust (x int)");
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .primary_pool("size = 1\ncheckout_timeout = \"300ms\"")
            .build(),
    )
    .await;
    let addr = proxy.addr();
    let holder = pg::connect(addr).await;
    let waiter = pg::connect(addr).await;
    holder
        .batch_execute("BEGIN; INSERT INTO exhaust VALUES (1)")
        .await
        .expect("open transaction");
    let started = Instant::now();
    let e = waiter
        .batch_execute("INSERT INTO exhaust VALUES (2)")
        .await
        .expect_err("the only primary connection is taken");
    let waited = started.elapsed();
    assert_eq!(pg::sqlstate(&e), "53300", "{}", pg::describe(&e));
    let message = e.as_db_error().expect("db error").message().to_owned();
    assert!(
        message.contains("no server connection available") && message.contains("primary"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "waited {waited:?} for a 300ms checkout_timeout"
    );
    // Reads still work meanwhile (replica pool).
    assert_eq!(pg::query_one_text(&waiter, "SELECT 'read'").await, "read");
    holder.batch_execute("COMMIT").await.expect("commit");
    waiter
        .batch_execute("INSERT INTO exhaust VALUES (2)")
        .await
        .unwrap_or_else(|e| panic!("after the commit: {}", pg::describe(&e)));
    assert_eq!(
        pg.psql(
            pg.primary_port(),
            "SELECT string_agg(x::text, ',' ORDER BY x) FROM exhaust"
        ),
        "1,2"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_state_and_discards_it_after_disconnect() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .defaults("mode = \"session\"\nsize = 1")
            .build(),
    )
    .await;
    let addr = proxy.addr();

    let first = pg::connect(addr).await;
    first
        .batch_execute("SET statement_timeout = '12345ms'")
        .await
        .expect("SET");
    first
        .batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (7)")
        .await
        .unwrap_or_else(|e| panic!("temp table: {}", pg::describe(&e)));
    let pid = pg::query_one_text(&first, "SELECT pg_backend_pid()").await;
    for _ in 0..3 {
        assert_eq!(
            pg::query_one_text(&first, "SELECT x FROM scratch").await,
            "7"
        );
        assert_eq!(
            pg::query_one_text(&first, "SHOW statement_timeout").await,
            "12345ms"
        );
        assert_eq!(
            pg::query_one_text(&first, "SELECT pg_backend_pid()").await,
            pid
        );
    }
    let row = first
        .query_one("SELECT x FROM scratch WHERE x = $1", &[&7i32])
        .await
        .expect("extended query on the temp table");
    assert_eq!(row.get::<_, i32>(0), 7);
    drop(first);

    // The next client gets the same server connection (size 1), without the state.
    let started = Instant::now();
    let second = loop {
        let second = pg::connect(addr).await;
        let got = pg::query_one_text(&second, "BEGIN; SELECT pg_backend_pid()").await;
        if got == pid {
            break second;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the primary's only server connection was not reused (pid {got}, was {pid})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        pg::query_one_text(&second, "SHOW statement_timeout").await,
        "0"
    );
    assert_eq!(
        pg::query_one_text(
            &second,
            "SELECT count(*) FROM pg_class WHERE relname = 'scratch' AND relpersistence = 't'"
        )
        .await,
        "0"
    );
    second.batch_execute("COMMIT").await.expect("commit");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_write_after_read() {
    // A session-mode client whose first statement is a read must still be able to write.
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), "CREATE TABLE sess_rw (x int)");
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("mode = \"session\"").build()).await;
    let client = pg::connect(proxy.addr()).await;
    assert_eq!(pg::query_one_text(&client, "SELECT 1").await, "1");
    client
        .batch_execute("INSERT INTO sess_rw VALUES (1)")
        .await
        .unwrap_or_else(|e| panic!("a write after a read in session mode: {}", pg::describe(&e)));
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT count(*) FROM sess_rw"),
        "1"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Replica failover, fallback to the primary, replica lag
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_failover_fallback_and_lag() {
    if std::env::var_os("SWITCHYARD_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let mut pg = PgCluster::start(2);
    let init = pg::pgbench(pg.primary_port(), &["-i", "-s", "1", "-q"]).await;
    assert!(init.success, "pgbench -i failed\n{init}");
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE lag_filler (x int, pad text)",
    );
    block(|| pg.wait_replicated());
    let replicas = pg.replica_ports();
    let primary = pg.primary_port();
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .replica_pool("max_replica_lag_bytes = 65536")
            .build(),
    )
    .await;
    let addr = proxy.addr();
    let client = pg::connect(addr).await;
    await_reads(&client, 10, Duration::from_secs(5), "both replicas", |p| {
        p.contains(&replicas[0]) && p.contains(&replicas[1])
    })
    .await;

    // Replica 0 dies under load: no read fails.
    let bench = tokio::spawn(pg::pgbench(
        addr.port(),
        &["-S", "-M", "extended", "-c", "8", "-j", "2", "-T", "6"],
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    block(|| pg.stop_replica(0));
    let run = bench.await.expect("pgbench task");
    run.assert_clean("pgbench -S while a replica stops");
    let ports = read_ports(&client, 10).await;
    assert!(
        ports.iter().all(|p| *p == replicas[1]),
        "reads after replica 0 stopped: {ports:?} (replica 1 is {})",
        replicas[1]
    );

    // Both replicas down: reads fall back to the primary.
    block(|| pg.stop_replica(1));
    await_reads(
        &client,
        5,
        Duration::from_secs(5),
        "fallback to the primary",
        |p| p.iter().all(|p| *p == primary),
    )
    .await;
    let (recovery, _) = where_read(&client).await;
    assert!(!recovery);

    // Back: reads return to both replicas.
    block(|| {
        pg.start_replica(0);
        pg.start_replica(1);
        pg.wait_replicated();
    });
    // Restarted replicas must replay what they missed and pass a health check first; under the
    // full suite on 2 cores that once took longer than 10 s.
    await_reads(&client, 10, Duration::from_secs(30), "replicas back", |p| {
        p.contains(&replicas[0]) && p.contains(&replicas[1])
    })
    .await;

    // Replica 0 stops replaying while the primary writes: it leaves rotation, then returns.
    block(|| pg.pause_replay(0));
    pg.psql(
        primary,
        "INSERT INTO lag_filler SELECT g, repeat('x', 500) FROM generate_series(1, 4000) g",
    );
    let started = Instant::now();
    while pg.replica_lag_bytes(0) < 65536 * 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica 0 did not receive the WAL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Generous: the lag is seen after a position poll of the primary and then of the replica
    // (every 100 ms), which a loaded CI box can stretch. On failure, say what the proxy
    // measured (this step failed a few times in a row once and could not be reproduced since).
    let started = Instant::now();
    loop {
        let ports = read_ports(&client, 20).await;
        if ports.iter().all(|p| *p == replicas[1]) {
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let metrics = switchyard::metrics::render(&proxy.deps.metrics).unwrap_or_default();
            let nodes: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("switchyard_replica_lag")
                        || l.starts_with("switchyard_node_up")
                        || l.starts_with("switchyard_node_healthy")
                        || l.starts_with("switchyard_node_in_recovery")
                })
                .collect();
            panic!(
                "lagging replica out: reads still landed on {ports:?} after 15s; replica 0 \
                 reports {} bytes behind; the proxy measured:\n{}",
                pg.replica_lag_bytes(0),
                nodes.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it stays out while it lags.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ports = read_ports(&client, 20).await;
    assert!(
        ports.iter().all(|p| *p == replicas[1]),
        "a lagging replica got reads: {ports:?}"
    );
    block(|| {
        pg.resume_replay(0);
        pg.wait_replicated();
    });
    await_reads(
        &client,
        10,
        Duration::from_secs(5),
        "caught-up replica back",
        |p| p.contains(&replicas[0]),
    )
    .await;
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Cancel
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_query() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).build()).await;
    let addr = proxy.addr();
    let client = pg::connect(addr).await;
    let bystander = pg::connect(addr).await;
    for sql in ["SELECT pg_sleep(30)", "BEGIN; SELECT pg_sleep(30)"] {
        let token = client.cancel_token();
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            token.cancel_query(NoTls).await
        });
        let started = Instant::now();
        let e = client
            .batch_execute(sql)
            .await
            .expect_err("the sleep is cancelled");
        let took = started.elapsed();
        canceller
            .await
            .expect("cancel task")
            .unwrap_or_else(|e| panic!("cancel request: {e}"));
        assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
        assert!(took < Duration::from_secs(5), "cancel took {took:?}");
        if sql.starts_with("BEGIN") {
            client.batch_execute("ROLLBACK").await.expect("rollback");
        }
        assert_eq!(pg::query_one_text(&client, "SELECT 'alive'").await, "alive");
    }
    // A cancel with the wrong key does nothing.
    let sleeper = pg::connect(addr).await;
    let running = tokio::spawn(async move { sleeper.batch_execute("SELECT pg_sleep(1.5)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    let mut cancel = BytesMut::new();
    cancel.put_i32(16);
    cancel.put_i32(80877102);
    cancel.put_i32(12345);
    cancel.put_i32(67890);
    raw.write_all(&cancel).await.expect("send a bogus cancel");
    drop(raw);
    running
        .await
        .expect("task")
        .unwrap_or_else(|e| panic!("a bogus cancel hit a query: {}", pg::describe(&e)));
    assert_eq!(pg::query_one_text(&bystander, "SELECT 'ok'").await, "ok");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Malformed input
// ---------------------------------------------------------------------------------------------

/// A raw protocol client.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

fn startup_packet(version: i32, params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

fn query_message(sql: &str) -> BytesMut {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> Option<String> {
    let mut fields = body.split(|b| *b == 0);
    for f in fields.by_ref() {
        if let Some((&b'C', code)) = f.split_first() {
            return Some(String::from_utf8_lossy(code).into_owned());
        }
    }
    None
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    /// Logs in as the trust user and waits for ReadyForQuery.
    async fn login(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.send(&startup_packet(
            196608,
            &[("user", "rawtrust"), ("database", "appdb")],
        ))
        .await;
        let msgs = raw.until_ready().await;
        assert!(
            msgs.iter()
                .any(|(t, b)| *t == b'R' && b[..4] == [0, 0, 0, 0]),
            "no AuthenticationOk: {msgs:?}"
        );
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next message; `None` at end of stream (or a reset).
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let msg = self.buf.split_to(total);
                    return Some((msg[0], msg[5..].to_vec()));
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("the proxy answers within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
        panic!("connection closed before ReadyForQuery: {out:?}")
    }

    /// Everything until the proxy closes the connection.
    async fn until_closed(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m);
            assert!(out.len() < 1000, "the proxy keeps talking: {out:?}");
        }
        out
    }
}

/// Only ErrorResponses with SQLSTATE 08P01 (or nothing at all: a clean close).
fn assert_protocol_errors(what: &str, msgs: &[(u8, Vec<u8>)]) {
    for (tag, body) in msgs {
        match tag {
            b'E' => assert_eq!(
                error_code(body).as_deref(),
                Some("08P01"),
                "{what}: {}",
                String::from_utf8_lossy(body)
            ),
            other => panic!(
                "{what}: unexpected message {:?}: {}",
                *other as char,
                String::from_utf8_lossy(body)
            ),
        }
    }
}

/// One failure bans a node for a minute: a node banned because of a client's garbage shows.
const LONG_BANS: &str =
    "health = { interval = \"1s\", timeout = \"1s\", failures_before_ban = 1, ban_time = \"60s\" }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_only_affects_its_own_client() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            // The other client's reads right after its writes wait for the replica.
            .cluster("causal_wait = \"5s\"")
            .primary_pool(LONG_BANS)
            .replica_pool(LONG_BANS)
            .extra("[[user]]\nname = \"rawtrust\"\nauth = \"trust\"\n")
            .build(),
    )
    .await;
    let addr = proxy.addr();
    let primary = pg.primary_port();
    let replica = pg.replica_ports()[0];
    pg.psql(primary, "CREATE TABLE survivors (x int)");
    let other = pg::connect(addr).await;
    let mut checks = 0;
    let mut check_other = async |what: &str| {
        checks += 1;
        other
            .batch_execute(&format!("INSERT INTO survivors VALUES ({checks})"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "after {what}: the other client's write: {}",
                    pg::describe(&e)
                )
            });
        let (recovery, port) = where_read(&other).await;
        assert!(recovery && port == replica, "after {what}: read on {port}");
        // And new logins still work.
        let mut fresh = Raw::login(addr).await;
        fresh.send(&query_message("SELECT 1")).await;
        let msgs = fresh.until_ready().await;
        assert!(
            msgs.iter().any(|(t, _)| *t == b'D'),
            "after {what}: {msgs:?}"
        );
    };

    // The raw login itself works, and a query on it.
    let mut raw = Raw::login(addr).await;
    raw.send(&query_message("SELECT 1")).await;
    let msgs = raw.until_ready().await;
    assert!(msgs.iter().any(|(t, _)| *t == b'D'), "{msgs:?}");

    // A message declaring a huge length.
    let mut huge = BytesMut::new();
    huge.put_u8(b'Q');
    huge.put_i32(i32::MAX);
    huge.put_slice(b"SELECT 1");
    raw.send(&huge).await;
    let msgs = raw.until_closed().await;
    assert!(!msgs.is_empty(), "huge length: no error before the close");
    assert_protocol_errors("huge length", &msgs);
    check_other("a huge length").await;

    // A negative / too small length.
    let mut raw = Raw::login(addr).await;
    raw.send(&[b'Q', 0, 0, 0, 2]).await;
    let msgs = raw.until_closed().await;
    assert_protocol_errors("length 2", &msgs);
    check_other("a length of 2").await;

    // A truncated message, then the client closes.
    let mut raw = Raw::login(addr).await;
    let full = query_message("SELECT 'this will be cut'");
    raw.send(&full[..10]).await;
    raw.stream.shutdown().await.expect("half-close");
    let msgs = raw.until_closed().await;
    assert_protocol_errors("truncated", &msgs);
    check_other("a truncated message").await;

    // A Bind whose body is cut short, then Sync: an error, and the session goes on.
    let mut raw = Raw::login(addr).await;
    let mut batch = message(b'P', b"\0SELECT $1::int\0\0\0");
    batch.extend_from_slice(&message(b'B', b"\0\0\0\x01"));
    batch.extend_from_slice(&message(b'S', b""));
    raw.send(&batch).await;
    let mut msgs = Vec::new();
    let mut closed = true;
    while let Some(m) = raw.next().await {
        let done = m.0 == b'Z';
        msgs.push(m);
        if done {
            closed = false;
            break;
        }
    }
    let errors: Vec<_> = msgs.iter().filter(|(t, _)| *t == b'E').collect();
    assert!(!errors.is_empty(), "bad Bind: no error: {msgs:?}");
    for (_, body) in &errors {
        assert_eq!(
            error_code(body).as_deref(),
            Some("08P01"),
            "bad Bind: {}",
            String::from_utf8_lossy(body)
        );
    }
    if !closed {
        raw.send(&query_message("SELECT 'after bad bind'")).await;
        let msgs = raw.until_ready().await;
        assert!(
            msgs.iter().any(|(t, _)| *t == b'D'),
            "after a bad Bind: {msgs:?}"
        );
    }
    check_other("a bad Bind").await;

    // A Bind naming a statement that does not exist.
    let mut raw = Raw::login(addr).await;
    let mut batch = message(b'B', b"\0nosuch\0\0\0\0\0\0\0");
    batch.extend_from_slice(&message(b'S', b""));
    raw.send(&batch).await;
    let msgs = raw.until_ready().await;
    assert!(
        msgs.iter()
            .any(|(t, b)| *t == b'E' && error_code(b).as_deref() == Some("26000")),
        "{msgs:?}"
    );
    check_other("a Bind of an unknown statement").await;

    // Garbage: unknown message types, random bytes.
    let mut seed: u64 = 0x5eed_1234_abcd_0042;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 24) as u8
    };
    let unknown_tag = {
        let mut m = message(b'z', b"garbage here");
        m.extend_from_slice(&message(b'S', b""));
        m
    };
    let mut garbage_cases: Vec<(String, Vec<u8>)> =
        vec![("an unknown message type".into(), unknown_tag.to_vec())];
    for i in 0..4 {
        let bytes: Vec<u8> = (0..64 + i * 97).map(|_| random()).collect();
        garbage_cases.push((format!("random bytes #{i}"), bytes));
    }
    for (what, bytes) in garbage_cases {
        let mut raw = Raw::login(addr).await;
        raw.send(&bytes).await;
        let _ = raw.stream.shutdown().await;
        let msgs = raw.until_closed().await;
        for (tag, body) in &msgs {
            if *tag == b'E' {
                let code = error_code(body);
                assert!(
                    code.as_deref() == Some("08P01"),
                    "{what}: {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        check_other(&what).await;
    }

    // Startup: a bad protocol version, an oversized packet, a tiny length.
    for (what, packet) in [
        (
            "protocol 2.0",
            startup_packet(0x0002_0000, &[("user", "rawtrust")]).to_vec(),
        ),
        (
            "protocol 4.0",
            startup_packet(0x0004_0000, &[("user", "rawtrust")]).to_vec(),
        ),
        ("oversized startup", {
            let big = "x".repeat(20_000);
            startup_packet(196608, &[("user", "rawtrust"), ("options", &big)]).to_vec()
        }),
        ("startup length 3", vec![0, 0, 0, 3, 0, 3, 0, 0]),
        (
            "startup length 2^31-1",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0],
        ),
    ] {
        let mut raw = Raw::connect(addr).await;
        raw.send(&packet).await;
        let msgs = raw.until_closed().await;
        assert!(!msgs.is_empty(), "{what}: closed without an error");
        for (tag, body) in &msgs {
            assert_eq!(*tag, b'E', "{what}: {}", String::from_utf8_lossy(body));
            let code = error_code(body);
            assert!(
                matches!(code.as_deref(), Some("08P01") | Some("0A000")),
                "{what}: {}",
                String::from_utf8_lossy(body)
            );
        }
        check_other(what).await;
    }
    proxy.stop().await;
}

/// psql against the proxy with a conninfo `sslmode`; stdout or stderr.
async fn psql_sslmode(proxy: SocketAddr, sslmode: &str, command: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "host={} port={} user=app dbname=appdb sslmode={sslmode} connect_timeout=10",
            proxy.ip(),
            proxy.port()
        ))
        .args(["-X", "-At", "-c", command])
        .env("PGPASSWORD", "app_pass")
        .output()
        .await
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// TLS on the listener: SSLRequest is answered with a real TLS handshake (rustls), queries run
/// over it, and with `required = true` a client that does not ask for TLS is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_and_can_require_tls() {
    let tls = switchyard_tests::tls::SelfSigned::new();
    let (cert, key) = (&tls.cert, &tls.key);
    let pg = PgCluster::start(1);
    for required in [false, true] {
        let config = PgConfig::new(&pg)
            .listener(&format!(
                "tls = {{ cert = \"{}\", key = \"{}\", required = {required} }}",
                cert.display(),
                key.display()
            ))
            .build();
        let proxy = Proxy::start(&config).await;
        let info = psql_sslmode(proxy.addr(), "require", "\\conninfo")
            .await
            .expect("a TLS client is served");
        assert!(info.contains("SSL connection"), "{info}");
        let answer = psql_sslmode(proxy.addr(), "require", "SELECT 40 + 2")
            .await
            .expect("a query over TLS");
        assert_eq!(answer, "42");
        let plain = psql_sslmode(proxy.addr(), "disable", "SELECT 1").await;
        if required {
            let error = plain.expect_err("plain text is refused when TLS is required");
            assert!(error.contains("SSL required"), "{error}");
        } else {
            assert_eq!(
                plain.as_deref(),
                Ok("1"),
                "plain text still works when TLS is optional"
            );
        }
        proxy.stop().await;
    }
}

//! PostgreSQL frontend, part B: what the policy decides (block, rewrite, failure modes, routing),
//! the query cache, the admin console, `SET` tracking in transaction pooling and
//! read-your-writes — against a real primary with streaming replicas.
//!
//! Byte-level checks use [`Raw`], a minimal wire-protocol client (a `trust` user, so no SCRAM),
//! which sees every message the proxy sends exactly as sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::SimpleQueryMessage;

use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::{APP_PASSWORD, APP_USER, DATABASE, PgCluster};
use switchyard_tests::proxy::Proxy;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `[policy]` with the example policy `name`, `fail_mode` and `[policy.config]` lines.
fn policy(name: &str, fail_mode: &str, config: &str) -> String {
    format!(
        "[policy]\npath = \"{}\"\nfail_mode = \"{fail_mode}\"\nwatch = false\n[policy.config]\n{config}\n",
        policy_wasm(name).display()
    )
}

/// A proxy user without a password (for [`Raw`]); backend login from the pools' `auth`.
const RAW_USER: &str = "raw";
const RAW_USER_TOML: &str = "[[user]]\nname = \"raw\"\nauth = \"trust\"\n";

/// A second password user.
const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bob_pw";
const BOB_TOML: &str = "[[user]]\nname = \"bob\"\npassword = \"bob_pw\"\n";

/// tokio-postgres as `app` with extra connection-string keys (`application_name=x`,
/// `dbname=switchyard`, which override the defaults).
async fn connect_with(
    addr: SocketAddr,
    user: &str,
    password: &str,
    extra: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!("{} {extra}", pg::conn_string(addr, user, password));
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Column names and rows of a simple query (of its last result set).
async fn simple(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(Vec<String>, Vec<Vec<String>>), tokio_postgres::Error> {
    let mut columns = Vec::new();
    let mut out = Vec::new();
    for m in client.simple_query(sql).await? {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
                out.clear();
            }
            SimpleQueryMessage::Row(row) => out.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => {}
        }
    }
    Ok((columns, out))
}

/// The single value of a simple query.
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    pg::query_one_text(client, sql).await
}

/// `SQLSTATE: message` of an error that must be a database error.
fn db_error<T: std::fmt::Debug>(
    r: Result<T, tokio_postgres::Error>,
    what: &str,
) -> (String, String) {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) => (db.code().code().to_string(), db.message().to_string()),
            None => panic!("{what}: expected a database error, got {e:?}"),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Raw wire-protocol client
// ---------------------------------------------------------------------------------------------

/// One backend message: tag and body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    fn cstr(b: &[u8]) -> (String, &[u8]) {
        let end = b.iter().position(|&c| c == 0).expect("a C string");
        (
            String::from_utf8_lossy(&b[..end]).into_owned(),
            &b[end + 1..],
        )
    }

    /// RowDescription: the column names.
    fn columns(&self) -> Vec<String> {
        assert_eq!(self.tag, b'T', "not a RowDescription: {self:?}");
        let n = u16::from_be_bytes([self.body[0], self.body[1]]);
        let mut rest = &self.body[2..];
        let mut names = Vec::new();
        for _ in 0..n {
            let (name, r) = Msg::cstr(rest);
            names.push(name);
            rest = &r[18..];
        }
        assert!(rest.is_empty(), "trailing bytes in RowDescription");
        names
    }

    /// DataRow: the values as text.
    fn values(&self) -> Vec<Option<String>> {
        assert_eq!(self.tag, b'D', "not a DataRow: {self:?}");
        let n = u16::from_be_bytes([self.body[0], self.body[1]]);
        let mut rest = &self.body[2..];
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            rest = &rest[4..];
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(String::from_utf8_lossy(&rest[..len]).into_owned()));
                rest = &rest[len..];
            }
        }
        assert!(rest.is_empty(), "trailing bytes in DataRow");
        out
    }

    /// CommandComplete: the tag.
    fn command_tag(&self) -> String {
        assert_eq!(self.tag, b'C', "not a CommandComplete: {self:?}");
        let (tag, rest) = Msg::cstr(&self.body);
        assert!(rest.is_empty());
        tag
    }
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

/// A wire-protocol v3 client for a `trust` user.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr, user: &str, params: &[(&str, &str)]) -> Raw {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", DATABASE)]
            .iter()
            .chain(params.iter())
        {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.stream.write_all(&packet).await.expect("send startup");
        let login = raw.until_ready().await;
        assert_eq!(login[0].tag, b'R', "login: {login:?}");
        raw
    }

    async fn message(&mut self) -> Msg {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let msg = Msg {
                        tag: self.buf[0],
                        body: self.buf[5..1 + len].to_vec(),
                    };
                    self.buf.drain(..1 + len);
                    return msg;
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("an answer within 10s")
                .expect("read from the proxy");
            assert!(n > 0, "the proxy closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Every message up to and including ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.message().await;
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }

    async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        self.stream
            .write_all(&out)
            .await
            .expect("send to the proxy");
    }

    /// A simple Query; the answer up to ReadyForQuery.
    async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await;
        self.until_ready().await
    }

    /// Parse (unnamed) + Bind (text parameters) + Describe portal + Execute + Sync.
    async fn extended(&mut self, sql: &str, params: &[&str]) -> Vec<Msg> {
        let mut parse = vec![0u8];
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        let mut bind = vec![0u8, 0u8, 0, 0];
        bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
            bind.extend_from_slice(p.as_bytes());
        }
        bind.extend_from_slice(&[0, 0]);
        self.send(b'P', &parse).await;
        self.send(b'B', &bind).await;
        self.send(b'D', b"P\0").await;
        self.send(b'E', &[0, 0, 0, 0, 0]).await;
        self.send(b'S', &[]).await;
        self.until_ready().await
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Policy outcomes
// ---------------------------------------------------------------------------------------------

/// `guard`: a DELETE/UPDATE without WHERE and a DROP get 42501 with the policy's reason over
/// the simple protocol (psql) and the extended one (tokio-postgres with parameters); nothing
/// reaches the server, and the session goes on — also inside an open transaction, whose work
/// commits. An unbounded SELECT is rewritten with `LIMIT 3` in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_blocks_with_42501_and_rewrites_in_both_protocols() {
    let pg = PgCluster::start(1);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE g (id int PRIMARY KEY, v text); \
         INSERT INTO g SELECT i, 'v' || i FROM generate_series(1, 10) i;",
    );
    pg.wait_replicated();
    let config = PgConfig::new(&pg)
        .extra(&policy("guard", "fail-closed", "\"limit.*\" = 3"))
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();

    // Simple protocol, psql: the error, its SQLSTATE and the policy's reason.
    let err = pg::psql_args(
        addr,
        pg::USER,
        pg::PASSWORD,
        &["-v", "VERBOSITY=verbose", "-c", "DELETE FROM g"],
    )
    .await
    .expect_err("DELETE without WHERE must be blocked");
    assert!(
        err.contains("42501") && err.contains("guard: DELETE without WHERE is not allowed"),
        "{err}"
    );
    // psql goes on after the error in the same session (ON_ERROR_STOP off).
    let out = pg::psql_args(
        addr,
        pg::USER,
        pg::PASSWORD,
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "DROP TABLE g",
            "-c",
            "\\echo :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE",
            "-c",
            "SELECT count(*) FROM g WHERE id > 0",
        ],
    )
    .await
    .expect("psql goes on");
    assert_eq!(
        out, "42501 blocked by policy: guard: DROP TABLE is not allowed\n10",
        "the error, then the next query's answer"
    );
    assert_eq!(pg.psql(pg.primary_port(), "SELECT count(*) FROM g"), "10");

    // Rewrite, simple protocol: 3 rows instead of 10; a SELECT with its own LIMIT is untouched.
    let out = pg::psql(addr, "SELECT id FROM g ORDER BY id")
        .await
        .expect("select");
    assert_eq!(out, "1\n2\n3", "rewritten with LIMIT 3");
    let out = pg::psql(addr, "SELECT id FROM g ORDER BY id LIMIT 5")
        .await
        .expect("select");
    assert_eq!(out.lines().count(), 5, "{out}");

    // Extended protocol with parameters.
    let client = pg::connect(addr).await;
    let (code, message) = db_error(
        client.execute("UPDATE g SET v = $1", &[&"x"]).await,
        "UPDATE without WHERE (extended)",
    );
    assert_eq!(code, "42501", "{message}");
    assert!(
        message.contains("guard: UPDATE without WHERE is not allowed"),
        "{message}"
    );
    let rows = client
        .query("SELECT id FROM g WHERE id > $1 ORDER BY id", &[&0i32])
        .await
        .expect("rewritten select (extended)");
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![1, 2, 3], "extended: rewritten with LIMIT 3");
    let n: i64 = client
        .query_one("SELECT count(*) FROM g WHERE id > $1", &[&0i32])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 10);

    // Inside an open transaction: blocked statements (both protocols) leave it usable.
    client.batch_execute("BEGIN").await.expect("BEGIN");
    client
        .execute("INSERT INTO g VALUES ($1, $2)", &[&11i32, &"eleven"])
        .await
        .expect("insert in the transaction");
    let (code, _) = db_error(
        client.execute("DELETE FROM g", &[]).await,
        "DELETE without WHERE in a transaction (extended)",
    );
    assert_eq!(code, "42501");
    let (code, message) = db_error(
        client.simple_query("UPDATE g SET v = 'y'").await,
        "UPDATE without WHERE in a transaction (simple)",
    );
    assert_eq!(code, "42501", "{message}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM g WHERE id > $1", &[&0i32])
        .await
        .expect("the transaction goes on after a block")
        .get(0);
    assert_eq!(n, 11, "the transaction's own insert is visible");
    client.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT v FROM g WHERE id = 11"),
        "eleven",
        "the transaction committed"
    );
    assert_eq!(
        pg.psql(
            pg.primary_port(),
            "SELECT count(*) FROM g WHERE v IN ('x', 'y')"
        ),
        "0",
        "no blocked statement ran"
    );
    proxy.stop().await;
}

/// `trap` panics on every call: fail-closed gives an error naming the policy failure (simple
/// and extended protocol), fail-open runs the query by the built-in default route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_policy_fails_closed_or_open() {
    let pg = PgCluster::start(1);

    let closed = Proxy::start(
        &PgConfig::new(&pg)
            .extra(&policy("trap", "fail-closed", ""))
            .build(),
    )
    .await;
    let err = pg::psql_args(
        closed.addr(),
        pg::USER,
        pg::PASSWORD,
        &["-v", "VERBOSITY=verbose", "-c", "SELECT 1"],
    )
    .await
    .expect_err("fail-closed refuses");
    assert!(err.contains("policy failure"), "{err}");
    let client = pg::connect(closed.addr()).await;
    let (code, message) = db_error(
        client.query("SELECT $1::int", &[&1i32]).await,
        "fail-closed, extended",
    );
    assert_eq!(code, "XX000", "{message}");
    assert!(message.contains("policy failure"), "{message}");
    assert!(err.contains("XX000"), "{err}");
    closed.stop().await;

    let open = Proxy::start(
        &PgConfig::new(&pg)
            .extra(&policy("trap", "fail-open", ""))
            .build(),
    )
    .await;
    assert_eq!(
        pg::psql(open.addr(), "SELECT 41 + 1").await,
        Ok("42".into())
    );
    let client = pg::connect(open.addr()).await;
    let v: i32 = client
        .query_one("SELECT $1::int + 1", &[&1i32])
        .await
        .expect("fail-open runs the query")
        .get(0);
    assert_eq!(v, 2);
    // The default route: a read on a replica, a write on the primary.
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(port as u16, pg.replica_ports()[0]);
    open.stop().await;
}

/// `rw-split` sends reads outside a transaction to the replicas and writes and transactions to
/// the primary, in both protocols. `tenant-router` sends the tenant named by the startup
/// parameter `application_name` (attribute `startup.application_name`) to its own pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_routes_reads_writes_and_tenants() {
    let pg = PgCluster::start(2);
    pg.psql(pg.primary_port(), "CREATE TABLE r (port int)");
    pg.wait_replicated();
    let primary = pg.primary_port();
    let replicas = pg.replica_ports();

    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .extra(&policy("rw-split", "fail-closed", ""))
            .build(),
    )
    .await;
    let client = pg::connect(proxy.addr()).await;
    for _ in 0..4 {
        let port: u16 = value(&client, "SELECT inet_server_port()")
            .await
            .parse()
            .unwrap();
        assert!(
            replicas.contains(&port),
            "simple read on {port}, replicas {replicas:?}"
        );
        let port: i32 = client
            .query_one("SELECT inet_server_port() WHERE $1", &[&true])
            .await
            .expect("extended read")
            .get(0);
        assert!(replicas.contains(&(port as u16)), "extended read on {port}");
    }
    let port = value(
        &client,
        "INSERT INTO r SELECT inet_server_port() RETURNING port",
    )
    .await;
    assert_eq!(port, primary.to_string(), "simple write");
    let port: i32 = client
        .query_one(
            "INSERT INTO r SELECT inet_server_port() WHERE $1 RETURNING port",
            &[&true],
        )
        .await
        .expect("extended write")
        .get(0);
    assert_eq!(port as u16, primary, "extended write");
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let port = value(&client, "SELECT inet_server_port()").await;
    assert_eq!(port, primary.to_string(), "a read in a transaction");
    client.batch_execute("COMMIT").await.expect("COMMIT");
    proxy.stop().await;

    // tenant-router: tenant acme → pool `acme` (the primary node), others → default route.
    let config = PgConfig::new(&pg)
        .extra(&format!(
            "[cluster.pg.pool.acme]\nrole = \"other\"\nnodes = [\"127.0.0.1:{primary}\"]\n\n{}",
            policy(
                "tenant-router",
                "fail-closed",
                "tenant_attribute = \"startup.application_name\"\n\"pool.acme\" = \"acme\""
            )
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let acme = connect_with(
        proxy.addr(),
        pg::USER,
        pg::PASSWORD,
        "application_name=acme",
    )
    .await
    .expect("connect as tenant acme");
    let other = connect_with(
        proxy.addr(),
        pg::USER,
        pg::PASSWORD,
        "application_name=other",
    )
    .await
    .expect("connect as tenant other");
    for _ in 0..3 {
        let port = value(&acme, "SELECT inet_server_port()").await;
        assert_eq!(
            port,
            primary.to_string(),
            "tenant acme reads from its pool (simple)"
        );
        let port: i32 = acme
            .query_one("SELECT inet_server_port() WHERE $1", &[&true])
            .await
            .expect("extended")
            .get(0);
        assert_eq!(
            port as u16, primary,
            "tenant acme reads from its pool (extended)"
        );
        let port: u16 = value(&other, "SELECT inet_server_port()")
            .await
            .parse()
            .unwrap();
        assert!(
            replicas.contains(&port),
            "tenant without a pool: default route, got {port}"
        );
    }
    proxy.stop().await;

    // The attribute `extended` = `true` marks the extended protocol.
    let config = PgConfig::new(&pg)
        .extra(&format!(
            "[cluster.pg.pool.acme]\nrole = \"other\"\nnodes = [\"127.0.0.1:{primary}\"]\n\n{}",
            policy(
                "tenant-router",
                "fail-closed",
                "tenant_attribute = \"extended\"\n\"pool.true\" = \"acme\""
            )
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let client = pg::connect(proxy.addr()).await;
    let port: u16 = value(&client, "SELECT inet_server_port()")
        .await
        .parse()
        .unwrap();
    assert!(
        replicas.contains(&port),
        "simple protocol: no attribute, got {port}"
    );
    let port: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .expect("extended")
        .get(0);
    assert_eq!(port as u16, primary, "extended protocol: extended = true");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Cache
// ---------------------------------------------------------------------------------------------

/// Cache on, policy `cache-rules` with TTLs for the tables the tests read, users `raw` (trust)
/// and `bob`, plus `cluster` keys.
fn cache_config(pg: &PgCluster, cluster: &str) -> String {
    PgConfig::new(pg)
        .cluster(cluster)
        .extra(RAW_USER_TOML)
        .extra(BOB_TOML)
        .extra("[cache]\nenabled = true\n")
        .extra(&policy(
            "cache-rules",
            "fail-closed",
            "\"ttl.ct\" = 60000\n\"ttl.cu\" = 60000\n\"ttl.cshort\" = 1500",
        ))
        .build()
}

/// A repeated read is answered from the cache: the table is changed on the primary behind the
/// proxy's back (and replicated, so a server would show the change — a control query with other
/// text does), yet the cached answer stays, until its TTL. For the simple protocol (psql, and
/// byte for byte: RowDescription, DataRows, `SELECT n`, ReadyForQuery exactly as the server
/// sent them) and the extended one (different parameter values are different entries). Entries
/// are per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_answers_repeated_reads_without_a_server() {
    let pg = PgCluster::start(1);
    let primary = pg.primary_port();
    pg.psql(
        primary,
        "CREATE TABLE ct (id int PRIMARY KEY, v int); \
         INSERT INTO ct VALUES (1, 10), (2, 20), (3, 30); \
         CREATE TABLE cshort (n int); INSERT INTO cshort VALUES (1);",
    );
    pg.wait_replicated();
    let proxy = Proxy::start(&cache_config(&pg, "")).await;
    let addr = proxy.addr();
    let change = |sql: &str| {
        pg.psql(primary, sql);
        pg.wait_replicated();
    };

    // Simple protocol, psql.
    assert_eq!(
        pg::psql(addr, "SELECT count(*) FROM ct").await,
        Ok("3".into())
    );
    assert_eq!(pg::psql(addr, "SELECT n FROM cshort").await, Ok("1".into()));
    // The entry is stored as its client gets the answer: the TTL counts from about now, however
    // long the psql process took to start (measured before it, the wait fell short under load).
    let short_filled = Instant::now();
    change("INSERT INTO ct VALUES (4, 40); UPDATE cshort SET n = 2");
    assert_eq!(
        pg::psql(addr, "SELECT count(*) AS n FROM ct").await,
        Ok("4".into()),
        "control: the server has the new row"
    );
    assert_eq!(
        pg::psql(addr, "SELECT count(*) FROM ct").await,
        Ok("3".into()),
        "the repeated read is answered from the cache"
    );
    assert_eq!(pg::psql(addr, "SELECT n FROM cshort").await, Ok("1".into()));
    // psql with headers and footer: column names and row count come from the entry.
    let with_header = [
        "-P",
        "tuples_only=off",
        "-c",
        "SELECT id, v FROM ct WHERE id <= 2 ORDER BY id",
    ];
    let first = pg::psql_args(addr, pg::USER, pg::PASSWORD, &with_header).await;
    assert_eq!(first.as_deref(), Ok("id|v\n1|10\n2|20\n(2 rows)"));
    change("UPDATE ct SET v = v + 1 WHERE id = 1");
    let second = pg::psql_args(addr, pg::USER, pg::PASSWORD, &with_header).await;
    assert_eq!(second, first, "cached, with header and footer");
    // TTL (1.5 s): then the read goes to the server again.
    tokio::time::sleep(Duration::from_millis(1700).saturating_sub(short_filled.elapsed())).await;
    assert_eq!(
        pg::psql(addr, "SELECT n FROM cshort").await,
        Ok("2".into()),
        "the entry expired after its TTL"
    );

    // Per user: bob gets his own entry (the new count), app keeps hers.
    assert_eq!(
        pg::psql_as(addr, BOB, BOB_PASSWORD, "SELECT count(*) FROM ct").await,
        Ok("4".into()),
        "another user does not get app's entry"
    );
    assert_eq!(
        pg::psql(addr, "SELECT count(*) FROM ct").await,
        Ok("3".into())
    );

    // Byte for byte, simple protocol.
    let mut raw = Raw::connect(addr, RAW_USER, &[]).await;
    let sql = "SELECT id, v AS value FROM ct ORDER BY id";
    let miss = raw.simple(sql).await;
    assert_eq!(tags(&miss), "TDDDDCZ", "{miss:?}");
    change("UPDATE ct SET v = v + 1");
    let hit = raw.simple(sql).await;
    assert_eq!(
        hit, miss,
        "the cached answer is the server's, byte for byte"
    );
    assert_eq!(hit[0].columns(), ["id", "value"]);
    assert_eq!(
        hit[1].values(),
        [Some("1".to_string()), Some("11".to_string())]
    );
    assert_eq!(
        hit[4].values(),
        [Some("4".to_string()), Some("40".to_string())]
    );
    assert_eq!(hit[5].command_tag(), "SELECT 4");
    assert_eq!(hit[6].body, b"I");
    // The session goes on normally after a hit.
    let after = raw.simple("SELECT 1 AS one").await;
    assert_eq!(tags(&after), "TDCZ");

    // Byte for byte, extended protocol (Parse/Bind/Describe/Execute/Sync): the ParseComplete
    // is answered too.
    let sql = "SELECT v FROM ct WHERE id = $1";
    let miss = raw.extended(sql, &["2"]).await;
    assert_eq!(tags(&miss), "12TDCZ", "{miss:?}");
    let v2 = miss[3].values()[0].clone().expect("v");
    change("UPDATE ct SET v = v + 100 WHERE id = 2");
    let hit = raw.extended(sql, &["2"]).await;
    assert_eq!(hit, miss, "extended: cached, byte for byte");
    assert_eq!(hit[4].command_tag(), "SELECT 1");
    let other = raw.extended(sql, &["3"]).await;
    assert_eq!(
        other[3].values()[0].as_deref(),
        Some(pg.psql(primary, "SELECT v FROM ct WHERE id = 3").as_str()),
        "another parameter value is another entry"
    );
    assert_ne!(
        hit[3].values()[0],
        Some(format!("{}", v2.parse::<i32>().unwrap() + 100))
    );

    // tokio-postgres, prepared statements with a parameter.
    let client = pg::connect(addr).await;
    let stmt = client
        .prepare("SELECT v FROM ct WHERE id = $1")
        .await
        .expect("prepare");
    let before: i32 = client
        .query_one(&stmt, &[&3i32])
        .await
        .expect("id 3")
        .get(0);
    let fresh4: i32 = client
        .query_one(&stmt, &[&4i32])
        .await
        .expect("id 4")
        .get(0);
    change("UPDATE ct SET v = v + 1000 WHERE id IN (3, 4, 1)");
    let rows = client.query(&stmt, &[&3i32]).await.expect("id 3 again");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].columns()[0].name(), "v");
    assert_eq!(rows[0].get::<_, i32>(0), before, "extended: cached");
    let again4: i32 = client
        .query_one(&stmt, &[&4i32])
        .await
        .expect("id 4")
        .get(0);
    assert_eq!(again4, fresh4, "extended: cached per parameter value");
    let now1: i32 = client
        .query_one(&stmt, &[&1i32])
        .await
        .expect("id 1")
        .get(0);
    assert_eq!(
        now1.to_string(),
        pg.psql(primary, "SELECT v FROM ct WHERE id = 1"),
        "a value never asked for comes from the server"
    );
    proxy.stop().await;
}

/// A write through the proxy to table `ct` drops the cached reads of `ct` — the very next read
/// (on the primary: read-your-writes) shows the write, every time — but not those of `cu`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_the_proxy_invalidate_only_their_tables() {
    let pg = PgCluster::start(1);
    let primary = pg.primary_port();
    pg.psql(
        primary,
        "CREATE TABLE ct (id int PRIMARY KEY, v int); INSERT INTO ct VALUES (1, 10); \
         CREATE TABLE cu (id int PRIMARY KEY, v int); INSERT INTO cu VALUES (1, 100);",
    );
    pg.wait_replicated();
    let proxy = Proxy::start(&cache_config(&pg, "read_your_writes = \"30s\"")).await;
    let client = pg::connect(proxy.addr()).await;
    let stmt = client
        .prepare("SELECT v FROM ct WHERE id = $1")
        .await
        .expect("prepare");

    assert_eq!(value(&client, "SELECT v FROM ct WHERE id = 1").await, "10");
    assert_eq!(value(&client, "SELECT v FROM cu WHERE id = 1").await, "100");
    pg.psql(primary, "UPDATE cu SET v = 200 WHERE id = 1");
    pg.wait_replicated();
    assert_eq!(
        value(&client, "SELECT v FROM cu WHERE id = 1").await,
        "100",
        "cu is cached"
    );

    for i in 1..=50 {
        let v = 10 + i;
        client
            .batch_execute(&format!("UPDATE ct SET v = {v} WHERE id = 1"))
            .await
            .expect("update through the proxy");
        assert_eq!(
            value(&client, "SELECT v FROM ct WHERE id = 1").await,
            v.to_string(),
            "round {i}: the simple read after the write is not a stale cache hit"
        );
        let got: i32 = client
            .query_one(&stmt, &[&1i32])
            .await
            .expect("read")
            .get(0);
        assert_eq!(
            got, v,
            "round {i}: the extended read after the write is not stale"
        );
        // Cached again now: a second read is a hit with the same value.
        assert_eq!(
            value(&client, "SELECT v FROM ct WHERE id = 1").await,
            v.to_string()
        );
    }
    // Asked by a client that has not written (the writer does not use an entry a replica filled
    // before its writes: nothing tells it the entry has them).
    let other = pg::connect(proxy.addr()).await;
    assert_eq!(
        value(&other, "SELECT v FROM cu WHERE id = 1").await,
        "100",
        "writes to ct leave cu's entries alone"
    );
    assert_eq!(value(&client, "SELECT v FROM cu WHERE id = 1").await, "200");
    client
        .execute("UPDATE cu SET v = $1 WHERE id = 1", &[&300i32])
        .await
        .expect("extended write to cu");
    assert_eq!(value(&client, "SELECT v FROM cu WHERE id = 1").await, "300");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Admin console
// ---------------------------------------------------------------------------------------------

/// The admin console (database `switchyard`, users with `admin = true`): the SHOW commands
/// answer with their columns, RELOAD reloads the policy, PAUSE holds new queries until RESUME,
/// an unknown command is 42601, a non-admin user is refused with 28000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_shows_reloads_pauses_and_refuses() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .app_user("admin = true")
        .extra(BOB_TOML)
        .extra(&policy("rw-split", "fail-closed", ""))
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let app = pg::connect(addr).await;
    assert_eq!(value(&app, "SELECT 1").await, "1");
    app.batch_execute("CREATE TABLE a (x int)")
        .await
        .expect("a write");
    let admin = connect_with(addr, pg::USER, pg::PASSWORD, "dbname=switchyard")
        .await
        .expect("admin login");

    let show = |sql: &'static str| {
        let admin = &admin;
        async move {
            simple(admin, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", pg::describe(&e)))
        }
    };
    let column = |cols: &[String], name: &str| {
        cols.iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {cols:?}"))
    };

    let (cols, rows) = show("SHOW POOLS").await;
    assert_eq!(
        cols,
        [
            "cluster",
            "pool",
            "role",
            "node",
            "healthy",
            "position",
            "lag_ms",
            "lag_bytes",
            "user",
            "database",
            "size",
            "active",
            "idle",
            "waiting",
            "checkouts",
            "timeouts",
            "avg_wait_us",
            "connects",
            "connect_failures"
        ]
    );
    let pool = column(&cols, "pool");
    let user = column(&cols, "user");
    for name in ["primary", "replicas"] {
        assert!(
            rows.iter().any(|r| r[pool] == name && r[user] == APP_USER),
            "pool {name} used by app: {rows:?}"
        );
    }

    let (cols, rows) = show("SHOW CLIENTS").await;
    assert_eq!(
        cols,
        [
            "pid",
            "user",
            "database",
            "addr",
            "state",
            "server",
            "server_pid",
            "connected_secs",
            "pinned"
        ]
    );
    let db = column(&cols, "database");
    assert!(
        rows.iter().any(|r| r[db] == DATABASE),
        "the app client: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r[db] == "switchyard"),
        "the admin itself: {rows:?}"
    );

    let (cols, rows) = show("SHOW SERVERS").await;
    assert_eq!(
        cols,
        ["pool", "node", "user", "database", "active", "idle", "size"]
    );
    let idle = column(&cols, "idle");
    assert!(
        rows.iter()
            .any(|r| r[idle].parse::<u64>().unwrap_or(0) >= 1),
        "an idle server connection: {rows:?}"
    );

    let (cols, rows) = show("SHOW STATS").await;
    assert_eq!(cols, ["name", "value"]);
    let stat = |name: &str| -> u64 {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no stat {name}: {rows:?}"))[1]
            .parse()
            .expect("a number")
    };
    assert!(stat("client_logins") >= 2);
    assert!(stat("policy_calls") >= 2);
    assert!(stat("server_checkouts") >= 2);

    let (cols, rows) = show("SHOW POLICY").await;
    assert_eq!(
        cols,
        [
            "name",
            "path",
            "sha256",
            "calls",
            "failures",
            "reloads",
            "reload_failures"
        ]
    );
    assert!(rows[0][1].ends_with("rw-split.wasm"), "{rows:?}");
    let reloads: u64 = rows[0][5].parse().expect("reloads");

    let (cols, rows) = show("SHOW HELP").await;
    assert_eq!(cols, ["command", "does"]);
    assert!(rows.iter().any(|r| r[0] == "SHOW POOLS"), "{rows:?}");

    admin.simple_query("RELOAD").await.expect("RELOAD");
    let (_, rows) = show("SHOW POLICY").await;
    assert_eq!(
        rows[0][5].parse::<u64>().expect("reloads"),
        reloads + 1,
        "{rows:?}"
    );
    assert_eq!(
        value(&app, "SELECT 2").await,
        "2",
        "queries run after RELOAD"
    );

    let (code, message) = db_error(admin.simple_query("SHOW NONSENSE").await, "unknown command");
    assert_eq!(code, "42601", "{message}");
    let (code, _) = db_error(admin.simple_query("SELECT 1").await, "SQL on the console");
    assert_eq!(code, "42601");
    // The console goes on after an error.
    assert!(!show("SHOW STATS").await.1.is_empty());

    // PAUSE: a query from another client waits until RESUME.
    admin.simple_query("PAUSE").await.expect("PAUSE");
    let other = pg::connect(addr).await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let v = value(&other, "SELECT 7").await;
        (v, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!waiting.is_finished(), "the query waits while paused");
    admin.simple_query("RESUME").await.expect("RESUME");
    let (v, waited) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the query finishes after RESUME")
        .expect("task");
    assert_eq!(v, "7");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");

    // Not an admin: refused at login.
    let err = connect_with(addr, BOB, BOB_PASSWORD, "dbname=switchyard")
        .await
        .map(|_| ())
        .expect_err("bob is no admin");
    assert_eq!(pg::sqlstate(&err), "28000", "{}", pg::describe(&err));
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. SET tracking in transaction pooling
// ---------------------------------------------------------------------------------------------

/// Two clients share one server connection (pool size 1): each one's `SET search_path` follows
/// it (the proxy re-applies it when the connection last carried the other's settings),
/// `RESET ALL` restores the default, `SET LOCAL` ends with its transaction, and the startup
/// parameter `application_name` is what `SHOW` and `pg_stat_activity` say — also after
/// `RESET ALL`, as on a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_follows_the_client_across_a_shared_connection() {
    let pg = PgCluster::start(1);
    let primary = pg.primary_port();
    pg.psql(
        primary,
        "CREATE SCHEMA s1; CREATE SCHEMA s2; GRANT USAGE ON SCHEMA s1, s2 TO app; \
         CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('public'); \
         CREATE TABLE s1.t (v text); INSERT INTO s1.t VALUES ('s1'); GRANT SELECT ON s1.t TO app; \
         CREATE TABLE s2.t (v text); INSERT INTO s2.t VALUES ('s2'); GRANT SELECT ON s2.t TO app;",
    );
    pg.wait_replicated();
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("size = 1").build()).await;
    let addr = proxy.addr();
    let a = pg::connect(addr).await;
    let b = pg::connect(addr).await;
    assert_eq!(
        value(&a, "SELECT pg_backend_pid()").await,
        value(&b, "SELECT pg_backend_pid()").await,
        "both clients' reads run on the one replica connection"
    );

    a.batch_execute("SET search_path TO s1")
        .await
        .expect("SET a");
    b.batch_execute("SET search_path TO s2")
        .await
        .expect("SET b");
    for round in 0..3 {
        assert_eq!(value(&a, "SELECT v FROM t").await, "s1", "round {round}: a");
        assert_eq!(value(&b, "SELECT v FROM t").await, "s2", "round {round}: b");
        let v: String = a
            .query_one("SELECT v FROM t WHERE $1", &[&true])
            .await
            .expect("extended a")
            .get(0);
        assert_eq!(v, "s1", "round {round}: a, extended");
        let v: String = b
            .query_one("SELECT v FROM t WHERE $1", &[&true])
            .await
            .expect("extended b")
            .get(0);
        assert_eq!(v, "s2", "round {round}: b, extended");
    }
    assert_eq!(value(&a, "SHOW search_path").await, "s1");

    a.batch_execute("RESET ALL").await.expect("RESET ALL");
    assert_eq!(
        value(&a, "SELECT v FROM t").await,
        "public",
        "RESET ALL: the default"
    );
    assert_eq!(value(&a, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(value(&b, "SELECT v FROM t").await, "s2", "b keeps its own");

    // SET LOCAL lasts for its transaction only, for this client and for the other one.
    a.batch_execute("BEGIN; SET LOCAL search_path TO s1")
        .await
        .expect("SET LOCAL");
    assert_eq!(
        value(&a, "SELECT v FROM t").await,
        "s1",
        "in the transaction"
    );
    a.batch_execute("COMMIT").await.expect("COMMIT");
    assert_eq!(
        value(&a, "SELECT v FROM t").await,
        "public",
        "after the transaction"
    );
    b.batch_execute("BEGIN; SET LOCAL search_path TO s1")
        .await
        .expect("SET LOCAL b");
    b.batch_execute("COMMIT").await.expect("COMMIT b");
    assert_eq!(
        value(&b, "SELECT v FROM t").await,
        "s2",
        "b's own setting is back"
    );
    assert_eq!(value(&a, "SELECT v FROM t").await, "public");

    // application_name from the startup packet, compared with the server itself.
    let direct_conn = format!(
        "host=127.0.0.1 port={primary} user={APP_USER} password={APP_PASSWORD} dbname={DATABASE} application_name=myapp"
    );
    let (direct, connection) = tokio_postgres::connect(&direct_conn, tokio_postgres::NoTls)
        .await
        .expect("connect to the primary directly");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let c = connect_with(addr, pg::USER, pg::PASSWORD, "application_name=myapp")
        .await
        .expect("connect with application_name");
    for client in [&direct, &c] {
        assert_eq!(value(client, "SHOW application_name").await, "myapp");
        assert_eq!(
            value(
                client,
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            .await,
            "myapp"
        );
    }
    // Interleaved with a client that has no application_name on the same connection.
    assert_eq!(value(&a, "SELECT v FROM t").await, "public");
    assert_eq!(value(&c, "SHOW application_name").await, "myapp");
    for client in [&direct, &c] {
        client
            .batch_execute("SET application_name = 'changed'")
            .await
            .expect("SET application_name");
        assert_eq!(value(client, "SHOW application_name").await, "changed");
        client.batch_execute("RESET ALL").await.expect("RESET ALL");
    }
    assert_eq!(
        value(&c, "SHOW application_name").await,
        value(&direct, "SHOW application_name").await,
        "after RESET ALL the startup value is back, as on the server"
    );
    assert_eq!(value(&c, "SHOW application_name").await, "myapp");
    c.batch_execute("SET application_name = 'again'")
        .await
        .expect("SET");
    c.batch_execute("RESET application_name")
        .await
        .expect("RESET one");
    assert_eq!(
        value(&c, "SHOW application_name").await,
        "myapp",
        "RESET name"
    );
    // A client that sent no application_name sees the server's default (empty), as on a direct
    // connection: the proxy's own logins do not set one.
    assert_eq!(value(&a, "SHOW application_name").await, "");
    assert_eq!(value(&c, "SHOW application_name").await, "myapp");
    proxy.stop().await;

    // Session pooling: the connection stays with the client, RESET ALL restores the same way.
    let proxy = Proxy::start(&PgConfig::new(&pg).defaults("mode = \"session\"").build()).await;
    let c = connect_with(
        proxy.addr(),
        pg::USER,
        pg::PASSWORD,
        "application_name=myapp",
    )
    .await
    .expect("connect with application_name");
    assert_eq!(value(&c, "SHOW application_name").await, "myapp");
    c.batch_execute("SET application_name = 'changed'")
        .await
        .expect("SET");
    assert_eq!(value(&c, "SHOW application_name").await, "changed");
    c.batch_execute("RESET ALL").await.expect("RESET ALL");
    assert_eq!(
        value(&c, "SHOW application_name").await,
        "myapp",
        "session mode: RESET ALL"
    );
    assert_eq!(
        value(
            &c,
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        .await,
        "myapp"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Read-your-writes
// ---------------------------------------------------------------------------------------------

/// With `read_your_writes = "2s"`, `consistency = "eventual"` (the time window alone) and the
/// only replica's replay paused: a client that wrote
/// reads from the primary (and sees its row) for 2 s, then from the replica again (which does
/// not have the row); a client that did not write reads from the replica all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_reads_from_the_primary_for_the_window() {
    let mut pg = PgCluster::start(1);
    let primary = pg.primary_port();
    let replica = pg.replica_ports()[0];
    pg.psql(primary, "CREATE TABLE ryw (id int)");
    pg.wait_replicated();
    pg.pause_replay(0);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .cluster("read_your_writes = \"2s\"\nconsistency = \"eventual\"")
            .extra(&policy("rw-split", "fail-closed", ""))
            .build(),
    )
    .await;
    let writer = pg::connect(proxy.addr()).await;
    let reader = pg::connect(proxy.addr()).await;
    let read = "SELECT count(*)::text || '@' || inet_server_port() FROM ryw";
    assert_eq!(
        value(&writer, read).await,
        format!("0@{replica}"),
        "before writing"
    );

    writer
        .execute("INSERT INTO ryw VALUES ($1)", &[&1i32])
        .await
        .expect("insert");
    let wrote = Instant::now();
    assert_eq!(
        value(&writer, read).await,
        format!("1@{primary}"),
        "simple read after the write"
    );
    let row = writer
        .query_one(
            "SELECT count(*)::int, inet_server_port() FROM ryw WHERE $1",
            &[&true],
        )
        .await
        .expect("extended read");
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, i32>(1) as u16),
        (1, primary),
        "extended read after the write"
    );
    assert_eq!(
        value(&reader, read).await,
        format!("0@{replica}"),
        "another client still reads the (paused) replica"
    );
    assert!(
        wrote.elapsed() < Duration::from_millis(1500),
        "the checks ran inside the window"
    );

    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(wrote.elapsed())).await;
    assert_eq!(
        value(&writer, read).await,
        format!("0@{replica}"),
        "after the window reads go to the replica again"
    );
    pg.resume_replay(0);
    proxy.stop().await;
}

/// `BEGIN READ ONLY` may go to a replica when the policy says so (rw-split with
/// `read_only_transactions = "replica"`): every statement of that transaction then runs on the
/// replica's connection, while a plain `BEGIN` stays on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_can_go_to_a_replica() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .extra(&policy(
                "rw-split",
                "fail-closed",
                "read_only_transactions = \"replica\"",
            ))
            .build(),
    )
    .await;
    let client = pg::connect(proxy.addr()).await;
    let replica = pg.replica_ports()[0].to_string();
    for begin in [
        "BEGIN READ ONLY",
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    ] {
        client.batch_execute(begin).await.expect(begin);
        for _ in 0..3 {
            assert_eq!(
                value(&client, "SELECT inet_server_port()").await,
                replica,
                "{begin}"
            );
            assert_eq!(
                value(&client, "SELECT pg_is_in_recovery()").await,
                "t",
                "{begin}"
            );
        }
        client.batch_execute("COMMIT").await.expect("COMMIT");
    }
    client.batch_execute("BEGIN").await.expect("BEGIN");
    assert_eq!(
        value(&client, "SELECT pg_is_in_recovery()").await,
        "f",
        "plain BEGIN"
    );
    client.batch_execute("COMMIT").await.expect("COMMIT");
    proxy.stop().await;
}

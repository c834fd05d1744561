//! TLS from the proxy to its servers: a PostgreSQL primary and replica that take the `app` role
//! only over TLS (`hostssl`), and ClickHouse serving HTTPS, each with a certificate from a test
//! authority. Each mode is shown to encrypt, to verify what it promises (a wrong authority or
//! name fails before anything is sent), and to fail as documented.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use switchyard_tests::clickhouse::{ClickHouse, READER_PASSWORD};
use switchyard_tests::http;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::tls::TestCa;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A primary and one replica that accept `app` over TLS only, with `ca`'s server certificate.
fn tls_only_cluster(ca: &TestCa) -> PgCluster {
    let pg = PgCluster::start(1);
    pg.enable_tls(&ca.server_cert, &ca.server_key);
    pg
}

/// The proxy config in front of `pg` with these TLS keys on every pool.
fn config(pg: &PgCluster, tls_keys: &str) -> String {
    PgConfig::new(pg).defaults(tls_keys).build()
}

/// `tls = "verify-full"` trusting `ca`'s certificate file.
fn verify_full(ca: &TestCa) -> String {
    format!(
        "tls = \"verify-full\"\ntls_ca_file = {:?}",
        ca.ca_cert.display().to_string()
    )
}

/// `ssl` of the server session that runs a statement of `client`: in a transaction, so the
/// primary, and as a plain read, the replica.
async fn ssl_on_both(client: &tokio_postgres::Client) -> (String, String) {
    let on_primary = pg::query_one_text(
        client,
        "BEGIN; SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    client.batch_execute("COMMIT").await.expect("commit");
    let on_replica = pg::query_one_text(
        client,
        "SELECT ssl::text || ':' || pg_is_in_recovery()::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    (on_primary, on_replica)
}

/// Logins `app` made without TLS, as the server logged them (rejected by `pg_hba.conf`).
fn plain_logins(pg: &PgCluster, port: u16) -> usize {
    pg.log_of(port)
        .lines()
        .filter(|l| l.contains("no encryption"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full_encrypts_every_server_connection() {
    let ca = block(TestCa::new);
    let pg = block(|| tls_only_cluster(&ca));
    let proxy = Proxy::start(&config(&pg, &verify_full(&ca))).await;
    let client = pg::connect(proxy.addr()).await;

    assert_eq!(
        ssl_on_both(&client).await,
        ("true".into(), "true:true".into())
    );

    // A transaction, and what it wrote read back.
    block(|| pg.psql(pg.primary_port(), "CREATE TABLE tls_t (n int)"));
    client
        .batch_execute("BEGIN; INSERT INTO tls_t VALUES (1), (2); COMMIT")
        .await
        .unwrap_or_else(|e| panic!("transaction: {}", pg::describe(&e)));
    assert_eq!(
        pg::query_one_text(&client, "BEGIN; SELECT sum(n)::text FROM tls_t").await,
        "3"
    );
    client.batch_execute("COMMIT").await.expect("commit");

    // A cancel reaches a server that takes `app` only over TLS.
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        token.cancel_query(NoTls).await
    });
    let started = Instant::now();
    let e = client
        .batch_execute("BEGIN; SELECT pg_sleep(30)")
        .await
        .expect_err("the sleep is cancelled");
    canceller
        .await
        .expect("cancel task")
        .unwrap_or_else(|e| panic!("cancel request: {e}"));
    assert_eq!(pg::sqlstate(&e), "57014", "{}", pg::describe(&e));
    assert!(started.elapsed() < Duration::from_secs(10));
    client.batch_execute("ROLLBACK").await.expect("rollback");

    // Every session of `app` on both servers is encrypted: the pools', the health checks' and
    // the WAL position pollers'. None was made in plain and refused.
    for port in [pg.primary_port(), pg.replica_ports()[0]] {
        let plain = block(|| {
            pg.psql(
                port,
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.usename = 'app' AND NOT s.ssl",
            )
        });
        assert_eq!(plain, "0", "plain sessions of app on port {port}");
        let encrypted = block(|| {
            pg.psql(
                port,
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.usename = 'app' AND s.ssl",
            )
        });
        assert_ne!(encrypted, "0", "no TLS session of app on port {port}");
        assert_eq!(block(|| plain_logins(&pg, port)), 0);
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full_refuses_a_certificate_from_another_authority() {
    let (ca, other) = block(|| (TestCa::new(), TestCa::new()));
    let pg = block(|| tls_only_cluster(&ca));
    let proxy = Proxy::start(&config(&pg, &verify_full(&other))).await;
    let client = pg::connect(proxy.addr()).await;
    let e = client
        .simple_query("BEGIN; SELECT 1")
        .await
        .expect_err("no server connection can be verified");
    let text = pg::describe(&e);
    assert_eq!(pg::sqlstate(&e), "08006", "{text}");
    assert!(
        text.contains("TLS") && text.contains("UnknownIssuer"),
        "the error says why: {text}"
    );
    // The handshake failed before any startup message: the server saw no login at all.
    let log = block(|| pg.log_of(pg.primary_port()));
    assert!(
        !log.contains("connection authorized: user=app"),
        "app logged in: {}",
        pg::tail(&log, 20)
    );
    assert_eq!(block(|| plain_logins(&pg, pg.primary_port())), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full_checks_the_name_and_verify_ca_does_not() {
    let ca = block(TestCa::new);
    let pg = block(|| tls_only_cluster(&ca));
    let elsewhere = |mode: &str| {
        format!(
            "tls = \"{mode}\"\ntls_ca_file = {:?}\ntls_server_name = \"db.example.com\"",
            ca.ca_cert.display().to_string()
        )
    };

    let proxy = Proxy::start(&config(&pg, &elsewhere("verify-full"))).await;
    let client = pg::connect(proxy.addr()).await;
    let e = client
        .simple_query("BEGIN; SELECT 1")
        .await
        .expect_err("the certificate names 127.0.0.1 and localhost only");
    let text = pg::describe(&e);
    assert!(
        text.contains("TLS") && text.contains("not valid for name \"db.example.com\""),
        "{text}"
    );
    proxy.stop().await;

    let proxy = Proxy::start(&config(&pg, &elsewhere("verify-ca"))).await;
    let client = pg::connect(proxy.addr()).await;
    assert_eq!(
        ssl_on_both(&client).await,
        ("true".into(), "true:true".into())
    );
    proxy.stop().await;

    // And the authority still matters under verify-ca.
    let other = block(TestCa::new);
    let proxy = Proxy::start(&config(
        &pg,
        &format!(
            "tls = \"verify-ca\"\ntls_ca_file = {:?}",
            other.ca_cert.display().to_string()
        ),
    ))
    .await;
    let client = pg::connect(proxy.addr()).await;
    let e = client
        .simple_query("BEGIN; SELECT 1")
        .await
        .expect_err("another authority");
    assert!(
        pg::describe(&e).contains("UnknownIssuer"),
        "{}",
        pg::describe(&e)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_require_and_prefer_encrypt_without_verifying() {
    let ca = block(TestCa::new);
    let pg = block(|| tls_only_cluster(&ca));
    for mode in ["require", "prefer"] {
        let proxy = Proxy::start(&config(&pg, &format!("tls = \"{mode}\""))).await;
        let client = pg::connect(proxy.addr()).await;
        assert_eq!(
            ssl_on_both(&client).await,
            ("true".into(), "true:true".into()),
            "tls = {mode}"
        );
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_disable_is_refused_by_a_tls_only_server() {
    let ca = block(TestCa::new);
    let pg = block(|| tls_only_cluster(&ca));
    let proxy = Proxy::start(&config(&pg, "tls = \"disable\"")).await;
    let client = pg::connect(proxy.addr()).await;
    let e = client
        .simple_query("BEGIN; SELECT 1")
        .await
        .expect_err("pg_hba.conf rejects plain logins of app");
    let text = pg::describe(&e);
    assert!(text.contains("no encryption"), "{text}");
    assert_ne!(block(|| plain_logins(&pg, pg.primary_port())), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_require_fails_against_a_server_without_tls() {
    let pg = block(|| PgCluster::start(1));
    let proxy = Proxy::start(&config(&pg, "tls = \"require\"")).await;
    let client = pg::connect(proxy.addr()).await;
    let e = client
        .simple_query("BEGIN; SELECT 1")
        .await
        .expect_err("the server declines TLS");
    let text = pg::describe(&e);
    assert!(
        text.contains("does not accept TLS") && text.contains(&pg.primary_port().to_string()),
        "the error names the node: {text}"
    );
    proxy.stop().await;

    // `prefer` falls back to plain.
    let proxy = Proxy::start(&config(&pg, "tls = \"prefer\"")).await;
    let client = pg::connect(proxy.addr()).await;
    assert_eq!(
        ssl_on_both(&client).await,
        ("false".into(), "false:true".into())
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// ClickHouse over HTTPS
// ---------------------------------------------------------------------------------------------

/// A proxy config with one pool reaching `ch`'s node 0 on its HTTPS port with `tls_keys`.
fn ch_config(ch: &ClickHouse, tls_keys: &str) -> String {
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

[cluster.ch.pool.all]
role = "primary"
nodes = ["{node}"]
auth = {{ user = "reader", password = "{READER_PASSWORD}" }}
health = {{ enabled = false }}
{tls_keys}

[[user]]
name = "app"
password = "app_pass"
"#,
        node = ch.node(0).https_addr(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_clickhouse_over_https_verified_against_the_authority() {
    let ca = block(TestCa::new);
    let ch = block(|| ClickHouse::start_tls(1, &ca.server_cert, &ca.server_key));
    let proxy = Proxy::start(&ch_config(
        &ch,
        &format!(
            "tls = \"verify-full\"\ntls_ca_file = {:?}",
            ca.ca_cert.display().to_string()
        ),
    ))
    .await;
    let marker = "SELECT 'over https' AS backend_tls_marker";
    let reply = http::post(&proxy.url_as("app", "app_pass"), marker).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text().trim(), "over https");
    // The node's address in the config is its HTTPS port, which speaks nothing but TLS.
    assert_eq!(
        block(|| ch.node(0).finished_queries("backend_tls_marker")),
        1
    );
    assert!(
        http::try_request(
            ::http::Method::POST,
            &format!("http://{}/", ch.node(0).https_addr()),
            &[],
            "SELECT 1"
        )
        .await
        .is_err(),
        "the HTTPS port answered plain HTTP"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_clickhouse_with_another_authority_is_a_bad_gateway() {
    let (ca, other) = block(|| (TestCa::new(), TestCa::new()));
    let ch = block(|| ClickHouse::start_tls(1, &ca.server_cert, &ca.server_key));
    let proxy = Proxy::start(&ch_config(
        &ch,
        &format!(
            "tls = \"verify-full\"\ntls_ca_file = {:?}",
            other.ca_cert.display().to_string()
        ),
    ))
    .await;
    let reply = http::post(
        &proxy.url_as("app", "app_pass"),
        "SELECT 'refused' AS backend_tls_refused",
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("UnknownIssuer"),
        "the error says why: {}",
        reply.text()
    );
    assert_eq!(
        block(|| ch.node(0).finished_queries("backend_tls_refused")),
        0
    );
    proxy.stop().await;

    // `require` skips the certificate check (chproxy's `insecure_skip_verify`).
    let proxy = Proxy::start(&ch_config(&ch, "tls = \"require\"")).await;
    let reply = http::post(&proxy.url_as("app", "app_pass"), "SELECT 1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    proxy.stop().await;
}

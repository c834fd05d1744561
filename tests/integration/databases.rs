//! Which databases clients may open: only those the config names (the cluster's `database` or
//! `databases`, narrowed by a user's `databases`). Any other is answered as the server answers a
//! database that does not exist, so a client learns nothing about what else the backend holds.

use std::net::SocketAddr;

use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::get;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::{self, Proxy};

const BOB: &str = "bob";
const BOB_PASSWORD: &str = "bob_pw";
const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\n";

async fn connect_to(
    addr: SocketAddr,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = pg::conn_string(addr, user, password)
        .replace("dbname=appdb", &format!("dbname={database}"));
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Asserts the login is refused with 3D000 worded as PostgreSQL words it.
async fn assert_no_such_database(addr: SocketAddr, user: &str, password: &str, database: &str) {
    let err = connect_to(addr, user, password, database)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} may not open {database}"));
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{user} → {database}: {}", pg::describe(&err)));
    assert_eq!(
        db.code().code(),
        "3D000",
        "{user} → {database}: {}",
        db.message()
    );
    assert_eq!(
        db.message(),
        format!("database \"{database}\" does not exist")
    );
    assert_eq!(db.severity(), "FATAL");
}

async fn current_database(addr: SocketAddr, user: &str, password: &str, database: &str) -> String {
    let client = connect_to(addr, user, password, database)
        .await
        .unwrap_or_else(|e| panic!("{user} → {database}: {}", pg::describe(&e)));
    pg::query_one_text(&client, "SELECT current_database()").await
}

/// The value of the metric line that starts with `series` (name and labels, exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn refusals(proxy: &Proxy, frontend: &str, user: &str) -> Option<f64> {
    let text = get(&format!("{}/metrics", proxy.admin_url())).await.text();
    metric(
        &text,
        &format!("switchyard_database_refusals_total{{frontend=\"{frontend}\",user=\"{user}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_open_only_the_databases_the_config_names() {
    let pg = PgCluster::start(1);
    // The cluster names `appdb` only: `postgres` and `template1` exist on the server and the
    // backend login may connect to them, but not through the proxy.
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(ADMIN).build()).await;
    let addr = proxy.addr();
    assert_eq!(
        current_database(addr, pg::USER, pg::PASSWORD, "appdb").await,
        "appdb"
    );
    for database in ["postgres", "template1", "no_such_db"] {
        assert_no_such_database(addr, pg::USER, pg::PASSWORD, database).await;
    }
    // psql reports it the same way.
    let psql = pg::psql_args(
        addr,
        pg::USER,
        pg::PASSWORD,
        &["-d", "postgres", "-c", "SELECT 1"],
    )
    .await
    .expect_err("psql may not open postgres");
    assert!(
        psql.contains("FATAL:  database \"postgres\" does not exist"),
        "{psql}"
    );
    // Authentication comes first, as in PostgreSQL: a wrong password says nothing about the
    // database.
    let wrong = connect_to(addr, pg::USER, "wrong", "postgres")
        .await
        .expect_err("wrong password");
    assert_eq!(pg::sqlstate(&wrong), "28P01", "{}", pg::describe(&wrong));
    assert_eq!(refusals(&proxy, "postgres", pg::USER).await, Some(4.0));
    proxy.stop().await;

    // A cluster list and a user list narrowing it.
    let config = PgConfig::new(&pg)
        .cluster("databases = [\"appdb\", \"postgres\"]")
        .app_user("databases = [\"appdb\"]")
        .extra(&format!(
            "{ADMIN}\n[[user]]\nname = \"{BOB}\"\npassword = \"{BOB_PASSWORD}\"\n"
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    assert_no_such_database(addr, pg::USER, pg::PASSWORD, "postgres").await;
    assert_eq!(
        current_database(addr, pg::USER, pg::PASSWORD, "appdb").await,
        "appdb"
    );
    assert_eq!(
        current_database(addr, BOB, BOB_PASSWORD, "postgres").await,
        "postgres"
    );
    assert_eq!(
        current_database(addr, BOB, BOB_PASSWORD, "appdb").await,
        "appdb"
    );
    assert_no_such_database(addr, BOB, BOB_PASSWORD, "template1").await;
    assert_eq!(refusals(&proxy, "postgres", pg::USER).await, Some(1.0));
    assert_eq!(refusals(&proxy, "postgres", BOB).await, Some(1.0));
    proxy.stop().await;
}

/// `curl` through the proxy as `user`; (HTTP status, body).
async fn curl(url: &str, headers: &[&str], sql: &str) -> (u16, String) {
    let mut command = tokio::process::Command::new("curl");
    command.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--data-binary",
        sql,
    ]);
    for h in headers {
        command.args(["-H", h]);
    }
    let out = command
        .arg(url)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run curl: {e} (apt-get install -y curl)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// ClickHouse's answer to an unknown database: 404, code 81 (the wording differs across
/// versions: "doesn't exist", "does not exist").
fn assert_unknown_database(reply: &(u16, String), database: &str) {
    assert_eq!(reply.0, 404, "{database}: {}", reply.1);
    assert!(
        reply.1.starts_with("Code: 81")
            && reply.1.contains(&format!("Database {database} "))
            && reply.1.contains(" exist"),
        "{database}: {}",
        reply.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_clients_open_only_the_databases_the_config_names() {
    let ch = ClickHouse::start(1);
    ch.node(0).query("CREATE DATABASE analytics");
    ch.node(0).query("CREATE DATABASE secret");
    let users = format!(
        "{ADMIN}\n[[user]]\nname = \"alice\"\npassword = \"alice_pw\"\n\
         [[user]]\nname = \"{BOB}\"\npassword = \"{BOB_PASSWORD}\"\ndatabases = [\"analytics\"]\n"
    );

    // The cluster names no database: a request naming none runs in the backend user's default,
    // one naming any database is refused as ClickHouse refuses an unknown one.
    let base = proxy::config(&ch, "", "", &users);
    let unnamed = base.replace("databases = [\"analytics\"]\n", "");
    let proxy = Proxy::start(&unnamed).await;
    let alice = proxy.url_as("alice", "alice_pw");
    assert_eq!(
        curl(&alice, &[], "SELECT currentDatabase()").await,
        (200, "default\n".into())
    );
    let direct = curl(
        &format!("{}/?database=nope", ch.node(0).url()),
        &[],
        "SELECT 1",
    )
    .await;
    assert_unknown_database(&direct, "nope");
    for database in ["secret", "system", "nope"] {
        let reply = curl(&format!("{alice}&database={database}"), &[], "SELECT 1").await;
        assert_unknown_database(&reply, database);
    }
    let header = curl(&alice, &["X-ClickHouse-Database: secret"], "SELECT 1").await;
    assert_unknown_database(&header, "secret");
    assert_eq!(
        refusals(&proxy, "clickhouse-http", "alice").await,
        Some(4.0)
    );
    proxy.stop().await;

    // A cluster list, narrowed for bob.
    let listed = base.replacen(
        "[cluster.ch]\nprotocol = \"clickhouse-http\"\n",
        "[cluster.ch]\nprotocol = \"clickhouse-http\"\ndatabases = [\"default\", \"analytics\"]\n",
        1,
    );
    let proxy = Proxy::start(&listed).await;
    let alice = proxy.url_as("alice", "alice_pw");
    let bob = proxy.url_as(BOB, BOB_PASSWORD);
    for (url, database, allowed) in [
        (&alice, "default", true),
        (&alice, "analytics", true),
        (&alice, "secret", false),
        (&bob, "analytics", true),
        (&bob, "default", false),
    ] {
        let by_param = curl(
            &format!("{url}&database={database}"),
            &[],
            "SELECT currentDatabase()",
        )
        .await;
        let by_header = curl(
            url,
            &[&format!("X-ClickHouse-Database: {database}")],
            "SELECT currentDatabase()",
        )
        .await;
        for reply in [by_param, by_header] {
            if allowed {
                assert_eq!(reply, (200, format!("{database}\n")), "{url} {database}");
            } else {
                assert_unknown_database(&reply, database);
            }
        }
    }
    // Both given: each must be allowed, and the header wins, as in ClickHouse (the proxy passes
    // the database on as the `database` parameter, so servers that predate the header agree).
    let both = format!("{alice}&database=analytics");
    let mixed = curl(&both, &["X-ClickHouse-Database: secret"], "SELECT 1").await;
    assert_unknown_database(&mixed, "secret");
    let proxied = curl(
        &both,
        &["X-ClickHouse-Database: default"],
        "SELECT currentDatabase()",
    )
    .await;
    assert_eq!(proxied, (200, "default\n".to_owned()));
    // ClickHouse reads the first `database` parameter: a second one cannot smuggle another in.
    let twice = curl(
        &format!("{alice}&database=analytics&database=secret"),
        &[],
        "SELECT 1",
    )
    .await;
    assert_unknown_database(&twice, "secret");
    assert_eq!(refusals(&proxy, "clickhouse-http", BOB).await, Some(2.0));
    assert_eq!(
        refusals(&proxy, "clickhouse-http", "alice").await,
        Some(4.0)
    );
    proxy.stop().await;
}

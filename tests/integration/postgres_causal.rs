//! Transparency of transaction pooling with replicas: reads that turn out to write, reads that
//! must see the session's own writes (causal consistency by WAL position), and session state
//! that pins a client to its server connection. Against a real primary and two streaming
//! replicas, with the README's defaults.

use switchyard_tests::http::get;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// An admin API without a token, for the tests' reads of `/digests` and `/pools`.
const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\n";

/// Lines of a node's log that mention `needle`.
fn log_count(pg: &PgCluster, port: u16, needle: &str) -> usize {
    pg.log_of(port).matches(needle).count()
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
    let before: usize = pg
        .replica_ports()
        .iter()
        .map(|&p| log_count(&pg, p, refused))
        .sum();

    // Classified a read, so first sent to a replica: it refuses (25006), and the proxy runs it
    // again on the primary. The client sees only the primary's answer.
    let out = pg::psql(proxy.addr(), "SELECT bump()")
        .await
        .expect("a writing function through the proxy");
    assert_eq!(out.trim(), "1");
    let after_first: usize = pg
        .replica_ports()
        .iter()
        .map(|&p| log_count(&pg, p, refused))
        .sum();
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
    let after: usize = pg
        .replica_ports()
        .iter()
        .map(|&p| log_count(&pg, p, refused))
        .sum();
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

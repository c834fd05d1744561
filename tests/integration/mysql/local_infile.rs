//! LOAD DATA LOCAL INFILE: a listener with `local_infile = true` offers the capability and the
//! client's file reaches the server through the proxy; otherwise, or when the client did not
//! negotiate it, the statement gets MariaDB's own refusal (ERROR 4166) and the session goes on.

use std::io::Write as _;

use switchyard_tests::mariadb::MariaCluster;
use switchyard_tests::proxy::Proxy;

use super::{config, mariadb};

/// The `mariadb` CLI against `port` with `--local-infile=N`.
fn with_local_infile(port: u16, allowed: bool, sql: &str) -> Result<String, String> {
    let flag = format!("--local-infile={}", u8::from(allowed));
    mariadb(port, &[flag.as_str()], sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_allows_it_carries_the_clients_file_to_the_server() {
    let db = MariaCluster::start(1);
    // Enough rows that the file crosses the wire in many packets.
    let rows = 50_000u64;
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    for i in 1..=rows {
        writeln!(file, "{i},row number {i}").expect("write the file");
    }
    file.flush().expect("flush the file");
    let load = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE li FIELDS TERMINATED BY ','",
        file.path().display()
    );
    let allowing = config(&db, 2, "").replacen(
        "login_timeout = \"2s\"\n",
        "login_timeout = \"2s\"\nlocal_infile = true\n",
        1,
    );
    let proxy = Proxy::start(&allowing).await;
    let port = proxy.addr().port();
    let out = with_local_infile(
        port,
        true,
        &format!(
            "CREATE TABLE li (id BIGINT PRIMARY KEY, note VARCHAR(40)); {load}; \
             SELECT count(*), sum(id) FROM li"
        ),
    )
    .expect("the file is loaded through the proxy");
    assert_eq!(out.trim(), format!("{rows}\t{}", rows * (rows + 1) / 2));

    // A client that did not negotiate it is refused as MariaDB refuses it, and goes on.
    let refused = with_local_infile(port, false, &format!("{load}; SELECT 1"))
        .expect_err("refused without the client's capability");
    assert!(refused.contains("ERROR 4166 (HY000)"), "{refused}");
    proxy.stop().await;

    // A listener that does not allow it refuses every client, and the session goes on (its
    // read may go to the replica).
    db.wait_replicated();
    let proxy = Proxy::start(&config(&db, 2, "")).await;
    let refused =
        with_local_infile(proxy.addr().port(), true, &load).expect_err("refused by the listener");
    assert!(
        refused.contains("ERROR 4166 (HY000)") && refused.contains("local infile capability"),
        "{refused}"
    );
    let after = with_local_infile(
        proxy.addr().port(),
        true,
        "SELECT count(*) FROM li; SELECT 'still here'",
    )
    .expect("later statements run");
    assert_eq!(after.trim(), format!("{rows}\nstill here"));
    proxy.stop().await;
}

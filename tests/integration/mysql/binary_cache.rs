//! The query cache with prepared statements (binary protocol): an execution is answered from
//! the cache by its statement and parameter values, whether or not the client re-sent the
//! parameter types, never with a text query's answer, and not after a write through the proxy.

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::{RUN_TIMEOUT, cache_policy, cli, config, program};
use crate::postgres::pyenv_python;

const READ: &str = "SELECT id, name FROM cached_items WHERE id >= ? ORDER BY id";

/// Each execution's rows, as `mysql_prepared_read.py` prints them (two per parameter).
async fn prepared_read(port: u16, params: &[&str]) -> Vec<String> {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(pyenv_python())
            .arg(program("mysql_prepared_read.py"))
            .args(["127.0.0.1", &port.to_string(), APP_USER, APP_PASSWORD])
            .args([DATABASE, READ])
            .args(params)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mysql_prepared_read.py finishes")
    .expect("mysql_prepared_read.py runs");
    assert!(
        out.status.success(),
        "mysql_prepared_read.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_reads_are_cached_by_their_parameters() {
    let db = MariaCluster::start(1);
    let proxy = Proxy::start(&config(&db, 2, &cache_policy())).await;
    let cache = proxy.deps.cache.clone().expect("the cache is on");
    let port = proxy.addr().port();
    cli(
        &db,
        &proxy,
        "CREATE TABLE cached_items (id INT PRIMARY KEY, name VARCHAR(10)); \
         INSERT INTO cached_items VALUES (1, 'one')",
    )
    .expect("create");
    db.wait_replicated();
    let one = "[(1, 'one')]";
    let hits = cache.stats().hits_local;
    // The second execution sends no types: the same entry answers it.
    assert_eq!(prepared_read(port, &["1"]).await, [one, one]);
    assert_eq!(
        cache.stats().hits_local,
        hits + 1,
        "the second execution hit"
    );

    // A row added behind the proxy's back: cached executions do not see it, other parameter
    // values are entries of their own, and a text query is never answered with binary rows.
    db.sql(
        db.primary_port(),
        "INSERT INTO cached_items VALUES (2, 'two')",
    );
    db.wait_replicated();
    let two = "[(2, 'two')]";
    assert_eq!(prepared_read(port, &["1", "2"]).await, [one, one, two, two]);
    assert_eq!(cache.stats().hits_local, hits + 4);
    assert_eq!(
        cli(
            &db,
            &proxy,
            "SELECT id, name FROM cached_items WHERE id >= 1 ORDER BY id"
        )
        .expect("a text read"),
        "1\tone\n2\ttwo"
    );

    // A write through the proxy drops the table's entries.
    cli(&db, &proxy, "INSERT INTO cached_items VALUES (3, 'three')").expect("insert");
    db.wait_replicated();
    let all = "[(1, 'one'), (2, 'two'), (3, 'three')]";
    assert_eq!(prepared_read(port, &["1"]).await, [all, all]);
    proxy.stop().await;
}

//! A config reload reaches MySQL sessions that are already open: between units of work a
//! session moves to the new generation's pools, while a transaction in progress finishes where
//! it started.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::config;

async fn port_of_a_read(conn: &mut Conn) -> u16 {
    conn.query_first::<u16, _>("SELECT @@port")
        .await
        .expect("a read through the proxy")
        .expect("one row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sessions_move_to_a_reloaded_config_between_transactions() {
    let db = MariaCluster::start(1);
    let (primary, replica) = (db.primary_port(), db.replica_ports()[0]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("switchyard.toml");
    let before = config(&db, 2, "");
    std::fs::write(&path, &before).expect("write the config");
    let proxy = Proxy::start_file(&path).await;
    let connect = || {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(proxy.addr().port())
            .user(Some(APP_USER))
            .pass(Some(APP_PASSWORD))
            .db_name(Some(DATABASE))
            .prefer_socket(false);
        Conn::new(opts)
    };
    let mut conn = connect().await.expect("log in through the proxy");
    assert_eq!(port_of_a_read(&mut conn).await, replica);
    conn.query_drop("BEGIN").await.expect("begin");
    assert_eq!(
        port_of_a_read(&mut conn).await,
        primary,
        "a transaction runs on the primary"
    );

    // The replica pool now names the primary's node.
    let replica_node = format!("nodes = [\"127.0.0.1:{replica}\"]");
    assert!(before.contains(&replica_node));
    let after = before.replace(&replica_node, &format!("nodes = [\"127.0.0.1:{primary}\"]"));
    std::fs::write(&path, after).expect("rewrite the config");
    proxy.reload().await.expect("the reload is accepted");

    // The open transaction keeps its connection; the session's next read uses the new pools.
    assert_eq!(port_of_a_read(&mut conn).await, primary);
    conn.query_drop("COMMIT").await.expect("commit");
    assert_eq!(
        port_of_a_read(&mut conn).await,
        primary,
        "the read went to the reloaded replica pool"
    );
    // A new session sees the same.
    let mut fresh = connect().await.expect("a new session");
    assert_eq!(port_of_a_read(&mut fresh).await, primary);
    conn.disconnect().await.expect("disconnect");
    fresh.disconnect().await.expect("disconnect");
    proxy.stop().await;
}

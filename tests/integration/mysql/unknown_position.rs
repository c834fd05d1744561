//! When the position of a client's write cannot be learnt (as against a MySQL server, which
//! has no MariaDB GTIDs), that client's reads stay on the primary instead of going to a replica
//! that cannot be shown to have the write. Reproduced on MariaDB by a position no single
//! sequence number describes (two replication domains) and a write with no GTID of its own.

use switchyard_tests::mariadb::MariaCluster;
use switchyard_tests::proxy::Proxy;

use super::{cli, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_write_of_unknown_position_stay_on_the_primary() {
    let db = MariaCluster::start(1);
    let (primary, replica) = (db.primary_port(), db.replica_ports()[0]);
    db.sql(
        primary,
        "SET SESSION gtid_domain_id = 1; CREATE TABLE other_domain (x INT); \
         SET SESSION gtid_domain_id = 0; CREATE TABLE t (x INT); INSERT INTO t VALUES (1);",
    );
    db.wait_replicated();
    let proxy = Proxy::start(&config(&db, 2, "")).await;
    assert_eq!(
        cli(&db, &proxy, "SELECT @@port").expect("a read"),
        replica.to_string(),
        "a client that wrote nothing reads from the replica"
    );
    // The UPDATE changes nothing, so it has no GTID, and the primary's position spans two
    // domains: where this client's write stands is unknown.
    let out = cli(
        &db,
        &proxy,
        "UPDATE t SET x = 2 WHERE x = 3; SELECT @@port; SELECT @@port",
    )
    .expect("a write, then reads");
    assert_eq!(out, format!("{primary}\n{primary}"));
    proxy.stop().await;
}

//! The MariaDB harness itself (tests/src/mariadb.rs): the accounts work over TCP, the replica
//! applies what the primary writes, and pausing its replay holds new writes back until resumed.

use std::time::{Duration, Instant};

use switchyard_tests::mariadb::{
    APP_PASSWORD, APP_USER, MariaCluster, READONLY_PASSWORD, READONLY_USER,
};

#[test]
fn replicates_and_pauses_replay() {
    let started = Instant::now();
    let mut db = MariaCluster::start(1);
    eprintln!("MariaCluster::start(1) took {:?}", started.elapsed());
    let (primary, replica) = (db.primary_port(), db.replica_ports()[0]);
    let app = |db: &MariaCluster, sql: &str| db.sql_as(primary, APP_USER, APP_PASSWORD, sql);
    let readonly =
        |db: &MariaCluster, sql: &str| db.sql_as(replica, READONLY_USER, READONLY_PASSWORD, sql);

    app(
        &db,
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL);
         INSERT INTO items VALUES (1, 'one');",
    );
    db.wait_replicated();
    assert_eq!(readonly(&db, "SELECT id, name FROM items"), "1\tone");
    assert_eq!(
        db.gtid_current_pos(replica),
        db.gtid_current_pos(primary),
        "the replica has applied everything"
    );
    // The replica is read-only for applications, and `readonly` may not write anywhere.
    let denied = db
        .try_sql_as(
            replica,
            APP_USER,
            APP_PASSWORD,
            "INSERT INTO items VALUES (9, 'x')",
        )
        .expect_err("a write on the replica must fail");
    assert!(
        denied.contains("read-only") || denied.contains("read_only"),
        "{denied}"
    );
    assert!(
        db.try_sql_as(
            primary,
            READONLY_USER,
            READONLY_PASSWORD,
            "DELETE FROM items"
        )
        .is_err()
    );

    db.pause_replay(0);
    app(&db, "INSERT INTO items VALUES (2, 'two')");
    let target = db.gtid_current_pos(primary);
    // The IO thread still receives: wait until the event is on the replica, unapplied.
    let received = Instant::now();
    while db.slave_status(replica).get("Gtid_IO_Pos") != Some(&target) {
        assert!(
            received.elapsed() < Duration::from_secs(30),
            "the replica did not receive {target}: {:?}",
            db.slave_status(replica)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        readonly(&db, "SELECT COUNT(*) FROM items"),
        "1",
        "replay is paused"
    );
    db.wait_replicated(); // skips the paused replica instead of timing out

    db.resume_replay(0);
    db.wait_replicated();
    assert_eq!(
        readonly(&db, "SELECT id, name FROM items ORDER BY id"),
        "1\tone\n2\ttwo"
    );
    // The application account can see replication positions and status.
    let status = db.sql_as(
        replica,
        APP_USER,
        APP_PASSWORD,
        &format!("SELECT @@gtid_current_pos, MASTER_GTID_WAIT('{target}', 5); SHOW SLAVE STATUS"),
    );
    assert!(status.starts_with(&format!("{target}\t0\n")), "{status}");
    assert_eq!(db.slave_status(replica)["Slave_SQL_Running"], "Yes");
    assert!(db.slave_status(primary).is_empty());
}

//! How the proxy logs in to servers: a pool whose account uses MariaDB's `ed25519` plugin is
//! answered with `client_ed25519` (an auth switch from the server's default plugin).

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::{cli, config};

const ED_USER: &str = "ed_app";
const ED_PASSWORD: &str = "ed secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_logs_in_with_an_ed25519_account() {
    let db = MariaCluster::start_with(1, "plugin_load_add = auth_ed25519");
    let primary = db.primary_port();
    // Created on the primary, replicated to the replica.
    db.sql(
        primary,
        &format!(
            "CREATE USER '{ED_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PASSWORD}'); \
             GRANT ALL ON appdb.* TO '{ED_USER}'@'%';"
        ),
    );
    db.wait_replicated();
    // The account really is an ed25519 one: the server holds only its public key.
    let plugin = db.sql(
        primary,
        &format!("SELECT plugin FROM mysql.user WHERE user = '{ED_USER}'"),
    );
    assert_eq!(plugin.trim(), "ed25519");

    let toml = config(&db, 2, "").replace(
        &format!("auth = {{ user = \"{APP_USER}\", password = \"{APP_PASSWORD}\" }}"),
        &format!("auth = {{ user = \"{ED_USER}\", password = \"{ED_PASSWORD}\" }}"),
    );
    assert!(
        toml.contains(ED_USER),
        "the config's pool login was replaced"
    );
    let proxy = Proxy::start(&toml).await;
    // A write goes to the primary and a read to the replica: both logins were ed25519 ones.
    let out = cli(
        &db,
        &proxy,
        "CREATE TABLE ed_t (x int); INSERT INTO ed_t VALUES (42); \
         SELECT CURRENT_USER(), x FROM ed_t;",
    )
    .expect("a session through pools that log in with ed25519");
    assert_eq!(out.trim(), format!("{ED_USER}@%\t42"));
    let read = cli(&db, &proxy, "SELECT CURRENT_USER(), @@port").expect("a read");
    assert_eq!(
        read.trim(),
        format!("{ED_USER}@%\t{}", db.replica_ports()[0]),
        "the read ran on the replica with the ed25519 account"
    );
    // The public key MariaDB stores for the password is the one the signature's unit test
    // verifies with (host/src/mysql/auth.rs).
    let stored = db.sql(
        primary,
        &format!("SELECT authentication_string FROM mysql.user WHERE user = '{ED_USER}'"),
    );
    assert_eq!(stored.trim(), "fabCJogPfzEH6IzZjMacv0NEeF7kSOv5J7FlpxDtPFk");
    proxy.stop().await;
}

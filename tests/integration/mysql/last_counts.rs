//! ROW_COUNT() and FOUND_ROWS() through transaction pooling: two clients of one program share
//! a single server connection per node, interleave writes and reads, and each still reads the
//! counts of its own last statement, with the column names the server gives them.

use switchyard_tests::mariadb::MariaCluster;
use switchyard_tests::proxy::Proxy;

use super::{Driver, config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_and_found_rows_stay_each_clients_own() {
    let db = MariaCluster::start(1);
    let direct = run(Driver::LastCounts, db.primary_port(), "rc")
        .await
        .unwrap_or_else(|e| panic!("against the primary: {e}"));
    assert!(direct.ends_with("done\n"), "{direct}");
    // One server connection per node: the two clients' statements alternate on it, and the
    // proxy's own GTID reads after each write run there too.
    let proxy = Proxy::start(&config(&db, 1, "")).await;
    let through = run(Driver::LastCounts, proxy.addr().port(), "rc")
        .await
        .unwrap_or_else(|e| panic!("through the proxy: {e}"));
    assert_eq!(through, direct);
    proxy.stop().await;
}

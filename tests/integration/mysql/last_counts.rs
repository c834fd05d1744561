//! ROW_COUNT() and FOUND_ROWS() through transaction pooling: two clients of one program share
//! a single server connection per node, interleave writes and reads, and each still reads the
//! counts of its own last statement, with the column names the server gives them.

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::{RUN_TIMEOUT, config, program};
use crate::postgres::pyenv_python;

async fn run(port: u16) -> String {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(pyenv_python())
            .arg(program("mysql_last_counts.py"))
            .args([
                "127.0.0.1",
                &port.to_string(),
                APP_USER,
                APP_PASSWORD,
                DATABASE,
                "rc",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mysql_last_counts.py finishes")
    .expect("mysql_last_counts.py runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mysql_last_counts.py on port {port}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_and_found_rows_stay_each_clients_own() {
    let db = MariaCluster::start(1);
    let direct = run(db.primary_port()).await;
    assert!(direct.ends_with("done\n"), "{direct}");
    // One server connection per node: the two clients' statements alternate on it, and the
    // proxy's own GTID reads after each write run there too.
    let proxy = Proxy::start(&config(&db, 1, "")).await;
    let through = run(proxy.addr().port()).await;
    assert_eq!(through, direct);
    proxy.stop().await;
}

//! sysbench through transaction pooling, with its statements prepared on the server.

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::config;

/// Runs sysbench `args` against `port`; its output, or a panic with it when it fails.
fn sysbench(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("sysbench")
        .args(args)
        .args([
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={port}"),
            &format!("--mysql-user={APP_USER}"),
            &format!("--mysql-password={APP_PASSWORD}"),
            &format!("--mysql-db={DATABASE}"),
            "--tables=2",
            "--table-size=1000",
        ])
        .output()
        .expect("sysbench runs (tests/run.sh installs it: apt-get install -y sysbench)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {args:?} failed:\n{text}");
    text
}

/// The number after `label` in sysbench's report.
fn reported(text: &str, label: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_runs_through_transaction_pooling_with_prepared_statements() {
    let db = MariaCluster::start(1);
    // Four server connections per node for sixteen sysbench threads, which prepare their
    // statements (`--db-ps-mode=auto`): the statements move between connections.
    let proxy = Proxy::start(&config(&db, 4, "")).await;
    let port = proxy.addr().port();
    sysbench(db.primary_port(), &["oltp_read_write", "prepare"]);
    db.wait_replicated();
    let run = move |workload: &str, threads: &str| {
        sysbench(
            port,
            &[
                workload,
                "run",
                &format!("--threads={threads}"),
                "--time=3",
                "--db-ps-mode=auto",
                "--report-interval=0",
            ],
        )
    };
    let read_only = tokio::task::spawn_blocking(move || run("oltp_read_only", "16"))
        .await
        .expect("sysbench task");
    assert!(reported(&read_only, "transactions:") > 0, "{read_only}");
    assert_eq!(reported(&read_only, "ignored errors:"), 0, "{read_only}");
    assert_eq!(reported(&read_only, "reconnects:"), 0, "{read_only}");
    let read_write = tokio::task::spawn_blocking(move || run("oltp_read_write", "8"))
        .await
        .expect("sysbench task");
    // Deadlocks between sysbench's own writers are ignored by sysbench (and happen directly
    // too); any other error fails the run.
    assert!(reported(&read_write, "transactions:") > 0, "{read_write}");
    assert_eq!(reported(&read_write, "reconnects:"), 0, "{read_write}");
    proxy.stop().await;
}

//! Real drivers through transaction pooling with the replicas in rotation (the README's default
//! config), doing what applications do with session state: a TEMP table, server-side prepared
//! statements reused across transactions (also after the temp table is gone and the client
//! shares server connections again), SQL `PREPARE`/`EXECUTE`, and a read right after a write.
//! Each program in `tests/drivers/` prints one line per check and exits non-zero at the first
//! mismatch; through the proxy it must print exactly what it prints against the primary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

use crate::postgres::pyenv_python;

/// Copies of a program run at once through the proxy, so that they share server connections.
const COPIES: usize = 3;

/// How long one run of a driver program may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Driver {
    Psycopg,
    Asyncpg,
    NodePg,
    Pgjdbc,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn program(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("drivers")
        .join(file)
}

impl Driver {
    /// The command that runs the driver's program, before its connection arguments. The
    /// drivers are installed by tests/run.sh.
    fn command(self) -> tokio::process::Command {
        match self {
            Driver::Psycopg | Driver::Asyncpg => {
                let mut c = tokio::process::Command::new(pyenv_python());
                c.arg(program(match self {
                    Driver::Psycopg => "psycopg_session.py",
                    _ => "asyncpg_session.py",
                }));
                c
            }
            Driver::NodePg => {
                let modules = workspace().join("target/node-drivers/node_modules");
                assert!(
                    modules.join("pg").exists(),
                    "node-postgres is missing at {}: run tests/run.sh, or \
                     `npm install --prefix target/node-drivers pg@8`",
                    modules.display()
                );
                let mut c = tokio::process::Command::new("node");
                c.env("NODE_PATH", modules).arg(program("pg_session.js"));
                c
            }
            Driver::Pgjdbc => {
                let jar = Path::new("/usr/share/java/postgresql.jar");
                assert!(
                    jar.exists(),
                    "pgjdbc is missing: run tests/run.sh, or \
                     `apt-get install -y default-jdk-headless libpostgresql-jdbc-java`"
                );
                let mut c = tokio::process::Command::new("java");
                c.arg("-cp").arg(jar).arg(program("PgjdbcSession.java"));
                c
            }
        }
    }
}

/// Runs `driver`'s program against `addr` with tables named after `name`: `Ok(stdout)` when it
/// exits 0, else `Err(stdout + stderr)`.
async fn run(driver: Driver, addr: SocketAddr, name: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        driver
            .command()
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .args([pg::USER, pg::PASSWORD, "appdb", name])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{driver:?} did not finish within {RUN_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("cannot run {driver:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} ({}):\n{stdout}\n--- stderr ---\n{}",
            name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The README's defaults with a small pool: room for every copy's temp table to pin it, and
/// one connection more.
fn config(pg: &PgCluster, cluster: &str) -> String {
    PgConfig::new(pg)
        .cluster(cluster)
        .defaults(&format!("size = {}", COPIES + 1))
        .primary_pool(&format!("max_pinned = {COPIES}"))
        .build()
}

/// `driver` against the primary, then through the proxy alone and as [`COPIES`] at once: the
/// same output each time.
async fn same_through_the_proxy(driver: Driver) {
    let pg = PgCluster::start(2);
    let primary: SocketAddr = format!("127.0.0.1:{}", pg.primary_port())
        .parse()
        .expect("address");
    let direct = run(driver, primary, "direct")
        .await
        .unwrap_or_else(|e| panic!("{driver:?} against the primary: {e}"));
    assert!(direct.contains(" DONE"), "{direct}");
    let proxy = Proxy::start(&config(&pg, "")).await;
    let alone = run(driver, proxy.addr(), "alone").await;
    assert_eq!(alone, Ok(direct.clone()), "{driver:?} through the proxy");
    let runs: Vec<_> = (0..COPIES)
        .map(|i| {
            let addr = proxy.addr();
            tokio::spawn(async move { run(driver, addr, &format!("c{i}")).await })
        })
        .collect();
    for (i, copy) in runs.into_iter().enumerate() {
        let got = copy.await.expect("driver task");
        assert_eq!(
            got,
            Ok(direct.clone()),
            "{driver:?}: copy {i} of {COPIES} through the proxy"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_session_state_in_transaction_mode() {
    same_through_the_proxy(Driver::Psycopg).await;
}

/// asyncpg prepares with Parse + Describe + Flush and no Sync: after `conn.prepare()` of a read
/// the replica connection chosen for that Parse is held until a Sync, and the next statement, a
/// write, must still reach the primary (the proxy ends the batch with a Sync of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_session_state_in_transaction_mode() {
    same_through_the_proxy(Driver::Asyncpg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_session_state_in_transaction_mode() {
    same_through_the_proxy(Driver::NodePg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_session_state_in_transaction_mode() {
    same_through_the_proxy(Driver::Pgjdbc).await;
}

/// The programs can fail: without causal reads and with a replica that stopped replaying, a
/// read right after a write meets older data (or no table at all) on that replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_notice_stale_reads_with_eventual_consistency() {
    let mut pg = PgCluster::start(2);
    tokio::task::block_in_place(|| pg.pause_replay(0));
    let proxy = Proxy::start(&config(&pg, "consistency = \"eventual\"")).await;
    for driver in [
        Driver::Psycopg,
        Driver::Asyncpg,
        Driver::NodePg,
        Driver::Pgjdbc,
    ] {
        // A mismatch (FAIL) or, as often, the new table not found on the replica.
        let e = run(driver, proxy.addr(), "stale")
            .await
            .expect_err("a stale read is noticed");
        eprintln!("{driver:?} with eventual consistency: {}", pg::tail(&e, 3));
    }
    tokio::task::block_in_place(|| pg.resume_replay(0));
    proxy.stop().await;
}

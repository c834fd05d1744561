//! The MySQL frontend against a real MariaDB primary and GTID replica: real clients (the
//! `mariadb` CLI, PyMySQL, MySQL Connector/Python, node mysql2 and MariaDB Connector/J, the last
//! three with server-side prepared statements that move between server connections) print the
//! same through transaction pooling as against the primary; reads go to the replica and still
//! see the session's own writes; session state neither gets lost nor leaks to the next client of
//! a server connection; the policy blocks with MySQL's own error; bad input before login gets an
//! error for that client only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::proxy::Proxy;

use crate::postgres::pyenv_python;

mod binary_cache;
mod hostile;
mod last_counts;
mod local_infile;
mod mysql_async;
mod reload;
mod server_auth;
mod sysbench;
mod tls;
mod unknown_position;

/// How long one run of a driver program may take.
pub(super) const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The README-style config: transaction pooling, the replica in rotation, `size` server
/// connections per node, and `extra` TOML appended.
pub(super) fn config(db: &MariaCluster, size: u32, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "my"
protocol = "mysql"
bind = "127.0.0.1:0"
cluster = "main"
login_timeout = "2s"

[cluster.main]
protocol = "mysql"
databases = ["{DATABASE}"]

[cluster.main.defaults]
size = {size}
checkout_timeout = "20s"
auth = {{ user = "{APP_USER}", password = "{APP_PASSWORD}" }}
health = {{ interval = "500ms", timeout = "500ms" }}

[cluster.main.pool.primary]
role = "primary"
nodes = ["127.0.0.1:{primary}"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["127.0.0.1:{replica}"]
fallback_pool = "primary"

[[user]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
{extra}
"#,
        primary = db.primary_port(),
        replica = db.replica_ports()[0],
    )
}

pub(super) fn program(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("drivers")
        .join(file)
}

#[derive(Debug, Clone, Copy)]
enum Driver {
    PyMysql,
    Connector,
    Mysql2,
    ConnectorJ,
    /// Two PyMySQL clients of one program, for ROW_COUNT() and FOUND_ROWS().
    LastCounts,
}

impl Driver {
    fn command(self) -> tokio::process::Command {
        match self {
            Driver::PyMysql | Driver::Connector | Driver::LastCounts => {
                let mut c = tokio::process::Command::new(pyenv_python());
                c.arg(program(match self {
                    Driver::PyMysql => "pymysql_session.py",
                    Driver::LastCounts => "mysql_last_counts.py",
                    _ => "connector_session.py",
                }));
                c
            }
            Driver::Mysql2 => {
                let modules = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/node-drivers/node_modules");
                assert!(
                    modules.join("mysql2").exists(),
                    "mysql2 is missing at {}: run tests/run.sh, or \
                     `npm install --prefix target/node-drivers mysql2@3`",
                    modules.display()
                );
                let mut c = tokio::process::Command::new("node");
                c.env("NODE_PATH", modules)
                    .arg(program("mysql2_session.js"));
                c
            }
            Driver::ConnectorJ => {
                let jar = Path::new("/usr/share/java/mariadb-java-client.jar");
                assert!(
                    jar.exists(),
                    "MariaDB Connector/J is missing: run tests/run.sh, or \
                     `apt-get install -y default-jdk-headless libmariadb-java`"
                );
                let mut c = tokio::process::Command::new("java");
                c.arg("-cp")
                    .arg(jar)
                    .arg(program("MariadbJdbcSession.java"));
                c
            }
        }
    }
}

/// Runs `driver`'s program against `port` with tables named after `name`.
async fn run(driver: Driver, port: u16, name: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        driver
            .command()
            .args([
                "127.0.0.1",
                &port.to_string(),
                APP_USER,
                APP_PASSWORD,
                DATABASE,
                name,
            ])
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
            "{name} ({}):\n{stdout}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `mariadb` CLI against `port` with `args` (as `app`, in `appdb`, no option files): stdout,
/// or stderr as the error.
pub(super) fn mariadb(port: u16, args: &[&str], sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("mariadb")
        .arg("--no-defaults")
        .args(args)
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", APP_USER])
        .arg(format!("-p{APP_PASSWORD}"))
        .args(["-N", "-B", DATABASE, "-e", sql])
        .output()
        .expect("the mariadb client runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Config lines that turn the cache on with the `cache-rules` policy caching reads of
/// `cached_items` for a minute.
pub(super) fn cache_policy() -> String {
    format!(
        "[cache]\nenabled = true\n[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\nwatch = false\n\
         [policy.config]\n\"ttl.cached_items\" = 60000\n",
        policy_wasm("cache-rules").display()
    )
}

/// The `mariadb` CLI through the proxy, in `appdb`.
pub(super) fn cli(db: &MariaCluster, proxy: &Proxy, sql: &str) -> Result<String, String> {
    db.try_sql_as(proxy.addr().port(), APP_USER, APP_PASSWORD, sql)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_print_through_the_proxy_what_they_print_against_the_primary() {
    let db = MariaCluster::start(1);
    // Two server connections per node for six clients at once: they must share.
    let proxy = Proxy::start(&config(&db, 2, "")).await;
    for driver in [
        Driver::PyMysql,
        Driver::Connector,
        Driver::Mysql2,
        Driver::ConnectorJ,
    ] {
        let direct = run(driver, db.primary_port(), "direct")
            .await
            .unwrap_or_else(|e| panic!("{driver:?} against the primary: {e}"));
        let names: Vec<String> = (0..3).map(|i| format!("p{i}")).collect();
        let runs = names.iter().map(|n| run(driver, proxy.addr().port(), n));
        for (i, result) in futures_util::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            let through =
                result.unwrap_or_else(|e| panic!("{driver:?} copy {i} through the proxy: {e}"));
            assert_eq!(through, direct, "{driver:?} copy {i}");
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_still_see_the_sessions_own_writes() {
    let mut db = MariaCluster::start(1);
    let replica = db.replica_ports()[0];
    let proxy = Proxy::start(&config(&db, 4, "")).await;
    cli(&db, &proxy, "CREATE TABLE causal (id INT PRIMARY KEY)").expect("create");
    db.wait_replicated();
    assert_eq!(
        cli(&db, &proxy, "SELECT @@port").expect("a read"),
        replica.to_string(),
        "a read of a client that wrote nothing goes to the replica"
    );
    db.pause_replay(0);
    // One connection: the insert, then reads that must see it although the replica has not
    // applied it.
    let out = cli(
        &db,
        &proxy,
        "INSERT INTO causal VALUES (1); SELECT count(*) FROM causal; SELECT count(*) FROM causal",
    )
    .expect("write then read");
    assert_eq!(out, "1\n1", "the session reads its own write");
    // Another client, which wrote nothing, reads the replica as it is.
    assert_eq!(
        cli(&db, &proxy, "SELECT count(*), @@port FROM causal").expect("stale read"),
        format!("0\t{replica}"),
        "a client that did not write reads the (paused) replica"
    );
    db.resume_replay(0);
    db.wait_replicated();
    assert_eq!(
        cli(&db, &proxy, "SELECT count(*) FROM causal").expect("read"),
        "1"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_stays_with_its_client_and_never_reaches_the_next() {
    let db = MariaCluster::start(1);
    // One server connection per node: every client uses the same ones.
    let proxy = Proxy::start(&config(&db, 1, "")).await;
    let out = cli(
        &db,
        &proxy,
        "SET SESSION sql_mode = 'ANSI_QUOTES'; SET SESSION time_zone = '+05:00';
         SELECT @@sql_mode, @@time_zone; SELECT @@sql_mode, @@time_zone, @@port",
    )
    .expect("settings");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ANSI_QUOTES\t+05:00");
    assert_eq!(
        lines[1],
        format!("ANSI_QUOTES\t+05:00\t{}", db.replica_ports()[0]),
        "settings are replayed on the replica connection"
    );
    // The next client of the same server connections sees the defaults.
    let fresh = cli(
        &db,
        &proxy,
        "SELECT @@sql_mode = @@GLOBAL.sql_mode, @@time_zone",
    )
    .expect("fresh");
    assert_eq!(fresh, "1\tSYSTEM", "settings leaked to another client");
    // Temporary tables and user variables keep their client on its connection.
    let pinned = cli(
        &db,
        &proxy,
        "CREATE TEMPORARY TABLE tmp (x INT); INSERT INTO tmp VALUES (1), (2);
         SET @v = 40; SELECT count(*) + @v FROM tmp",
    )
    .expect("pinned state");
    assert_eq!(pinned, "42");
    let after = cli(&db, &proxy, "SELECT @v IS NULL").expect("after");
    assert_eq!(after, "1", "a user variable leaked to another client");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_blocks_with_mysqls_access_denied_error() {
    let db = MariaCluster::start(1);
    let policy = format!(
        "[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\nwatch = false\n",
        policy_wasm("guard").display()
    );
    let proxy = Proxy::start(&config(&db, 2, &policy)).await;
    cli(&db, &proxy, "CREATE TABLE keep (id INT)").expect("create");
    let err = cli(&db, &proxy, "DROP TABLE keep").expect_err("DROP must be blocked");
    assert!(
        err.contains("ERROR 1142 (42000)")
            && err.contains("blocked by policy: guard: DROP TABLE is not allowed"),
        "{err}"
    );
    let err = cli(&db, &proxy, "; DELETE FROM keep").expect_err("DELETE without WHERE");
    assert!(err.contains("ERROR 1142 (42000)"), "{err}");
    assert_eq!(
        db.sql(
            db.primary_port(),
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'keep'"
        ),
        "1",
        "the table is still there"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_replay_the_servers_answer_until_a_write_through_the_proxy() {
    let db = MariaCluster::start(1);
    let proxy = Proxy::start(&config(&db, 2, &cache_policy())).await;
    let cache = proxy.deps.cache.clone().expect("the cache is on");
    cli(
        &db,
        &proxy,
        "CREATE TABLE cached_items (id INT PRIMARY KEY, name VARCHAR(10)); INSERT INTO cached_items VALUES (1, 'one')",
    )
    .expect("create");
    db.wait_replicated();
    let read = "SELECT id, name FROM cached_items ORDER BY id";
    let first = cli(&db, &proxy, read).expect("first read");
    assert_eq!(first, "1\tone");
    let hits = cache.stats().hits_local;
    // A row added behind the proxy's back: the cached answer is what the next client gets.
    db.sql(
        db.primary_port(),
        "INSERT INTO cached_items VALUES (2, 'two')",
    );
    db.wait_replicated();
    assert_eq!(cli(&db, &proxy, read).expect("cached read"), first);
    assert_eq!(
        cache.stats().hits_local,
        hits + 1,
        "answered from the cache"
    );
    // A write through the proxy drops the table's entries before its client has the answer.
    let out = cli(
        &db,
        &proxy,
        &format!("INSERT INTO cached_items VALUES (3, 'three'); {read}"),
    )
    .expect("write then read");
    assert_eq!(out, "1\tone\n2\ttwo\n3\tthree");
    proxy.stop().await;
}

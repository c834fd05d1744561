//! A private MariaDB cluster for tests: one primary (binlog, GTID) and `n` replicas replicating
//! from it with `MASTER_USE_GTID=slave_pos`, on free loopback ports, in its own temporary
//! directory (`switchyard-maria-<pid>-<n>`), with the database `appdb` and the accounts
//!
//! * `app` / `app_pass` — everything on `appdb.*`, plus `BINLOG MONITOR` and `SLAVE MONITOR` so
//!   it can read GTID positions, `SHOW MASTER STATUS` and `SHOW SLAVE STATUS`;
//! * `readonly` / `readonly_pass` — `SELECT` on `appdb.*`;
//! * `replicator` / `repl_pass` — `REPLICATION SLAVE`, used by the replicas.
//!
//! Each exists as `'x'@'%'`, `'x'@'localhost'` and `'x'@'127.0.0.1'`, with
//! `mysql_native_password`. TCP listens on 127.0.0.1 only; the replicas are `read_only`. The
//! admin account ([`MariaCluster::sql`]) is `root` (or, when the tests do not run as root, the
//! current OS user) authenticated by `unix_socket` on the node's socket.
//!
//! As root, `mariadbd` runs as the `mysql` OS user (`--user`; created when missing). The servers
//! trade durability for speed (tiny InnoDB buffers, no doublewrite, no flush at commit), live on
//! `/dev/shm` when it is a roomy tmpfs (`$SWITCHYARD_MARIADB_TMPDIR` overrides), and start from
//! a template data directory (mariadb-install-db + accounts + database, built once per machine,
//! MariaDB build and harness version, `switchyard-maria-template-<hash>-<user>`), so a cluster
//! with one replica is up in about 0.2 s. Every node is a copy of the template, so
//! the replicas need no seeding: they replicate the primary's binlog from its first event.
//!
//! On drop every node gets SIGTERM (a clean shutdown), SIGKILL after 10 s, and the directory is
//! removed, also when the test panics. Clusters of a test process killed before its drop ran
//! are stopped and removed by the next [`MariaCluster::start`].
//!
//! A test that needs MariaDB never skips: when it is missing the constructor panics with the
//! command that installs it.

mod client;
mod scratch;
mod server;
mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use server::{Role, Server};

/// What installs MariaDB (Debian 12: 10.11).
pub const INSTALL_COMMAND: &str = "apt-get install -y mariadb-server mariadb-client";

pub const DATABASE: &str = "appdb";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app_pass";
pub const READONLY_USER: &str = "readonly";
pub const READONLY_PASSWORD: &str = "readonly_pass";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "repl_pass";

const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A primary and its replicas. Stopped and removed on drop.
#[derive(Debug)]
pub struct MariaCluster {
    dir: PathBuf,
    /// `nodes[0]` is the primary, `nodes[1 + i]` is replica `i`.
    nodes: Vec<Server>,
}

impl MariaCluster {
    /// Starts a primary and `replicas` replicas and returns once every replica streams the
    /// primary's binlog and has applied all of it. Panics when MariaDB is not installed or a
    /// server does not come up.
    pub fn start(replicas: usize) -> MariaCluster {
        Self::start_with(replicas, "")
    }

    /// [`start`](Self::start) with `extra` option lines in every node's `[mariadbd]` section
    /// (e.g. `ssl-cert = …` and `ssl-key = …`; files there must be readable by the server's OS
    /// user).
    pub fn start_with(replicas: usize, extra: &str) -> MariaCluster {
        let env = scratch::Env::get();
        scratch::reap_leftovers();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = env.root.join(format!(
            "{}{}-{}",
            scratch::PREFIX,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        // From here on a panic drops `cluster`, which stops whatever was started.
        let mut cluster = MariaCluster {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        env.chown(&dir);

        let template = template::path(env);
        let roles =
            std::iter::once(Role::Primary).chain((0..replicas).map(|i| Role::Replica { index: i }));
        // Copies in parallel: on tmpfs each is bound by one core's memcpy.
        let mut copies = Vec::new();
        for role in roles {
            let mut node = Server::new(&dir, role);
            node.extra = extra.to_owned();
            std::fs::create_dir_all(node.dir()).expect("create a node's directory");
            env.chown(node.dir());
            let copy = Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(node.data())
                .spawn()
                .expect("run cp");
            copies.push(copy);
            cluster.nodes.push(node);
        }
        for mut copy in copies {
            let status = copy.wait().expect("wait for cp");
            assert!(status.success(), "copying the template into {dir:?} failed");
        }
        // The replicas only need the primary once they are told to connect, so all start at once.
        let all: Vec<usize> = (0..cluster.nodes.len()).collect();
        if let Err(e) = server::launch(&mut cluster.nodes, &all) {
            panic!("{e}");
        }

        let primary_port = cluster.primary_port();
        for port in cluster.replica_ports() {
            cluster.sql(
                port,
                &format!(
                    "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary_port}, \
                     MASTER_USER = '{REPLICATION_USER}', MASTER_PASSWORD = '{REPLICATION_PASSWORD}', \
                     MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos;
                     START SLAVE;"
                ),
            );
        }
        cluster.await_streaming(replicas);
        cluster.wait_replicated();
        cluster
    }

    /// The primary's TCP port (127.0.0.1).
    pub fn primary_port(&self) -> u16 {
        self.nodes[0].port()
    }

    /// The replicas' TCP ports (127.0.0.1), replica 0 first.
    pub fn replica_ports(&self) -> Vec<u16> {
        self.nodes[1..].iter().map(Server::port).collect()
    }

    /// The cluster's directory: `primary/`, `replica<i>/`, each with `data/`, `my.cnf`,
    /// `mysqld.sock` and `error.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The unix socket of the node listening on `port`.
    pub fn socket(&self, port: u16) -> PathBuf {
        self.node(port).socket()
    }

    /// A server's error log (with whatever it printed before opening it), for assertion
    /// messages.
    pub fn log_of(&self, port: u16) -> String {
        std::fs::read_to_string(self.node(port).log()).unwrap_or_default()
    }

    /// Runs `sql` (one or more `;`-separated statements) as the admin account in `appdb` over
    /// the node's unix socket; tab-separated rows without column names (`-N -B`), trailing
    /// newlines removed. Panics with the client's error when a statement fails.
    pub fn sql(&self, port: u16, sql: &str) -> String {
        self.try_sql(port, sql)
            .unwrap_or_else(|e| panic!("mariadb on port {port} failed for `{sql}`: {e}"))
    }

    /// [`sql`](Self::sql), returning the client's stderr as the error.
    pub fn try_sql(&self, port: u16, sql: &str) -> Result<String, String> {
        self.socket_client(port).run(sql)
    }

    /// Runs `sql` as `user` in `appdb` over TCP to 127.0.0.1:`port`, as an application would.
    pub fn sql_as(&self, port: u16, user: &str, password: &str, sql: &str) -> String {
        self.try_sql_as(port, user, password, sql)
            .unwrap_or_else(|e| panic!("mariadb as {user} on port {port} failed for `{sql}`: {e}"))
    }

    /// [`sql_as`](Self::sql_as), returning the client's stderr as the error.
    pub fn try_sql_as(
        &self,
        port: u16,
        user: &str,
        password: &str,
        sql: &str,
    ) -> Result<String, String> {
        client::Target::Tcp {
            port,
            user,
            password,
        }
        .run(sql)
    }

    /// `@@gtid_current_pos` of a node: on the primary what it wrote, on a replica what it
    /// applied.
    pub fn gtid_current_pos(&self, port: u16) -> String {
        self.sql(port, "SELECT @@gtid_current_pos")
    }

    /// Stops applying on replica `i` (`STOP SLAVE SQL_THREAD`); it keeps receiving the binlog.
    pub fn pause_replay(&mut self, i: usize) {
        self.sql(self.nodes[1 + i].port(), "STOP SLAVE SQL_THREAD");
        self.nodes[1 + i].replay_paused = true;
    }

    /// Applies again on replica `i` (`START SLAVE SQL_THREAD`).
    pub fn resume_replay(&mut self, i: usize) {
        self.sql(self.nodes[1 + i].port(), "START SLAVE SQL_THREAD");
        self.nodes[1 + i].replay_paused = false;
    }

    /// Waits until every replica whose replay is not paused has applied the primary's
    /// `@@gtid_binlog_pos` as of this call (its `@@gtid_slave_pos` reached it). Panics after
    /// 30 s with the replica's status and log.
    pub fn wait_replicated(&self) {
        let target = self.sql(self.primary_port(), "SELECT @@gtid_binlog_pos");
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        for node in self.nodes[1..].iter().filter(|n| !n.replay_paused) {
            let left = deadline.saturating_duration_since(Instant::now());
            // Blocks in the server until the position is applied: no polling.
            let waited = self.try_sql(
                node.port(),
                &format!(
                    "SELECT MASTER_GTID_WAIT('{target}', {:.3})",
                    left.as_secs_f64()
                ),
            );
            if waited.as_deref() != Ok("0") {
                panic!(
                    "{} (port {}) did not apply the primary's binlog up to `{target}` within \
                     {REPLICATION_TIMEOUT:?} ({waited:?}); gtid_slave_pos `{}`, {}; its log:\n{}",
                    node.name(),
                    node.port(),
                    self.try_sql(node.port(), "SELECT @@gtid_slave_pos")
                        .unwrap_or_else(|e| e),
                    self.status_summary(node.port()),
                    tail(&self.log_of(node.port()), 20)
                );
            }
        }
    }

    /// Waits until the primary has `replicas` binlog dump threads, that is until every replica's
    /// IO thread is connected (a replica that cannot connect would otherwise look caught up
    /// while the primary's binlog is still empty).
    fn await_streaming(&self, replicas: usize) {
        let started = Instant::now();
        let sql =
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'";
        while self.sql(self.primary_port(), sql) != replicas.to_string() {
            if started.elapsed() > REPLICATION_TIMEOUT {
                let status: Vec<String> = self
                    .replica_ports()
                    .into_iter()
                    .map(|p| format!("port {p}: {}", self.status_summary(p)))
                    .collect();
                panic!(
                    "the replicas did not connect to the primary within {REPLICATION_TIMEOUT:?}:\n{}",
                    status.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `SHOW SLAVE STATUS` of the node on `port` by column name (`Slave_SQL_Running`,
    /// `Gtid_IO_Pos`, ...); empty on the primary. Panics when the statement fails.
    pub fn slave_status(&self, port: u16) -> BTreeMap<String, String> {
        self.try_slave_status(port)
            .unwrap_or_else(|e| panic!("SHOW SLAVE STATUS on port {port} failed: {e}"))
    }

    fn try_slave_status(&self, port: u16) -> Result<BTreeMap<String, String>, String> {
        let text = self
            .socket_client(port)
            .run_with_names("SHOW SLAVE STATUS")?;
        let mut lines = text.lines();
        // Not a replica: no row, and then the client prints no column names either.
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Ok(BTreeMap::new());
        };
        Ok(names
            .split('\t')
            .zip(values.split('\t'))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    /// The telling fields of `SHOW SLAVE STATUS`, for failure messages.
    fn status_summary(&self, port: u16) -> String {
        const FIELDS: [&str; 5] = [
            "Slave_IO_Running",
            "Slave_SQL_Running",
            "Gtid_IO_Pos",
            "Last_IO_Error",
            "Last_SQL_Error",
        ];
        match self.try_slave_status(port) {
            Ok(status) => FIELDS
                .iter()
                .map(|f| format!("{f}: {}", status.get(*f).map_or("?", String::as_str)))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("SHOW SLAVE STATUS failed: {e}"),
        }
    }

    fn socket_client(&self, port: u16) -> client::Target<'static> {
        client::Target::Socket {
            path: self.node(port).socket(),
            user: &scratch::Env::get().admin,
        }
    }

    fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }
}

impl Drop for MariaCluster {
    fn drop(&mut self) {
        server::stop(&mut self.nodes);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

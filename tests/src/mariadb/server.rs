//! One `mariadbd`: its configuration, start (on a fresh free port, retried when another process
//! takes the port first), readiness and shutdown.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::scratch::Env;
use super::tail;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// `sun_path` holds 108 bytes; a longer socket path fails deep inside mariadbd.
const MAX_SOCKET_PATH: usize = 107;

/// What every server runs with, the template's included (so that its InnoDB files fit the
/// clusters' settings and nothing is resized at start).
pub(super) const BASE_CONF: &str = "\
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max_connections = 500
gtid_strict_mode = ON
performance_schema = OFF
loose-feedback = OFF
# Tests hold little data and nothing has to survive a crash: small buffers, no flushing.
innodb_buffer_pool_size = 8M
innodb_log_file_size = 8M
innodb_log_buffer_size = 2M
innodb_temp_data_file_path = ibtmp1:1M:autoextend
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = OFF
innodb_buffer_pool_dump_at_shutdown = OFF
innodb_buffer_pool_load_at_startup = OFF
# io_uring and libaio need locked memory, which containers ration; tests gain nothing from them.
innodb_use_native_aio = OFF
key_buffer_size = 1M
aria_pagecache_buffer_size = 1M
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Builds the template: no TCP, no binlog.
    Template,
    /// Writes a binlog the replicas stream.
    Primary,
    /// Replica `index` (0-based), `read_only`, without a binlog of its own.
    Replica { index: usize },
}

#[derive(Debug)]
pub(super) struct Server {
    name: String,
    /// Holds `my.cnf`, `data/`, `mysqld.sock`, `mysqld.pid` and `error.log`.
    dir: PathBuf,
    role: Role,
    /// 0 until the first start picks one.
    port: u16,
    child: Option<Child>,
    /// Greeted a client since it was started: SIGTERM is safe.
    ready: bool,
    pub replay_paused: bool,
    /// Option lines added to `[mariadbd]` (TLS files, for instance).
    pub extra: String,
}

impl Server {
    /// A node of the cluster in `cluster_dir` (not created, not started).
    pub fn new(cluster_dir: &Path, role: Role) -> Server {
        let name = match role {
            Role::Template => "template".to_owned(),
            Role::Primary => "primary".to_owned(),
            Role::Replica { index } => format!("replica{index}"),
        };
        let dir = match role {
            Role::Template => cluster_dir.to_path_buf(),
            _ => cluster_dir.join(&name),
        };
        let socket = dir.join("mysqld.sock");
        assert!(
            socket.as_os_str().len() <= MAX_SOCKET_PATH,
            "the socket path {} is too long for a unix socket; set SWITCHYARD_MARIADB_TMPDIR \
             to a shorter directory",
            socket.display()
        );
        Server {
            name,
            dir,
            role,
            port: 0,
            child: None,
            ready: false,
            replay_paused: false,
            extra: String::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    pub fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The complete option file (mariadbd reads only this one: `--defaults-file`).
    fn config(&self) -> String {
        let role = match self.role {
            Role::Template => "skip-networking\n".to_owned(),
            Role::Primary => format!(
                "bind-address = 127.0.0.1\nport = {}\nserver_id = 1\n\
                 log_bin = mysql-bin\nbinlog_format = ROW\n",
                self.port
            ),
            Role::Replica { index } => format!(
                "bind-address = 127.0.0.1\nport = {port}\nserver_id = {}\nread_only = ON\n\
                 relay_log = relay-bin\nreport_host = 127.0.0.1\nreport_port = {port}\n",
                2 + index,
                port = self.port
            ),
        };
        format!(
            "# switchyard tests (tests/src/mariadb)\n[mariadbd]\ndatadir = {}\nsocket = {}\n\
             pid-file = {}\nlog-error = {}\n{BASE_CONF}{role}{}",
            self.data().display(),
            self.socket().display(),
            self.dir.join("mysqld.pid").display(),
            self.log().display(),
            self.extra,
        )
    }

    /// Writes `my.cnf` (mariadb-install-db needs it before the first start).
    pub fn write_config(&self) {
        std::fs::write(self.cnf(), self.config())
            .unwrap_or_else(|e| panic!("write {}: {e}", self.cnf().display()));
    }

    /// Writes the option file (with a fresh port on the first start) and starts `mariadbd`,
    /// its output appended to the error log; returns the log's length before the start.
    fn spawn(&mut self) -> u64 {
        let env = Env::get();
        if self.port == 0 && self.role != Role::Template {
            self.port = free_port();
        }
        self.write_config();
        let path = self.log();
        // mariadbd prints some warnings to stderr before it opens `log-error`: keep them too.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        env.chown(&path);
        let mut command = Command::new(&env.mariadbd);
        // `--defaults-file` must come first.
        command.arg(format!("--defaults-file={}", self.cnf().display()));
        if let Some(user) = &env.run_as {
            command.arg(format!("--user={user}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log's handle"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        offset
    }

    /// Waits until the server greets a client on its unix socket; `Err(its log since
    /// offset)` when it exits or does not come up in time. The socket accepts connections
    /// before the server is done starting, and a SIGTERM in that window hangs it (10.11), so
    /// only the handshake counts.
    fn await_ready(&mut self, offset: u64) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("a started server");
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                let log = std::fs::read(self.log()).unwrap_or_default();
                let since = log.get(offset as usize..).unwrap_or(&log);
                return Err(String::from_utf8_lossy(since).into_owned());
            }
            if greets(&self.socket()) {
                self.ready = true;
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                return Err(format!("(not ready after {START_TIMEOUT:?})\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for a clean shutdown; a server that never finished starting is killed instead
    /// (see [`await_ready`](Self::await_ready)).
    fn terminate(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if self.ready {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
        } else {
            let _ = child.kill();
        }
        self.ready = false;
    }

    /// Waits for the server to exit after [`terminate`](Self::terminate), killing it at
    /// `deadline`.
    fn reap(&mut self, deadline: Instant) {
        if let Some(mut child) = self.child.take() {
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Starts `nodes[i]` for each `i` in `which` at once and waits until each accepts connections.
/// A port another process took between our check and the server's bind is retried with a
/// fresh one. `Err` names the server that did not start and holds its log; the others may be
/// running (the caller stops them).
pub(super) fn launch(nodes: &mut [Server], which: &[usize]) -> Result<(), String> {
    let mut pending = which.to_vec();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let offsets: Vec<u64> = pending.iter().map(|&n| nodes[n].spawn()).collect();
        let mut retry = Vec::new();
        for (&n, offset) in pending.iter().zip(offsets) {
            if let Err(log) = nodes[n].await_ready(offset) {
                if attempt < 4 && log.contains("Address already in use") {
                    nodes[n].port = 0;
                    retry.push(n);
                } else {
                    return Err(format!(
                        "{} (port {}) did not start; its log:\n{}",
                        nodes[n].name,
                        nodes[n].port,
                        tail(&log, 30)
                    ));
                }
            }
        }
        if retry.is_empty() {
            return Ok(());
        }
        pending = retry;
    }
}

/// Shuts every running server down at once (SIGTERM), SIGKILL to those still running after
/// 10 s (a clean shutdown of these small servers takes milliseconds).
pub(super) fn stop(nodes: &mut [Server]) {
    for node in nodes.iter_mut() {
        node.terminate();
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        node.reap(deadline);
    }
}

/// Whether a server listening on `socket` sends its handshake.
fn greets(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(1))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

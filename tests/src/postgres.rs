//! A private PostgreSQL cluster for tests: one primary and `n` streaming hot-standby replicas
//! (`pg_basebackup -R -X stream -C -S replica<i>`) on free loopback ports, in its own temporary
//! directory (`switchyard-pg-<pid>-<n>`), with the database `appdb` and the roles
//!
//! * `app` / `app_pass` — owns `appdb`; SCRAM-SHA-256 over TCP;
//! * `readonly` / `readonly_pass` — `pg_read_all_data`, `default_transaction_read_only = on`;
//! * `md5user` / `md5_pass` — stored as an md5 hash and authenticated with `md5` over TCP (so a
//!   proxy's md5 backend authentication can be tested);
//! * `replicator` / `repl_pass` — `REPLICATION`, used by the standbys.
//!
//! TCP listens on 127.0.0.1 only. The unix socket (in `<dir>/run`) trusts everybody:
//! [`PgCluster::psql`] opens a superuser (`postgres`) session there. Tables the superuser
//! creates in `appdb` are readable and writable by `app` and `md5user` (default privileges).
//!
//! As root, the servers run as the `postgres` OS user (created when missing) through `runuser`.
//! They trade durability for speed (`fsync = off`, `full_page_writes = off`, 1 MiB WAL
//! segments), live on `/dev/shm` when it is a roomy tmpfs (`$SWITCHYARD_PG_TMPDIR` overrides;
//! else the system's temporary directory), and start from a template data directory (initdb +
//! roles + database, about 35 MB, `switchyard-pg-template-<version>-<hash>-<user>` next to the
//! clusters) built by the first test that needs it and reused by every later one. A cluster
//! with two replicas is up in about 0.4 s.
//!
//! On drop every node gets an immediate shutdown (SIGQUIT, as `pg_ctl stop -m immediate`) and
//! the directory is removed, also when the test panics. Clusters of a test process that was
//! killed before its drop ran are stopped and removed by the next [`PgCluster::start`].
//!
//! A test that needs PostgreSQL never skips: when PostgreSQL's server binaries are missing the
//! constructor panics with the command that installs them.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the PostgreSQL server binaries are looked for, newest first (or `$PG_BIN`).
const PG_BIN_CANDIDATES: [&str; 4] = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/14/bin",
];
/// What installs the binaries (Debian 12).
pub const INSTALL_COMMAND: &str = "apt-get install -y postgresql-15 postgresql-contrib";

pub const DATABASE: &str = "appdb";
pub const SUPERUSER: &str = "postgres";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app_pass";
pub const READONLY_USER: &str = "readonly";
pub const READONLY_PASSWORD: &str = "readonly_pass";
pub const MD5_USER: &str = "md5user";
pub const MD5_PASSWORD: &str = "md5_pass";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "repl_pass";

const OS_USER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// initdb's options (after `-D <dir>`).
const INITDB_ARGS: [&str; 8] = [
    "-U",
    SUPERUSER,
    "--auth-local=trust",
    "--auth-host=scram-sha-256",
    "-E",
    "UTF8",
    "--locale=C.UTF-8",
    "--wal-segsize=1",
];

/// A primary and its streaming replicas. Stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    /// `nodes[0]` is the primary, `nodes[1 + i]` is replica `i`.
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    data: PathBuf,
    /// The running postmaster (as root: the `runuser` wrapping it).
    child: Option<Child>,
    replay_paused: bool,
}

impl PgCluster {
    /// Starts a primary and `replicas` streaming replicas and waits until each answers a query.
    /// Panics when PostgreSQL is not installed or a server does not come up.
    pub fn start(replicas: usize) -> PgCluster {
        let bin = pg_bin();
        let run_as = os_user();
        reap_leftovers(&bin, run_as.as_deref());
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = scratch_root().join(format!(
            "switchyard-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        // From here on a panic drops `cluster`, which stops whatever was started.
        let mut cluster = PgCluster {
            dir: dir.clone(),
            bin,
            run_as,
            nodes: Vec::new(),
        };
        for sub in ["run", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the cluster's directories");
        }
        cluster.chown(&dir);

        let template = cluster.template();
        let primary = dir.join("primary");
        cluster.run_pg(
            "copy the template",
            Command::new("cp").arg("-a").arg(&template).arg(&primary),
        );
        cluster.nodes.push(Node {
            name: "primary".into(),
            port: 0,
            data: primary,
            child: None,
            replay_paused: false,
        });
        cluster.launch(&[0]);

        // Base backups of all replicas at once, then start them.
        let mut backups = Vec::new();
        for i in 0..replicas {
            let name = format!("replica{i}");
            let data = dir.join(&name);
            let mut command = cluster.pg_command("pg_basebackup");
            command
                .args(["-h", "127.0.0.1", "-p"])
                .arg(cluster.nodes[0].port.to_string())
                .args(["-U", REPLICATION_USER, "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "-C", "-S", &name, "-c", "fast", "-N"])
                .env("PGPASSWORD", REPLICATION_PASSWORD)
                .env("PGAPPNAME", &name)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let child = command.spawn().expect("run pg_basebackup");
            backups.push((name, data, child));
        }
        for (name, data, child) in backups {
            let out = child.wait_with_output().expect("wait for pg_basebackup");
            assert!(
                out.status.success(),
                "pg_basebackup for {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            append(
                &data.join("postgresql.conf"),
                &format!("cluster_name = '{name}'\n"),
            );
            cluster.nodes.push(Node {
                name,
                port: 0,
                data,
                child: None,
                replay_paused: false,
            });
        }
        let replicas: Vec<usize> = (1..cluster.nodes.len()).collect();
        cluster.launch(&replicas);
        cluster
    }

    /// The primary's TCP port (127.0.0.1).
    pub fn primary_port(&self) -> u16 {
        self.nodes[0].port
    }

    /// The replicas' TCP ports (127.0.0.1), replica 0 first.
    pub fn replica_ports(&self) -> Vec<u16> {
        self.nodes[1..].iter().map(|n| n.port).collect()
    }

    /// The cluster's directory: `primary/`, `replica<i>/` (data), `run/` (unix sockets),
    /// `log/<node>.log` (server logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the unix sockets (`psql -h <this> -p <port> -U postgres`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A server's log, for assertion messages.
    pub fn log_of(&self, port: u16) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node listens on port {port}"));
        std::fs::read_to_string(self.dir.join("log").join(format!("{}.log", node.name)))
            .unwrap_or_default()
    }

    /// Runs `sql` (one or more statements, psql meta-commands allowed) as the superuser in
    /// `appdb` over the unix socket; unaligned, tuples only, trimmed. Panics with psql's
    /// error when a statement fails.
    pub fn psql(&self, port: u16, sql: &str) -> String {
        self.try_psql(port, sql)
            .unwrap_or_else(|e| panic!("psql on port {port} failed for `{sql}`: {e}"))
    }

    /// [`psql`](Self::psql), returning psql's stderr as the error.
    pub fn try_psql(&self, port: u16, sql: &str) -> Result<String, String> {
        self.try_psql_as(port, SUPERUSER, DATABASE, sql)
    }

    /// Runs `sql` as `user` in database `db` over the unix socket (trust: no password).
    pub fn try_psql_as(
        &self,
        port: u16,
        user: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        psql_socket(&self.bin, &self.socket_dir(), port, user, db, sql)
    }

    /// Turns TLS on in every node with this certificate and key (`ssl = on`, reloaded) and
    /// lets `app` in over TCP only with TLS (`hostssl`; a plain login of `app` is rejected by
    /// `pg_hba.conf`). Also turns on `log_connections`. Returns once a new session sees
    /// `ssl = on`.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        let hba = format!(
            "hostssl all {APP_USER} 127.0.0.1/32 scram-sha-256\n\
             hostnossl all {APP_USER} 127.0.0.1/32 reject\n{PG_HBA}"
        );
        for node in &self.nodes {
            let (crt, pem) = (node.data.join("server.crt"), node.data.join("server.key"));
            std::fs::copy(cert, &crt).expect("copy the server certificate");
            std::fs::copy(key, &pem).expect("copy the server key");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod the server key");
            self.chown(&crt);
            self.chown(&pem);
            append(
                &node.data.join("postgresql.conf"),
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 log_connections = on\n",
            );
            std::fs::write(node.data.join("pg_hba.conf"), &hba).expect("write pg_hba.conf");
            self.psql(node.port, "SELECT pg_reload_conf()");
        }
        let started = Instant::now();
        for node in &self.nodes {
            while self.psql(node.port, "SHOW ssl") != "on" {
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "{} did not turn ssl on",
                    node.name
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops replica `i` at once (`pg_ctl stop -m immediate`: no shutdown checkpoint, like a
    /// crash).
    pub fn stop_replica(&mut self, i: usize) {
        self.stop_nodes(&[1 + i]);
    }

    /// Starts replica `i` again (same port) and waits until it answers.
    pub fn start_replica(&mut self, i: usize) {
        if self.nodes[1 + i].child.is_none() {
            self.launch(&[1 + i]);
        }
    }

    /// Stops the primary at once (`pg_ctl stop -m immediate`: like a crash). The replicas keep
    /// running, in recovery, until one is promoted.
    pub fn stop_primary(&mut self) {
        self.stop_nodes(&[0]);
    }

    /// Promotes replica `i` (`SELECT pg_promote()`, which waits until the promotion is done).
    pub fn promote_replica(&mut self, i: usize) {
        let port = self.nodes[1 + i].port;
        let done = self.psql(port, "SELECT pg_promote()");
        assert_eq!(done, "t", "pg_promote() on replica {i} answered `{done}`");
    }

    /// Pauses WAL replay on replica `i` (it keeps receiving WAL).
    pub fn pause_replay(&mut self, i: usize) {
        let port = self.nodes[1 + i].port;
        self.psql(port, "SELECT pg_wal_replay_pause()");
        self.nodes[1 + i].replay_paused = true;
    }

    /// Resumes WAL replay on replica `i`.
    pub fn resume_replay(&mut self, i: usize) {
        let port = self.nodes[1 + i].port;
        self.psql(port, "SELECT pg_wal_replay_resume()");
        self.nodes[1 + i].replay_paused = false;
    }

    /// Waits until every running replica whose replay is not paused has replayed the primary's
    /// WAL up to `pg_current_wal_lsn()` as of this call. Panics after 30 s.
    pub fn wait_replicated(&self) {
        let target = self.psql(self.primary_port(), "SELECT pg_current_wal_lsn()");
        let started = Instant::now();
        for node in &self.nodes[1..] {
            if node.child.is_none() || node.replay_paused {
                continue;
            }
            let sql = format!(
                "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{target}') >= 0, false)"
            );
            loop {
                if self.try_psql(node.port, &sql).as_deref() == Ok("t") {
                    break;
                }
                if started.elapsed() > REPLICATION_TIMEOUT {
                    let replayed = self
                        .try_psql(node.port, "SELECT pg_last_wal_replay_lsn()")
                        .unwrap_or_else(|e| format!("unknown ({e})"));
                    panic!(
                        "{} (port {}) did not replay the primary's WAL up to {target} within \
                         {REPLICATION_TIMEOUT:?} (replayed: {replayed}); its log:\n{}",
                        node.name,
                        node.port,
                        tail(&self.log_of(node.port), 20)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Bytes of WAL replica `i` has received but not replayed yet (grows while replay is
    /// paused and the primary writes).
    pub fn replica_lag_bytes(&self, i: usize) -> u64 {
        let out = self.psql(
            self.nodes[1 + i].port,
            "SELECT greatest(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), \
             pg_last_wal_replay_lsn()), 0), 0)::bigint",
        );
        out.parse()
            .unwrap_or_else(|_| panic!("replica_lag_bytes: unexpected answer `{out}`"))
    }

    /// Whether replica `i` is running (as far as this harness knows).
    pub fn replica_running(&self, i: usize) -> bool {
        self.nodes[1 + i].child.is_some()
    }

    /// Starts the nodes `ns` at once and waits until each accepts connections. A port taken
    /// between our check and the server's bind is retried with a fresh port.
    fn launch(&mut self, ns: &[usize]) {
        let mut pending: Vec<usize> = ns.to_vec();
        for attempt in 1.. {
            let mut offsets = Vec::new();
            for &n in &pending {
                offsets.push(self.spawn_node(n));
            }
            let mut retry = Vec::new();
            for (&n, offset) in pending.iter().zip(offsets) {
                if let Err(log) = self.await_node(n, offset) {
                    if attempt < 4 && log.contains("could not bind") {
                        self.nodes[n].port = 0;
                        retry.push(n);
                    } else {
                        panic!(
                            "{} (port {}) did not start; its log:\n{}",
                            self.nodes[n].name,
                            self.nodes[n].port,
                            tail(&log, 30)
                        );
                    }
                }
            }
            if retry.is_empty() {
                return;
            }
            pending = retry;
        }
    }

    /// Starts the postmaster of node `n` (as a child, its output to `log/<node>.log`); returns
    /// the log's length before the start.
    fn spawn_node(&mut self, n: usize) -> u64 {
        if self.nodes[n].port == 0 {
            self.nodes[n].port = free_port();
            append(
                &self.nodes[n].data.join("postgresql.conf"),
                &format!(
                    "port = {}\nunix_socket_directories = '{}'\n",
                    self.nodes[n].port,
                    self.socket_dir().display()
                ),
            );
        }
        // A postmaster.pid left by a crash would make a stale "ready" visible to await_node.
        let pid_file = self.nodes[n].data.join("postmaster.pid");
        if let Some(pid) = postmaster_pid(&self.nodes[n].data) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            assert!(
                comm.trim() != "postgres",
                "{}: a postmaster (pid {pid}) already runs in {}",
                self.nodes[n].name,
                self.nodes[n].data.display()
            );
            let _ = std::fs::remove_file(&pid_file);
        }
        let path = self.log_path(n);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        self.chown(&path);
        let child = self
            .pg_command("postgres")
            .arg("-D")
            .arg(&self.nodes[n].data)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log's handle"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.nodes[n].child = Some(child);
        offset
    }

    /// Waits until node `n`'s postmaster says it accepts connections (`postmaster.pid`, as
    /// `pg_ctl -w` does, but polled every 10 ms); `Err(its log since offset)` when it exits.
    fn await_node(&mut self, n: usize, offset: u64) -> Result<(), String> {
        let started = Instant::now();
        let pid_file = self.nodes[n].data.join("postmaster.pid");
        loop {
            let child = self.nodes[n].child.as_mut().expect("a started node");
            if let Ok(Some(_)) = child.try_wait() {
                self.nodes[n].child = None;
                let log = std::fs::read(self.log_path(n)).unwrap_or_default();
                let since = log.get(offset as usize..).unwrap_or(&log);
                return Err(String::from_utf8_lossy(since).into_owned());
            }
            // Line 8 of postmaster.pid: "starting", "ready" (also a hot standby accepting
            // connections), "standby" or "stopping".
            let status = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if matches!(
                status.lines().nth(7).map(str::trim),
                Some("ready" | "standby")
            ) {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                let log = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
                return Err(format!(
                    "(not ready after {START_TIMEOUT:?})\n{}",
                    tail(&log, 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir
            .join("log")
            .join(format!("{}.log", self.nodes[n].name))
    }

    /// Immediate shutdown (SIGQUIT to the postmaster) of the nodes `ns`, all at once.
    fn stop_nodes(&mut self, ns: &[usize]) {
        for &n in ns {
            if self.nodes[n].child.is_some() {
                signal_postmaster(&self.nodes[n].data, "QUIT");
            }
        }
        for &n in ns {
            if let Some(mut child) = self.nodes[n].child.take() {
                let started = Instant::now();
                // The postmaster exits once its children have (it SIGKILLs them after 5 s).
                while !matches!(child.try_wait(), Ok(Some(_))) {
                    if started.elapsed() > Duration::from_secs(20) {
                        signal_postmaster(&self.nodes[n].data, "KILL");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            self.nodes[n].replay_paused = false;
        }
    }

    /// The template data directory, built once per machine (and version of this file).
    fn template(&self) -> PathBuf {
        static BUILD: Mutex<()> = Mutex::new(());
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        static VERSION: OnceLock<String> = OnceLock::new();
        let version = VERSION.get_or_init(|| {
            // `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)` -> `15.14`
            let out = Command::new(self.bin.join("postgres"))
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.split_whitespace()
                .nth(2)
                .unwrap_or("unknown")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect()
        });
        // The template is renamed into place only once complete, so if it exists it is usable.
        let template = scratch_root().join(format!(
            "switchyard-pg-template-{version}-{:016x}-{}",
            template_hash(),
            self.run_as
                .clone()
                .unwrap_or_else(|| std::env::var("USER").unwrap_or_else(|_| "self".into()))
        ));
        if template.is_dir() {
            return template;
        }
        let build = scratch_root().join(format!(
            "switchyard-pg-template-build-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&build);
        std::fs::create_dir_all(build.join("run")).expect("create the template directory");
        self.chown(&build);
        let data = build.join("data");
        let result = build_template(&self.bin, self.run_as.as_deref(), &build, &data);
        if let Err(e) = result {
            pg_ctl_stop(&self.bin, self.run_as.as_deref(), &build, &data);
            let _ = std::fs::remove_dir_all(&build);
            panic!("could not build the PostgreSQL template: {e}");
        }
        // Another test process may have won the race: then use its template.
        if let Err(e) = std::fs::rename(&data, &template) {
            assert!(
                template.is_dir(),
                "could not move the template into place: {e}"
            );
        }
        let _ = std::fs::remove_dir_all(&build);
        template
    }

    fn pg_command(&self, program: &str) -> Command {
        pg_command(&self.bin, self.run_as.as_deref(), &self.dir, program)
    }

    fn run_pg(&self, what: &str, command: &mut Command) {
        let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    }

    fn chown(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", path.display());
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.stop_nodes(&all);
        for node in &self.nodes {
            // A postmaster we lost track of, if any.
            pg_ctl_stop(&self.bin, self.run_as.as_deref(), &self.dir, &node.data);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Identifies what goes into the template, so a changed harness never reuses an old one.
fn template_hash() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (INITDB_ARGS, SERVER_CONF, PG_HBA, roles_sql(), appdb_sql()).hash(&mut hasher);
    hasher.finish()
}

/// initdb, start, roles and database, clean stop.
fn build_template(
    bin: &Path,
    run_as: Option<&str>,
    build: &Path,
    data: &Path,
) -> Result<(), String> {
    let out = pg_command(bin, run_as, build, "initdb")
        .arg("-D")
        .arg(data)
        .args(INITDB_ARGS)
        .arg("--no-sync")
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb: {}", output_text(&out)));
    }
    append(&data.join("postgresql.conf"), SERVER_CONF);
    std::fs::write(data.join("pg_hba.conf"), PG_HBA).map_err(|e| format!("pg_hba.conf: {e}"))?;
    let port = free_port();
    let socket = build.join("run");
    let out = pg_command(bin, run_as, build, "pg_ctl")
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(build.join("template.log"))
        .arg("-o")
        .arg(format!("-p {port} -k {}", socket.display()))
        .args(["-w", "-t", "60", "start"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("pg_ctl start: {e}"))?;
    if !out.status.success() {
        let log = std::fs::read_to_string(build.join("template.log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start: {}\n{}",
            output_text(&out),
            tail(&log, 20)
        ));
    }
    psql_socket(bin, &socket, port, SUPERUSER, "postgres", &roles_sql())?;
    psql_socket(bin, &socket, port, SUPERUSER, DATABASE, &appdb_sql())?;
    let out = pg_command(bin, run_as, build, "pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "fast", "-w", "stop"])
        .output()
        .map_err(|e| format!("pg_ctl stop: {e}"))?;
    if !out.status.success() {
        return Err(format!("pg_ctl stop: {}", output_text(&out)));
    }
    Ok(())
}

const SERVER_CONF: &str = "
# --- switchyard tests (tests/src/postgres.rs) ---
listen_addresses = '127.0.0.1'
max_connections = 300
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '64MB'
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = '200ms'
shared_buffers = '16MB'
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
";

const PG_HBA: &str = "\
# TYPE  DATABASE     USER     ADDRESS        METHOD
local   all          all                     trust
local   replication  all                     trust
host    all          md5user  127.0.0.1/32   md5
host    all          all      127.0.0.1/32   scram-sha-256
host    replication  all      127.0.0.1/32   scram-sha-256
";

fn roles_sql() -> String {
    format!(
        "SET client_min_messages = warning;
CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}';
CREATE ROLE {READONLY_USER} LOGIN PASSWORD '{READONLY_PASSWORD}';
ALTER ROLE {READONLY_USER} SET default_transaction_read_only = on;
GRANT pg_read_all_data TO {READONLY_USER};
CREATE ROLE {REPLICATION_USER} LOGIN REPLICATION PASSWORD '{REPLICATION_PASSWORD}';
SET password_encryption = 'md5';
CREATE ROLE {MD5_USER} LOGIN;
ALTER ROLE {MD5_USER} PASSWORD '{MD5_PASSWORD}';
RESET password_encryption;
CREATE DATABASE {DATABASE} OWNER {APP_USER};
"
    )
}

fn appdb_sql() -> String {
    format!(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {SUPERUSER} GRANT ALL ON TABLES TO {APP_USER}, {MD5_USER};
ALTER DEFAULT PRIVILEGES FOR ROLE {SUPERUSER} GRANT ALL ON SEQUENCES TO {APP_USER}, {MD5_USER};
GRANT ALL ON SCHEMA public TO {MD5_USER};
"
    )
}

/// A PostgreSQL program, as the `postgres` OS user when we are root, run in `cwd` (the OS user
/// must be able to enter it).
fn pg_command(bin: &Path, run_as: Option<&str>, cwd: &Path, program: &str) -> Command {
    let path = bin.join(program);
    let mut command = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(path);
            c
        }
        None => Command::new(path),
    };
    command.current_dir(cwd);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICE",
        "PGOPTIONS",
        "PGDATA",
    ] {
        command.env_remove(var);
    }
    command
}

fn pg_ctl_stop(bin: &Path, run_as: Option<&str>, cwd: &Path, data: &Path) {
    if !data.join("postmaster.pid").is_file() {
        return;
    }
    let _ = pg_command(bin, run_as, cwd, "pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// psql over the unix socket (trust), as the current OS user.
fn psql_socket(
    bin: &Path,
    socket: &Path,
    port: u16,
    user: &str,
    db: &str,
    sql: &str,
) -> Result<String, String> {
    let mut child = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket)
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", user, "-d", db, "-f", "-"])
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE")
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    let mut stdin = child.stdin.take().expect("psql's stdin");
    let sql = sql.to_owned();
    // A separate writer: psql may fill its output pipe before it has read all its input.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(sql.as_bytes());
        let _ = stdin.write_all(b"\n");
    });
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    let _ = writer.join();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(output_text(&out))
    }
}

/// Sends `signal` to the postmaster named in `data/postmaster.pid`, if any.
fn signal_postmaster(data: &Path, signal: &str) {
    if let Some(pid) = postmaster_pid(data) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn output_text(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    format!("{} {}", out.status, format!("{stderr}{stdout}").trim())
}

/// The directory of `postgres`, `initdb`, `pg_ctl`, `pg_basebackup` and `psql`.
fn pg_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN") {
        candidates.push(dir.into());
    }
    candidates.extend(PG_BIN_CANDIDATES.iter().map(PathBuf::from));
    let found = candidates.into_iter().find(|dir| {
        ["postgres", "initdb", "pg_ctl", "pg_basebackup", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    });
    found.unwrap_or_else(|| {
        panic!("PostgreSQL server binaries not found (looked in $PG_BIN and /usr/lib/postgresql/*/bin): install them with `{INSTALL_COMMAND}`")
    })
}

/// As root: the `postgres` OS user (created when missing), since PostgreSQL refuses to run as
/// root. Otherwise `None`: the servers run as the current user.
fn os_user() -> Option<String> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        return None;
    }
    let exists = || {
        Command::new("id")
            .args(["-u", OS_USER])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                OS_USER,
            ])
            .status();
        assert!(
            exists(),
            "could not create the `{OS_USER}` OS user with useradd"
        );
    }
    Some(OS_USER.to_owned())
}

/// Stops and removes the clusters (and template builds) of test processes that no longer exist
/// (killed before their `Drop` could run).
fn reap_leftovers(bin: &Path, run_as: Option<&str>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let tmp = scratch_root();
        let Ok(entries) = std::fs::read_dir(&tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = if let Some(rest) = name.strip_prefix("switchyard-pg-template-build-") {
                rest
            } else if let Some(rest) = name.strip_prefix("switchyard-pg-")
                && !rest.starts_with("template")
            {
                rest.split('-').next().unwrap_or("")
            } else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let dir = entry.path();
            if let Ok(nodes) = std::fs::read_dir(&dir) {
                for node in nodes.flatten() {
                    pg_ctl_stop(bin, run_as, &tmp, &node.path());
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

/// Where clusters live: `$SWITCHYARD_PG_TMPDIR`, else `/dev/shm` when it is a tmpfs with room
/// (writing the data directories there is several times faster than on a disk-backed `/tmp`),
/// else the system's temporary directory.
fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SWITCHYARD_PG_TMPDIR") {
            return dir.into();
        }
        let shm = Path::new("/dev/shm");
        let roomy = Command::new("df")
            .args(["-Pk", "--"])
            .arg(shm)
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let line = text.lines().nth(1)?.to_owned();
                let fields: Vec<&str> = line.split_whitespace().collect();
                let avail_kib: u64 = fields.get(3)?.parse().ok()?;
                Some(avail_kib >= 2 * 1024 * 1024)
            })
            .unwrap_or(false);
        if roomy {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
    .clone()
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

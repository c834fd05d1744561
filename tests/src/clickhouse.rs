//! Private `clickhouse-server` instances for tests: each on free loopback ports in its own
//! temporary directory, named `ch0`, `ch1`, ... (the name is each server's `display_name`, so the
//! `X-ClickHouse-Server-Display-Name` response header tells which node answered), with the users
//! `default` (no password), `reader` (`readonly=1`) and `writer`. Stopped (SIGKILL) and removed on
//! drop. As root, the servers run as the `clickhouse` OS user (created when missing), as
//! Debian's package would.
//!
//! A test that needs ClickHouse never skips: when `/usr/sbin/clickhouse-server` is missing the
//! constructor panics with the command that installs it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";
pub const READER_PASSWORD: &str = "reader_pass";
pub const WRITER_PASSWORD: &str = "writer_pass";
const OS_USER: &str = "clickhouse";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Several independent servers.
#[derive(Debug)]
pub struct ClickHouse {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// One server.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub http_port: u16,
    /// The HTTPS port, when started by [`ClickHouse::start_tls`] (else 0).
    pub https_port: u16,
    /// Certificate and key served on `https_port`.
    tls: Option<(PathBuf, PathBuf)>,
    dir: PathBuf,
    child: Option<Child>,
}

impl ClickHouse {
    /// Starts `n` servers and waits until each answers `SELECT 1`. Panics when ClickHouse is not
    /// installed or a server does not come up.
    pub fn start(n: usize) -> ClickHouse {
        Self::start_with(n, None)
    }

    /// [`start`](Self::start), each server also serving HTTPS (on `https_port`) with this
    /// certificate and key.
    pub fn start_tls(n: usize, cert: &Path, key: &Path) -> ClickHouse {
        Self::start_with(n, Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_with(n: usize, tls: Option<(PathBuf, PathBuf)>) -> ClickHouse {
        assert!(
            Path::new(SERVER_BIN).is_file(),
            "{SERVER_BIN} is missing: install it with `apt-get install -y clickhouse-server clickhouse-client` \
             (tests/run.sh does it)"
        );
        let owner = os_user();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-ch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cluster = ClickHouse {
            nodes: Vec::new(),
            dir: dir.clone(),
        };
        for i in 0..n {
            let node_dir = dir.join(format!("ch{i}"));
            let mut node = Node {
                name: format!("ch{i}"),
                http_port: 0,
                https_port: 0,
                tls: tls.clone(),
                dir: node_dir,
                child: None,
            };
            node.spawn(owner);
            cluster.nodes.push(node);
        }
        for node in &mut cluster.nodes {
            node.wait_ready(owner);
        }
        cluster
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Kills node `i` (SIGKILL, like a crash).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].kill();
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// `127.0.0.1:<http port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `127.0.0.1:<https port>`.
    pub fn https_addr(&self) -> String {
        format!("127.0.0.1:{}", self.https_port)
    }

    /// Runs `sql` as `default`; the body, or a panic with the server's error.
    pub fn query(&self, sql: &str) -> String {
        let (status, body) = self.query_as("default", "", sql);
        assert_eq!(status, 200, "{}: `{sql}` failed: {body}", self.name);
        body
    }

    /// Runs `sql` as `user`; (status, body).
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> (u16, String) {
        http_post(self.http_port, user, password, sql)
            .unwrap_or_else(|e| panic!("{}: cannot reach the server: {e}", self.name))
    }

    /// Flushes the query log and counts finished queries whose text contains `needle` (ignores
    /// the counting query itself).
    pub fn finished_queries(&self, needle: &str) -> u64 {
        self.logged_queries("type = 2", needle)
    }

    /// [`finished_queries`](Self::finished_queries) once it has reached `expected` (or after
    /// 5 s), read again a moment later. ClickHouse logs a query's end after the last byte of
    /// its answer has left, so right after a client got its response the entry may not be
    /// there yet; the second read catches a run too many that was still being logged.
    pub async fn finished_queries_settled(&self, needle: &str, expected: u64) -> u64 {
        self.settled(expected, || self.finished_queries(needle))
            .await
    }

    /// Flushes the query log and counts queries whose text contains `needle` that ended with
    /// the exception `code` (394: killed), before or while running (ignores the counting query).
    pub fn failed_queries(&self, needle: &str, code: u32) -> u64 {
        // `exception` rather than `exception_code`, which older servers' query log lacks.
        self.logged_queries(&format!("exception LIKE '%Code: {code}%'"), needle)
    }

    /// Like [`failed_queries`](Self::failed_queries), whatever the exception, settled.
    pub async fn queries_with_an_exception_settled(&self, needle: &str, expected: u64) -> u64 {
        self.settled(expected, || self.logged_queries("exception != ''", needle))
            .await
    }

    /// [`failed_queries`](Self::failed_queries), settled as
    /// [`finished_queries_settled`](Self::finished_queries_settled) is: a killed query's entry is
    /// written when the query has unwound, which can be after its client got the error.
    pub async fn failed_queries_settled(&self, needle: &str, code: u32, expected: u64) -> u64 {
        self.settled(expected, || self.failed_queries(needle, code))
            .await
    }

    /// Flushes the query log and counts the entries that match `condition` and whose query
    /// contains `needle`, other than the counting query itself.
    fn logged_queries(&self, condition: &str, needle: &str) -> u64 {
        self.query("SYSTEM FLUSH LOGS");
        let escaped = needle.replace('\\', "\\\\").replace('\'', "\\'");
        let sql = format!(
            "SELECT count() FROM system.query_log WHERE {condition} \
             AND position(query, '{escaped}') > 0 AND position(query, 'system.query_log') = 0"
        );
        self.query(&sql).trim().parse().unwrap_or(0)
    }

    /// `count()` once it has reached `expected` (or after 5 s), read again 200 ms later.
    async fn settled(&self, expected: u64, count: impl Fn() -> u64) -> u64 {
        let started = std::time::Instant::now();
        while count() < expected && started.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        count()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self, owner: Option<(u32, u32)>) {
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            std::fs::create_dir_all(self.dir.join(sub)).expect("create the server's directories");
        }
        let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
        self.http_port = ports[0];
        let mut config = config_xml(&self.name, &self.dir, &ports);
        if let Some((cert, key)) = &self.tls {
            self.https_port = ports[3];
            std::fs::copy(cert, self.dir.join("server.crt")).expect("copy the certificate");
            std::fs::copy(key, self.dir.join("server.key")).expect("copy the key");
            config = config.replace("</yandex>", &https_xml(&self.dir, self.https_port));
        }
        std::fs::write(self.dir.join("config.xml"), config).expect("write config.xml");
        std::fs::write(self.dir.join("users.xml"), USERS_XML).expect("write users.xml");
        let mut command = Command::new(SERVER_BIN);
        command
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&self.dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", self.dir.display());
            command.uid(uid).gid(gid);
        }
        self.child = Some(command.spawn().expect("start clickhouse-server"));
    }

    fn wait_ready(&mut self, owner: Option<(u32, u32)>) {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            if let Ok((200, body)) = http_post(self.http_port, "default", "", "SELECT 1")
                && body.trim() == "1"
            {
                return;
            }
            if !self.is_running() {
                // A port taken between our check and the server's bind: try fresh ports.
                attempts += 1;
                let log = std::fs::read_to_string(self.dir.join("log/clickhouse-server.err.log"))
                    .unwrap_or_default();
                assert!(
                    attempts < 3,
                    "{} exited during start-up; its error log:\n{}",
                    self.name,
                    tail(&log, 30)
                );
                self.spawn(owner);
                continue;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "{} did not answer SELECT 1 within {START_TIMEOUT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// As root: the uid and gid of the `clickhouse` user (created when missing). Otherwise `None`:
/// the servers run as the current user.
fn os_user() -> Option<(u32, u32)> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, OS_USER]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
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
    }
    Some((
        id("-u").expect("the clickhouse OS user"),
        id("-g").expect("the clickhouse OS group"),
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A minimal blocking HTTP/1.0 POST (the harness must not depend on the proxy's client code).
fn http_post(port: u16, user: &str, password: &str, sql: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nX-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {password}\r\n\
         Content-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// The HTTPS listener and its certificate (the config's closing tag included).
fn https_xml(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"    <https_port>{port}</https_port>
    <openSSL>
        <server>
            <certificateFile>{d}/server.crt</certificateFile>
            <privateKeyFile>{d}/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
</yandex>"#
    )
}

fn config_xml(name: &str, dir: &Path, ports: &[u16]) -> String {
    let d = dir.display();
    format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <display_name>{name}</display_name>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <interserver_http_port>{inter}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>10</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>67108864</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>
</yandex>
"#,
        http = ports[0],
        tcp = ports[1],
        inter = ports[2],
    )
}

const USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>2000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <log_queries>1</log_queries>
        </default>
        <readonly>
            <readonly>1</readonly>
            <log_queries>1</log_queries>
        </readonly>
    </profiles>
    <users>
        <default><password></password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
        <reader><password>reader_pass</password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>readonly</profile><quota>default</quota></reader>
        <writer><password>writer_pass</password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></writer>
    </users>
    <quotas>
        <default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default>
    </quotas>
</yandex>
"#;

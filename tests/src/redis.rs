//! A private `redis-server` for tests and benchmarks: loopback only, a free port, no persistence,
//! its own temporary directory, killed when the guard drops.
//!
//! Standard library only, so both the integration tests and the host crate's unit tests and
//! benches can include it (`#[path = ".../tests/src/redis.rs"] mod redis_server;`).
//!
//! A test that needs Redis never skips: when `redis-server` is not installed the constructor
//! panics with the command that installs it.

#![allow(dead_code)] // each includer uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`; stopped (SIGKILL) and its directory removed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Also listen on `<dir>/redis.sock`.
    unix_socket: bool,
    /// Also serve TLS on this port, with a certificate for 127.0.0.1 signed by `<dir>/ca.crt`.
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port. Panics when `redis-server` is missing or does not
    /// come up.
    pub fn start() -> RedisServer {
        Self::start_with(false, false)
    }

    /// Like [`start`](Self::start), and also serving TLS ([`tls_url`](Self::tls_url)) with a
    /// certificate for `127.0.0.1` signed by a throwaway authority ([`ca_file`]
    /// (Self::ca_file)); [`command`](Self::command) keeps using the plain port.
    pub fn start_with_tls() -> RedisServer {
        Self::start_with(false, true)
    }

    /// Like [`start`](Self::start), and also listening on a Unix socket ([`unix_url`]
    /// (Self::unix_url)); [`command`](Self::command) keeps using TCP.
    pub fn start_with_unix_socket() -> RedisServer {
        Self::start_with(true, false)
    }

    fn start_with(unix_socket: bool, tls: bool) -> RedisServer {
        // The port is free when we ask, but another process may take it before redis binds it:
        // try a few ports before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir(port);
            let mut server = RedisServer {
                port,
                dir,
                unix_socket,
                tls_port: tls.then(free_port),
                child: None,
            };
            if tls && let Err(e) = server.make_certificates() {
                panic!("could not make certificates for redis-server: {e}");
            }
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `unix://<dir>/redis.sock`; panics unless started with
    /// [`start_with_unix_socket`](Self::start_with_unix_socket).
    pub fn unix_url(&self) -> String {
        assert!(self.unix_socket, "started without a unix socket");
        format!("unix://{}", self.socket_path().display())
    }

    /// `rediss://127.0.0.1:<tls port>`; panics unless started with
    /// [`start_with_tls`](Self::start_with_tls).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started without TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The PEM certificate of the authority that signed the TLS certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA and a server certificate for 127.0.0.1 it signed, with the `openssl` command. The
    /// server certificate is not itself a CA (a verifier refuses a CA used as a server).
    fn make_certificates(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&self.dir)
                .output()
                .map_err(|e| format!("run openssl (apt-get install -y openssl): {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=switchyard test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ])?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
        ])?;
        std::fs::write(
            self.dir.join("redis.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| format!("cannot write redis.ext: {e}"))?;
        run(&[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "redis.ext",
            "-out",
            "redis.crt",
        ])
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL: no goodbye to clients, like a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)); the data is gone.
    /// Panics when it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        // The kernel may keep the port for a moment after the kill.
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("could not restart redis-server on port {}: {e}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Sends one command (inline protocol) and returns the raw reply, e.g. `+PONG\r\n`.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{line}\r\n").as_bytes())?;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let log = self.dir.join("redis.log");
        let mut command = Command::new("redis-server");
        if self.unix_socket {
            command
                .arg("--unixsocket")
                .arg(self.socket_path())
                .args(["--unixsocketperm", "700"]);
        }
        if let Some(port) = self.tls_port {
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("redis.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("redis.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.ca_file())
                .args(["--tls-auth-clients", "no"]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (needed by this test): \
                 run `apt-get install -y redis-server` as root"
            ),
            Err(e) => return Err(format!("cannot run redis-server: {e}")),
        };
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(format!("redis-server exited; see {}", log.display()));
            }
            if self.command("PING").is_ok_and(|r| r.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} not answering after {START_TIMEOUT:?}; see {}",
                    self.port,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        remove_dir(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

fn temp_dir(port: u16) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "switchyard-redis-{}-{}-{port}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

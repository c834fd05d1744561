//! Helpers for tests of Switchyard's PostgreSQL frontend: a proxy config in front of a
//! [`PgCluster`], and clients (psql, pgbench, tokio-postgres) that talk to the proxy.
//!
//! ```ignore
//! let pg = PgCluster::start(2);
//! let proxy = Proxy::start(&pg::PgConfig::new(&pg).primary_pool("size = 4").build()).await;
//! assert_eq!(pg::psql(proxy.addr(), "SELECT 1").await, Ok("1".into()));
//! let client = pg::connect(proxy.addr()).await;
//! ```
//!
//! Every client helper is async (tokio processes): the proxy runs on the test's runtime, so a
//! blocking client would take one of its worker threads.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::postgres::{APP_PASSWORD, APP_USER, DATABASE, PgCluster};

/// The cluster's name in the generated config (`[cluster.pg]`), also the listener's name.
pub const CLUSTER: &str = "pg";
/// The proxy user every generated config has (unless [`PgConfig::no_app_user`]): `app` /
/// `app_pass`, SCRAM — the same credentials as the backend role, which the cluster's defaults
/// use as backend login for every pool.
pub const USER: &str = APP_USER;
pub const PASSWORD: &str = APP_PASSWORD;

/// Builds a proxy config (TOML) with one `postgres` listener on `127.0.0.1:0` in front of a
/// [`PgCluster`]:
///
/// * `[cluster.pg]`, database `appdb`, defaults: backend login `app` / `app_pass`, fast health
///   checks (interval 700 ms, timeout 700 ms, 3 failures in a row ban for 500 ms), `connect_timeout` 2 s;
/// * pool `primary` (role primary, the primary node);
/// * pool `replicas` (role replica, every replica, `fallback_pool = "primary"`);
/// * `[[user]]` `app` / `app_pass` (SCRAM);
/// * `[server] drain_timeout = "2s"`.
///
/// Each part takes extra TOML keys; `extra` is appended at the end (more `[[user]]`s,
/// `[policy]`, `[cache]`, ...).
#[derive(Debug, Clone)]
pub struct PgConfig {
    primary_port: u16,
    replica_ports: Vec<u16>,
    listener: String,
    cluster: String,
    defaults: String,
    primary_pool: String,
    replica_pool: String,
    app_user: Option<String>,
    extra: String,
}

impl PgConfig {
    pub fn new(pg: &PgCluster) -> PgConfig {
        PgConfig {
            primary_port: pg.primary_port(),
            replica_ports: pg.replica_ports(),
            listener: String::new(),
            cluster: String::new(),
            defaults: String::new(),
            primary_pool: String::new(),
            replica_pool: String::new(),
            app_user: Some(String::new()),
            extra: String::new(),
        }
    }

    /// Extra keys of the `[[listener]]` (e.g. `max_connections = 2`, `idle_timeout = "1s"`).
    pub fn listener(mut self, toml: &str) -> Self {
        self.listener.push_str(toml);
        self.listener.push('\n');
        self
    }

    /// Extra keys of `[cluster.pg]` (e.g. `read_your_writes = "1s"`).
    pub fn cluster(mut self, toml: &str) -> Self {
        self.cluster.push_str(toml);
        self.cluster.push('\n');
        self
    }

    /// Extra keys of `[cluster.pg.defaults]` (inherited by both pools, e.g. `size = 4`,
    /// `mode = "session"`). Do not repeat `auth`, `health` or `connect_timeout` here: override
    /// them per pool.
    pub fn defaults(mut self, toml: &str) -> Self {
        self.defaults.push_str(toml);
        self.defaults.push('\n');
        self
    }

    /// Extra keys of `[cluster.pg.pool.primary]` (e.g. `size = 1`, `checkout_timeout = "300ms"`).
    pub fn primary_pool(mut self, toml: &str) -> Self {
        self.primary_pool.push_str(toml);
        self.primary_pool.push('\n');
        self
    }

    /// Extra keys of `[cluster.pg.pool.replicas]` (e.g. `max_replica_lag_bytes = "64KiB"`).
    pub fn replica_pool(mut self, toml: &str) -> Self {
        self.replica_pool.push_str(toml);
        self.replica_pool.push('\n');
        self
    }

    /// Extra keys of the `app` user (e.g. `admin = true`, `max_connections = 2`).
    pub fn app_user(mut self, toml: &str) -> Self {
        let user = self.app_user.get_or_insert_with(String::new);
        user.push_str(toml);
        user.push('\n');
        self
    }

    /// Leaves the `app` user out (then `extra` must define at least one `[[user]]`).
    pub fn no_app_user(mut self) -> Self {
        self.app_user = None;
        self
    }

    /// TOML appended at the end: more `[[user]]`s, `[policy]`, `[cache]`, `[admin]`...
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn build(&self) -> String {
        let replicas: Vec<String> = self
            .replica_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let app_user = match &self.app_user {
            Some(keys) => {
                format!("[[user]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n{keys}\n")
            }
            None => String::new(),
        };
        format!(
            r#"
[[listener]]
name = "{CLUSTER}"
protocol = "postgres"
bind = "127.0.0.1:0"
cluster = "{CLUSTER}"
{listener}

[server]
drain_timeout = "2s"

[cluster.{CLUSTER}]
protocol = "postgres"
database = "{DATABASE}"
{cluster}

[cluster.{CLUSTER}.defaults]
auth = {{ user = "{APP_USER}", password = "{APP_PASSWORD}" }}
connect_timeout = "2s"
health = {{ interval = "700ms", timeout = "700ms", failures_before_ban = 3, ban_time = "500ms" }}
{defaults}

[cluster.{CLUSTER}.pool.primary]
role = "primary"
nodes = ["127.0.0.1:{primary}"]
{primary_pool}

[cluster.{CLUSTER}.pool.replicas]
role = "replica"
nodes = [{replicas}]
fallback_pool = "primary"
{replica_pool}

{app_user}
{extra}
"#,
            listener = self.listener,
            cluster = self.cluster,
            defaults = self.defaults,
            primary = self.primary_port,
            primary_pool = self.primary_pool,
            replicas = replicas.join(", "),
            replica_pool = self.replica_pool,
            extra = self.extra,
        )
    }
}

/// Shorthand for `PgConfig::new(pg).primary_pool(..).replica_pool(..).extra(..).build()`.
pub fn config(pg: &PgCluster, primary_pool: &str, replica_pool: &str, extra: &str) -> String {
    PgConfig::new(pg)
        .primary_pool(primary_pool)
        .replica_pool(replica_pool)
        .extra(extra)
        .build()
}

/// How long a psql / pgbench run may take before it is killed (and the helper panics).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `sql` with psql through the proxy as `app` in `appdb` (`psql -X -At -c sql`,
/// `ON_ERROR_STOP`); `Ok(stdout)` trimmed, or `Err(stderr + stdout)` trimmed when psql exits
/// non-zero (e.g. `ERROR:  division by zero` or `psql: error: connection to server ...`).
/// Several statements in `sql` go as one simple Query message.
pub async fn psql(proxy: SocketAddr, sql: &str) -> Result<String, String> {
    psql_as(proxy, USER, PASSWORD, sql).await
}

/// [`psql`] as another user (in `appdb`).
pub async fn psql_as(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<String, String> {
    psql_args(proxy, user, password, &["-c", sql]).await
}

/// psql through the proxy with arbitrary arguments after the connection ones
/// (`-X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p PORT -U user -d appdb`), e.g.
/// `&["-c", "BEGIN", "-c", "SELECT 1", "-c", "COMMIT"]` or `&["-f", path]`.
pub async fn psql_args(
    proxy: SocketAddr,
    user: &str,
    password: &str,
    args: &[&str],
) -> Result<String, String> {
    let mut command = tokio::process::Command::new("psql");
    command
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(proxy.ip().to_string())
        .arg("-p")
        .arg(proxy.port().to_string())
        .args(["-U", user, "-d", DATABASE])
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
    let out = run(command, "psql").await;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(format!("{stderr}\n{stdout}").trim().to_string())
    }
}

/// What a pgbench run printed.
#[derive(Debug)]
pub struct PgbenchRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PgbenchRun {
    /// The `tps = ...` figure (without initial connection time), if pgbench printed one.
    pub fn tps(&self) -> Option<f64> {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// `number of failed transactions: N` (pgbench 15+), if printed.
    pub fn failed(&self) -> Option<u64> {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("number of failed transactions: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }

    /// `number of transactions actually processed: N`, if printed.
    pub fn processed(&self) -> Option<u64> {
        self.stdout
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("number of transactions actually processed: ")
            })
            .and_then(|rest| rest.split(['/', ' ']).next())
            .and_then(|n| n.parse().ok())
    }

    /// Panics (with pgbench's output) unless it exited 0 with 0 failed transactions and
    /// tps > 0; returns the tps.
    pub fn assert_clean(&self, what: &str) -> f64 {
        assert!(self.success, "{what}: pgbench failed\n{self}");
        assert_eq!(
            self.failed(),
            Some(0),
            "{what}: failed transactions\n{self}"
        );
        let tps = self
            .tps()
            .unwrap_or_else(|| panic!("{what}: no tps in pgbench's output\n{self}"));
        assert!(tps > 0.0, "{what}: tps {tps}\n{self}");
        tps
    }
}

impl std::fmt::Display for PgbenchRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.stdout,
            tail(&self.stderr, 30)
        )
    }
}

/// Runs pgbench as `app` against `127.0.0.1:port` in `appdb` with `args`
/// (e.g. `&["-S", "-M", "prepared", "-c", "16", "-j", "2", "-T", "3"]`). `port` may be the
/// proxy's or a server's.
pub async fn pgbench(port: u16, args: &[&str]) -> PgbenchRun {
    let mut command = tokio::process::Command::new("pgbench");
    command
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", USER])
        .args(args)
        .arg(DATABASE)
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10");
    let out = run(command, "pgbench").await;
    PgbenchRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run(mut command: tokio::process::Command, what: &str) -> std::process::Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e} (apt-get install -y postgresql-client postgresql-contrib)")
    });
    tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// A tokio-postgres connection string for the proxy (`host=127.0.0.1 port=.. user=.. ...`).
pub fn conn_string(proxy: SocketAddr, user: &str, password: &str) -> String {
    format!(
        "host={} port={} user={user} password={password} dbname={DATABASE} connect_timeout=10",
        proxy.ip(),
        proxy.port()
    )
}

/// Connects to the proxy with tokio-postgres as `user` (no TLS); the connection runs on a
/// spawned task. The error is the login's (see [`sqlstate`]).
pub async fn connect_as(
    proxy: SocketAddr,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&conn_string(proxy, user, password), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to the proxy with tokio-postgres as `app`; panics when the login fails.
pub async fn connect(proxy: SocketAddr) -> tokio_postgres::Client {
    connect_as(proxy, USER, PASSWORD).await.unwrap_or_else(|e| {
        panic!(
            "connect to the proxy at {proxy} as {USER}: {}",
            describe(&e)
        )
    })
}

/// The SQLSTATE of a tokio-postgres error (`""` when it has none, e.g. a closed connection).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// `SQLSTATE: message` of a database error, else the error's text (for assertion messages).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => format!("{e} ({e:?})"),
    }
}

/// The first column of the first row of `sql` (simple query protocol) as text; panics on an
/// error.
pub async fn query_one_text(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}` failed: {}", describe(&e)));
    for m in messages {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
            return row.get(0).unwrap_or("").to_string();
        }
    }
    panic!("`{sql}` returned no row")
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

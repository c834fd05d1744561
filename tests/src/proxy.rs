//! Switchyard in-process (the library's `Server`) on a free loopback port, from config text.

use std::net::SocketAddr;
use std::sync::Arc;

use switchyard::config::Config;
use switchyard::policy::{PolicyHandle, PolicyRuntime, PolicySettings};
use switchyard::server::{Deps, Server};

use crate::clickhouse::ClickHouse;

/// A running proxy; call [`Proxy::stop`] to drain it (dropping it aborts its tasks with the
/// test's runtime).
pub struct Proxy {
    server: Option<Server>,
    addr: SocketAddr,
    pub deps: Deps,
    pub config: Config,
}

impl Proxy {
    /// Starts the proxy on `config` (TOML; no `${ENV}` expansion). The first listener's address
    /// is the proxy's URL. Panics on a bad config or a policy that does not load.
    pub async fn start(config: &str) -> Proxy {
        let config = Config::parse_with_env(config, &|_| None)
            .unwrap_or_else(|e| panic!("bad test config: {e}\n{config}"));
        Proxy::start_parsed(config, None).await
    }

    /// Starts the proxy from a config file, which [`Proxy::reload`] and `POST /config/reload`
    /// read again.
    pub async fn start_file(path: &std::path::Path) -> Proxy {
        let config = Config::load(path)
            .unwrap_or_else(|e| panic!("bad test config {}: {e}", path.display()));
        Proxy::start_parsed(config, Some(path.to_path_buf())).await
    }

    async fn start_parsed(config: Config, path: Option<std::path::PathBuf>) -> Proxy {
        let p = &config.policy;
        let settings = PolicySettings {
            path: p.path.clone(),
            fail_mode: p.fail_mode,
            deadline: p.deadline,
            memory_limit: p.memory_limit as usize,
            instances: 2,
            config: p.config.to_pairs(),
        };
        let policy = tokio::task::spawn_blocking(move || {
            let runtime = PolicyRuntime::new(None).expect("policy runtime");
            PolicyHandle::new(runtime, settings).expect("the test policy loads")
        })
        .await
        .expect("policy loading task");
        let mut deps = Deps::new(&config, Arc::new(policy))
            .await
            .expect("proxy dependencies");
        deps.config_path = path;
        let server = Server::start(&config, deps.clone())
            .await
            .expect("proxy starts");
        let addr = server.addrs()[0].1;
        Proxy {
            server: Some(server),
            addr,
            deps,
            config,
        }
    }

    /// The running server (its frontends, backends and routers), until [`Proxy::stop`].
    pub fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<admin address>` when the config has `[admin]`.
    pub fn admin_url(&self) -> String {
        let addr = self
            .server
            .as_ref()
            .and_then(|s| s.admin_addr())
            .expect("the test config has an [admin] section");
        format!("http://{addr}")
    }

    /// Reloads the config file (what SIGHUP does).
    pub async fn reload(&self) -> Result<serde_json::Value, String> {
        self.server.as_ref().expect("running").reload().await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port>/?user=<user>&password=<password>`, ready for more `&params`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("http://{}/?user={user}&password={password}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A config with one ClickHouse HTTP listener on port 0 in front of `ch`: pool `writer` (primary,
/// node 0, as ClickHouse user `writer`) and pool `reader` (replica, every node, round-robin, as
/// `reader`), fast health checks, plus `extra` (users, `[cache]`, `[policy]`, more keys...).
/// Write extra pool keys with `reader_pool` / `writer_pool`.
pub fn config(ch: &ClickHouse, writer_pool: &str, reader_pool: &str, extra: &str) -> String {
    let readers: Vec<String> = ch
        .nodes()
        .iter()
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    format!(
        r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:0"
cluster = "ch"

[server]
drain_timeout = "2s"

[cluster.ch]
protocol = "clickhouse-http"

[cluster.ch.pool.writer]
role = "primary"
nodes = ["{writer}"]
auth = {{ user = "writer", password = "{writer_pw}" }}
health = {{ interval = "200ms", timeout = "150ms", failures_before_ban = 1, ban_time = "300ms" }}
{writer_pool}

[cluster.ch.pool.reader]
role = "replica"
nodes = [{readers}]
auth = {{ user = "reader", password = "{reader_pw}" }}
health = {{ interval = "200ms", timeout = "150ms", failures_before_ban = 1, ban_time = "300ms" }}
{reader_pool}

{extra}
"#,
        writer = ch.node(0).addr(),
        writer_pw = crate::clickhouse::WRITER_PASSWORD,
        reader_pw = crate::clickhouse::READER_PASSWORD,
        readers = readers.join(", "),
    )
}

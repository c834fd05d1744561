//! Wiring: every `[[listener]]` bound and served, one router and backend per cluster, and a
//! graceful drain on shutdown.
//!
//! [`Server::start`] binds everything before it returns (port 0 works: tests read
//! [`Server::local_addr`]); [`Server::shutdown`] stops accepting, lets connections finish their
//! requests for up to `server.drain_timeout`, then cancels what is left. [`run`] is both for
//! callers that have a shutdown future (the binary's signals).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::admin::{AdminContext, AdminServer, ReloadResult, Reloader};
use crate::backend::postgres::Login;
use crate::cache::{CacheError, QueryCache};
use crate::classify::Classifier;
use crate::config::{self, Config};
use crate::frontend::Drain;
use crate::frontend::clickhouse_http::Shared;
use crate::frontend::postgres::PgFrontend;
use crate::guard::LoginGate;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::model::Protocol;
use crate::policy::{PolicyHandle, PolicySettings};

mod generation;
mod http_accept;
mod login_accept;
mod mysql_accept;
mod pg_accept;
mod reload;

use generation::Generation;
use reload::Live;

/// Statements whose classification is remembered (exact text).
const CLASSIFIER_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listener `{name}`: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener `{name}`: {protocol} is not built yet")]
    Unsupported {
        name: String,
        protocol: &'static str,
    },
    #[error("listener `{name}`: no cluster `{cluster}`")]
    NoCluster { name: String, cluster: String },
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
    #[error("listener `{name}`: TLS: {reason}")]
    Tls { name: String, reason: String },
    /// A pool's TLS settings for its servers cannot be used.
    #[error("cluster `{cluster}`: {reason}")]
    BackendTls { cluster: String, reason: String },
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
}

/// What every listener shares.
#[derive(Clone)]
pub struct Deps {
    pub policy: Arc<PolicyHandle>,
    pub classifier: Arc<Classifier>,
    pub cache: Option<QueryCache>,
    pub metrics: Arc<Metrics>,
    /// The config file, so SIGHUP and `POST /config/reload` can read it again.
    pub config_path: Option<std::path::PathBuf>,
}

impl Deps {
    /// The classifier and (when `[cache] enabled`) the cache, from the config.
    pub async fn new(config: &Config, policy: Arc<PolicyHandle>) -> Result<Deps, ServerError> {
        let cache = if config.cache.enabled {
            Some(QueryCache::new(cache_settings(&config.cache)).await?)
        } else {
            None
        };
        let metrics = Arc::new(Metrics::new(
            policy.clone(),
            config.log.slow_query_threshold,
        ));
        metrics.sources.cache.store(cache.clone().map(Arc::new));
        Ok(Deps {
            policy,
            classifier: Arc::new(Classifier::new(CLASSIFIER_CAPACITY)),
            cache,
            metrics,
            config_path: None,
        })
    }
}

/// Maps `[cache]` to the cache's own settings.
pub fn cache_settings(c: &config::CacheConfig) -> crate::cache::CacheConfig {
    crate::cache::CacheConfig {
        enabled: c.enabled,
        max_size: c.max_size,
        max_ttl: c.max_ttl,
        max_payload_size: c.max_payload_size,
        grace_time: c.grace_time,
        shared: c.shared,
        redis: c.redis.as_ref().map(|r| crate::cache::RedisConfig {
            url: r.url.expose().to_owned(),
            timeout: r.timeout,
            pool_size: usize::try_from(r.pool_size).unwrap_or(usize::MAX),
            compress_threshold: usize::try_from(r.compress_threshold).unwrap_or(usize::MAX),
            compression: match r.compression {
                config::Compression::None => crate::cache::Compression::None,
                config::Compression::Lz4 => crate::cache::Compression::Lz4,
                config::Compression::Zstd => crate::cache::Compression::Zstd,
            },
            key_prefix: r.key_prefix.clone(),
            coalesce: r.coalesce,
            tls_ca_file: r.tls_ca_file.clone(),
            ..crate::cache::RedisConfig::default()
        }),
    }
}

/// Maps `[policy]` to the engine's settings.
pub fn policy_settings(config: &Config) -> Result<PolicySettings, ServerError> {
    let p = &config.policy;
    Ok(PolicySettings {
        path: p.path.clone(),
        fail_mode: p.fail_mode,
        deadline: p.deadline,
        memory_limit: usize::try_from(p.memory_limit).map_err(|_| ServerError::Config {
            key: "policy.memory_limit",
            reason: "too large for this machine".to_owned(),
        })?,
        instances: p.instance_count() as usize,
        config: p.config.to_pairs(),
    })
}

/// A running proxy.
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    drain: watch::Sender<Drain>,
    listeners: JoinSet<()>,
    live: Arc<Live>,
    admin: Option<(AdminServer, Arc<AdminContext>)>,
    drain_timeout: Duration,
}

impl Server {
    /// Binds every listener (and the admin API) and starts serving. Must be called inside a
    /// tokio runtime.
    pub async fn start(config: &Config, deps: Deps) -> Result<Server, ServerError> {
        let (stop, _) = watch::channel(false);
        let (drain, drain_rx) = watch::channel(Drain::Running);
        let shared = Shared {
            policy: deps.policy.clone(),
            classifier: deps.classifier.clone(),
            cache: deps.cache.clone(),
            metrics: deps.metrics.clone(),
            drain: drain_rx,
            admission: Arc::new(Admission::new(&config.users, &config.tag_limits)),
        };
        let mut pg_tls = BTreeMap::new();
        for listener in &config.listeners {
            if matches!(listener.protocol, Protocol::Postgres | Protocol::Mysql) {
                let tls = listener
                    .tls
                    .as_ref()
                    .map(|t| tls_acceptor(&listener.name, t, &[]))
                    .transpose()?;
                pg_tls.insert(listener.name.clone(), tls);
            }
        }
        let generation = Generation::build(config, &shared, &pg_tls, None)?;
        deps.metrics
            .sources
            .postgres
            .store(Arc::new(generation.pg_backends.clone()));
        deps.metrics
            .sources
            .clickhouse
            .store(Arc::new(generation.ch_backends.clone()));
        deps.metrics
            .sources
            .mysql
            .store(Arc::new(generation.my_backends.clone()));
        deps.metrics
            .sources
            .admission
            .store(Some(shared.admission.clone()));
        let mut listeners = JoinSet::new();
        let mut addrs = Vec::new();
        let mut pg_slots = BTreeMap::new();
        let mut ch_slots = BTreeMap::new();
        let mut my_slots = BTreeMap::new();
        for listener in &config.listeners {
            if let Some(frontend) = generation.pg.get(&listener.name) {
                let tls = pg_tls.get(&listener.name).is_some_and(Option::is_some);
                let socket = bind(listener, tls, &mut addrs).await?;
                let slot = Arc::new(ArcSwap::new(frontend.clone()));
                pg_slots.insert(listener.name.clone(), slot.clone());
                let gate = LoginGate::new(listener, deps.metrics.guard.clone());
                listeners.spawn(login_accept::accept_loop(
                    socket,
                    listener.max_connections,
                    gate,
                    slot,
                    stop.subscribe(),
                ));
            } else if let Some(frontend) = generation.my.get(&listener.name) {
                let tls = pg_tls.get(&listener.name).is_some_and(Option::is_some);
                let socket = bind(listener, tls, &mut addrs).await?;
                let slot = Arc::new(ArcSwap::new(frontend.clone()));
                my_slots.insert(listener.name.clone(), slot.clone());
                let gate = LoginGate::new(listener, deps.metrics.guard.clone());
                listeners.spawn(login_accept::accept_loop(
                    socket,
                    listener.max_connections,
                    gate,
                    slot,
                    stop.subscribe(),
                ));
            } else if let Some(frontend) = generation.ch.get(&listener.name) {
                let tls = listener
                    .tls
                    .as_ref()
                    .map(|t| tls_acceptor(&listener.name, t, &[b"h2", b"http/1.1"]))
                    .transpose()?;
                let socket = bind(listener, tls.is_some(), &mut addrs).await?;
                let slot = Arc::new(ArcSwap::new(frontend.clone()));
                ch_slots.insert(listener.name.clone(), slot.clone());
                listeners.spawn(http_accept::accept_loop(
                    socket,
                    listener.clone(),
                    slot,
                    tls,
                    deps.metrics.guard.clone(),
                    stop.subscribe(),
                    drain.subscribe(),
                ));
            }
        }
        let live = Arc::new(Live {
            admission: ArcSwap::new(shared.admission.clone()),
            config: Arc::new(ArcSwap::from_pointee(config.clone())),
            path: deps.config_path.clone(),
            tls: pg_tls,
            generation: ArcSwap::from_pointee(generation),
            pg_slots,
            ch_slots,
            my_slots,
            shared: tokio::sync::Mutex::new(shared),
        });
        let admin = match &config.admin {
            Some(admin_config) => {
                let context = Arc::new(AdminContext {
                    metrics: deps.metrics.clone(),
                    policy: deps.policy.clone(),
                    config: live.config.clone(),
                    reloader: live.clone(),
                    draining: AtomicBool::new(false),
                });
                let server = AdminServer::start(admin_config, context.clone()).await?;
                Some((server, context))
            }
            None => None,
        };
        Ok(Server {
            addrs,
            stop,
            drain,
            listeners,
            live,
            admin,
            drain_timeout: config.server.drain_timeout,
        })
    }

    /// User and tag limits with their counters (shared by every listener; a config reload
    /// replaces them).
    pub fn admission(&self) -> Arc<Admission> {
        self.live.admission.load_full()
    }

    /// The PostgreSQL frontends of the current generation (admin console, tests).
    pub fn pg_frontends(&self) -> Vec<Arc<PgFrontend>> {
        self.live
            .pg_slots
            .values()
            .map(|slot| slot.load_full())
            .collect()
    }

    /// Every listener's name and bound address.
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The admin API's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(server, _)| server.local_addr())
    }

    /// Re-reads the config file and applies it (what SIGHUP and `POST /config/reload` do).
    pub async fn reload(&self) -> ReloadResult {
        self.live.reload().await
    }

    /// A handle that reloads the config while the server runs (for a signal handler).
    pub fn reloader(&self) -> Arc<dyn Reloader> {
        self.live.clone()
    }

    /// Stops accepting and drains: idle clients are told the server is shutting down at once,
    /// sessions inside a transaction and HTTP requests in flight get up to
    /// `server.drain_timeout` to finish, then everything left is closed (PostgreSQL clients
    /// with SQLSTATE 57P01).
    pub async fn shutdown(mut self) {
        if let Some((_, context)) = &self.admin {
            context.draining.store(true, Ordering::Relaxed);
        }
        let _ = self.drain.send(Drain::Draining);
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while self.listeners.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain timeout: closing the remaining connections");
            let _ = self.drain.send(Drain::Closing);
            if tokio::time::timeout(CLOSE_GRACE, async {
                while self.listeners.join_next().await.is_some() {}
            })
            .await
            .is_err()
            {
                self.listeners.abort_all();
                while self.listeners.join_next().await.is_some() {}
            }
        }
        if let Some((admin, _)) = self.admin.take() {
            admin.stop().await;
        }
        // Health checkers stop with the last reference to their backend.
        let shared = self.live.shared.lock().await;
        shared.metrics.sources.postgres.store(Arc::new(Vec::new()));
        shared.metrics.sources.mysql.store(Arc::new(Vec::new()));
        shared
            .metrics
            .sources
            .clickhouse
            .store(Arc::new(Vec::new()));
    }
}

/// How long sessions get to send their shutdown error once the drain timeout has passed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Starts the server, serves until `shutdown`, reloading the config at each message on
/// `reloads` (SIGHUP), then drains it.
pub async fn run(
    config: &Config,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::Receiver<()>,
) -> Result<(), ServerError> {
    let policy = deps.policy.clone();
    let server = Server::start(config, deps).await?;
    let reloader = server.reloader();
    let reloading = tokio::spawn(async move {
        while reloads.recv().await.is_some() {
            match reloader.reload().await {
                Ok(report) => tracing::info!(%report, "SIGHUP: config reloaded"),
                Err(reason) => tracing::error!(%reason, "SIGHUP: config reload refused"),
            }
            // SIGHUP also re-reads the policy file (it may have changed in place).
            let policy = policy.clone();
            // Errors are logged by reload(); the running policy stays.
            let _ = tokio::task::spawn_blocking(move || policy.reload()).await;
        }
    });
    shutdown.await;
    reloading.abort();
    tracing::info!(drain_timeout = ?server.drain_timeout, "shutting down: draining connections");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The next client connection, or `None` once `stop` fires. Accept errors (out of file
/// descriptors and the like) are logged and retried after a pause instead of spinning.
async fn accept_next(
    socket: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    static ACCEPT_FAILED: crate::log_limit::LogLimit =
                        crate::log_limit::LogLimit::standard();
                    crate::warn_limited!(ACCEPT_FAILED, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// The cluster a listener serves.
fn cluster_of<'a>(
    config: &'a Config,
    listener: &config::ListenerConfig,
) -> Result<&'a config::ClusterConfig, ServerError> {
    config
        .cluster(&listener.cluster)
        .ok_or_else(|| ServerError::NoCluster {
            name: listener.name.clone(),
            cluster: listener.cluster.clone(),
        })
}

/// Binds a listener's socket and records its address (port 0 resolves here).
async fn bind(
    listener: &config::ListenerConfig,
    tls: bool,
    addrs: &mut Vec<(String, SocketAddr)>,
) -> Result<TcpListener, ServerError> {
    let socket = TcpListener::bind(listener.bind)
        .await
        .map_err(|source| ServerError::Bind {
            name: listener.name.clone(),
            addr: listener.bind,
            source,
        })?;
    let local = socket.local_addr().unwrap_or(listener.bind);
    tracing::info!(listener = listener.name, addr = %local, protocol = listener.protocol.as_str(), cluster = listener.cluster, tls, "listening");
    addrs.push((listener.name.clone(), local));
    Ok(socket)
}

/// Keys the PostgreSQL frontend does not apply yet: said loudly at start rather than ignored.
fn warn_unapplied_pg_keys(config: &Config, cluster: &config::ClusterConfig, listener: &str) {
    for user in &config.users {
        if user.max_execution_time.is_some() {
            tracing::warn!(
                listener,
                user = user.name,
                keys = "max_execution_time",
                "these user keys are not applied to PostgreSQL clients yet"
            );
        }
    }
    for (name, pool) in &cluster.pools {
        let set: Vec<&str> = [("max_execution_time", pool.max_execution_time.is_some())]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
        if !set.is_empty() {
            tracing::warn!(
                listener,
                pool = name,
                keys = set.join(", "),
                "these pool keys are not applied to PostgreSQL pools yet"
            );
        }
    }
}

/// Who health checks log in as when a pool has no `auth`: the first user with a password.
fn health_login(config: &Config, cluster: &config::ClusterConfig) -> Option<Login> {
    let (_, primary) = cluster
        .primary()
        .or_else(|| cluster.pools.iter().next().map(|(n, p)| (n.as_str(), p)))?;
    config.users.iter().find_map(|u| {
        let credentials = u.backend_credentials(primary);
        credentials.password.map(|p| Login {
            user: credentials.user,
            password: Some(p.expose().to_owned()),
            database: cluster
                .database
                .clone()
                .unwrap_or_else(|| "postgres".to_owned()),
        })
    })
}

/// A TLS acceptor from the listener's PEM files, offering `alpn` protocols (HTTPS: h2 and
/// http/1.1; PostgreSQL: none).
fn tls_acceptor(
    name: &str,
    tls: &config::TlsConfig,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |reason: String| ServerError::Tls {
        name: name.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| err(format!("{}: {e}", tls.cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(err(format!("{}: no certificate", tls.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| err(format!("{}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::cache_settings;
    use crate::cache::Compression;
    use crate::config::CacheConfig;

    /// Every `[cache.redis]` key reaches the cache (a key accepted and then dropped here would be
    /// a setting that silently does nothing).
    #[test]
    fn cache_settings_carry_every_redis_key() {
        let config: CacheConfig = toml::from_str(
            "enabled = true\n[redis]\nurl = \"unix:///run/redis.sock\"\ntimeout = \"250ms\"\n\
             pool_size = 3\ncompress_threshold = \"1KiB\"\ncompression = \"zstd\"\n\
             key_prefix = \"app:\"\ncoalesce = false\n",
        )
        .expect("valid [cache]");
        let settings = cache_settings(&config);
        let redis = settings.redis.as_ref().expect("redis tier");
        assert_eq!(redis.url, "unix:///run/redis.sock");
        assert_eq!(redis.timeout, Duration::from_millis(250));
        assert_eq!(redis.pool_size, 3);
        assert_eq!(redis.compress_threshold, 1024);
        assert_eq!(redis.compression, Compression::Zstd);
        assert_eq!(redis.key_prefix, "app:");
        assert!(!redis.coalesce);
        settings.validate().expect("the cache accepts it");

        for (name, expected) in [
            ("none", Compression::None),
            ("lz4", Compression::Lz4),
            ("zstd", Compression::Zstd),
        ] {
            let config: CacheConfig = toml::from_str(&format!(
                "[redis]\nurl = \"redis://r\"\ncompression = \"{name}\"\n"
            ))
            .expect("valid [cache]");
            let settings = cache_settings(&config);
            assert_eq!(settings.redis.map(|r| r.compression), Some(expected));
        }
    }
}

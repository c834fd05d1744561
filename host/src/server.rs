//! Wiring: every `[[listener]]` bound and served, one router and backend per cluster, and a
//! graceful drain on shutdown.
//!
//! [`Server::start`] binds everything before it returns (port 0 works: tests read
//! [`Server::local_addr`]); [`Server::shutdown`] stops accepting, lets connections finish their
//! requests for up to `server.drain_timeout`, then cancels what is left. [`run`] is both for
//! callers that have a shutdown future (the binary's signals).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::backend::clickhouse_http::ChBackend;
use crate::backend::postgres::{Login, PgBackend};
use crate::cache::{CacheError, QueryCache};
use crate::classify::Classifier;
use crate::config::{self, Config};
use crate::frontend::clickhouse_http::{ChFrontend, Shared};
use crate::frontend::postgres::PgFrontend;
use crate::model::Protocol;
use crate::policy::PolicyHandle;
use crate::route::Router;

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
}

/// What every listener shares.
#[derive(Clone)]
pub struct Deps {
    pub policy: Arc<PolicyHandle>,
    pub classifier: Arc<Classifier>,
    pub cache: Option<QueryCache>,
}

impl Deps {
    /// The classifier and (when `[cache] enabled`) the cache, from the config.
    pub async fn new(config: &Config, policy: Arc<PolicyHandle>) -> Result<Deps, ServerError> {
        let cache = if config.cache.enabled {
            Some(QueryCache::new(cache_settings(&config.cache)).await?)
        } else {
            None
        };
        Ok(Deps {
            policy,
            classifier: Arc::new(Classifier::new(CLASSIFIER_CAPACITY)),
            cache,
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
            ..crate::cache::RedisConfig::default()
        }),
    }
}

/// A running proxy.
pub struct Server {
    addrs: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    listeners: JoinSet<()>,
    backends: Vec<Arc<ChBackend>>,
    pg_backends: Vec<Arc<PgBackend>>,
    pg_frontends: Vec<Arc<PgFrontend>>,
    drain_timeout: Duration,
}

impl Server {
    /// Binds every listener and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: &Config, deps: Deps) -> Result<Server, ServerError> {
        let (stop, _) = watch::channel(false);
        let shared = Shared {
            policy: deps.policy.clone(),
            classifier: deps.classifier.clone(),
            cache: deps.cache.clone(),
        };
        let mut backends: BTreeMap<String, Arc<ChBackend>> = BTreeMap::new();
        let mut pg_backends: BTreeMap<String, Arc<PgBackend>> = BTreeMap::new();
        let mut pg_frontends = Vec::new();
        let mut listeners = JoinSet::new();
        let mut addrs = Vec::new();
        for listener in &config.listeners {
            if listener.protocol == Protocol::Postgres {
                let cluster = cluster_of(config, listener)?;
                let backend = pg_backends
                    .entry(listener.cluster.clone())
                    .or_insert_with(|| {
                        let router = Arc::new(Router::new(listener.cluster.clone(), cluster));
                        PgBackend::start(router, health_login(config, cluster))
                    })
                    .clone();
                warn_unapplied_pg_keys(config, cluster, &listener.name);
                let tls = listener
                    .tls
                    .as_ref()
                    .map(|t| tls_acceptor(&listener.name, t, &[]))
                    .transpose()?;
                let socket = bind(listener, tls.is_some(), &mut addrs).await?;
                let frontend = Arc::new(PgFrontend::new(
                    listener.clone(),
                    config,
                    backend,
                    shared.clone(),
                    tls,
                ));
                pg_frontends.push(frontend.clone());
                listeners.spawn(pg_accept_loop(
                    socket,
                    frontend,
                    stop.subscribe(),
                    config.server.drain_timeout,
                ));
                continue;
            }
            if listener.protocol != Protocol::ClickhouseHttp {
                return Err(ServerError::Unsupported {
                    name: listener.name.clone(),
                    protocol: "the mysql frontend",
                });
            }
            let tls = listener
                .tls
                .as_ref()
                .map(|t| tls_acceptor(&listener.name, t, &[b"h2", b"http/1.1"]))
                .transpose()?;
            let cluster = cluster_of(config, listener)?;
            let backend = backends
                .entry(listener.cluster.clone())
                .or_insert_with(|| {
                    let router = Arc::new(Router::new(listener.cluster.clone(), cluster));
                    Arc::new(ChBackend::start(router))
                })
                .clone();
            let socket = bind(listener, tls.is_some(), &mut addrs).await?;
            let frontend = Arc::new(ChFrontend::new(
                listener.clone(),
                config,
                backend,
                shared.clone(),
            ));
            listeners.spawn(accept_loop(
                socket,
                frontend,
                tls,
                stop.subscribe(),
                config.server.drain_timeout,
            ));
        }
        Ok(Server {
            addrs,
            stop,
            listeners,
            backends: backends.into_values().collect(),
            pg_backends: pg_backends.into_values().collect(),
            pg_frontends,
            drain_timeout: config.server.drain_timeout,
        })
    }

    /// The PostgreSQL frontends (admin console, tests).
    pub fn pg_frontends(&self) -> &[Arc<PgFrontend>] {
        &self.pg_frontends
    }

    /// Every listener's name and bound address.
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The bound address of the listener named `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Stops accepting, drains (bounded by `server.drain_timeout`), then cancels the rest.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drain = self.drain_timeout + Duration::from_secs(1);
        if tokio::time::timeout(drain, async {
            while self.listeners.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            self.listeners.abort_all();
        }
        // Health checkers stop with the last reference to their backend.
        self.backends.clear();
        self.pg_frontends.clear();
        self.pg_backends.clear();
    }
}

/// Starts the server, waits for `shutdown`, then drains it.
pub async fn run(
    config: &Config,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = Server::start(config, deps).await?;
    shutdown.await;
    tracing::info!(drain_timeout = ?server.drain_timeout, "shutting down: draining connections");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn accept_loop(
    socket: TcpListener,
    frontend: Arc<ChFrontend>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let limit = Arc::new(Semaphore::new(frontend.listener().max_connections as usize));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if let Some(idle) = frontend.listener().idle_timeout {
        // HTTP/1: a keep-alive connection that sends no next request within this is closed.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(idle);
    }
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // A permit before accept: past max_connections, clients wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let Some((stream, peer)) = accept_next(&socket, &mut stop).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let frontend = frontend.clone();
        let service = service_fn(move |request| {
            let frontend = frontend.clone();
            async move { Ok::<_, Infallible>(frontend.handle(request, peer).await) }
        });
        let Some(acceptor) = tls.clone() else {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let watched = graceful.watch(connection);
            connections.spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        // HTTPS: the handshake runs in the connection's own task, so a slow client cannot
        // hold up the accept loop; it is bounded like any request.
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(socket);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "drain timeout: closing the remaining connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
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
                    tracing::warn!(error = %e, "accept failed");
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
        let set: Vec<&str> = [
            (
                "max_concurrent_queries",
                user.max_concurrent_queries.is_some(),
            ),
            ("max_queue_size", user.max_queue_size.is_some()),
            ("max_queue_time", user.max_queue_time.is_some()),
            ("max_execution_time", user.max_execution_time.is_some()),
            ("requests_per_minute", user.requests_per_minute.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        if !set.is_empty() {
            tracing::warn!(
                listener,
                user = user.name,
                keys = set.join(", "),
                "these user keys are not applied to PostgreSQL clients yet"
            );
        }
    }
    for (name, pool) in &cluster.pools {
        let set: Vec<&str> = [
            (
                "max_concurrent_queries",
                pool.max_concurrent_queries.is_some(),
            ),
            ("max_execution_time", pool.max_execution_time.is_some()),
        ]
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

/// Longest a TLS handshake may take on an HTTPS listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Accepts PostgreSQL clients until stopped, then gives sessions `drain_timeout` to finish.
async fn pg_accept_loop(
    socket: TcpListener,
    frontend: Arc<PgFrontend>,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let limit = Arc::new(Semaphore::new(frontend.listener().max_connections as usize));
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let Some((stream, peer)) = accept_next(&socket, &mut stop).await else {
            break;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over max_connections: a clear error instead of a hang (PgBouncer does the same).
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let mut out = bytes::BytesMut::new();
                crate::postgres::protocol::ErrorFields::fatal(
                    "53300",
                    "too many client connections (listener max_connections)",
                )
                .encode_error(&mut out);
                let _ = stream.write_all(&out).await;
            });
            continue;
        };
        let frontend = frontend.clone();
        sessions.spawn(async move {
            frontend.serve(stream, peer).await;
            drop(permit);
        });
    }
    drop(socket);
    if tokio::time::timeout(drain_timeout, async {
        while sessions.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            open = sessions.len(),
            "drain timeout: closing the remaining client sessions"
        );
    }
    sessions.abort_all();
    while sessions.join_next().await.is_some() {}
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

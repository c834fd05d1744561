//! The PostgreSQL backend of one cluster: server connection pools per (pool, node, backend
//! login), node choice by the pool's strategy with failover to the next node when a connection
//! cannot be opened, health checks, WAL position polling and the idle reaper.

mod conn;
mod endpoint;
mod health;
pub mod multiplex;
mod pool;
pub(crate) mod wal_poll;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use crate::backend::pool::BucketStats;
pub use conn::{Login, MAX_SERVER_MESSAGE, ServerConn, put_query};
pub use endpoint::{CancelTarget, Endpoint, send_cancel};
pub use pool::{Bucket, PgConnector, PooledConn};

use crate::backend::tls::{BackendTls, PoolTlsError};
use crate::limits::Tenant;
use crate::postgres::protocol::ErrorFields;
use crate::route::{Pool, Router};

/// Why a server connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PgBackendError {
    #[error("server {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server {addr} closed the connection")]
    Closed { addr: String },
    #[error("server {addr}: no answer within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("server {addr} refused the login: {error}")]
    Refused { addr: String, error: ErrorFields },
    #[error("server {addr}: authentication failed: {reason}")]
    Auth { addr: String, reason: String },
    #[error("server {addr}: protocol error: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("server {addr}: TLS: {reason}")]
    Tls { addr: String, reason: String },
    #[error(
        "no server connection available in pool \"{pool}\" ({node}) within {after:?}: all {size} are in use"
    )]
    PoolTimeout {
        pool: String,
        node: String,
        size: u32,
        after: Duration,
    },
    #[error("pool \"{pool}\" has no available node (banned, down or lagging)")]
    NoNode { pool: String },
}

impl PgBackendError {
    /// Whether the node itself is at fault (counts toward a ban), as opposed to the login.
    pub fn is_node_failure(&self) -> bool {
        match self {
            PgBackendError::Io { .. }
            | PgBackendError::Closed { .. }
            | PgBackendError::Timeout { .. }
            | PgBackendError::Protocol { .. }
            // An unverifiable certificate or a server without TLS may be one node's
            // misconfiguration (or an impostor on its address): the others may be fine.
            | PgBackendError::Tls { .. } => true,
            // A node shutting down, starting up or out of connections (57P01-57P05, 53300)
            // refuses logins: another node may well take them.
            PgBackendError::Refused { error, .. } => error
                .code()
                .is_some_and(|c| c.starts_with("57P") || c == "53300"),
            _ => false,
        }
    }

    /// Whether the message already names the pool (the others name a server).
    pub fn names_pool(&self) -> bool {
        matches!(
            self,
            PgBackendError::PoolTimeout { .. } | PgBackendError::NoNode { .. }
        )
    }

    /// The SQLSTATE a client gets for it.
    pub fn sqlstate(&self) -> &str {
        match self {
            PgBackendError::PoolTimeout { .. } => "53300",
            PgBackendError::Refused { error, .. } => error.code().unwrap_or("08006"),
            PgBackendError::Auth { .. } => "28000",
            PgBackendError::Protocol { .. } => "08P01",
            _ => "08006",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    pool: String,
    node: usize,
    login: Login,
}

/// The buckets one PostgreSQL session used (see [`pool::BucketMemo`]).
pub type BucketMemo = crate::backend::pool::BucketMemo<PgConnector>;

/// The backend of one PostgreSQL cluster.
pub struct PgBackend {
    router: Arc<Router>,
    /// Each pool's TLS settings, by pool name.
    tls: HashMap<String, Arc<BackendTls>>,
    buckets: RwLock<HashMap<BucketKey, Arc<Bucket>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PgBackend {
    /// Starts health checkers and WAL position pollers (as `health_login` where a pool has no
    /// `auth`; without either, positions stay unknown) and the reaper. Fails when a pool's TLS
    /// settings cannot be used (its `tls_ca_file` no longer loads, no system roots).
    pub fn start(
        router: Arc<Router>,
        health_login: Option<Login>,
    ) -> Result<Arc<PgBackend>, PoolTlsError> {
        let mut tls = HashMap::new();
        for pool in router.pools() {
            let settings =
                BackendTls::for_pool(pool.config(), &[endpoint::ALPN]).map_err(|source| {
                    PoolTlsError {
                        pool: pool.name().to_owned(),
                        source,
                    }
                })?;
            tls.insert(pool.name().to_owned(), Arc::new(settings));
        }
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<PgBackend>| {
            let mut tasks = Vec::new();
            for pool in router.pools() {
                let pool_tls = tls
                    .get(pool.name())
                    .cloned()
                    .unwrap_or_else(|| Arc::new(BackendTls::disabled()));
                let login = pool
                    .config()
                    .auth
                    .as_ref()
                    .map(|a| Login {
                        user: a.user.clone(),
                        password: a.password.as_ref().map(|p| p.expose().to_owned()),
                        database: router.database().unwrap_or("postgres").to_owned(),
                    })
                    .or_else(|| health_login.clone());
                let schedule = wal_poll::Schedule {
                    interval: router.wal_poll_interval(),
                    timeout: pool.config().health.timeout,
                };
                for node in pool.nodes() {
                    let endpoint =
                        Arc::new(Endpoint::new(node.addr(), node.host(), pool_tls.clone()));
                    if pool.config().health.enabled {
                        let check = login.clone().map(|login| health::PgHealth {
                            pool: pool.clone(),
                            node: node.clone(),
                            endpoint: endpoint.clone(),
                            login,
                            conn: None,
                        });
                        tasks.push(tokio::spawn(crate::backend::health::run(
                            weak.clone(),
                            pool.clone(),
                            node.clone(),
                            check,
                        )));
                    }
                    // Independent of `health.enabled`: causal reads need positions.
                    if let Some(login) = &login {
                        let probe = wal_poll::PgProbe::new(
                            router.clone(),
                            endpoint,
                            login.clone(),
                            schedule.timeout,
                        );
                        tasks.push(tokio::spawn(wal_poll::run(
                            router.clone(),
                            node.clone(),
                            schedule,
                            probe,
                        )));
                    }
                }
            }
            tasks.push(tokio::spawn(crate::backend::pool::reaper(
                weak.clone(),
                PgBackend::buckets,
            )));
            PgBackend {
                router,
                tls,
                buckets: RwLock::new(HashMap::new()),
                tasks,
            }
        }))
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The bucket of (pool, node, login), created on first use.
    pub fn bucket(&self, pool: &Arc<Pool>, node: usize, login: &Login) -> Option<Arc<Bucket>> {
        let key = BucketKey {
            pool: pool.name().to_owned(),
            node,
            login: login.clone(),
        };
        if let Some(b) = self.buckets.read().ok()?.get(&key) {
            return Some(b.clone());
        }
        let node_state = pool.nodes().get(node)?.clone();
        // A pool of a later config generation is not this backend's: it has no settings here.
        let tls = self.tls.get(pool.name())?.clone();
        let mut buckets = self.buckets.write().ok()?;
        Some(
            buckets
                .entry(key)
                .or_insert_with(|| {
                    let endpoint = Endpoint::new(node_state.addr(), node_state.host(), tls);
                    let connector = PgConnector {
                        endpoint: Arc::new(endpoint),
                        login: login.clone(),
                        carriers: Arc::default(),
                    };
                    Arc::new(Bucket::new(
                        pool.name(),
                        node_state,
                        connector,
                        pool.config(),
                    ))
                })
                .clone(),
        )
    }

    /// A connection on a node of `pool` picked by its strategy; when a node cannot be reached,
    /// the next one is tried (nothing was sent yet, so this is always safe). `memo` must only
    /// ever be used with this backend and, per pool, with this `login`.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        pool: &Arc<Pool>,
        affinity: Option<&str>,
        login: &Login,
        exclude: &[usize],
        tenant: &Tenant,
        memo: &mut BucketMemo,
    ) -> Result<PooledConn, PgBackendError> {
        crate::backend::pool::checkout(pool, affinity, exclude, tenant, memo, |node| {
            self.bucket(pool, node, login)
        })
        .await
    }

    /// Every bucket as the admin API and metrics show it.
    pub fn bucket_views(&self) -> Vec<crate::backend::pool::BucketView> {
        self.buckets()
            .iter()
            .map(|b| b.view(&b.login().user, &b.login().database))
            .collect()
    }

    /// Every bucket, for the admin console.
    pub fn buckets(&self) -> Vec<Arc<Bucket>> {
        let mut out: Vec<Arc<Bucket>> = self
            .buckets
            .read()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| {
            (
                a.pool(),
                a.node().index(),
                &a.login().user,
                &a.login().database,
            )
                .cmp(&(
                    b.pool(),
                    b.node().index(),
                    &b.login().user,
                    &b.login().database,
                ))
        });
        out
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

//! The MySQL/MariaDB backend of one cluster: server connection pools per (pool, node, login)
//! on the generic [`crate::backend::pool`], node choice by the pool's strategy with failover to
//! the next node when a connection cannot be opened, health checks, and GTID position polling
//! for causal reads (the same scheduler as PostgreSQL's WAL poller).

mod conn;
mod health;
mod position;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub use conn::{DEFAULT_COLLATION, MyEndpoint, MyLogin, MyServerConn, ServerStatement};
pub use position::parse_gtid_position;

use crate::backend::pool::{self, Connector, Pooled};
use crate::backend::postgres::wal_poll;
use crate::backend::tls::{BackendTls, PoolTlsError};
use crate::limits::Tenant;
use crate::model::WalLayout;
use crate::mysql::response::MyError;
use crate::route::{Pool, Router};

/// Why a server connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MyBackendError {
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
    Refused { addr: String, error: MyError },
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

impl MyBackendError {
    /// Whether the node itself is at fault (counts toward a ban), as opposed to the login.
    pub fn is_node_failure(&self) -> bool {
        match self {
            MyBackendError::Io { .. }
            | MyBackendError::Closed { .. }
            | MyBackendError::Timeout { .. }
            | MyBackendError::Protocol { .. }
            // An unverifiable certificate or a server without TLS may be one node's
            // misconfiguration (or an impostor on its address): the others may be fine.
            | MyBackendError::Tls { .. } => true,
            // Too many connections (1040), shutting down (1053), host blocked (1129): another
            // node may take the login.
            MyBackendError::Refused { error, .. } => matches!(error.code, 1040 | 1053 | 1129),
            _ => false,
        }
    }

    /// The error a client gets for it.
    pub fn to_client(&self) -> MyError {
        use crate::mysql::response::*;
        match self {
            MyBackendError::PoolTimeout { .. } => {
                MyError::new(ER_LOCK_WAIT_TIMEOUT, "HY000", self.to_string())
            }
            MyBackendError::Refused { error, .. } => MyError {
                message: format!("{self}"),
                ..error.clone()
            },
            MyBackendError::Auth { .. } => {
                MyError::new(ER_ACCESS_DENIED_ERROR, "28000", self.to_string())
            }
            _ => MyError::new(ER_CONNECTION_KILLED, "08S01", self.to_string()),
        }
    }
}

/// A node (address, TLS) and the login a bucket's connections use.
#[derive(Debug)]
pub struct MyConnector {
    pub endpoint: MyEndpoint,
    pub login: MyLogin,
    /// The server version the first connection reported (what clients are told).
    version: Arc<OnceLock<String>>,
}

impl Connector for MyConnector {
    type Conn = MyServerConn;
    type Error = MyBackendError;

    async fn connect(&self, timeout: Duration) -> Result<MyServerConn, MyBackendError> {
        let conn = MyServerConn::connect(&self.endpoint, &self.login, timeout).await?;
        let _ = self.version.set(conn.version.clone());
        Ok(conn)
    }

    fn is_node_failure(error: &MyBackendError) -> bool {
        error.is_node_failure()
    }

    fn no_node(pool: &str) -> MyBackendError {
        MyBackendError::NoNode {
            pool: pool.to_owned(),
        }
    }

    fn pool_timeout(pool: &str, node: &str, size: u32, after: Duration) -> MyBackendError {
        MyBackendError::PoolTimeout {
            pool: pool.to_owned(),
            node: node.to_owned(),
            size,
            after,
        }
    }
}

impl Pooled for MyServerConn {
    fn created(&self) -> Instant {
        self.created
    }

    fn last_used(&self) -> Instant {
        self.last_used
    }

    fn touch(&mut self, now: Instant) {
        self.last_used = now;
    }

    fn still_open(&mut self) -> bool {
        MyServerConn::still_open(self)
    }

    async fn close(mut self) {
        // COM_QUIT: the server ends the session without logging an aborted connection.
        let _ = self
            .write_packet(0, &[crate::mysql::command::COM_QUIT])
            .await;
    }
}

/// The server connections of one (pool, node, login).
pub type MyBucket = pool::Bucket<MyConnector>;
/// A checked-out server connection.
pub type MyPooledConn = pool::PooledConn<MyConnector>;
/// The buckets one MySQL session used (see [`pool::BucketMemo`]).
pub type MyBucketMemo = pool::BucketMemo<MyConnector>;

impl MyBucket {
    pub fn login(&self) -> &MyLogin {
        &self.connector().login
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    pool: String,
    node: usize,
    login: MyLogin,
}

/// The backend of one MySQL/MariaDB cluster.
pub struct MyBackend {
    router: Arc<Router>,
    /// Each pool's TLS settings, by pool name.
    tls: HashMap<String, Arc<BackendTls>>,
    buckets: RwLock<HashMap<BucketKey, Arc<MyBucket>>>,
    version: Arc<OnceLock<String>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MyBackend {
    /// Starts health checkers and GTID position pollers (as each pool's `auth`, else
    /// `probe_login`; without either, positions stay unknown and reads after writes go to
    /// the primary) and the reaper.
    pub fn start(
        router: Arc<Router>,
        probe_login: Option<MyLogin>,
    ) -> Result<Arc<MyBackend>, PoolTlsError> {
        let mut tls = HashMap::new();
        for pool in router.pools() {
            let settings =
                BackendTls::for_pool(pool.config(), &[]).map_err(|source| PoolTlsError {
                    pool: pool.name().to_owned(),
                    source,
                })?;
            tls.insert(pool.name().to_owned(), Arc::new(settings));
        }
        // GTID sequence numbers are not byte offsets: no page-boundary normalisation.
        router.set_wal_layout(WalLayout {
            page_size: 0,
            segment_size: 0,
        });
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<MyBackend>| {
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
                    .map(|a| MyLogin {
                        user: a.user.clone(),
                        password: a.password.as_ref().map(|p| p.expose().to_owned()),
                        found_rows: false,
                    })
                    .or_else(|| probe_login.clone());
                let schedule = wal_poll::Schedule {
                    interval: router.wal_poll_interval(),
                    timeout: pool.config().health.timeout,
                };
                for node in pool.nodes() {
                    let endpoint = MyEndpoint {
                        addr: node.addr().to_owned(),
                        host: node.host().to_owned(),
                        tls: pool_tls.clone(),
                    };
                    if pool.config().health.enabled {
                        let check = login.clone().map(|login| health::MyHealth {
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
                    if let Some(login) = &login {
                        let probe =
                            position::GtidProbe::new(endpoint, login.clone(), schedule.timeout);
                        tasks.push(tokio::spawn(wal_poll::run(
                            router.clone(),
                            node.clone(),
                            schedule,
                            probe,
                        )));
                    }
                }
            }
            tasks.push(tokio::spawn(pool::reaper(weak.clone(), MyBackend::buckets)));
            MyBackend {
                router,
                tls,
                buckets: RwLock::new(HashMap::new()),
                version: Arc::new(OnceLock::new()),
                tasks,
            }
        }))
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The version string of the servers, once a connection has been made.
    pub fn server_version(&self) -> Option<&str> {
        self.version.get().map(String::as_str)
    }

    fn bucket(&self, pool: &Arc<Pool>, node: usize, login: &MyLogin) -> Option<Arc<MyBucket>> {
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
                    let connector = MyConnector {
                        endpoint: MyEndpoint {
                            addr: node_state.addr().to_owned(),
                            host: node_state.host().to_owned(),
                            tls,
                        },
                        login: login.clone(),
                        version: self.version.clone(),
                    };
                    Arc::new(MyBucket::new(
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
    /// the next one is tried (nothing was sent yet, so this is always safe).
    /// `login` is asked for only when `memo` does not know the bucket yet; `memo` must only
    /// ever be used with this backend and, per pool, with the same login.
    pub async fn checkout(
        &self,
        pool: &Arc<Pool>,
        login: impl Fn() -> MyLogin,
        exclude: &[usize],
        tenant: &Tenant,
        memo: &mut MyBucketMemo,
    ) -> Result<MyPooledConn, MyBackendError> {
        pool::checkout(pool, None, exclude, tenant, memo, |node| {
            self.bucket(pool, node, &login())
        })
        .await
    }

    /// Every bucket as the admin API and metrics show it.
    pub fn bucket_views(&self) -> Vec<crate::backend::pool::BucketView> {
        self.buckets()
            .iter()
            .map(|b| b.view(&b.login().user, ""))
            .collect()
    }

    /// Every bucket, for the admin API and metrics.
    pub fn buckets(&self) -> Vec<Arc<MyBucket>> {
        let mut out: Vec<Arc<MyBucket>> = self
            .buckets
            .read()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| {
            (a.pool(), a.node().index(), &a.login().user).cmp(&(
                b.pool(),
                b.node().index(),
                &b.login().user,
            ))
        });
        out
    }
}

impl Drop for MyBackend {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

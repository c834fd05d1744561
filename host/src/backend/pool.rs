//! Server connections for one (pool, node, backend login), whatever the protocol: a LIFO stack
//! of idle connections and a semaphore of `size` permits whose waiters are served round-robin
//! across tenants (see `limits::fair`). A checkout waits at most `checkout_timeout` for a permit
//! (PgBouncer's `query_wait_timeout`), reuses the most recently used idle connection that is
//! still fresh, or logs in a new one through the protocol's [`Connector`].

use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::PoolConfig;
use crate::limits::{FairPermit, FairSemaphore, Tenant};
use crate::route::NodeState;
use crate::route::Pool;

/// Idle connections older than this are probed for a closed socket before reuse.
const PROBE_AFTER_IDLE: Duration = Duration::from_millis(100);

/// How a protocol opens server connections for one bucket (its address and login).
pub trait Connector: Debug + Send + Sync + 'static {
    type Conn: Pooled;
    type Error: std::error::Error + Send + 'static;
    /// Connects and logs in within `timeout`.
    fn connect(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Conn, Self::Error>> + Send;
    /// Whether the node itself is at fault (counts toward a ban), as opposed to the login.
    fn is_node_failure(error: &Self::Error) -> bool;
    /// The error of a checkout that found no permit within `after`.
    fn pool_timeout(pool: &str, node: &str, size: u32, after: Duration) -> Self::Error;
    /// The error of a checkout that found no node of `pool` to try.
    fn no_node(pool: &str) -> Self::Error;
}

/// A connection on a node of `pool` picked by its strategy; when a node cannot be reached, the
/// next one is tried (nothing was sent yet, so this is always safe). `bucket` gives a node's
/// bucket for this checkout's login (`None`: the pool is not the backend's any more), asked
/// only when `memo` does not know it.
pub async fn checkout<C: Connector>(
    pool: &Arc<Pool>,
    affinity: Option<&str>,
    exclude: &[usize],
    tenant: &Tenant,
    memo: &mut BucketMemo<C>,
    bucket: impl Fn(usize) -> Option<Arc<Bucket<C>>>,
) -> Result<PooledConn<C>, C::Error> {
    let mut tried: Vec<usize> = exclude.to_vec();
    let mut last_error = None;
    while let Some(node) = pool.pick(affinity, &tried) {
        let found = match memo.get(pool, node.index()) {
            Some(found) => found.clone(),
            None => {
                let Some(found) = bucket(node.index()) else {
                    break;
                };
                memo.put(pool, node.index(), found.clone());
                found
            }
        };
        match found.checkout(tenant).await {
            Ok(conn) => return Ok(conn),
            Err(e) if C::is_node_failure(&e) => {
                static TRYING_ANOTHER: crate::log_limit::LogLimit =
                    crate::log_limit::LogLimit::standard();
                crate::warn_limited!(TRYING_ANOTHER, pool = pool.name(), node = node.addr(), error = %e, "server connection failed; trying another node");
                tried.push(node.index());
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| C::no_node(pool.name())))
}

/// Closes idle connections past their idle timeout or lifetime, once a second, for as long as
/// the backend `buckets` reads from lives.
pub async fn reaper<B, C: Connector>(
    backend: std::sync::Weak<B>,
    buckets: fn(&B) -> Vec<Arc<Bucket<C>>>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(backend) = backend.upgrade() else {
            return;
        };
        for bucket in buckets(&backend) {
            for conn in bucket.reap() {
                conn.close().await;
            }
        }
    }
}

/// A server connection as the pool sees it.
pub trait Pooled: Debug + Send + 'static {
    fn created(&self) -> Instant;
    fn last_used(&self) -> Instant;
    fn touch(&mut self, now: Instant);
    /// Whether the peer has not closed it (a non-blocking probe).
    fn still_open(&mut self) -> bool;
    /// Says goodbye to the server and closes it.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// The buckets one client session used, so its next checkout skips building the bucket key,
/// hashing it and taking the backend's map lock. Valid because a session logs in to a pool
/// with one login for its whole life (or until it clears the memo); keyed by the pool's
/// identity (the memo holds the pool, so its address cannot be reused) and the node index.
pub struct BucketMemo<C: Connector> {
    entries: Vec<(Arc<Pool>, usize, Arc<Bucket<C>>)>,
}

impl<C: Connector> Default for BucketMemo<C> {
    fn default() -> Self {
        BucketMemo {
            entries: Vec::new(),
        }
    }
}

impl<C: Connector> BucketMemo<C> {
    /// Pools x nodes a session touches is small; past this the memo starts over (a reload
    /// left it holding old pools).
    const MAX: usize = 16;

    pub fn get(&self, pool: &Arc<Pool>, node: usize) -> Option<&Arc<Bucket<C>>> {
        self.entries
            .iter()
            .find(|(p, n, _)| *n == node && Arc::ptr_eq(p, pool))
            .map(|(_, _, b)| b)
    }

    pub fn put(&mut self, pool: &Arc<Pool>, node: usize, bucket: Arc<Bucket<C>>) {
        if self.entries.len() >= Self::MAX {
            self.entries.clear();
        }
        self.entries.push((pool.clone(), node, bucket));
    }

    /// Forgets everything (the session's logins or backend changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Counters of one bucket, read by the admin console and metrics.
#[derive(Debug, Default)]
pub struct BucketStats {
    /// Clients waiting for a connection now.
    pub waiting: AtomicU32,
    /// Connections checked out now.
    pub active: AtomicU32,
    pub checkouts: AtomicU64,
    /// Total time spent waiting for a permit, in microseconds.
    pub wait_us: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub timeouts: AtomicU64,
}

/// What the admin API and metrics show of one bucket, whatever its protocol.
#[derive(Debug, Clone)]
pub struct BucketView {
    pub pool: String,
    pub node: String,
    pub user: String,
    /// The backend database of the login (empty where the login has none, as in MySQL).
    pub database: String,
    pub size: u32,
    pub idle: usize,
    pub active: u32,
    pub waiting: u32,
    pub checkouts: u64,
    pub wait_us: u64,
    pub timeouts: u64,
    pub connects: u64,
    pub connect_failures: u64,
}

/// The server connections of one (pool, node, login).
#[derive(Debug)]
pub struct Bucket<C: Connector> {
    pool: String,
    node: Arc<NodeState>,
    connector: C,
    config: PoolConfig,
    idle: Mutex<Vec<C::Conn>>,
    permits: Arc<FairSemaphore>,
    pub stats: BucketStats,
}

impl<C: Connector> Bucket<C> {
    pub fn new(pool: &str, node: Arc<NodeState>, connector: C, config: &PoolConfig) -> Self {
        Bucket {
            pool: pool.to_owned(),
            node,
            connector,
            config: config.clone(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(FairSemaphore::new(config.size)),
            stats: BucketStats::default(),
        }
    }

    pub fn pool(&self) -> &str {
        &self.pool
    }

    pub fn node(&self) -> &Arc<NodeState> {
        &self.node
    }

    pub fn connector(&self) -> &C {
        &self.connector
    }

    pub fn size(&self) -> u32 {
        self.config.size
    }

    /// Tenants with a client waiting for a connection now.
    pub fn waiting_tenants(&self) -> usize {
        self.permits.waiting_tenants()
    }

    /// Connections that could be checked out now without waiting.
    pub fn available_permits(&self) -> u32 {
        self.permits.available()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Waits for a permit (in `tenant`'s turn), then returns an idle connection or a new one.
    pub async fn checkout(self: &Arc<Self>, tenant: &Tenant) -> Result<PooledConn<C>, C::Error> {
        let permit = match self.permits.try_acquire() {
            Some(permit) => permit,
            None => {
                self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let waited = self
                    .permits
                    .acquire(tenant, self.config.checkout_timeout, u32::MAX)
                    .await;
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                self.stats.wait_us.fetch_add(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                match waited {
                    Ok(permit) => permit,
                    Err(_) => {
                        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(C::pool_timeout(
                            &self.pool,
                            self.node.addr(),
                            self.config.size,
                            self.config.checkout_timeout,
                        ));
                    }
                }
            }
        };
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let conn = match self.pop_fresh() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        Ok(PooledConn {
            conn: Some(conn),
            bucket: self.clone(),
            _permit: permit,
        })
    }

    fn pop_fresh(&self) -> Option<C::Conn> {
        loop {
            // The lock covers the pop only: the liveness probe is a syscall.
            let mut conn = self.idle.lock().ok()?.pop()?;
            let now = Instant::now();
            if self.expired(&conn, now) {
                continue;
            }
            // A connection back from its last use moments ago is not probed: that would add a
            // syscall to every transaction, and a read that meets a dead server is retried
            // elsewhere anyway. One idle for longer may have outlived its server.
            if now.duration_since(conn.last_used()) < PROBE_AFTER_IDLE || conn.still_open() {
                return Some(conn);
            }
        }
    }

    fn expired(&self, conn: &C::Conn, now: Instant) -> bool {
        let lifetime = self.config.server_lifetime;
        let idle = self.config.idle_timeout;
        (!lifetime.is_zero() && now.duration_since(conn.created()) >= lifetime)
            || (!idle.is_zero() && now.duration_since(conn.last_used()) >= idle)
    }

    async fn connect(&self) -> Result<C::Conn, C::Error> {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        match self.connector.connect(self.config.connect_timeout).await {
            Ok(conn) => {
                self.node.record_success();
                Ok(conn)
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                // A refused login is the configuration's fault, not the node's: no ban.
                if C::is_node_failure(&e) {
                    self.node
                        .record_failure(&self.config.health, &e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Drops idle connections past their idle timeout or lifetime, keeping `min_size`.
    pub fn reap(&self) -> Vec<C::Conn> {
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return Vec::new();
        };
        let keep = self.config.min_size as usize;
        let mut removed = Vec::new();
        let mut i = 0;
        while i < idle.len() {
            let conn = &idle[i];
            let old = !self.config.server_lifetime.is_zero()
                && now.duration_since(conn.created()) >= self.config.server_lifetime;
            let unused = !self.config.idle_timeout.is_zero()
                && now.duration_since(conn.last_used()) >= self.config.idle_timeout
                && idle.len() > keep;
            if old || unused {
                removed.push(idle.remove(i));
            } else {
                i += 1;
            }
        }
        removed
    }

    /// Closes every idle connection (RECONNECT, shutdown, a node that failed over).
    pub fn drain_idle(&self) -> Vec<C::Conn> {
        self.idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn put_back(&self, mut conn: C::Conn) {
        conn.touch(Instant::now());
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }

    /// A snapshot for the admin API and metrics, labelled with the login's `user` and
    /// `database`.
    pub fn view(&self, user: &str, database: &str) -> BucketView {
        let s = &self.stats;
        BucketView {
            pool: self.pool.clone(),
            node: self.node.addr().to_owned(),
            user: user.to_owned(),
            database: database.to_owned(),
            size: self.config.size,
            idle: self.idle_count(),
            active: s.active.load(Ordering::Relaxed),
            waiting: s.waiting.load(Ordering::Relaxed),
            checkouts: s.checkouts.load(Ordering::Relaxed),
            wait_us: s.wait_us.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
        }
    }
}

/// A checked-out server connection. [`PooledConn::release`] returns it to the pool; dropping it
/// closes it (a connection in an unknown state is never reused).
#[derive(Debug)]
pub struct PooledConn<C: Connector> {
    conn: Option<C::Conn>,
    bucket: Arc<Bucket<C>>,
    _permit: FairPermit,
}

impl<C: Connector> PooledConn<C> {
    pub fn conn(&mut self) -> &mut C::Conn {
        // Invariant: `conn` is Some until release/drop consumes self.
        self.conn
            .as_mut()
            .expect("a pooled connection is present until released")
    }

    pub fn conn_ref(&self) -> &C::Conn {
        self.conn
            .as_ref()
            .expect("a pooled connection is present until released")
    }

    pub fn bucket(&self) -> &Arc<Bucket<C>> {
        &self.bucket
    }

    /// Returns the connection for reuse.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.bucket.put_back(conn);
        }
    }
}

impl<C: Connector> Drop for PooledConn<C> {
    fn drop(&mut self) {
        self.bucket.stats.active.fetch_sub(1, Ordering::Relaxed);
        if self.conn.take().is_some() {
            tracing::debug!(
                server = self.bucket.node.addr(),
                "closing a server connection"
            );
        }
    }
}

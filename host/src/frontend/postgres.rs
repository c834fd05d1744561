//! The PostgreSQL frontend: clients (psql, pgbench, libpq, JDBC, psycopg, tokio-postgres) connect
//! to Switchyard as to PostgreSQL; many client sessions share few server connections while the
//! policy routes every statement.
//!
//! ```text
//! startup (SSLRequest → 'N' or TLS, GSSENCRequest → 'N', CancelRequest → forwarded)
//!   → user, allowed_networks → SCRAM-SHA-256 / md5 / trust → clusters, databases (3D000)
//!   → ParameterStatus, key
//!   → session: batches → classify → policy (block 42501 / rewrite / route) → cache
//!   → limits (user, `[[limit]]` tags, pool `max_concurrent_queries`: 53300 when busy or the
//!     queue is full or over, 53400 over `requests_per_minute`)
//!   → pool (transaction or session mode, waiters served in turn across tenants; 53300 after
//!     checkout_timeout) → relay
//! ```
//!
//! The database `switchyard` is the admin console (PgBouncer's `pgbouncer` database), for users
//! with `admin = true`.

mod admin;
mod cancel;
mod client;
mod login;
mod mirror;
mod observe;
mod session;
mod settings;
mod statements;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use cancel::CancelRegistry;
pub use session::SessionEnd;

use crate::backend::postgres::PgBackend;
use crate::config::{Config, DatabaseAccess, ListenerConfig};
use crate::frontend::clickhouse_http::Shared;
use crate::limits::{LimitError, LimitErrorKind};
use crate::postgres::protocol::ErrorFields;

/// The admin console's database name.
pub const ADMIN_DATABASE: &str = "switchyard";

/// Counters for SHOW STATS.
#[derive(Debug, Default)]
pub struct FrontendStats {
    pub sessions: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    /// Reads sent to the primary because no replica had reached the session's position.
    pub causal_primary: AtomicU64,
    /// Cache hits not used because the entry may predate a position the session must see.
    pub causal_cache_bypass: AtomicU64,
    /// Redis operations on shared causal positions (`switchyard.causal_key`) that failed.
    pub shared_position_failures: AtomicU64,
}

/// One PostgreSQL listener.
pub struct PgFrontend {
    listener: ListenerConfig,
    cluster: String,
    default_database: Option<String>,
    /// The databases clients may open (cluster and user `databases`).
    databases: DatabaseAccess,
    backend: Arc<PgBackend>,
    users: users::Users,
    shared: Shared,
    cancels: Arc<CancelRegistry>,
    read_your_writes: Option<Duration>,
    invalidate_on_write: bool,
    max_cached_payload: usize,
    paused: watch::Receiver<bool>,
    pause: watch::Sender<bool>,
    pub stats: FrontendStats,
    known_statements: statements::KnownStatements,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The real server's startup parameters, learnt once.
    server_params: tokio::sync::OnceCell<Vec<(String, String)>>,
    /// The frontend a config reload replaced this one with: sessions move to it between
    /// transactions.
    successor: ArcSwapOption<PgFrontend>,
    /// What unknown users are authenticated against (kept across reloads, so an unknown name
    /// keeps its salt as a real user does).
    mock: crate::postgres::auth::MockSecrets,
}

impl PgFrontend {
    pub fn new(
        listener: ListenerConfig,
        config: &Config,
        backend: Arc<PgBackend>,
        shared: Shared,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> PgFrontend {
        let cluster = config.cluster(&listener.cluster);
        let (pause, paused) = watch::channel(false);
        PgFrontend {
            cluster: listener.cluster.clone(),
            default_database: cluster.and_then(|c| c.database.clone()),
            databases: cluster.map(DatabaseAccess::of).unwrap_or_default(),
            read_your_writes: cluster.and_then(|c| c.read_your_writes),
            listener,
            backend,
            users: users::Users::new(&config.users),
            max_cached_payload: shared.cache.as_ref().map_or(0, |c| {
                usize::try_from(c.max_payload_size()).unwrap_or(usize::MAX)
            }),
            shared,
            cancels: Arc::new(CancelRegistry::default()),
            invalidate_on_write: config.cache.invalidate_on_write,
            paused,
            pause,
            stats: FrontendStats::default(),
            known_statements: statements::KnownStatements::default(),
            tls,
            server_params: tokio::sync::OnceCell::new(),
            successor: ArcSwapOption::empty(),
            mock: crate::postgres::auth::MockSecrets::random(),
        }
    }

    /// This listener's frontend for a reloaded config: new users, backend and settings; the
    /// cancel keys, the PAUSE state and TLS carry over, so clients of either generation can
    /// cancel and admin PAUSE keeps holding. Sessions move to it once
    /// [`PgFrontend::hand_over`] is called (when the reload commits).
    pub fn successor(
        &self,
        listener: ListenerConfig,
        config: &Config,
        backend: Arc<PgBackend>,
        shared: Shared,
    ) -> PgFrontend {
        let mut next = PgFrontend::new(listener, config, backend, shared, self.tls.clone());
        next.cancels = self.cancels.clone();
        next.pause = self.pause.clone();
        next.paused = self.paused.clone();
        next.mock = self.mock.clone();
        next
    }

    /// Points this frontend's sessions at `next`.
    pub fn hand_over(&self, next: &Arc<PgFrontend>) {
        self.successor.store(Some(next.clone()));
    }

    /// The newest generation of this frontend (`None`: this one is current).
    fn newest(&self) -> Option<Arc<PgFrontend>> {
        let mut newest = self.successor.load_full()?;
        while let Some(next) = newest.successor.load_full() {
            newest = next;
        }
        Some(newest)
    }

    pub fn listener(&self) -> &ListenerConfig {
        &self.listener
    }

    pub fn backend(&self) -> &Arc<PgBackend> {
        &self.backend
    }

    /// Serves one client connection to its end; `pending` counts it until it has logged in.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        pending: crate::guard::PendingLogin,
    ) {
        let _ = stream.set_nodelay(true);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        login::serve(self, stream, peer, pending).await;
    }

    /// Waits while the pool is paused (admin PAUSE).
    async fn wait_resumed(&self, mut paused: watch::Receiver<bool>) {
        let _ = paused.wait_for(|p| !*p).await;
    }

    fn set_paused(&self, paused: bool) {
        let _ = self.pause.send(paused);
    }
}

/// A limit refusal as a PostgreSQL error (the session goes on). Busy, queue full and queue wait
/// over are 53300 `too_many_connections`, what PgBouncer and PgCat clients already retry on for
/// a pool that is exhausted; a rate limit is 53400 `configuration_limit_exceeded`, which retry
/// loops for 53300 do not hammer.
fn limit_error(err: LimitError) -> ErrorFields {
    let code = match err.kind() {
        LimitErrorKind::Rate => "53400",
        LimitErrorKind::Concurrency | LimitErrorKind::QueueFull | LimitErrorKind::QueueTimeout => {
            "53300"
        }
    };
    ErrorFields::error(code, err.to_string())
}

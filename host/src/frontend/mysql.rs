//! The MySQL/MariaDB frontend: clients (the mariadb and mysql CLIs, PyMySQL, mysql-connector,
//! mysql2, JDBC, sysbench) connect to Switchyard as to a MariaDB or MySQL server; many client
//! sessions share few server connections while the policy routes every statement.
//!
//! ```text
//! accept (listener max_connections, login gate)
//!   → HandshakeV10 (the servers' version, mysql_native_password) → SSLRequest → TLS (when the
//!     listener has `tls`) → auth switch if asked
//!   → user, allowed_networks, password → clusters, database (1044) → max_connections (1203)
//!   → session: commands → COM_QUERY: classify (MySQL dialect) → policy (block 1142 / rewrite /
//!     route) → limits → pool (transaction or session mode; pinned while in a transaction or
//!     holding state that cannot move) → causal target (GTID) → relay
//! ```

mod login;
mod rewind;
mod session;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::net::TcpStream;

use crate::backend::mysql::MyBackend;
use crate::config::{Config, DatabaseAccess, ListenerConfig};
use crate::frontend::clickhouse_http::Shared;
use crate::guard::PendingLogin;

/// Counters for the admin API.
#[derive(Debug, Default)]
pub struct MyFrontendStats {
    pub sessions: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    /// Reads sent to the primary because no replica had reached the session's position.
    pub causal_primary: AtomicU64,
}

/// One MySQL listener.
pub struct MyFrontend {
    listener: ListenerConfig,
    cluster: String,
    databases: DatabaseAccess,
    backend: Arc<MyBackend>,
    users: users::Users,
    shared: Shared,
    read_your_writes: Option<Duration>,
    invalidate_on_write: bool,
    /// Answers SSLRequest when the listener has `tls`.
    tls: Option<tokio_rustls::TlsAcceptor>,
    next_connection_id: AtomicU32,
    pub stats: MyFrontendStats,
    /// The frontend a config reload replaced this one with: sessions move to it when they
    /// hold no server connection.
    successor: ArcSwapOption<MyFrontend>,
}

impl MyFrontend {
    pub fn new(
        listener: ListenerConfig,
        config: &Config,
        backend: Arc<MyBackend>,
        shared: Shared,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> MyFrontend {
        let cluster = config.clusters.get(&listener.cluster);
        MyFrontend {
            cluster: listener.cluster.clone(),
            databases: cluster.map(DatabaseAccess::of).unwrap_or_default(),
            read_your_writes: cluster.and_then(|c| c.read_your_writes),
            invalidate_on_write: config.cache.invalidate_on_write,
            tls,
            listener,
            backend,
            users: users::Users::new(&config.users),
            shared,
            next_connection_id: AtomicU32::new(1),
            stats: MyFrontendStats::default(),
            successor: ArcSwapOption::empty(),
        }
    }

    /// This listener's frontend for a reloaded config: new users, backend and settings; TLS
    /// and the numbering of connection ids carry over. Sessions move to it once
    /// [`MyFrontend::hand_over`] is called (when the reload commits).
    pub fn successor(
        &self,
        listener: ListenerConfig,
        config: &Config,
        backend: Arc<MyBackend>,
        shared: Shared,
    ) -> MyFrontend {
        let next = MyFrontend::new(listener, config, backend, shared, self.tls.clone());
        next.next_connection_id.store(
            self.next_connection_id.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        next
    }

    /// Points this frontend's sessions at `next`.
    pub fn hand_over(&self, next: &Arc<MyFrontend>) {
        self.successor.store(Some(next.clone()));
    }

    /// The newest generation of this frontend (`None`: this one is current).
    fn newest(&self) -> Option<Arc<MyFrontend>> {
        let mut newest = self.successor.load_full()?;
        while let Some(next) = newest.successor.load_full() {
            newest = next;
        }
        Some(newest)
    }

    pub fn listener(&self) -> &ListenerConfig {
        &self.listener
    }

    pub fn backend(&self) -> &Arc<MyBackend> {
        &self.backend
    }

    /// Serves one client connection until it ends.
    pub async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        pending: PendingLogin,
    ) {
        let _ = stream.set_nodelay(true);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        login::serve(self, stream, peer, pending).await;
    }

    /// Users with a password, in no particular order (for the proxy's own logins).
    fn users_with_password(&self) -> Option<&users::User> {
        self.users.any_with_password()
    }

    fn connection_id(&self) -> u32 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

//! How the generic pool ([`crate::backend::pool`]) opens PostgreSQL server connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PgBackendError;
use super::conn::{Login, ServerConn};
use super::endpoint::Endpoint;
use crate::backend::pool::{self, Connector, Pooled};

/// A node's address (and TLS settings) and the login a bucket's connections use.
#[derive(Debug)]
pub struct PgConnector {
    pub endpoint: Arc<Endpoint>,
    pub login: Login,
    /// The boards of this bucket's held connections that take rides (see `multiplex`).
    pub carriers: Arc<super::multiplex::Carriers>,
}

impl Connector for PgConnector {
    type Conn = ServerConn;
    type Error = PgBackendError;

    async fn connect(&self, timeout: Duration) -> Result<ServerConn, PgBackendError> {
        ServerConn::connect(&self.endpoint, &self.login, timeout).await
    }

    fn is_node_failure(error: &PgBackendError) -> bool {
        error.is_node_failure()
    }

    fn no_node(pool: &str) -> PgBackendError {
        PgBackendError::NoNode {
            pool: pool.to_owned(),
        }
    }

    fn pool_timeout(pool: &str, node: &str, size: u32, after: Duration) -> PgBackendError {
        PgBackendError::PoolTimeout {
            pool: pool.to_owned(),
            node: node.to_owned(),
            size,
            after,
        }
    }
}

impl Pooled for ServerConn {
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
        ServerConn::still_open(self)
    }

    async fn close(self) {
        self.terminate().await;
    }
}

/// The server connections of one (pool, node, login).
pub type Bucket = pool::Bucket<PgConnector>;
/// A checked-out PostgreSQL server connection.
pub type PooledConn = pool::PooledConn<PgConnector>;

impl Bucket {
    pub fn login(&self) -> &Login {
        &self.connector().login
    }
}

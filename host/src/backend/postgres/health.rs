//! A PostgreSQL node's health check (scheduled by `backend::health`): a dedicated connection
//! runs the pool's check query, if any, and `pg_is_in_recovery()`, which is how a promotion is
//! detected. Replication lag is not measured here: it comes from the WAL positions
//! the position poller samples far more often (`wal_poll.rs`, `route/lag.rs`).

use std::sync::Arc;

use super::conn::{Login, ServerConn};
use super::endpoint::Endpoint;
use crate::backend::health::HealthCheck;
use crate::route::{NodeState, Pool};

const RECOVERY_QUERY: &str = "SELECT pg_is_in_recovery()";

/// The PostgreSQL check of one node.
pub(super) struct PgHealth {
    pub pool: Arc<Pool>,
    pub node: Arc<NodeState>,
    pub endpoint: Arc<Endpoint>,
    pub login: Login,
    pub conn: Option<ServerConn>,
}

impl HealthCheck for PgHealth {
    async fn check(&mut self) -> Result<(), String> {
        check(
            &self.pool,
            &self.node,
            &self.endpoint,
            &self.login,
            &mut self.conn,
        )
        .await
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

async fn check(
    pool: &Pool,
    node: &NodeState,
    endpoint: &Arc<Endpoint>,
    login: &Login,
    conn: &mut Option<ServerConn>,
) -> Result<(), String> {
    let config = pool.config();
    if conn.is_none() {
        *conn = Some(
            ServerConn::connect(endpoint, login, config.health.timeout)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    if let Some(query) = &config.health.query {
        c.simple_query(query).await.map_err(|e| e.to_string())?;
    }
    let (rows, _) = c
        .simple_query(RECOVERY_QUERY)
        .await
        .map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("pg_is_in_recovery() returned no row")?;
    let in_recovery = row.first().and_then(|v| v.as_deref()) == Some("t");
    // The router reads this to send writes to a promoted replica when the primary pool is
    // down (and to keep them off a primary pool node that came back as a standby).
    if node.set_in_recovery(in_recovery) {
        if in_recovery {
            tracing::warn!(
                node = node.addr(),
                pool = pool.name(),
                "node is in recovery now (demoted): it takes no writes"
            );
        } else {
            tracing::warn!(
                node = node.addr(),
                pool = pool.name(),
                "node left recovery (promoted): it takes writes if the primary pool is down"
            );
        }
    }
    Ok(())
}

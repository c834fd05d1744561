//! A MySQL node's health check (scheduled by `backend::health`): a dedicated connection runs
//! the pool's check query (or a ping) and reads `@@read_only`, which is how a promoted replica
//! is recognised (the router's "in recovery" means "takes no writes").

use std::sync::Arc;

use super::conn::{MyEndpoint, MyLogin, MyServerConn};
use crate::backend::health::HealthCheck;
use crate::mysql::command::COM_PING;
use crate::route::{NodeState, Pool};

const READ_ONLY_QUERY: &str = "SELECT @@read_only";

/// The MySQL check of one node.
pub(super) struct MyHealth {
    pub pool: Arc<Pool>,
    pub node: Arc<NodeState>,
    pub endpoint: MyEndpoint,
    pub login: MyLogin,
    pub conn: Option<MyServerConn>,
}

impl HealthCheck for MyHealth {
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
    endpoint: &MyEndpoint,
    login: &MyLogin,
    conn: &mut Option<MyServerConn>,
) -> Result<(), String> {
    let config = pool.config();
    if conn.is_none() {
        *conn = Some(
            MyServerConn::connect(endpoint, login, config.health.timeout)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    match &config.health.query {
        Some(query) => {
            c.query_rows(query)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        None => {
            c.simple_command(&[COM_PING])
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
    let rows = c
        .query_rows(READ_ONLY_QUERY)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let read_only = rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_deref())
        .is_some_and(|v| v != "0");
    if node.set_in_recovery(read_only) {
        if read_only {
            tracing::warn!(
                node = node.addr(),
                pool = pool.name(),
                "node is read-only now: it takes no writes"
            );
        } else {
            tracing::warn!(
                node = node.addr(),
                pool = pool.name(),
                "node is writable now: it takes writes if the primary pool is down"
            );
        }
    }
    Ok(())
}

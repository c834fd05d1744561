//! One task per node: every `health.interval` a dedicated connection runs the pool's check
//! query (or a ping) and reads `@@read_only`, which is how a promoted replica is recognised
//! (the router's "in recovery" means "takes no writes"). Failures count toward a ban.

use std::sync::{Arc, Weak};

use super::MyBackend;
use super::conn::{MyEndpoint, MyLogin, MyServerConn};
use crate::mysql::command::COM_PING;
use crate::route::{NodeState, Pool};

const READ_ONLY_QUERY: &str = "SELECT @@read_only";

pub(super) async fn run(
    backend: Weak<MyBackend>,
    pool: Arc<Pool>,
    node: Arc<NodeState>,
    endpoint: MyEndpoint,
    login: Option<MyLogin>,
) {
    let health = pool.config().health.clone();
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<MyServerConn> = None;
    loop {
        ticker.tick().await;
        if node.is_banned() {
            conn = None;
            continue;
        }
        if backend.strong_count() == 0 {
            return;
        }
        let result = match &login {
            Some(login) => tokio::time::timeout(
                health.timeout,
                check(&pool, &node, &endpoint, login, &mut conn),
            )
            .await
            .unwrap_or_else(|_| Err(format!("health check timed out after {:?}", health.timeout))),
            // Without credentials, reachability is all that can be checked.
            None => {
                tokio::time::timeout(health.timeout, tokio::net::TcpStream::connect(node.addr()))
                    .await
                    .map_err(|_| format!("connect timed out after {:?}", health.timeout))
                    .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
            }
        };
        match result {
            Ok(()) => node.record_success(),
            Err(reason) => {
                conn = None;
                node.record_failure(&health, &reason);
            }
        }
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

//! One task per node: every `health.interval` a dedicated connection runs the pool's check
//! query, if any, and `pg_is_in_recovery()`, which is how a promotion is detected. Failures
//! count toward a ban. Replication lag is not measured here: it comes from the WAL positions
//! the position poller samples far more often (`wal_poll.rs`, `route/lag.rs`).

use std::sync::{Arc, Weak};

use super::PgBackend;
use super::conn::{Login, ServerConn};
use super::endpoint::Endpoint;
use crate::route::{NodeState, Pool};

const RECOVERY_QUERY: &str = "SELECT pg_is_in_recovery()";

pub(super) async fn run(
    backend: Weak<PgBackend>,
    pool: Arc<Pool>,
    node: Arc<NodeState>,
    endpoint: Arc<Endpoint>,
    login: Option<Login>,
) {
    let health = pool.config().health.clone();
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<ServerConn> = None;
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

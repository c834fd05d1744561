//! One task per node: every `health.interval` a dedicated connection runs one query that says
//! whether the node is in recovery (`pg_is_in_recovery()`, which is how a promotion is
//! detected), where its WAL is, and how far behind replay is. Failures
//! count toward a ban; a replica whose lag (time, or bytes behind the primary's last polled WAL
//! position) is over its pool's limit leaves read rotation until it catches up.

use std::sync::{Arc, Weak};

use super::conn::{Login, ServerConn};
use super::{PgBackend, parse_lsn};
use crate::route::{NodeState, Pool};

/// In recovery?, WAL position (replay position on a replica), and milliseconds since the last
/// replayed transaction — 0 when everything received has been replayed, because an idle primary
/// sends nothing and that is not lag.
const LAG_QUERY: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     CASE WHEN pg_is_in_recovery() AND (pg_is_wal_replay_paused() OR pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn()) \
          THEN COALESCE((extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint, 0) ELSE 0 END";

pub(super) async fn run(
    backend: Weak<PgBackend>,
    pool: Arc<Pool>,
    node: Arc<NodeState>,
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
        let Some(backend) = backend.upgrade() else {
            return;
        };
        let result = match &login {
            Some(login) => tokio::time::timeout(
                health.timeout,
                check(&backend, &pool, &node, login, &mut conn),
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
    backend: &PgBackend,
    pool: &Pool,
    node: &NodeState,
    login: &Login,
    conn: &mut Option<ServerConn>,
) -> Result<(), String> {
    let config = pool.config();
    if conn.is_none() {
        *conn = Some(
            ServerConn::connect(node.addr(), login, config.health.timeout)
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
    let (rows, _) = c.simple_query(LAG_QUERY).await.map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("the lag query returned no row")?;
    let in_recovery = row.first().and_then(|v| v.as_deref()) == Some("t");
    let lsn = row.get(1).and_then(|v| v.as_deref()).and_then(parse_lsn);
    let lag_ms = row
        .get(2)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.parse::<i64>().ok())
        .map(|v| v.max(0) as u64);
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
    if !in_recovery {
        if let Some(lsn) = lsn {
            backend.record_primary_lsn(lsn);
        }
        node.set_lag(None, None, false);
        return Ok(());
    }
    let lag_bytes = match (backend.primary_lsn(), lsn) {
        (Some(primary), Some(replayed)) => Some(primary.saturating_sub(replayed)),
        _ => None,
    };
    let too_far = config
        .max_replica_lag
        .zip(lag_ms)
        .is_some_and(|(max, ms)| u128::from(ms) > max.as_millis())
        || config
            .max_replica_lag_bytes
            .zip(lag_bytes)
            .is_some_and(|(max, bytes)| bytes > max);
    node.set_lag(lag_ms, lag_bytes, too_far);
    Ok(())
}

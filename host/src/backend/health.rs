//! The health-check schedule every pooled protocol shares: one task per node, a check every
//! `health.interval` within `health.timeout`, failures counted toward a ban, and nothing tried
//! on a banned node. What a check does is the protocol's ([`HealthCheck`]); without
//! credentials only reachability is checked.

use std::future::Future;
use std::sync::{Arc, Weak};

use crate::route::{NodeState, Pool};

/// One node's check, keeping its connection between rounds.
pub(crate) trait HealthCheck: Send {
    /// One round: opens the connection if it has none, then checks.
    fn check(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Forgets the connection (after a failure, or while the node is banned).
    fn reset(&mut self);
}

/// Checks `node` for as long as `backend` lives. `check` is `None` without credentials.
pub(crate) async fn run<B: Send + Sync>(
    backend: Weak<B>,
    pool: Arc<Pool>,
    node: Arc<NodeState>,
    mut check: Option<impl HealthCheck>,
) {
    let health = pool.config().health.clone();
    let mut ticker = tokio::time::interval(health.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if node.is_banned() {
            if let Some(c) = check.as_mut() {
                c.reset();
            }
            continue;
        }
        if backend.strong_count() == 0 {
            return;
        }
        let result = match check.as_mut() {
            Some(c) => tokio::time::timeout(health.timeout, c.check())
                .await
                .unwrap_or_else(|_| {
                    Err(format!("health check timed out after {:?}", health.timeout))
                }),
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
                if let Some(c) = check.as_mut() {
                    c.reset();
                }
                node.record_failure(&health, &reason);
            }
        }
    }
}

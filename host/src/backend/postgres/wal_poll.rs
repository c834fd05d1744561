//! One task per node: a dedicated connection samples the node's WAL position every
//! `wal_poll_interval`, and at once when someone asks (`NodeState::request_poll`, coalesced: one
//! poll at a time, and requests made while one runs cause exactly one more after it).
//!
//! This is separate from the health check: the query is tiny and runs often, and its failures
//! ban nothing (health checks own bans). A failed poll only makes the node's position unknown
//! until a poll succeeds, which keeps it out of reads that need a position.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Login, ServerConn};
use super::endpoint::Endpoint;
use crate::model::{Lsn, WalLayout};
use crate::route::{NodeState, PositionSample, Router};

/// The node's role and position in one statement: replayed on a standby, inserted on a
/// writable node. `pg_is_in_recovery()` is read once, so a promotion between two calls cannot
/// pair a role with the other role's position (`pg_current_wal_insert_lsn()` fails in
/// recovery).
const POSITION_QUERY: &str = "SELECT r, (CASE WHEN r THEN pg_last_wal_replay_lsn() \
     ELSE pg_current_wal_insert_lsn() END)::text FROM pg_is_in_recovery() AS r";

/// Page and segment size of the server's WAL, in bytes.
const LAYOUT_QUERY: &str = "SELECT (SELECT setting FROM pg_settings WHERE name = 'wal_block_size'), \
     (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')";

/// What one poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Normalised ([`Lsn::record_end`]).
    pub lsn: Lsn,
    pub writable: bool,
}

/// Samples a node's position (a trait so the scheduling is tested without a server).
pub(crate) trait Probe: Send {
    fn sample(&mut self) -> impl Future<Output = Result<Seen, String>> + Send;
    /// Forgets the connection after a failure or a timeout (it may be mid-answer).
    fn reset(&mut self);
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub interval: Duration,
    /// A poll slower than this fails.
    pub timeout: Duration,
}

/// Polls `node` for as long as the task runs.
pub(crate) async fn run(
    router: Arc<Router>,
    node: Arc<NodeState>,
    schedule: Schedule,
    mut probe: impl Probe,
) {
    let wal = node.wal();
    let mut failures: u32 = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        if failures == 0 {
            tokio::select! {
                biased;
                () = wal.requested() => {}
                () = tokio::time::sleep_until(next) => {}
            }
        } else {
            // A failing node is retried on the backoff alone: requests (every read waiting for
            // a position asks) must not become a stream of connection attempts.
            tokio::time::sleep_until(next).await;
        }
        // Requests made before this poll starts are answered by it; only those made while it
        // runs cause another.
        wal.take_request();
        let started = Instant::now();
        let result = tokio::time::timeout(schedule.timeout, probe.sample())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", schedule.timeout)));
        match result {
            Ok(seen) => {
                if failures > 0 {
                    tracing::info!(node = node.addr(), position = %seen.lsn, "WAL position poll works again");
                }
                failures = 0;
                let sample = PositionSample {
                    lsn: seen.lsn,
                    writable: seen.writable,
                    started,
                };
                router.record_position(&node, Some(sample));
                next = tokio::time::Instant::from_std(started) + schedule.interval;
            }
            Err(reason) => {
                probe.reset();
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(
                        node = node.addr(),
                        reason,
                        "WAL position poll failed: the node's position is unknown until a poll succeeds"
                    );
                } else {
                    tracing::debug!(
                        node = node.addr(),
                        failures,
                        reason,
                        "WAL position poll failed again"
                    );
                }
                router.record_position(&node, None);
                next = tokio::time::Instant::now() + backoff(schedule.interval, failures);
            }
        }
    }
}

/// Time before the next attempt after `failures` failed polls in a row: doubling from the
/// interval, up to a second (or the interval, if longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(1));
    interval
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// The PostgreSQL probe: one connection, opened on first use and after a failure.
pub(crate) struct PgProbe {
    router: Arc<Router>,
    endpoint: Arc<Endpoint>,
    login: Login,
    connect_timeout: Duration,
    conn: Option<(ServerConn, WalLayout)>,
}

impl PgProbe {
    pub fn new(
        router: Arc<Router>,
        endpoint: Arc<Endpoint>,
        login: Login,
        connect_timeout: Duration,
    ) -> Self {
        PgProbe {
            router,
            endpoint,
            login,
            connect_timeout,
            conn: None,
        }
    }
}

impl Probe for PgProbe {
    async fn sample(&mut self) -> Result<Seen, String> {
        if self.conn.is_none() {
            let mut conn = ServerConn::connect(&self.endpoint, &self.login, self.connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            let (rows, _) = conn
                .simple_query(LAYOUT_QUERY)
                .await
                .map_err(|e| e.to_string())?;
            let layout = parse_layout(&rows);
            self.router.set_wal_layout(layout);
            self.conn = Some((conn, layout));
        }
        let Some((conn, layout)) = self.conn.as_mut() else {
            return Err("no connection".to_owned());
        };
        let (rows, _) = conn
            .simple_query(POSITION_QUERY)
            .await
            .map_err(|e| e.to_string())?;
        parse_position(&rows, *layout)
    }

    fn reset(&mut self) {
        self.conn = None;
    }
}

fn parse_layout(rows: &[Vec<Option<String>>]) -> WalLayout {
    let default = WalLayout::default();
    let value = |i: usize| {
        rows.first()
            .and_then(|r| r.get(i))
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
    };
    WalLayout {
        page_size: value(0).unwrap_or(default.page_size),
        segment_size: value(1).unwrap_or(default.segment_size),
    }
}

fn parse_position(rows: &[Vec<Option<String>>], layout: WalLayout) -> Result<Seen, String> {
    let row = rows.first().ok_or("the position query returned no row")?;
    let writable = match row.first().and_then(|v| v.as_deref()) {
        Some("f") => true,
        Some("t") => false,
        other => return Err(format!("pg_is_in_recovery() answered {other:?}")),
    };
    // NULL: a standby that has not replayed anything yet.
    let text = row
        .get(1)
        .and_then(|v| v.as_deref())
        .ok_or("the server reports no WAL position yet")?;
    let lsn: Lsn = text
        .parse()
        .map_err(|e: crate::model::LsnParseError| e.to_string())?;
    Ok(Seen {
        lsn: lsn.record_end(layout),
        writable,
    })
}

#[cfg(test)]
mod tests;

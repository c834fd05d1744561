//! The held server connection's queue: each Sync or Query sent is a [`Pending`] answered by
//! exactly one ReadyForQuery. Relays the server's answers, finishes what each unit stood for
//! (cache fill, invalidation, a setting recorded), and releases the connection in transaction
//! mode once the queue is empty and the server is idle.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::postgres::{PgBackendError, PooledConn};
use crate::cache::{CachedResponse, TableRef};
use crate::frontend::postgres::client::WRITE_HIGH_WATER;
use crate::frontend::postgres::observe::Observed;
use crate::frontend::postgres::settings;
use crate::log_limit::LogLimit;
use crate::model::{Lsn, PoolRole};
use crate::postgres::protocol::backend::{error_code, ready_for_query, ready_status};
use crate::postgres::protocol::{ErrorFields, TransactionStatus};
use crate::route::{InFlight, Pool};

use super::cache::Capture;
use super::{Session, SessionEnd};

/// The work a Sync or Query sent to the server stands for, until its ReadyForQuery.
#[derive(Default)]
pub(super) struct Pending {
    /// The proxy's own statement (settings replay, Sync of its own): the client sees nothing.
    pub(super) silent: bool,
    /// The ReadyForQuery is not forwarded (a Sync the proxy added).
    pub(super) hide_ready: bool,
    /// Parses the proxy injected; their ParseComplete is not forwarded.
    pub(super) swallow_parse: u32,
    /// Statements this batch prepares; forgotten if it fails (the server does not have them).
    pub(super) new_prepared: Vec<u64>,
    pub(super) capture: Option<Capture>,
    pub(super) invalidate: Vec<TableRef>,
    /// The session-setting changes of its statements, in order (see `settings`).
    pub(super) settings: Vec<settings::Change>,
    /// A CommandComplete said ROLLBACK: the transaction it ended undid its `SET`s.
    pub(super) rolled_back: bool,
    pub(super) wrote: bool,
    pub(super) failed: bool,
    /// The bytes sent, when resending them elsewhere is safe (a read outside a transaction).
    pub(super) retry: Option<Bytes>,
    pub(super) relayed: bool,
    /// The client's statement behind it, for metrics (none for the proxy's own).
    pub(super) observed: Option<Observed>,
    /// Answers relayed that a retry elsewhere reproduces identically (see `relay`).
    pub(super) prefix: u32,
    /// Answers of a retried batch not to relay again.
    pub(super) skip: u32,
    /// A replica refused it as a write (or cancelled it for a recovery conflict) before the
    /// client saw anything that differs between nodes: the rest of its answer is dropped and it
    /// runs again on the primary (see `rerun_on_primary`).
    pub(super) rerun: bool,
    /// The proxy's question for the WAL position after a unit that wrote (see `causal`).
    pub(super) wal_probe: bool,
    /// What its statements do to session state living on the connection (see `pinning`), and
    /// whether it was a text of several statements.
    pub(super) resident: crate::model::ResidentEffects,
    pub(super) several: bool,
    /// A batch not yet synced bound a portal (Bind or Execute): the connection must stay.
    pub(super) portal: bool,
    /// Another session's unit riding on this connection (see `multiplex`): its answer is
    /// that session's, and nothing of it touches this one.
    pub(super) rider: Option<Box<super::multiplex::Rider>>,
    /// The mean server time of its statement shape, µs (0: unknown), for riders choosing
    /// between connections.
    pub(super) expected_us: u64,
}

/// A server connection the session holds.
pub(super) struct Held {
    pub(super) conn: PooledConn,
    pub(super) pool: Arc<Pool>,
    pub(super) session_mode: bool,
    pub(super) queue: VecDeque<Pending>,
    /// Forwarded since the last Sync (batches that ended with Flush).
    pub(super) open: Option<Pending>,
    pub(super) _in_flight: InFlight,
    /// Where other sessions leave rides while this one holds the connection (multiplexed
    /// pools in transaction mode only).
    pub(super) board: Option<super::multiplex::BoardSlot>,
}

impl Pending {
    /// Readies a unit to be sent again on another connection: the bytes to send, with the
    /// answers the client already has skipped (see `relay`) and nothing prepared yet there.
    pub(super) fn for_resend(&mut self) -> Bytes {
        self.swallow_parse = 0;
        self.new_prepared.clear();
        self.skip = self.prefix;
        self.prefix = 0;
        self.retry.clone().unwrap_or_default()
    }
}

impl Held {
    pub(super) fn quiet(&self) -> bool {
        self.queue.is_empty() && self.open.is_none()
    }

    /// What an answer to a query sent now is known to reflect, for its cache entry: on the
    /// primary, every commit before it (`CachedResponse::COMPLETE`); elsewhere the node's last
    /// known position, a lower bound of what its snapshot will see (0 when unknown). Read before
    /// the query is sent: a position polled while it runs may be past its snapshot.
    pub(super) fn data_position(&self) -> u64 {
        if self.pool.role() == PoolRole::Primary {
            return CachedResponse::COMPLETE;
        }
        self.conn.bucket().node().position().map_or(0, Lsn::as_u64)
    }
}

impl Pending {
    /// The unit is about to be sent on `held`: a capture learns what its answer will reflect.
    pub(super) fn sending_on(&mut self, held: &Held) {
        if let Some(capture) = self.capture.as_mut() {
            capture.position = held.data_position();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Relays every complete server message buffered.
    pub(super) async fn relay(&mut self) -> Result<(), SessionEnd> {
        loop {
            let Some(held) = self.held.as_mut() else {
                return Ok(());
            };
            let msg = match held.conn.conn().next_buffered() {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) => return Err(SessionEnd::Server(e)),
            };
            let tag = msg.tag();
            if tag == b'Z' {
                let status = ready_status(&msg).map_err(|e| {
                    SessionEnd::Server(PgBackendError::Protocol {
                        addr: held.conn.conn_ref().addr.clone(),
                        reason: e.to_string(),
                    })
                })?;
                let pending = held.queue.pop_front().unwrap_or_default();
                if pending.rider.is_some() {
                    self.ride_done(pending, &msg).await?;
                    continue;
                }
                held.front_started();
                if pending.rerun {
                    self.rerun_on_primary(pending).await?;
                    continue;
                }
                let probe = pending.wal_probe;
                if self.completed(pending, status) {
                    if self.holds_ready_for_sharing() {
                        self.hold_ready(Bytes::copy_from_slice(msg.bytes()));
                    } else {
                        self.io.wbuf.extend_from_slice(msg.bytes());
                    }
                }
                if probe {
                    self.share_position().await;
                }
                self.send_wal_probe().await?;
                self.resync_settings().await?;
                continue;
            }
            if held.queue.is_empty() && held.open.is_none() && matches!(tag, b'N' | b'S' | b'A') {
                // Between answers (a server's "terminating connection" warning, a
                // notification): nothing is outstanding, so it belongs to no batch.
                self.io.wbuf.extend_from_slice(msg.bytes());
                continue;
            }
            if held.queue.front().is_some_and(|p| p.rider.is_some()) {
                self.relay_to_rider(&msg).await?;
                continue;
            }
            let front_synced = !held.queue.is_empty();
            // The front unit is the last one outstanding (see the re-run on the primary below).
            let alone = held.open.is_none() && held.queue.len() == 1;
            let on_replica = held.pool.role() == PoolRole::Replica;
            let front = match held.queue.front_mut() {
                Some(p) => p,
                None => held.open.get_or_insert_with(Pending::default),
            };
            if tag == b'1' && front.swallow_parse > 0 {
                front.swallow_parse -= 1;
                continue;
            }
            if front.rerun {
                continue;
            }
            // A read the policy left to default routing that a replica cannot run: it wrote
            // (25006: a function that updates) or a recovery conflict cancelled it (40001).
            // Only as the last unit outstanding, so nothing the client sent after it can be
            // answered before it.
            if tag == b'E'
                && front.retry.is_some()
                && !front.relayed
                && !front.silent
                && on_replica
                && alone
                && front
                    .observed
                    .as_ref()
                    .is_some_and(|o| o.routed_by_default())
                && matches!(error_code(&msg), Some(b"25006" | b"40001"))
            {
                front.rerun = true;
                front.wrote |= error_code(&msg) == Some(b"25006");
                continue;
            }
            if tag == b'C' && msg.body_slice().starts_with(b"ROLLBACK") {
                front.rolled_back = true;
            }
            if tag == b'E' {
                front.failed = true;
                let conn = held.conn.conn();
                for h in front.new_prepared.drain(..) {
                    conn.prepared.remove(&h);
                }
                if let Some(c) = front.capture.take() {
                    let error = crate::postgres::protocol::BackendMessage::decode(&msg)
                        .ok()
                        .map(|m| format!("{m:?}"))
                        .unwrap_or_default();
                    c.fill.fail(error);
                }
            }
            if front.silent && front.wal_probe {
                self.wal_probe_answer(&msg);
                continue;
            }
            if front.silent {
                if tag == b'E' {
                    static SETTINGS_FAILED: LogLimit = LogLimit::standard();
                    crate::warn_limited!(SETTINGS_FAILED, client = %self.peer, "re-applying the client's settings failed on a server connection");
                }
                continue;
            }
            // Asynchronous messages (a NoticeResponse such as PostgreSQL's "terminating
            // connection due to immediate shutdown", ParameterStatus, NotificationResponse) are
            // no answer to the batch: resending the batch elsewhere stays safe after them.
            if !matches!(tag, b'N' | b'S' | b'A') {
                if front.skip > 0 {
                    // A retried batch: the client already has this answer from the failed node.
                    front.skip -= 1;
                    continue;
                }
                // ParseComplete, BindComplete, CloseComplete and descriptions are the same from
                // any node: after them a retry can still skip what the client already has.
                if matches!(tag, b'1' | b'2' | b'3' | b't' | b'T' | b'n') && !front.relayed {
                    front.prefix += 1;
                } else {
                    front.relayed = true;
                }
            }
            match tag {
                b'G' => {
                    self.copy_in = true;
                    // The Sync that ended this batch reached the server in copy-in mode, where it
                    // is ignored: the unit's ReadyForQuery answers the client's Sync after
                    // CopyDone/CopyFail instead, which must not open a unit of its own.
                    self.copy_sync_ignored = front_synced;
                }
                b'H' => {}
                _ => {}
            }
            if let Some(c) = front.capture.as_mut() {
                let keep = !matches!(tag, b'N' | b'S' | b'A') && (tag != b'1' || !c.skip_parse);
                if matches!(tag, b'G' | b'H' | b'W' | b's') {
                    if let Some(c) = front.capture.take() {
                        c.fill.skip();
                    }
                } else if keep {
                    c.buf.extend_from_slice(msg.bytes());
                    if c.buf.len() > self.fe.max_cached_payload
                        && let Some(c) = front.capture.take()
                    {
                        c.fill.skip();
                    }
                }
            }
            self.io.wbuf.extend_from_slice(msg.bytes());
            if self.io.wbuf.len() >= WRITE_HIGH_WATER {
                self.io.flush().await?;
            }
        }
        self.maybe_release();
        Ok(())
    }

    /// A Sync or Query has its ReadyForQuery: finish what it stood for. Returns whether the
    /// client sees the ReadyForQuery.
    pub(super) fn completed(&mut self, mut pending: Pending, status: TransactionStatus) -> bool {
        if pending.silent {
            return !pending.hide_ready;
        }
        self.causal_completed(&pending, status);
        self.resident_completed(&pending.resident, pending.failed, pending.several);
        if let Some(observed) = pending.observed.take() {
            let pool = self.held.as_ref().map_or("", |h| h.pool.name());
            observed.finish(
                &self.fe.shared.metrics,
                &self.user.config.name,
                pool,
                pending.failed,
            );
        }
        self.status = status;
        // A write inside a transaction invalidates when it completes, but commits later: a read
        // of another session in between (outside the transaction, so it may be cached) still
        // sees the old rows, and its fill, having started after the invalidation, would be
        // stored and outlive the commit — the writer's own reads after COMMIT would get it. So
        // the transaction's tables are invalidated again once it ends (COMMIT, or ROLLBACK:
        // which one is not told apart, and a batch that committed may still report an error).
        if status == TransactionStatus::Idle && !self.written_in_transaction.is_empty() {
            let tables = std::mem::take(&mut self.written_in_transaction);
            self.invalidate_cache(tables);
        }
        self.settings_completed(&mut pending, status);
        if pending.failed {
            return !pending.hide_ready;
        }
        for hash in pending.new_prepared.drain(..) {
            self.fe.known_statements.insert(hash);
        }
        if pending.wrote {
            self.last_write = Some(Instant::now());
            let tables = std::mem::take(&mut pending.invalidate);
            if status != TransactionStatus::Idle {
                // Few distinct tables, however many statements (a bulk load in one transaction).
                for t in &tables {
                    if !self.written_in_transaction.contains(t) {
                        self.written_in_transaction.push(t.clone());
                    }
                }
            }
            self.invalidate_cache(tables);
        }
        if let Some(mut capture) = pending.capture.take() {
            // With `read_your_writes`, a replica is trusted to lag by less than its window, and
            // a writer's reads skip replicas for that long; its cached reads must too: see
            // `FillGuard::served_by_replica`.
            if let (Some(window), Some(held)) = (self.fe.read_your_writes, self.held.as_ref())
                && held.pool.role() == PoolRole::Replica
            {
                capture.fill.served_by_replica(window);
            }
            let response = CachedResponse::new(Bytes::new(), capture.buf.freeze(), capture.ttl)
                .with_position(capture.position);
            // Stored and handed to the waiters before the client sees this ReadyForQuery; only
            // the Redis write is spawned (a spawned local store leaves the flight open for
            // lookups to join until the runtime gets to it).
            tokio::spawn(capture.fill.complete_now(response));
        }
        !pending.hide_ready
    }

    /// Invalidates the cache entries that read `tables` (when `invalidate_on_write`): locally
    /// before the client sees its ReadyForQuery (its next read must not be a stale hit); other
    /// replicas are told in the background.
    fn invalidate_cache(&self, tables: Vec<TableRef>) {
        if !self.fe.invalidate_on_write || tables.is_empty() {
            return;
        }
        let Some(cache) = self.fe.shared.cache.as_ref() else {
            return;
        };
        let mut by_db: HashMap<String, Vec<String>> = HashMap::new();
        for t in tables {
            by_db.entry(t.database).or_default().push(t.table);
        }
        for (db, tables) in by_db {
            let remote = cache.invalidate_tables_now(&db, &tables);
            tokio::spawn(async move {
                if let Err(e) = remote.await {
                    crate::warn_limited!(crate::cache::INVALIDATION_MISSED, error = %e, "cache invalidation did not reach every replica");
                }
            });
        }
    }

    /// Session settings count once committed: a unit's `SET`s wait with the transaction they
    /// ran in, and are recorded when it ends without a rollback (a text of several statements is
    /// a transaction of its own, ended by its ReadyForQuery). The connection they ran on then
    /// carries them, and says so.
    fn settings_completed(&mut self, pending: &mut Pending, status: TransactionStatus) {
        if !pending.failed {
            self.uncommitted_settings.append(&mut pending.settings);
        }
        if status != TransactionStatus::Idle || self.uncommitted_settings.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.uncommitted_settings);
        if pending.failed || pending.rolled_back {
            return;
        }
        let mut server = None;
        for change in &changes {
            self.causal.setting_changed(change);
            server = Some(self.settings.apply(change));
        }
        if let (Some(server), Some(held)) = (server, self.held.as_mut()) {
            held.conn.conn().settings = server;
        }
    }

    /// In session mode, re-applies the client's settings on its connection when a `RESET` left
    /// the connection without the client's startup values (transaction mode does this at the
    /// next checkout).
    pub(super) async fn resync_settings(&mut self) -> Result<(), SessionEnd> {
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        if !held.session_mode || self.status != TransactionStatus::Idle {
            return Ok(());
        }
        let server = held.conn.conn();
        let Some(sql) = self.settings.replay_sql(server.settings) else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        crate::backend::postgres::put_query(&mut out, &sql);
        server.settings = self.settings.hash();
        held.queue.push_back(Pending {
            silent: true,
            hide_ready: true,
            ..Pending::default()
        });
        server.write_all(&out).await.map_err(SessionEnd::Server)
    }

    /// Ends the unit of work once nothing is outstanding and the server is outside a
    /// transaction, and in transaction mode gives the connection back.
    pub(super) fn maybe_release(&mut self) {
        let idle = !self.copy_in
            && self.status == TransactionStatus::Idle
            && self
                .held
                .as_ref()
                .is_none_or(|h| h.quiet() || h.carrying_only());
        if idle {
            self.work = None;
            // Kept only for rides while others wait for a connection: no more rides, so the
            // connection goes back once those written are answered.
            if let Some(held) = self.held.as_ref()
                && let Some(slot) = held.board.as_ref()
                && held.carrying_only()
                && held.others_wait()
            {
                slot.board.stop_taking();
            }
            if self.pin.is_some() && self.resident.reason().is_none() {
                // The statement that took the pin created nothing (it failed, or never ran).
                self.pin = None;
                self.cancel.slot.set_pinned(None);
            }
        }
        // A pinned client keeps its connection between transactions (see `pinning`).
        let release = idle
            && !self.is_pinned()
            && self
                .held
                .as_ref()
                .is_some_and(|h| !h.session_mode && h.quiet() && h.keeps_no_rides());
        if release && let Some(held) = self.held.take() {
            self.cancel.slot.clear();
            held.conn.release();
        }
    }

    /// Waits until the server has answered everything sent (adding a Sync of its own after a
    /// Flush-ended batch), relaying as usual.
    pub(super) async fn drain(&mut self) -> Result<(), SessionEnd> {
        loop {
            let Some(held) = self.held.as_mut() else {
                return Ok(());
            };
            if let Some(mut open) = held.open.take() {
                open.hide_ready = true;
                held.queue.push_back(open);
                if let Err(e) = held.conn.conn().write_all(&[b'S', 0, 0, 0, 4]).await {
                    return Err(SessionEnd::Server(e));
                }
            }
            if held.queue.is_empty() {
                return Ok(());
            }
            self.relay().await?;
            let Some(held) = self.held.as_mut() else {
                return Ok(());
            };
            if held.queue.is_empty() {
                return Ok(());
            }
            if let Err(e) = held.conn.conn().fill().await {
                self.server_failed(e).await?;
                continue;
            }
            self.relay().await?;
        }
    }

    /// Answers the client with an error the proxy makes (after everything before it), and a
    /// ReadyForQuery when the client asked for one.
    pub(super) async fn answer_error(
        &mut self,
        e: ErrorFields,
        ready: bool,
    ) -> Result<(), SessionEnd> {
        self.drain().await?;
        self.io.error(&e);
        if ready {
            ready_for_query(&mut self.io.wbuf, self.status);
        }
        self.maybe_release();
        Ok(())
    }
}

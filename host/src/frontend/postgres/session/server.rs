//! Getting, keeping and losing a server connection: the route and pool a statement needs,
//! limits taken per unit of work, checkout with the client's settings replayed, mirroring, and
//! the retry of a read whose server failed before answering.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::postgres::{Login, PgBackendError};
use crate::config::PoolMode;
use crate::frontend::postgres::mirror;
use crate::limits::Tenant;
use crate::log_limit::LogLimit;
use crate::model::{PoolRole, Protocol, Route, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::backend::ready_for_query;
use crate::postgres::protocol::{ErrorFields, TransactionStatus};
use crate::route::{MirrorTicket, Pool};

use super::extended::encode_parse;
use super::multiplex::{BoardSlot, Boarding, RideOffer, Rode};
use super::relay::{Held, Pending};
use super::{Session, SessionEnd};

/// How a unit of work reaches a server.
pub(super) enum Got {
    /// On the connection the session holds.
    Held,
    /// On another session's connection (see `multiplex`), already answered.
    Rode(Rode),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Makes sure a server connection is held, picking the pool by the verdict. The inner
    /// error is for the client (the session goes on); the outer one ends the session.
    pub(super) async fn ensure_conn(
        &mut self,
        verdict: &Verdict,
        in_transaction: bool,
        ride: Option<RideOffer<'_>>,
    ) -> Result<Result<Got, ErrorFields>, SessionEnd> {
        // The connection is held only for other sessions' rides: this statement is routed as
        // its own, and joins them there if it goes to the same pool (see below). With a
        // statement of the proxy's own among them (the position probe after a write), or while
        // others wait for a connection of the pool (as in `maybe_release`), they all finish
        // first and the connection goes back.
        let carrying = self.held.as_ref().is_some_and(|h| h.carrying_only())
            && self.status == TransactionStatus::Idle
            && !self.copy_in
            && !self.is_pinned();
        if carrying
            && self
                .held
                .as_ref()
                .is_some_and(|h| h.others_wait() || h.queue.iter().any(|p| p.silent))
        {
            self.finish_rides().await?;
        }
        let carrying = carrying && self.held.is_some();
        // The connection is held only for the proxy's own statements (the WAL position probe
        // after a write): let them finish and the connection go, so this statement is routed
        // with the position the probe learns rather than stuck to the writer's connection.
        let proxys_own_only = self.held.as_ref().is_some_and(|h| {
            !h.session_mode
                && h.open.is_none()
                && !h.queue.is_empty()
                && h.queue.iter().all(|p| p.silent)
        });
        if proxys_own_only
            && self.status == TransactionStatus::Idle
            && !self.copy_in
            && !self.is_pinned()
        {
            self.drain().await?;
            self.maybe_release();
        }
        // A replica connection held only by a Flush-ended batch that prepared or described
        // statements (asyncpg prepares with Parse, Describe, Flush): a statement that must not
        // run on a replica ends that batch with a Sync of the proxy's own and moves on. The
        // statements are prepared again wherever they are bound next; no portal is lost.
        let replica_prepare_only = self.held.as_ref().is_some_and(|h| {
            !h.session_mode
                && h.queue.is_empty()
                && h.pool.role() == PoolRole::Replica
                && h.open.as_ref().is_some_and(|o| !o.portal)
        });
        let replica_read = verdict.effective.kind == StatementKind::Read
            && verdict.decision.route.is_read_routing();
        if replica_prepare_only
            && !replica_read
            && self.status == TransactionStatus::Idle
            && !self.copy_in
            && !self.is_pinned()
        {
            self.drain().await?;
            self.maybe_release();
        }
        let starting = self.work.is_none();
        if starting && self.held.is_none() {
            // Between transactions: the moment to move to a reloaded config.
            self.follow_reload();
        }
        if starting {
            match self
                .fe
                .shared
                .admission
                .admit(&self.user_limits, &verdict.decision.tags, true)
                .await
            {
                Ok(admitted) => self.work = Some(admitted),
                Err(e) => return Ok(Err(super::super::limit_error(e))),
            }
        }
        // A session-mode client pinned to a replica by its first read may move once it needs
        // another pool (a write, a transaction), while nothing is outstanding: the replica
        // connection holds nothing the session could need (settings are replayed, statements
        // re-prepared; temp tables, LISTEN and writes are impossible on a standby).
        let may_leave_replica = self.held.as_ref().is_some_and(|h| {
            h.session_mode
                && h.quiet()
                && !self.copy_in
                && self.status == TransactionStatus::Idle
                && h.pool.role() == PoolRole::Replica
        });
        if let Some(held) = &self.held
            && !may_leave_replica
            && !carrying
        {
            let pool = held.pool.clone();
            if let Err(e) = self.pin_for(verdict, &pool) {
                return Ok(Err(e));
            }
            if starting {
                return Ok(self.pool_permit(&pool).await.map(|()| Got::Held));
            }
            return Ok(Ok(Got::Held));
        }
        let mut route = self.resident_route(verdict, verdict.decision.route.clone());
        if route.is_read_routing()
            && self
                .fe
                .shared
                .metrics
                .learned_writes
                .contains(Protocol::Postgres, verdict.effective.fingerprint)
        {
            route = Route::Primary;
        }
        if let (Some(window), Some(at)) = (self.fe.read_your_writes, self.last_write)
            && at.elapsed() < window
            && matches!(route, Route::Default | Route::Replica)
        {
            route = Route::Primary;
        }
        let target = match self.fe.backend.router().resolve_target(
            &route,
            verdict.effective.kind,
            in_transaction,
        ) {
            Ok(target) => target,
            Err(e) => return Ok(Err(ErrorFields::error("08000", e.to_string()))),
        };
        // A read sent to the primary only for causality goes back to the replicas if the
        // primary turns out to be down (see below).
        let replica = (route.is_read_routing() && target.pool.role() == PoolRole::Replica)
            .then(|| (target.pool.clone(), target.exclude()));
        let (target, exclude) = self
            .causal_target(verdict, &route, target, in_transaction)
            .await;
        let pool = target.pool.clone();
        if let Err(e) = self.pin_for(verdict, &pool) {
            return Ok(Err(e));
        }
        if starting && let Err(e) = self.pool_permit(&pool).await {
            return Ok(Err(e));
        }
        if let Some(held) = &self.held {
            // A write pinned to a promoted replica must not stay on another node of its pool.
            let pinned_elsewhere = target
                .node
                .is_some_and(|n| n != held.conn.bucket().node().index());
            if held.pool.name() == pool.name() && !pinned_elsewhere {
                // Carrying: behind the rides, which keep their place (nothing may ride behind
                // this statement if it is one that closes the board).
                return Ok(Ok(Got::Held));
            }
            if carrying {
                self.finish_rides().await?;
            }
            if self.held.is_some() {
                // Closed, not pooled: it may carry the client's settings.
                self.cancel.slot.clear();
                self.held = None;
            }
        }
        let paused = self.fe.paused.clone();
        self.fe.wait_resumed(paused).await;
        let affinity = verdict.decision.affinity_key.as_deref();
        let boarding = match ride {
            Some(offer) => {
                self.try_ride(verdict, &pool, affinity, &exclude, offer)
                    .await?
            }
            None => Boarding::No,
        };
        let mut result = match boarding {
            Boarding::Rode(rode) => return Ok(Ok(Got::Rode(rode))),
            Boarding::Queued(queued) => {
                match self
                    .checkout_or_ride(queued, &pool, affinity, &exclude)
                    .await?
                {
                    Ok(result) => result,
                    Err(rode) => return Ok(Ok(Got::Rode(rode))),
                }
            }
            Boarding::No => self.checkout(&pool, affinity, &exclude).await,
        };
        // Every node of the pool failed before the health checks noticed: its fallback pool
        // takes the statement (nothing was sent yet).
        if let Err(e) = &result
            && (e.is_node_failure() || matches!(e, PgBackendError::NoNode { .. }))
            && let Some(fallback) = pool
                .config()
                .fallback_pool
                .as_deref()
                .and_then(|name| self.fe.backend.router().pool(name))
                .cloned()
        {
            result = self.checkout(&fallback, affinity, &[]).await;
        }
        // The primary is down and the health checks have not said so yet: the read goes on from
        // the replicas, as once they have (see `causal_target`).
        if let Err(e) = &result
            && e.is_node_failure()
            && pool.role() == PoolRole::Primary
            && let Some((replica, exclude)) = replica
        {
            result = self.checkout(&replica, affinity, &exclude).await;
        }
        match result {
            Ok(()) => Ok(Ok(Got::Held)),
            Err(e) if e.names_pool() => Ok(Err(ErrorFields::error(e.sqlstate(), e.to_string()))),
            // Say which pool failed: with the primary down, "pool primary" is what the
            // operator needs to read, not just a server address.
            Err(e) => Ok(Err(ErrorFields::error(
                e.sqlstate(),
                format!("pool \"{}\": {e}", pool.name()),
            ))),
        }
    }

    /// Takes the pool's `max_concurrent_queries` slot for the unit of work starting.
    pub(super) async fn pool_permit(&mut self, pool: &Pool) -> Result<(), ErrorFields> {
        let Some(limits) = pool.limits() else {
            return Ok(());
        };
        let Some(work) = self.work.as_mut() else {
            return Ok(());
        };
        let permit = limits
            .acquire(work.tenant())
            .await
            .map_err(super::super::limit_error)?;
        work.hold(permit);
        Ok(())
    }

    /// Who this session queues as for shared resources.
    pub(super) fn tenant(&self) -> Tenant {
        match &self.work {
            Some(work) => work.tenant().clone(),
            None => self.user_limits.tenant.clone(),
        }
    }

    /// A mirror slot for a statement that runs on the held connection's pool, if the policy
    /// or the pool's config asks for one and the shadow has room.
    pub(super) fn mirror_ticket(
        &self,
        verdict: &Verdict,
        in_transaction: bool,
    ) -> Option<MirrorTicket> {
        let source = &self.held.as_ref()?.pool;
        self.fe.backend.router().mirror(
            source,
            verdict.decision.mirror.as_deref(),
            verdict.effective.kind,
            in_transaction,
        )
    }

    pub(super) fn spawn_mirror(&mut self, ticket: MirrorTicket, bytes: Bytes) {
        let login = self.login(ticket.pool());
        mirror::spawn(self.fe.backend.clone(), ticket, login, bytes);
    }

    pub(super) async fn checkout(
        &mut self,
        pool: &Arc<Pool>,
        affinity: Option<&str>,
        exclude: &[usize],
    ) -> Result<(), PgBackendError> {
        let login = self.login(pool);
        let tenant = self.tenant();
        let mut conn = self
            .fe
            .backend
            .checkout(pool, affinity, &login, exclude, &tenant, &mut self.buckets)
            .await?;
        let in_flight = conn.bucket().node().begin();
        let session_mode = pool.config().mode == PoolMode::Session;
        let board = BoardSlot::for_conn(&mut conn, pool);
        let target = conn.conn().cancel_target();
        match &board {
            Some(slot) => self.cancel.slot.set_carrying(target, slot.board.clone()),
            None => self.cancel.slot.set(target),
        }
        let mut held = Held {
            conn,
            pool: pool.clone(),
            session_mode,
            queue: VecDeque::new(),
            open: None,
            _in_flight: in_flight,
            board,
        };
        let server = held.conn.conn();
        if let Some(sql) = self.settings.replay_sql(server.settings) {
            let mut out = BytesMut::new();
            crate::backend::postgres::put_query(&mut out, &sql);
            server.write_all(&out).await?;
            server.settings = self.settings.hash();
            held.queue.push_back(Pending {
                silent: true,
                hide_ready: true,
                ..Pending::default()
            });
        }
        self.held = Some(held);
        Ok(())
    }

    pub(super) fn login(&mut self, pool: &Pool) -> Arc<Login> {
        if let Some((_, login)) = self.logins.iter().find(|(name, _)| **name == *pool.name()) {
            return login.clone();
        }
        let credentials = self.user.config.backend_credentials(pool.config());
        let login = Arc::new(Login {
            user: credentials.user,
            password: credentials.password.map(|p| p.expose().to_owned()),
            database: self.database.clone(),
        });
        self.logins.push((pool.name().into(), login.clone()));
        login
    }

    /// Writes `bytes` to the held connection; `synced` bytes end with a Sync or are a Query.
    pub(super) async fn send(
        &mut self,
        bytes: Bytes,
        mut pending: Pending,
        synced: bool,
    ) -> Result<(), SessionEnd> {
        let carriable = self.board_before_send(&mut pending, synced).await?;
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        if let Some(o) = pending.observed.as_mut() {
            o.sent.get_or_insert_with(Instant::now);
        }
        pending.sending_on(held);
        if synced {
            held.queue.push_back(pending);
        } else {
            held.open = Some(pending);
        }
        if held.board.is_some() {
            held.front_started();
        }
        if let Err(e) = held.conn.conn().write_all(&bytes).await {
            return self.server_failed(e).await;
        }
        self.board_after_send(carriable);
        Ok(())
    }

    /// The held server connection failed. A read that has not answered anything yet is sent
    /// again on another node of the pool; otherwise the session cannot go on.
    pub(super) async fn server_failed(&mut self, error: PgBackendError) -> Result<(), SessionEnd> {
        let Some(mut held) = self.held.take() else {
            return Err(SessionEnd::Server(error));
        };
        self.cancel.slot.clear();
        // Other sessions' rides fail with it: dropped, each rider learns it from its channel
        // (and runs a read elsewhere if none of its answer reached its client yet).
        held.queue.retain(|p| p.rider.is_none());
        self.lost_pool = Some(held.pool.name().to_owned());
        // Not counted against the node's health: what broke a connection in use may be the
        // client's own doing (a statement that ends its backend, a message the server refuses
        // with FATAL), and counting it would let any client ban a node for everyone. A node
        // that is really down fails its health checks and the next connection attempts.
        let node = held.conn.bucket().node().clone();
        // Only the proxy's own statements outstanding (a settings replay, the WAL position
        // probe after a write), no transaction, nothing pinned to this connection: the client
        // loses nothing. A lost probe leaves the session's position to be learnt from the
        // primary's next poll (see `causal`).
        let proxys_own = held.open.is_none() && held.queue.iter().all(|p| p.silent);
        if proxys_own
            && !held.session_mode
            && !self.is_pinned()
            && self.status == TransactionStatus::Idle
        {
            if held.queue.iter().any(|p| p.wal_probe) {
                self.causal_probe_lost();
            }
            self.work = None;
            return Ok(());
        }
        // The proxy's own settings replay may still be queued ahead of the read: it is redone
        // on the next connection anyway.
        let retryable = held.open.is_none()
            && held
                .queue
                .back()
                .is_some_and(|p| p.retry.is_some() && !p.relayed && !p.silent)
            && held.queue.iter().rev().skip(1).all(|p| p.silent);
        if !retryable {
            tracing::debug!(
                client = %self.peer,
                queued = held.queue.len(),
                open = held.open.is_some(),
                last_retry = held.queue.back().is_some_and(|p| p.retry.is_some()),
                last_relayed = held.queue.back().is_some_and(|p| p.relayed),
                "server failure not retryable"
            );
            return Err(SessionEnd::Server(error));
        }
        let Some(mut pending) = held.queue.pop_back() else {
            return Err(SessionEnd::Server(error));
        };
        let pool = held.pool.clone();
        drop(held);
        static RETRYING: LogLimit = LogLimit::standard();
        crate::warn_limited!(RETRYING, client = %self.peer, node = node.addr(), error = %error, "server failed during a read: retrying on another node");
        let bytes = pending.for_resend();
        let fallback =
            self.fe
                .backend
                .router()
                .resolve(&Route::Primary, StatementKind::Read, false);
        let mut skip = self.causal_exclude(&pool);
        skip.push(node.index());
        let mut attempt = self.checkout(&pool, None, &skip).await;
        if attempt.is_err()
            && let Ok(primary) = fallback
        {
            attempt = self.checkout(&primary, None, &[]).await;
        }
        if let Err(e) = attempt {
            return self.lost_read(pending, e);
        }
        // The statements the bytes name may be missing on the new connection: resend them
        // with their Parse (the retried batch was planned for the failed connection).
        let bytes = self.reprepare(bytes, &mut pending);
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        pending.sending_on(held);
        held.queue.push_back(pending);
        // A second failure in a row ends the session (no retry loop).
        held.conn
            .conn()
            .write_all(&bytes)
            .await
            .map_err(SessionEnd::Server)
    }

    /// Whether a statement writes: a write or DDL, a read of a shape learnt to write (a
    /// function that updates), or a read running on the primary that calls a function which may
    /// update (there nothing refuses it, so nothing would tell): its commit the session's later
    /// reads must see.
    pub(super) fn writes(&self, verdict: &Verdict) -> bool {
        let effective = &verdict.effective;
        if effective.kind == StatementKind::Read
            && !effective.functions.is_empty()
            && self
                .held
                .as_ref()
                .is_some_and(|h| h.pool.role() == PoolRole::Primary)
            && !crate::classify::only_read_only_builtins(&effective.functions)
        {
            return true;
        }
        matches!(effective.kind, StatementKind::Write | StatementKind::Ddl)
            || self
                .fe
                .shared
                .metrics
                .learned_writes
                .contains(Protocol::Postgres, verdict.effective.fingerprint)
    }

    /// Runs again on the primary a read that a replica refused (see `relay`): the replica
    /// connection is idle again and goes back to its pool; the statement's shape is remembered
    /// as a write when it wrote, so the next one goes to the primary directly.
    pub(super) async fn rerun_on_primary(
        &mut self,
        mut pending: Pending,
    ) -> Result<(), SessionEnd> {
        if let Some(held) = self.held.take() {
            self.cancel.slot.clear();
            if held.session_mode || !held.queue.is_empty() {
                // It may carry the client's settings: closed, not pooled (as in `ensure_conn`).
                // Or other sessions' rides came behind the read: they are lost with it and
                // run again elsewhere, where no answer of theirs can reach a stranger.
                drop(held);
            } else {
                held.conn.release();
            }
        }
        if pending.wrote
            && let Some(o) = &pending.observed
        {
            let learned = &self.fe.shared.metrics.learned_writes;
            if learned.learn(Protocol::Postgres, o.fingerprint()) {
                tracing::info!(client = %self.peer, fingerprint = format_args!("{:016x}", o.fingerprint()), "a read wrote on a replica: this statement shape now goes to the primary");
            }
        }
        // A write's answer must not be served from the cache to the next caller.
        if let Some(c) = pending.capture.take() {
            c.fill.skip();
        }
        let bytes = pending.for_resend();
        pending.rerun = false;
        let primary =
            self.fe
                .backend
                .router()
                .resolve(&Route::Primary, StatementKind::Write, false);
        let checked_out = match primary {
            Ok(pool) => self.checkout(&pool, None, &[]).await.map_err(|e| {
                ErrorFields::error(e.sqlstate(), format!("pool \"{}\": {e}", pool.name()))
            }),
            Err(e) => Err(ErrorFields::error("08000", e.to_string())),
        };
        if let Err(e) = checked_out {
            if let Some(o) = pending.observed.take() {
                self.refused(o);
            }
            self.io.error(&e);
            ready_for_query(&mut self.io.wbuf, self.status);
            self.maybe_release();
            return Ok(());
        }
        let bytes = self.reprepare(bytes, &mut pending);
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        held.queue.push_back(pending);
        if let Err(e) = held.conn.conn().write_all(&bytes).await {
            return self.server_failed(e).await;
        }
        Ok(())
    }

    /// A read outside a transaction whose server failed, and which no other node could take:
    /// nothing of its answer beyond what any node answers alike reached the client, so the
    /// client gets the error as an ERROR (the text the session would have ended with) and the
    /// session goes on, its next statement checked out afresh.
    fn lost_read(&mut self, mut pending: Pending, error: PgBackendError) -> Result<(), SessionEnd> {
        let message = lost_message(self.lost_pool.as_deref(), &error);
        static FAILED_EVERYWHERE: LogLimit = LogLimit::standard();
        crate::warn_limited!(FAILED_EVERYWHERE, client = %self.peer, error = %message, "a read failed on every node that could take it");
        self.work = None;
        if let Some(capture) = pending.capture.take() {
            capture.fill.fail(&message);
        }
        if let Some(observed) = pending.observed.take() {
            let pool = self.lost_pool.as_deref().unwrap_or("");
            observed.finish(&self.fe.shared.metrics, &self.user.config.name, pool, true);
        }
        self.io.error(&ErrorFields::error("08006", message));
        if !pending.hide_ready {
            ready_for_query(&mut self.io.wbuf, self.status);
        }
        Ok(())
    }

    /// Prefixes `bytes` with Parses for every statement the new connection lacks.
    pub(super) fn reprepare(&mut self, bytes: Bytes, pending: &mut Pending) -> Bytes {
        let Some(held) = self.held.as_mut() else {
            return bytes;
        };
        let conn = held.conn.conn();
        let mut out = BytesMut::new();
        for stmt in self.statements.values() {
            let name = stmt.server_name();
            if bytes.windows(name.len()).any(|w| w == name.as_bytes())
                && conn.prepared.insert(stmt.hash)
            {
                encode_parse(&mut out, &name, stmt);
                pending.swallow_parse += 1;
                pending.new_prepared.push(stmt.hash);
            }
        }
        if out.is_empty() {
            return bytes;
        }
        out.extend_from_slice(&bytes);
        out.freeze()
    }
}

/// What the client is told when its server connection was lost.
pub(super) fn lost_message(pool: Option<&str>, error: &PgBackendError) -> String {
    match pool {
        Some(pool) => format!("server connection lost in pool \"{pool}\": {error}"),
        None => format!("server connection lost: {error}"),
    }
}

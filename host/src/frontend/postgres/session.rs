//! One client session after login: the loop that reads client messages, asks the policy, holds a
//! server connection for as long as the pool mode says, and relays the server's answers.
//!
//! Client input is handled in batches that end at Sync, Flush or a simple Query, so the policy
//! sees every Parse before anything of the batch is sent and a blocked statement is answered
//! without touching a server. Answers the proxy makes itself (block, cache hit, errors) are
//! written only after every earlier answer from the server has been relayed, so the client
//! always sees answers in the order it asked.
//!
//! Each Sync or Query sent to a server is a [`Pending`] in the held connection's queue, answered
//! by exactly one ReadyForQuery; what happens when it completes (cache fill, invalidation, a
//! session setting recorded) travels with it. In transaction mode the connection is released
//! when the queue is empty and ReadyForQuery says idle.
//!
//! Limits (user, `[[limit]]` tags, pool `max_concurrent_queries`) count units of work: a unit
//! starts with the first statement that needs a server while the session is idle, and ends when
//! the session is idle again (a transaction, or one statement outside a transaction). Its slots
//! and its place in fair queues are taken at the start, never in the middle of a transaction.
//!
//! The seams, one file each: [`simple`] (a Query), [`extended`] (Parse/Bind/... batches),
//! [`fastpath`] (FunctionCall), [`invalid`] (messages refused as PostgreSQL refuses them),
//! [`server`] (choosing, checking out and losing a server connection), [`relay`] (the pending
//! queue and the server's answers) and [`cache`] (keys, lookups and fills). This file holds the
//! session's state and its read loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::PgFrontend;
use super::client::{ClientError, ClientIo};
use super::observe::Observed;
use super::settings::Settings;
use super::statements::Statement;
use super::users::User;
use crate::backend::postgres::{BucketMemo, Login, PgBackendError};
use crate::cache::TableRef;
use crate::frontend::Drain;
use crate::limits::{Admitted, UserLimits};
use crate::log_limit::LogLimit;
use crate::metrics::{CacheOutcome, Outcome, QueryEvent};
use crate::model::{Action, Protocol, QueryContext};
use crate::pipeline::{self, Verdict};
use crate::postgres::protocol::{ErrorFields, ProtocolError, RawMessage, TransactionStatus};

mod cache;
mod causal;
mod extended;
mod fastpath;
mod invalid;
mod multiplex;
mod pinning;
mod relay;
mod server;
mod simple;

use relay::Held;

/// Messages buffered without a Sync before they are sent on anyway (a long JDBC batch).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Why a session ends.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client said goodbye")]
    Terminate,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("server connection lost: {0}")]
    Server(PgBackendError),
    #[error("the proxy is shutting down")]
    Shutdown,
}

pub struct Session<S> {
    pub(super) fe: Arc<PgFrontend>,
    pub(super) io: ClientIo<S>,
    pub(super) user: Arc<User>,
    pub(super) database: String,
    pub(super) peer: SocketAddr,
    pub(super) settings: Settings,
    pub(super) cancel: super::cancel::CancelHandle,
    /// What every statement's policy context shares, built once: `ip:port`, names, and the
    /// startup attributes (plain and with `extended = true`).
    client_addr: Arc<str>,
    user_name: Arc<str>,
    database_name: Arc<str>,
    attributes_simple: Arc<[(String, String)]>,
    attributes_extended: Arc<[(String, String)]>,
    /// The backend login per pool name (few pools: a scan beats hashing the name).
    logins: Vec<(Box<str>, Arc<Login>)>,
    buckets: BucketMemo,
    statements: HashMap<String, Arc<Statement>>,
    unnamed: Option<Arc<Statement>>,
    held: Option<Held>,
    user_limits: Arc<UserLimits>,
    /// The current unit of work's limit slots (see the module docs).
    work: Option<Admitted>,
    status: TransactionStatus,
    last_write: Option<Instant>,
    /// Tables written in the open transaction: invalidated again when it ends (see `completed`).
    written_in_transaction: Vec<TableRef>,
    /// `SET`s of the transaction in progress: recorded if it commits (see `settings_completed`).
    uncommitted_settings: Vec<super::settings::Change>,
    batch: Vec<RawMessage>,
    batch_bytes: usize,
    copy_in: bool,
    /// A copy-in started by a batch that ended with Sync: the server ignored that Sync, so the
    /// client's next Sync (after CopyDone/CopyFail) is the one the unit's ReadyForQuery answers.
    copy_sync_ignored: bool,
    /// After an error in an extended batch: messages are dropped up to the next Sync.
    discard: bool,
    /// The pool of the server connection that failed last, for the client's error message.
    lost_pool: Option<String>,
    /// Session state living on the held server connection (transaction pooling pins the client
    /// to it while there is any), and the pool place that pin takes.
    resident: pinning::ResidentState,
    pin: Option<pinning::Pin>,
    /// The WAL positions this session's reads must observe.
    causal: causal::CausalState,
    /// The last cache key's tables, by the classification's list they came from.
    key_tables: Option<KeyTables>,
}

/// A classification's tables read, and the same as a cache key's tables.
type KeyTables = (Arc<[String]>, Arc<[TableRef]>);

enum Wake {
    Client(Result<(), ClientError>),
    Server(Result<(), PgBackendError>),
    /// Another session left rides on the held connection's board.
    Rides,
    /// The drain state changed (with the receiver, to wait for the next change), or its
    /// sender is gone (`None`).
    Drain(Option<tokio::sync::watch::Receiver<Drain>>),
}

/// Resolves when `rx` sees a value it has not seen yet.
async fn drain_changed(
    mut rx: tokio::sync::watch::Receiver<Drain>,
) -> Option<tokio::sync::watch::Receiver<Drain>> {
    rx.changed().await.ok()?;
    Some(rx)
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        fe: Arc<PgFrontend>,
        io: ClientIo<S>,
        user: Arc<User>,
        database: String,
        peer: SocketAddr,
        attributes: Vec<(String, String)>,
        settings: Settings,
        cancel: super::cancel::CancelHandle,
    ) -> Self {
        let user_limits = fe.shared.admission.user(&user.config.name);
        let user_name: Arc<str> = user.config.name.as_str().into();
        let database_name: Arc<str> = database.as_str().into();
        let attributes_simple: Arc<[(String, String)]> = attributes.as_slice().into();
        let causal = causal::CausalState::from_startup(&attributes);
        let attributes_extended = attributes
            .iter()
            .cloned()
            .chain([("extended".to_owned(), "true".to_owned())])
            .collect();
        Session {
            user_limits,
            work: None,
            fe,
            io,
            user,
            database,
            peer,
            settings,
            cancel,
            client_addr: peer.to_string().into(),
            user_name,
            database_name,
            attributes_simple,
            attributes_extended,
            logins: Vec::new(),
            buckets: BucketMemo::default(),
            statements: HashMap::new(),
            unnamed: None,
            held: None,
            status: TransactionStatus::Idle,
            last_write: None,
            written_in_transaction: Vec::new(),
            uncommitted_settings: Vec::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            copy_in: false,
            copy_sync_ignored: false,
            discard: false,
            lost_pool: None,
            key_tables: None,
            causal,
            resident: pinning::ResidentState::default(),
            pin: None,
        }
    }

    /// Serves the client until it leaves, then returns or closes the server connection.
    pub async fn run(mut self) {
        let end = self.serve().await;
        match &end {
            Err(SessionEnd::Terminate) | Err(SessionEnd::Client(ClientError::Closed)) => {}
            Err(SessionEnd::Server(e)) => {
                static LOST: LogLimit = LogLimit::standard();
                crate::warn_limited!(LOST, client = %self.peer, error = %e, pool = self.lost_pool.as_deref(), "server connection lost: closing the client");
                let _ = self.io.flush().await;
                let message = server::lost_message(self.lost_pool.as_deref(), e);
                self.io.fatal(ErrorFields::fatal("08006", message)).await;
            }
            Err(SessionEnd::Shutdown) => {
                let _ = self.io.flush().await;
                self.io
                    .fatal(ErrorFields::fatal(
                        "57P01",
                        "terminating connection due to administrator command: Switchyard is shutting down",
                    ))
                    .await;
            }
            Err(e) => tracing::debug!(client = %self.peer, error = %e, "session ended"),
            Ok(()) => {}
        }
        if let Err(SessionEnd::Client(ClientError::Protocol(e))) = &end {
            crate::guard::GuardStats::bump(&self.fe.shared.metrics.guard.protocol_violations);
            let message = match e {
                // PostgreSQL's own words, which clients and their tests know.
                ProtocolError::InvalidFrontendType(_) => e.to_string(),
                _ => format!("invalid message: {e}"),
            };
            self.io.fatal(ErrorFields::fatal("08P01", message)).await;
        }
        self.finish().await;
    }

    async fn serve(&mut self) -> Result<(), SessionEnd> {
        let mut drain = self.fe.shared.drain.clone();
        // One wait for a drain change, kept until the state changes, rather than a new one per
        // wake-up: a new wait joins, and a dropped one leaves, the waiter list that every
        // session shares, each under its lock.
        let mut changed = Box::pin(drain_changed(drain.clone()));
        let mut drain_open = true;
        loop {
            self.process_buffered().await?;
            // Room may have appeared on the held connection (a unit answered, the board just
            // opened): rides waiting in the bucket's queue take it first.
            self.pull_rides().await?;
            self.io.flush().await.map_err(SessionEnd::Client)?;
            match *drain.borrow_and_update() {
                Drain::Running => {}
                Drain::Draining if self.is_idle() => return Err(SessionEnd::Shutdown),
                Drain::Draining => {}
                Drain::Closing => return Err(SessionEnd::Shutdown),
            }
            let wake = match self.held.as_mut() {
                Some(Held {
                    conn,
                    board: Some(slot),
                    ..
                }) => {
                    let io = &mut self.io;
                    tokio::select! {
                        r = io.read_more() => Wake::Client(r),
                        r = conn.conn().fill() => Wake::Server(r),
                        () = slot.board.notify.notified() => Wake::Rides,
                        w = &mut changed, if drain_open => Wake::Drain(w),
                    }
                }
                Some(held) => {
                    let io = &mut self.io;
                    tokio::select! {
                        r = io.read_more() => Wake::Client(r),
                        r = held.conn.conn().fill() => Wake::Server(r),
                        w = &mut changed, if drain_open => Wake::Drain(w),
                    }
                }
                None => tokio::select! {
                    r = self.io.read_more() => Wake::Client(r),
                    w = &mut changed, if drain_open => Wake::Drain(w),
                },
            };
            match wake {
                Wake::Client(r) => r?,
                Wake::Server(Ok(())) => self.relay().await?,
                Wake::Server(Err(e)) => self.server_failed(e).await?,
                Wake::Rides => {
                    self.take_rides().await?;
                    // A connection kept only for rides given back goes once they are answered.
                    self.maybe_release();
                }
                // The state itself is read at the top of the loop.
                Wake::Drain(Some(rx)) => changed.set(drain_changed(rx)),
                // The sender is gone: no change will ever come.
                Wake::Drain(None) => drain_open = false,
            }
        }
    }

    /// Between transactions with nothing outstanding: a shutdown may end the session here
    /// without the client losing anything.
    fn is_idle(&self) -> bool {
        self.status == TransactionStatus::Idle
            && self.batch.is_empty()
            && !self.copy_in
            && !self.discard
            && self.held.as_ref().is_none_or(|h| h.quiet())
    }

    /// Handles every complete message buffered from the client.
    async fn process_buffered(&mut self) -> Result<(), SessionEnd> {
        while let Some(msg) = self.io.next_buffered()? {
            if self.discard {
                match msg.tag() {
                    b'S' => self.end_discard().await?,
                    b'X' => return Err(SessionEnd::Terminate),
                    _ => {}
                }
                continue;
            }
            match msg.tag() {
                b'X' => return Err(SessionEnd::Terminate),
                // COPY data streams straight through while a COPY runs.
                b'd' | b'c' | b'f' if self.batch.is_empty() => {
                    if let Some(held) = self.held.as_mut() {
                        held.conn
                            .conn()
                            .write_all(msg.bytes())
                            .await
                            .map_err(SessionEnd::Server)?;
                    }
                    if msg.tag() != b'd' {
                        self.copy_in = false;
                    }
                }
                b'Q' | b'F' => {
                    if !self.batch.is_empty() {
                        self.run_batch().await?;
                        // An error there discards up to the next Sync, this message included.
                        if self.discard {
                            continue;
                        }
                    }
                    if msg.tag() == b'Q' {
                        self.query(msg).await?;
                    } else {
                        self.function_call(msg).await?;
                    }
                }
                b'S' if self.copy_sync_ignored && self.batch.is_empty() && !self.copy_in => {
                    // Answered by the ReadyForQuery the copy's unit already waits for.
                    self.copy_sync_ignored = false;
                    if let Some(held) = self.held.as_mut() {
                        held.conn
                            .conn()
                            .write_all(msg.bytes())
                            .await
                            .map_err(SessionEnd::Server)?;
                    }
                }
                b'S' | b'H' => {
                    self.batch.push(msg);
                    self.run_batch().await?;
                }
                _ => {
                    self.batch_bytes += msg.len();
                    self.batch.push(msg);
                    if self.batch_bytes > MAX_BATCH_BYTES {
                        self.run_batch().await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn context(&self, sql: &str, in_transaction: bool, extended: bool) -> QueryContext {
        let mut attributes = if extended {
            self.attributes_extended.clone()
        } else {
            self.attributes_simple.clone()
        };
        if let Some(reason) = self.resident.reason() {
            // The policy sees why this client keeps its server connection.
            attributes = attributes
                .iter()
                .cloned()
                .chain([("pinned".to_owned(), reason.to_owned())])
                .collect();
        }
        QueryContext {
            protocol: Protocol::Postgres,
            sql: sql.to_owned(),
            classification: self.fe.shared.classifier.classify(Protocol::Postgres, sql),
            user: self.user_name.clone(),
            database: self.database_name.clone(),
            client_addr: self.client_addr.clone(),
            in_transaction,
            attributes,
        }
    }

    /// Classifies and asks the policy; `Err` is the error the client gets instead (counted
    /// here: the statement ends without reaching a server).
    fn decide(
        &self,
        sql: &str,
        extended: bool,
        query_id: u64,
        started: Instant,
    ) -> Result<Verdict, ErrorFields> {
        let in_transaction = self.status != TransactionStatus::Idle;
        let context = self.context(sql, in_transaction, extended);
        let source: Arc<dyn crate::policy::BackendStateSource> = self.fe.backend.router().clone();
        // Policy `log` lines inside the call carry the query id (at debug level: free when off).
        let span = tracing::debug_span!("query", query_id, user = %self.user.config.name);
        let decided = span.in_scope(|| {
            pipeline::decide(
                &self.fe.shared.classifier,
                &self.fe.shared.policy,
                &context,
                Some(&source),
            )
        });
        let refused =
            |outcome: Outcome, route: &'static str, tags: &[(String, String)], policy: Duration| {
                self.fe.shared.metrics.record(&QueryEvent {
                    query_id,
                    protocol: Protocol::Postgres,
                    user: &self.user.config.name,
                    route,
                    pool: "",
                    outcome,
                    cache: CacheOutcome::Off,
                    fingerprint: context.classification.fingerprint,
                    sql,
                    tags,
                    elapsed: started.elapsed(),
                    backend: None,
                    policy,
                    failed: true,
                })
            };
        let verdict = match decided {
            Ok(v) => v,
            Err(e) => {
                // The failed call's time, approximately (the deadline, typically).
                refused(Outcome::PolicyError, "none", &[], started.elapsed());
                return Err(ErrorFields::error(
                    "XX000",
                    format!("policy failure (fail-closed): {e}"),
                ));
            }
        };
        if let Action::Block(reason) = &verdict.decision.action {
            refused(
                Outcome::Block,
                verdict.decision.route.kind(),
                &verdict.decision.tags,
                verdict.policy_time,
            );
            return Err(ErrorFields::error(
                "42501",
                format!("blocked by policy: {reason}"),
            ));
        }
        Ok(verdict)
    }

    /// After a config reload, moves the session to the new generation of its frontend (new
    /// pools, limits and user settings) while it holds no server connection. A user the new
    /// config removed keeps its old settings until it disconnects.
    fn follow_reload(&mut self) {
        let Some(next) = self.fe.newest() else {
            return;
        };
        if let Some(user) = next.users.get(&self.user.config.name) {
            self.user = user.clone();
            self.user_limits = next.shared.admission.user(&user.config.name);
        }
        self.logins.clear();
        self.buckets.clear();
        self.fe = next;
    }

    /// Counts a statement the cache answered.
    fn answered_by_cache(&self, mut observed: Observed, failed: bool) {
        observed.cache = CacheOutcome::Hit;
        observed.finish(&self.fe.shared.metrics, &self.user.config.name, "", failed);
    }

    /// Counts a statement refused before a server saw it.
    fn refused(&self, observed: Observed) {
        observed
            .refused()
            .finish(&self.fe.shared.metrics, &self.user.config.name, "", true);
    }

    /// Closes down: the server connection goes back to the pool when it is clean.
    async fn finish(&mut self) {
        // The client left with answers outstanding: as a server would, the statements it sent
        // before leaving run to their end (a script's last INSERT, then Terminate), and so does
        // the proxy's position probe after it. Their answers are read (for a moment at most)
        // and dropped, and a connection left idle is pooled instead of closed.
        // Not through `drain`: a server that fails here (a client's bad message broke it) is
        // closed without counting against its node.
        // Rides not written yet go elsewhere; those written are answered below.
        if let Some(slot) = self.held.as_ref().and_then(|h| h.board.as_ref()) {
            drop(slot.board.close());
        }
        let outstanding = self
            .held
            .as_ref()
            .is_some_and(|h| h.open.is_none() && !h.queue.is_empty());
        if outstanding && !self.copy_in {
            let drained = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let Some(held) = self.held.as_mut() else {
                        return true;
                    };
                    if held.queue.is_empty() {
                        return true;
                    }
                    if held.conn.conn().fill().await.is_err() || self.relay().await.is_err() {
                        return false;
                    }
                }
            })
            .await;
            if !matches!(drained, Ok(true)) {
                // Closed, not pooled.
                self.held = None;
                self.cancel.slot.clear();
                return;
            }
        }
        let Some(mut held) = self.held.take() else {
            return;
        };
        self.cancel.slot.clear();
        if !held.quiet() || self.status != TransactionStatus::Idle || self.copy_in {
            // Mid-transaction or mid-answer: closing the connection rolls back on the server.
            return;
        }
        let pinned = self.resident.reason().is_some();
        if pinned && !self.resident.resettable() {
            // A loaded library stays for the life of the connection: closed, not pooled.
            return;
        }
        if held.session_mode || pinned {
            // Nothing of this client may reach the next one: temp tables, cursors, LISTENs,
            // locks, settings and statements go with DISCARD ALL.
            let conn = held.conn.conn();
            let reset =
                tokio::time::timeout(Duration::from_secs(5), conn.simple_query("DISCARD ALL"))
                    .await;
            if !matches!(reset, Ok(Ok(_))) {
                return;
            }
            conn.settings = 0;
            conn.prepared.clear();
            conn.unnamed = 0;
        }
        held.conn.release();
    }
}

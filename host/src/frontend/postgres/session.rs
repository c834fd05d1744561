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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};

use super::PgFrontend;
use super::client::{ClientError, ClientIo, WRITE_HIGH_WATER};
use super::mirror;
use super::observe::{Observed, Text, cache_outcome};
use super::settings::{self, Settings};
use super::statements::Statement;
use super::users::User;
use crate::backend::postgres::{BucketMemo, Login, PgBackendError, PooledConn};
use crate::cache::{CacheKey, FillGuard, KeyEncoder, Lookup, TableRef};
use crate::config::PoolMode;
use crate::frontend::Drain;
use crate::limits::{Admitted, Tenant, UserLimits};
use crate::metrics::{CacheOutcome, Outcome, QueryEvent};
use crate::model::{Action, PoolRole, Protocol, QueryContext, Route, StatementKind};
use crate::pipeline::{self, Verdict};
use crate::postgres::protocol::backend::{ready_for_query, ready_status};
use crate::postgres::protocol::frontend::Target;
use crate::postgres::protocol::{ErrorFields, FrontendMessage, RawMessage, TransactionStatus};
use crate::route::{InFlight, MirrorTicket, Pool};

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

/// The work a Sync or Query sent to the server stands for, until its ReadyForQuery.
#[derive(Default)]
struct Pending {
    /// The proxy's own statement (settings replay, Sync of its own): the client sees nothing.
    silent: bool,
    /// The ReadyForQuery is not forwarded (a Sync the proxy added).
    hide_ready: bool,
    /// Parses the proxy injected; their ParseComplete is not forwarded.
    swallow_parse: u32,
    /// Statements this batch prepares; forgotten if it fails (the server does not have them).
    new_prepared: Vec<u64>,
    capture: Option<Capture>,
    invalidate: Vec<TableRef>,
    setting: Option<settings::Change>,
    wrote: bool,
    failed: bool,
    /// The bytes sent, when resending them elsewhere is safe (a read outside a transaction).
    retry: Option<Bytes>,
    relayed: bool,
    /// The client's statement behind it, for metrics (none for the proxy's own).
    observed: Option<Observed>,
    /// Answers relayed that a retry elsewhere reproduces identically (see `relay`).
    prefix: u32,
    /// Answers of a retried batch not to relay again.
    skip: u32,
}

/// A response being recorded for the cache.
struct Capture {
    fill: FillGuard,
    buf: BytesMut,
    ttl: Duration,
    /// ParseComplete of the batch: not part of what is replayed for other clients.
    skip_parse: bool,
}

/// A server connection the session holds.
struct Held {
    conn: PooledConn,
    pool: Arc<Pool>,
    session_mode: bool,
    queue: VecDeque<Pending>,
    /// Forwarded since the last Sync (batches that ended with Flush).
    open: Option<Pending>,
    _in_flight: InFlight,
}

impl Held {
    fn quiet(&self) -> bool {
        self.queue.is_empty() && self.open.is_none()
    }
}

/// One step of an extended-protocol batch after the policy has seen it.
enum Item {
    Parse {
        named: bool,
        stmt: Arc<Statement>,
        raw: RawMessage,
        rewritten: bool,
    },
    Bind {
        stmt: Arc<Statement>,
        named: bool,
        portal: String,
        rest: Bytes,
        raw: RawMessage,
    },
    DescribeStatement(Arc<Statement>),
    CloseStatement,
    Sync,
    Raw(RawMessage),
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
    batch: Vec<RawMessage>,
    batch_bytes: usize,
    copy_in: bool,
    /// The pool of the server connection that failed last, for the client's error message.
    lost_pool: Option<String>,
    /// The last cache key's tables, by the classification's list they came from.
    key_tables: Option<KeyTables>,
}

/// A classification's tables read, and the same as a cache key's tables.
type KeyTables = (Arc<[String]>, Arc<[TableRef]>);

enum Wake {
    Client(Result<(), ClientError>),
    Server(Result<(), PgBackendError>),
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
            batch: Vec::new(),
            batch_bytes: 0,
            copy_in: false,
            lost_pool: None,
            key_tables: None,
        }
    }

    /// Serves the client until it leaves, then returns or closes the server connection.
    pub async fn run(mut self) {
        let end = self.serve().await;
        match &end {
            Err(SessionEnd::Terminate) | Err(SessionEnd::Client(ClientError::Closed)) => {}
            Err(SessionEnd::Server(e)) => {
                tracing::warn!(client = %self.peer, error = %e, pool = self.lost_pool.as_deref(), "server connection lost: closing the client");
                let _ = self.io.flush().await;
                let message = match &self.lost_pool {
                    Some(pool) => format!("server connection lost in pool \"{pool}\": {e}"),
                    None => format!("server connection lost: {e}"),
                };
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
            self.io
                .fatal(ErrorFields::fatal("08P01", format!("invalid message: {e}")))
                .await;
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
            self.io.flush().await.map_err(SessionEnd::Client)?;
            match *drain.borrow_and_update() {
                Drain::Running => {}
                Drain::Draining if self.is_idle() => return Err(SessionEnd::Shutdown),
                Drain::Draining => {}
                Drain::Closing => return Err(SessionEnd::Shutdown),
            }
            let wake = match self.held.as_mut() {
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
            && self.held.as_ref().is_none_or(|h| h.quiet())
    }

    /// Handles every complete message buffered from the client.
    async fn process_buffered(&mut self) -> Result<(), SessionEnd> {
        while let Some(msg) = self.io.next_buffered()? {
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
                b'Q' => {
                    if !self.batch.is_empty() {
                        self.run_batch().await?;
                    }
                    self.query(msg).await?;
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
        let attributes = if extended {
            self.attributes_extended.clone()
        } else {
            self.attributes_simple.clone()
        };
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

    /// A simple Query.
    async fn query(&mut self, raw: RawMessage) -> Result<(), SessionEnd> {
        let FrontendMessage::Query { sql } =
            FrontendMessage::decode(&raw).map_err(ClientError::from)?
        else {
            return Ok(());
        };
        let query_id = self.fe.shared.metrics.next_query_id();
        let started = Instant::now();
        let verdict = match self.decide(&sql, false, query_id, started) {
            Ok(v) => v,
            Err(e) => return self.answer_error(e, true).await,
        };
        let verdict = Arc::new(verdict);
        let rewritten = matches!(&verdict.decision.action, Action::Rewrite(new) if *new != sql);
        let mut capture = None;
        let key = self.cache_key(&verdict, verdict.sql(&sql), None);
        let cache = cache_outcome(&verdict, key.is_some());
        // The client's text moves into `observed` (metrics) rather than being copied; what runs
        // is read back from there.
        let observed = Observed::new(query_id, started, verdict.clone(), Text::Sql(sql), cache);
        if let Some(key) = key {
            match self.lookup(key, ttl_of(&verdict), false).await? {
                CacheStep::Answered { failed } => {
                    self.answered_by_cache(observed, failed);
                    return Ok(());
                }
                CacheStep::Fill(c) => capture = Some(c),
                CacheStep::Run => {}
            }
        }
        let in_transaction = self.status != TransactionStatus::Idle;
        if let Err(e) = self.ensure_conn(&verdict, in_transaction).await? {
            if let Some(c) = capture {
                c.fill.fail(&e);
            }
            self.refused(observed);
            return self.answer_error(e, true).await;
        }
        let final_sql = verdict.sql(observed.sql());
        if let Some(ticket) = self.mirror_ticket(&verdict, in_transaction) {
            self.spawn_mirror(ticket, mirror::simple(final_sql));
        }
        let bytes = if rewritten {
            let mut out = BytesMut::new();
            FrontendMessage::Query {
                sql: final_sql.to_owned(),
            }
            .encode(&mut out);
            out.freeze()
        } else {
            raw.into_bytes()
        };
        let kind = verdict.effective.kind;
        // A multi-statement SET string is not tracked (documented): recording it under its
        // first name would replay it wrongly.
        let setting = if kind == StatementKind::Session
            && !in_transaction
            && !verdict.effective.flags.multi_statement
        {
            settings::parse_change(final_sql)
        } else {
            None
        };
        let pending = Pending {
            capture,
            setting,
            wrote: matches!(kind, StatementKind::Write | StatementKind::Ddl),
            invalidate: self.tables(&verdict.effective.tables_written),
            retry: (kind == StatementKind::Read && !in_transaction).then(|| bytes.clone()),
            observed: Some(observed),
            ..Pending::default()
        };
        self.send(bytes, pending, true).await
    }

    /// An extended-protocol batch (ends with Sync or Flush, or is cut at `MAX_BATCH_BYTES`).
    async fn run_batch(&mut self) -> Result<(), SessionEnd> {
        let msgs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let synced = msgs.last().is_some_and(|m| m.tag() == b'S');
        let mut items = Vec::with_capacity(msgs.len());
        let mut route: Option<Arc<Verdict>> = None;
        let query_id = self.fe.shared.metrics.next_query_id();
        let started = Instant::now();
        for raw in msgs {
            let item = match raw.tag() {
                b'P' | b'B' | b'D' | b'C' => {
                    match self.plan_item(raw, &mut route, query_id, started) {
                        Ok(item) => item,
                        Err(e) => return self.answer_error(e, synced).await,
                    }
                }
                b'S' => Item::Sync,
                _ => Item::Raw(raw),
            };
            items.push(item);
        }
        // A lone Parse + Sync (libpq's PQprepare) of a statement that has already been prepared
        // successfully on a server needs no server: the statement is prepared lazily on the
        // connection of its first Bind. Besides saving a round trip, this is what keeps pgbench
        // -M prepared from deadlocking in transaction mode (a thread blocked in PQprepare
        // waiting for a connection that its own clients hold inside their transactions).
        if self.held.is_none()
            && let [
                Item::Parse {
                    named: true, stmt, ..
                },
                Item::Sync,
            ] = items.as_slice()
            && self.fe.known_statements.contains(stmt.hash)
        {
            self.io.wbuf.extend_from_slice(&[b'1', 0, 0, 0, 4]);
            ready_for_query(&mut self.io.wbuf, self.status);
            return Ok(());
        }
        let needs_server = items
            .iter()
            .any(|i| !matches!(i, Item::Sync | Item::CloseStatement))
            || self.held.is_some();
        if !needs_server {
            // Close of named statements (and Sync): the proxy answers itself.
            self.drain().await?;
            for item in &items {
                match item {
                    Item::CloseStatement => self.io.wbuf.extend_from_slice(&[b'3', 0, 0, 0, 4]),
                    _ => ready_for_query(&mut self.io.wbuf, self.status),
                }
            }
            return Ok(());
        }
        let verdict = match route {
            Some(v) => v,
            None => Arc::new(Verdict {
                decision: crate::model::Decision::forward_default(),
                effective: crate::model::Classification::unknown(0),
                policy_time: Duration::ZERO,
            }),
        };
        let mut capture = None;
        let key = if synced {
            self.extended_cache_key(&verdict, &items)
        } else {
            None
        };
        let cache = cache_outcome(&verdict, key.is_some());
        // The statement this batch runs (its first Parse or Bind): what metrics count.
        let observed = items.iter().find_map(|i| {
            let (stmt, decided_now) = match i {
                Item::Parse { stmt, .. } => (stmt, true),
                Item::Bind { stmt, .. } => (stmt, false),
                _ => return None,
            };
            let o = Observed::new(
                query_id,
                started,
                verdict.clone(),
                Text::Prepared(stmt.clone()),
                cache,
            );
            // A Bind of a statement prepared earlier made no policy call now.
            Some(if decided_now {
                o
            } else {
                o.without_policy_call()
            })
        });
        if let Some(key) = key {
            let had_parse = items.iter().any(|i| matches!(i, Item::Parse { .. }));
            match self.lookup(key, ttl_of(&verdict), had_parse).await? {
                CacheStep::Answered { failed } => {
                    if let Some(o) = observed {
                        self.answered_by_cache(o, failed);
                    }
                    return Ok(());
                }
                CacheStep::Fill(mut c) => {
                    c.skip_parse = true;
                    capture = Some(c);
                }
                CacheStep::Run => {}
            }
        }
        let in_transaction = self.status != TransactionStatus::Idle;
        if let Err(e) = self.ensure_conn(&verdict, in_transaction).await? {
            if let Some(c) = capture {
                c.fill.fail(&e);
            }
            if let Some(o) = observed {
                self.refused(o);
            }
            return self.answer_error(e, synced).await;
        }
        if synced
            && let Some(Item::Bind { stmt, rest, .. }) =
                items.iter().find(|i| matches!(i, Item::Bind { .. }))
            && stmt.verdict.effective.kind == StatementKind::Read
            && let Some(ticket) = self.mirror_ticket(&stmt.verdict, in_transaction)
        {
            let bytes = mirror::extended(stmt, rest);
            self.spawn_mirror(ticket, bytes);
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let mut pending = held.open.take().unwrap_or_default();
        if pending.observed.is_none() {
            pending.observed = observed;
        }
        if capture.is_some() {
            pending.capture = capture;
        }
        let kind = verdict.effective.kind;
        pending.wrote |= matches!(kind, StatementKind::Write | StatementKind::Ddl);
        if pending.wrote {
            pending.invalidate = tables(&self.database, &verdict.effective.tables_written);
        }
        let conn = held.conn.conn();
        let mut out = BytesMut::with_capacity(256);
        for item in items {
            match item {
                Item::Parse {
                    named,
                    stmt,
                    raw,
                    rewritten,
                } => {
                    if !named {
                        conn.unnamed = stmt.hash;
                        if rewritten {
                            encode_parse(&mut out, "", &stmt);
                        } else {
                            out.extend_from_slice(raw.bytes());
                        }
                    } else if conn.prepared.contains(&stmt.hash) {
                        // Already prepared here: a Parse of the unnamed statement gives the
                        // client the ParseComplete it expects, in order.
                        conn.unnamed = stmt.hash;
                        encode_parse(&mut out, "", &stmt);
                    } else {
                        conn.prepared.insert(stmt.hash);
                        pending.new_prepared.push(stmt.hash);
                        encode_parse(&mut out, &stmt.server_name(), &stmt);
                    }
                }
                Item::Bind {
                    stmt,
                    named,
                    portal,
                    rest,
                    raw,
                } => {
                    if named {
                        if conn.prepared.insert(stmt.hash) {
                            pending.new_prepared.push(stmt.hash);
                            pending.swallow_parse += 1;
                            encode_parse(&mut out, &stmt.server_name(), &stmt);
                        }
                        FrontendMessage::Bind {
                            portal,
                            statement: stmt.server_name(),
                            rest,
                        }
                        .encode(&mut out);
                    } else {
                        if conn.unnamed != stmt.hash {
                            // Parsed in an earlier transaction on another connection.
                            pending.swallow_parse += 1;
                            encode_parse(&mut out, "", &stmt);
                            conn.unnamed = stmt.hash;
                        }
                        out.extend_from_slice(raw.bytes());
                    }
                }
                Item::DescribeStatement(stmt) => {
                    if conn.prepared.insert(stmt.hash) {
                        pending.new_prepared.push(stmt.hash);
                        pending.swallow_parse += 1;
                        encode_parse(&mut out, &stmt.server_name(), &stmt);
                    }
                    FrontendMessage::Describe {
                        target: Target::Statement,
                        name: stmt.server_name(),
                    }
                    .encode(&mut out);
                }
                Item::CloseStatement => {
                    // The server-side statement stays for other clients; closing a name that
                    // does not exist still answers CloseComplete.
                    FrontendMessage::Close {
                        target: Target::Statement,
                        name: "sy_closed".to_owned(),
                    }
                    .encode(&mut out);
                }
                Item::Sync => out.extend_from_slice(&[b'S', 0, 0, 0, 4]),
                Item::Raw(raw) => out.extend_from_slice(raw.bytes()),
            }
        }
        if synced && kind == StatementKind::Read && !in_transaction && pending.retry.is_none() {
            pending.retry = Some(out.clone().freeze());
        }
        self.send(out.freeze(), pending, synced).await
    }

    /// Decodes one Parse/Bind/Describe/Close and asks the policy about Parses.
    fn plan_item(
        &mut self,
        raw: RawMessage,
        route: &mut Option<Arc<Verdict>>,
        query_id: u64,
        started: Instant,
    ) -> Result<Item, ErrorFields> {
        let msg = FrontendMessage::decode(&raw)
            .map_err(|e| ErrorFields::error("08P01", format!("invalid message: {e}")))?;
        Ok(match msg {
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                if !name.is_empty() && self.statements.contains_key(&name) {
                    return Err(ErrorFields::error(
                        "42P05",
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                }
                let verdict = Arc::new(self.decide(&sql, true, query_id, started)?);
                // The decoded text is the statement's own unless the policy changed it.
                let (final_sql, rewritten) = match &verdict.decision.action {
                    Action::Rewrite(new) if *new != sql => (new.clone(), true),
                    _ => (sql, false),
                };
                let stmt = Arc::new(Statement::new(final_sql, param_types, verdict.clone()));
                route.get_or_insert(verdict);
                let named = !name.is_empty();
                if named {
                    self.statements.insert(name, stmt.clone());
                } else {
                    self.unnamed = Some(stmt.clone());
                }
                Item::Parse {
                    named,
                    stmt,
                    raw,
                    rewritten,
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                let named = !statement.is_empty();
                let stmt = if named {
                    self.statements.get(&statement).cloned()
                } else {
                    self.unnamed.clone()
                };
                let Some(stmt) = stmt else {
                    return Err(ErrorFields::error(
                        "26000",
                        format!("prepared statement \"{statement}\" does not exist"),
                    ));
                };
                route.get_or_insert(stmt.verdict.clone());
                Item::Bind {
                    stmt,
                    named,
                    portal,
                    rest,
                    raw,
                }
            }
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                let Some(stmt) = self.statements.get(&name).cloned() else {
                    return Err(ErrorFields::error(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    ));
                };
                route.get_or_insert(stmt.verdict.clone());
                Item::DescribeStatement(stmt)
            }
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                self.statements.remove(&name);
                Item::CloseStatement
            }
            _ => Item::Raw(raw),
        })
    }

    /// Makes sure a server connection is held, picking the pool by the verdict. The inner
    /// error is for the client (the session goes on); the outer one ends the session.
    async fn ensure_conn(
        &mut self,
        verdict: &Verdict,
        in_transaction: bool,
    ) -> Result<Result<(), ErrorFields>, SessionEnd> {
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
                Err(e) => return Ok(Err(super::limit_error(e))),
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
        {
            if starting {
                let pool = held.pool.clone();
                return Ok(self.pool_permit(&pool).await);
            }
            return Ok(Ok(()));
        }
        let mut route = verdict.decision.route.clone();
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
        let pool = target.pool.clone();
        if starting && let Err(e) = self.pool_permit(&pool).await {
            return Ok(Err(e));
        }
        if let Some(held) = &self.held {
            // A write pinned to a promoted replica must not stay on another node of its pool.
            let pinned_elsewhere = target
                .node
                .is_some_and(|n| n != held.conn.bucket().node().index());
            if held.pool.name() == pool.name() && !pinned_elsewhere {
                return Ok(Ok(()));
            }
            // Closed, not pooled: it may carry the client's settings.
            self.cancel.slot.clear();
            self.held = None;
        }
        let paused = self.fe.paused.clone();
        self.fe.wait_resumed(paused).await;
        let affinity = verdict.decision.affinity_key.as_deref();
        let mut result = self.checkout(&pool, affinity, &target.exclude()).await;
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
        match result {
            Ok(()) => Ok(Ok(())),
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
    async fn pool_permit(&mut self, pool: &Pool) -> Result<(), ErrorFields> {
        let Some(limits) = pool.limits() else {
            return Ok(());
        };
        let Some(work) = self.work.as_mut() else {
            return Ok(());
        };
        let permit = limits
            .acquire(work.tenant())
            .await
            .map_err(super::limit_error)?;
        work.hold(permit);
        Ok(())
    }

    /// Who this session queues as for shared resources.
    fn tenant(&self) -> Tenant {
        match &self.work {
            Some(work) => work.tenant().clone(),
            None => self.user_limits.tenant.clone(),
        }
    }

    /// A mirror slot for a statement that runs on the held connection's pool, if the policy
    /// or the pool's config asks for one and the shadow has room.
    fn mirror_ticket(&self, verdict: &Verdict, in_transaction: bool) -> Option<MirrorTicket> {
        let source = &self.held.as_ref()?.pool;
        self.fe.backend.router().mirror(
            source,
            verdict.decision.mirror.as_deref(),
            verdict.effective.kind,
            in_transaction,
        )
    }

    fn spawn_mirror(&mut self, ticket: MirrorTicket, bytes: Bytes) {
        let login = self.login(ticket.pool());
        mirror::spawn(self.fe.backend.clone(), ticket, login, bytes);
    }

    async fn checkout(
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
        let server = conn.conn();
        self.cancel.slot.set(&server.addr, server.pid, server.key);
        let mut held = Held {
            conn,
            pool: pool.clone(),
            session_mode,
            queue: VecDeque::new(),
            open: None,
            _in_flight: in_flight,
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

    fn login(&mut self, pool: &Pool) -> Arc<Login> {
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
    async fn send(
        &mut self,
        bytes: Bytes,
        mut pending: Pending,
        synced: bool,
    ) -> Result<(), SessionEnd> {
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        if let Some(o) = pending.observed.as_mut() {
            o.sent.get_or_insert_with(Instant::now);
        }
        if synced {
            held.queue.push_back(pending);
        } else {
            held.open = Some(pending);
        }
        if let Err(e) = held.conn.conn().write_all(&bytes).await {
            return self.server_failed(e).await;
        }
        Ok(())
    }

    /// Relays every complete server message buffered.
    async fn relay(&mut self) -> Result<(), SessionEnd> {
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
                if self.completed(pending, status) {
                    self.io.wbuf.extend_from_slice(msg.bytes());
                }
                self.resync_settings().await?;
                continue;
            }
            if held.queue.is_empty() && held.open.is_none() && matches!(tag, b'N' | b'S' | b'A') {
                // Between answers (a server's "terminating connection" warning, a
                // notification): nothing is outstanding, so it belongs to no batch.
                self.io.wbuf.extend_from_slice(msg.bytes());
                continue;
            }
            let front = match held.queue.front_mut() {
                Some(p) => p,
                None => held.open.get_or_insert_with(Pending::default),
            };
            if tag == b'1' && front.swallow_parse > 0 {
                front.swallow_parse -= 1;
                continue;
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
            if front.silent {
                if tag == b'E' {
                    tracing::warn!(client = %self.peer, "re-applying the client's settings failed on a server connection");
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
                b'G' => self.copy_in = true,
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
    fn completed(&mut self, mut pending: Pending, status: TransactionStatus) -> bool {
        if pending.silent {
            return !pending.hide_ready;
        }
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
        if pending.failed {
            return !pending.hide_ready;
        }
        for hash in pending.new_prepared.drain(..) {
            self.fe.known_statements.insert(hash);
        }
        if let Some(change) = pending.setting.take() {
            let server = self.settings.apply(&change);
            if let Some(held) = self.held.as_mut() {
                held.conn.conn().settings = server;
            }
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
            let response =
                crate::cache::CachedResponse::new(Bytes::new(), capture.buf.freeze(), capture.ttl);
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
                    tracing::warn!(error = %e, "cache invalidation did not reach every replica");
                }
            });
        }
    }

    /// In session mode, re-applies the client's settings on its connection when a `RESET` left
    /// the connection without the client's startup values (transaction mode does this at the
    /// next checkout).
    async fn resync_settings(&mut self) -> Result<(), SessionEnd> {
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
    fn maybe_release(&mut self) {
        let idle = !self.copy_in
            && self.status == TransactionStatus::Idle
            && self.held.as_ref().is_none_or(Held::quiet);
        if idle {
            self.work = None;
        }
        let release = idle && self.held.as_ref().is_some_and(|h| !h.session_mode);
        if release && let Some(held) = self.held.take() {
            self.cancel.slot.clear();
            held.conn.release();
        }
    }

    /// Waits until the server has answered everything sent (adding a Sync of its own after a
    /// Flush-ended batch), relaying as usual.
    async fn drain(&mut self) -> Result<(), SessionEnd> {
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
    async fn answer_error(&mut self, e: ErrorFields, ready: bool) -> Result<(), SessionEnd> {
        self.drain().await?;
        self.io.error(&e);
        if ready {
            ready_for_query(&mut self.io.wbuf, self.status);
        }
        self.maybe_release();
        Ok(())
    }

    /// The held server connection failed. A read that has not answered anything yet is sent
    /// again on another node of the pool; otherwise the session cannot go on.
    async fn server_failed(&mut self, error: PgBackendError) -> Result<(), SessionEnd> {
        let Some(mut held) = self.held.take() else {
            return Err(SessionEnd::Server(error));
        };
        self.cancel.slot.clear();
        self.lost_pool = Some(held.pool.name().to_owned());
        let node = held.conn.bucket().node().clone();
        node.record_failure(&held.pool.config().health, &error.to_string());
        if held.quiet() && !held.session_mode && self.status == TransactionStatus::Idle {
            // Nothing outstanding and no transaction: the client loses nothing.
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
        tracing::warn!(client = %self.peer, node = node.addr(), error = %error, "server failed during a read: retrying on another node");
        let bytes = pending.retry.clone().unwrap_or_default();
        pending.swallow_parse = 0;
        pending.new_prepared.clear();
        pending.skip = pending.prefix;
        pending.prefix = 0;
        let fallback =
            self.fe
                .backend
                .router()
                .resolve(&Route::Primary, StatementKind::Read, false);
        let mut attempt = self.checkout(&pool, None, &[node.index()]).await;
        if attempt.is_err()
            && let Ok(primary) = fallback
        {
            attempt = self.checkout(&primary, None, &[]).await;
        }
        if let Err(e) = attempt {
            return Err(SessionEnd::Server(e));
        }
        // The statements the bytes name may be missing on the new connection: resend them
        // with their Parse (the retried batch was planned for the failed connection).
        let bytes = self.reprepare(bytes, &mut pending);
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        held.queue.push_back(pending);
        // A second failure in a row ends the session (no retry loop).
        held.conn
            .conn()
            .write_all(&bytes)
            .await
            .map_err(SessionEnd::Server)
    }

    /// Prefixes `bytes` with Parses for every statement the new connection lacks.
    fn reprepare(&mut self, bytes: Bytes, pending: &mut Pending) -> Bytes {
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

    fn tables(&self, names: &[String]) -> Vec<TableRef> {
        tables(&self.database, names)
    }

    /// The cache key of a read the policy wants cached, if it may be. Runs for every cached
    /// read, hits included: see `postgres_key`.
    fn cache_key(
        &mut self,
        verdict: &Verdict,
        sql: &str,
        params: Option<&[u8]>,
    ) -> Option<CacheKey> {
        let cache = self.fe.shared.cache.as_ref()?;
        let directive = verdict.decision.cache.as_ref()?;
        let cacheable = directive.ttl_ms > 0
            && self.user.config.cache
            && verdict.effective.kind == StatementKind::Read
            && !verdict.effective.flags.volatile
            && self.status == TransactionStatus::Idle
            && self.held.is_none();
        if !cacheable {
            return None;
        }
        let shared = directive.shared || cache.config().shared;
        let tables = self.key_tables(&verdict.effective.tables_read);
        Some(postgres_key(
            &self.database,
            &self.user.config.name,
            shared,
            directive.namespace.as_deref(),
            sql,
            params,
            self.settings.iter(),
            tables,
        ))
    }

    /// The tables of a key, sorted and deduplicated as `CacheKeyBuilder::build` leaves them.
    /// Statements of one shape share their classification's list, so the last one is kept.
    fn key_tables(&mut self, names: &Arc<[String]>) -> Arc<[TableRef]> {
        if let Some((last, tables)) = &self.key_tables
            && (Arc::ptr_eq(last, names) || **last == **names)
        {
            return tables.clone();
        }
        let mut tables = self.tables(names);
        tables.sort();
        tables.dedup();
        let tables: Arc<[TableRef]> = tables.into();
        self.key_tables = Some((names.clone(), tables.clone()));
        tables
    }

    /// A batch of the shape `[Parse] Bind [Describe portal] Execute Sync` whose statement the
    /// policy caches.
    fn extended_cache_key(&mut self, verdict: &Verdict, items: &[Item]) -> Option<CacheKey> {
        let mut bind = None;
        let mut executes = 0;
        for item in items {
            match item {
                Item::Parse { .. } | Item::Sync => {}
                Item::Bind {
                    stmt, rest, portal, ..
                } if bind.is_none() && portal.is_empty() => {
                    bind = Some((stmt.clone(), rest.clone()))
                }
                Item::Raw(raw) if raw.tag() == b'E' => executes += 1,
                Item::Raw(raw) if raw.tag() == b'D' => {}
                _ => return None,
            }
        }
        let (stmt, rest) = bind?;
        if executes != 1 {
            return None;
        }
        self.cache_key(verdict, &stmt.sql, Some(&rest))
    }

    async fn lookup(
        &mut self,
        key: CacheKey,
        ttl: Duration,
        parse_complete: bool,
    ) -> Result<CacheStep, SessionEnd> {
        let Some(cache) = self.fe.shared.cache.as_ref() else {
            return Ok(CacheStep::Run);
        };
        // A local hit, the common case, without the async lookup's future (or an `Arc` of the
        // cache, shared by every session).
        let found = match cache.lookup_local(&key) {
            Some(entry) => Lookup::Hit(entry),
            None => {
                let cache = cache.clone();
                cache
                    .lookup_past_local(&key, cache.config().grace_time)
                    .await
            }
        };
        match found {
            Lookup::Hit(entry) => {
                self.drain().await?;
                // Replays exactly what the server sent, including a ParseComplete if the
                // request had a Parse: the entry never contains it, so add it when needed.
                if parse_complete {
                    self.io.wbuf.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                }
                self.io.wbuf.extend_from_slice(&entry.body);
                ready_for_query(&mut self.io.wbuf, self.status);
                Ok(CacheStep::Answered { failed: false })
            }
            Lookup::Failed(message) => {
                self.answer_error(ErrorFields::error("XX000", message), true)
                    .await?;
                Ok(CacheStep::Answered { failed: true })
            }
            Lookup::Leader(fill) => Ok(CacheStep::Fill(Capture {
                fill,
                buf: BytesMut::new(),
                ttl,
                skip_parse: false,
            })),
            Lookup::Bypass => Ok(CacheStep::Run),
        }
    }

    /// Closes down: the server connection goes back to the pool when it is clean.
    async fn finish(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        self.cancel.slot.clear();
        if !held.quiet() || self.status != TransactionStatus::Idle || self.copy_in {
            // Mid-transaction or mid-answer: closing the connection rolls back on the server.
            return;
        }
        if held.session_mode {
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

#[allow(clippy::large_enum_variant)] // short-lived, never stored
enum CacheStep {
    /// The cache answered (with the leader's error when `failed`).
    Answered {
        failed: bool,
    },
    Fill(Capture),
    Run,
}

fn ttl_of(verdict: &Verdict) -> Duration {
    Duration::from_millis(
        verdict
            .decision
            .cache
            .as_ref()
            .map_or(0, |c| u64::from(c.ttl_ms)),
    )
}

fn encode_parse(out: &mut BytesMut, name: &str, stmt: &Statement) {
    FrontendMessage::Parse {
        name: name.to_owned(),
        sql: stmt.sql.clone(),
        param_types: stmt.param_types.clone(),
    }
    .encode(out);
}

/// The key `CacheKey::builder` gives for `sql` with the settings `protocol` (`simple`, or
/// `extended` with `params`), `bind` (the Bind's parameters in hex) and `set:<name>` per session
/// setting; encoded without copying any of them. `tables` are sorted and deduplicated.
#[allow(clippy::too_many_arguments)]
fn postgres_key<'a>(
    database: &str,
    user: &str,
    shared: bool,
    namespace: Option<&str>,
    sql: &str,
    params: Option<&[u8]>,
    settings: impl Iterator<Item = (&'a str, &'a str)>,
    tables: Arc<[TableRef]>,
) -> CacheKey {
    // The builder's order: by name ("bind" < "protocol" < "set:..."), the session's own settings
    // by their names behind the common "set:" (a session has each name once).
    let mut set: SmallVec<[(&str, &str); 8]> = settings.collect();
    set.sort_by(|a, b| a.0.cmp(b.0));
    let mut encoder = KeyEncoder::new(
        Protocol::Postgres,
        database,
        user,
        shared,
        namespace,
        sql,
        1 + usize::from(params.is_some()) + set.len(),
    );
    if let Some(params) = params {
        encoder.setting_hex("bind", params);
    }
    let protocol = if params.is_some() {
        "extended"
    } else {
        "simple"
    };
    encoder.setting(&["protocol"], protocol.as_bytes());
    for (name, value) in set {
        encoder.setting(&["set:", name], value.as_bytes());
    }
    encoder.finish(namespace, tables)
}

/// Tables as the cache tags them: `(database, table)`, with PostgreSQL's default schema
/// `public.` dropped so `t` and `public.t` are one table.
fn tables(database: &str, names: &[String]) -> Vec<TableRef> {
    names
        .iter()
        .map(|t| {
            let t = t.strip_prefix("public.").unwrap_or(t);
            TableRef::new(database, t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the session built before `postgres_key`, through the builder.
    fn by_builder(
        shared: bool,
        namespace: Option<&str>,
        sql: &str,
        params: Option<&[u8]>,
        settings: &[(&str, &str)],
        tables: &[String],
    ) -> CacheKey {
        let mut builder = CacheKey::builder(Protocol::Postgres, "appdb", "app")
            .shared(shared)
            .namespace(namespace)
            .sql(sql)
            .tables(super::tables("appdb", tables));
        builder = builder.setting(
            "protocol",
            if params.is_some() {
                "extended"
            } else {
                "simple"
            },
        );
        if let Some(params) = params {
            builder = builder.setting("bind", hex::encode(params));
        }
        for (name, set) in settings {
            builder = builder.setting(format!("set:{name}"), *set);
        }
        builder.build()
    }

    #[test]
    fn postgres_key_is_the_builders_key() {
        let tables: Vec<String> = vec!["public.b".into(), "a".into(), "b".into()];
        let mut sorted = super::tables("appdb", &tables);
        sorted.sort();
        sorted.dedup();
        let sorted: Arc<[TableRef]> = sorted.into();
        let long_sql = "SELECT 1 -- ".to_owned() + &"x".repeat(1000);
        let params: &[u8] = &[0, 1, 0, 0xff, 0x10, 0xab, 0, 0, 0, 1, b'7'];
        for shared in [false, true] {
            for namespace in [None, Some("reports")] {
                for sql in [
                    "SELECT abalance FROM t WHERE aid = 1",
                    long_sql.as_str(),
                    "",
                ] {
                    for params in [None, Some(params), Some(&[][..])] {
                        for settings in [
                            &[][..],
                            &[("application_name", "SET application_name = 'x'")][..],
                            &[
                                ("timezone", "SET timezone = 'UTC'"),
                                ("application_name", "SET application_name = 'x'"),
                                ("datestyle", "SET datestyle = 'ISO'"),
                            ][..],
                        ] {
                            let fast = postgres_key(
                                "appdb",
                                "app",
                                shared,
                                namespace,
                                sql,
                                params,
                                settings.iter().copied(),
                                sorted.clone(),
                            );
                            let old = by_builder(shared, namespace, sql, params, settings, &tables);
                            assert_eq!(
                                fast.digest(),
                                old.digest(),
                                "{shared} {namespace:?} {params:?} {settings:?}"
                            );
                            assert_eq!(fast.namespace(), old.namespace());
                            assert_eq!(fast.tables(), old.tables());
                        }
                    }
                }
            }
        }
    }
}

//! One logged-in MySQL client: commands in, answers out, strictly one at a time as the protocol
//! has it. The module splits along the life of a command:
//!
//! - here: the command loop, the commands answered without a server (COM_PING, COM_QUIT,
//!   COM_RESET_CONNECTION while nothing is held), COM_QUERY's policy step and what a statement
//!   changes in the session (settings, database, pins, LAST_INSERT_ID);
//! - `server`: getting a server connection for a statement (limits, route, causal target,
//!   checkout) and bringing it to the session's state (database, settings, LAST_INSERT_ID);
//! - `relay`: sending a command and relaying its answer frame by frame, then releasing the
//!   connection unless a transaction or pinned state keeps it.

mod cache;
mod change_user;
mod query;
mod relay;
mod server;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::MyFrontend;
use super::login::{ClientStream, Hello, database_denied};
use super::users::{SessionSlot, User};
use crate::backend::mysql::{MyBucketMemo, MyPooledConn};
use crate::classify::LastCounts;
use crate::config::PoolMode;
use crate::frontend::Drain;
use crate::limits::{Admitted, UserLimits};
use crate::metrics::{CacheOutcome, Outcome, QueryEvent};
use crate::model::{Lsn, Protocol, QueryContext, StatementKind};
use crate::mysql::command::*;
use crate::mysql::packet::{FrameReader, PacketError};
use crate::mysql::response::{self, Answer, MyError, put_ok};
use crate::mysql::{CapabilityFlags, StatusFlags};
use crate::pipeline::{self, Verdict};
use crate::route::Pool;

pub(super) use server::backend_login;

/// The largest command accepted from a client: MariaDB's default `max_allowed_packet`. A
/// command is read whole before the policy sees it, so this bounds what one client can make
/// the proxy hold.
const MAX_CLIENT_PACKET: usize = 16 << 20;

/// Distinguishes sessions for LAST_INSERT_ID() ownership across the process.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A server connection this session holds, with the limits admitted for its unit of work.
struct Held {
    conn: MyPooledConn,
    pool: Arc<Pool>,
    _work: Option<Admitted>,
}

pub(super) struct Session {
    fe: Arc<MyFrontend>,
    stream: ClientStream,
    reader: FrameReader,
    out: BytesMut,
    user: Arc<User>,
    _slot: SessionSlot,
    user_limits: Arc<UserLimits>,
    user_name: Arc<str>,
    database_name: Arc<str>,
    client_addr: Arc<str>,
    attributes: Arc<[(String, String)]>,
    peer: SocketAddr,
    capabilities: CapabilityFlags,
    /// The nonce of the connection's greeting (COM_CHANGE_USER answers against it).
    nonce: [u8; 20],
    id: u64,
    /// The default database (COM_INIT_DB, USE, the handshake).
    database: Option<String>,
    /// Session `SET`s in the order they ran, replayed on another server connection.
    settings: Vec<String>,
    settings_hash: u64,
    /// Why the client keeps its server connection whatever happens (`None`: it need not).
    pinned: Option<&'static str>,
    in_transaction: bool,
    autocommit: bool,
    held: Option<Held>,
    /// A cacheable read's answer being recorded while it is relayed.
    capture: Option<cache::Capture>,
    /// Tables whose cache entries go once the server has answered the statement in flight
    /// without an error, before the client has the answer.
    invalidate: Option<Arc<[String]>>,
    /// The buckets this session's checkouts used (a session keeps one login per pool).
    buckets: MyBucketMemo,
    /// Server-side prepared statements, by the ids the client was given.
    statements: statements::Statements,
    /// LAST_INSERT_ID() as the client last made it.
    last_insert_id: u64,
    /// ROW_COUNT() and FOUND_ROWS() as the client's last statement left them.
    last_counts: LastCounts,
    /// Statements of this session answered so far (with `id`, names the client's latest).
    statements_run: u64,
    /// The newest GTID sequence number of this session's own committed writes.
    own_position: Option<Lsn>,
    /// The unit of work in progress wrote on the primary.
    unit_wrote: bool,
    last_write: Option<Instant>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        fe: Arc<MyFrontend>,
        stream: ClientStream,
        reader: FrameReader,
        user: Arc<User>,
        slot: SessionSlot,
        hello: Hello,
        peer: SocketAddr,
        _connection_id: u32,
    ) -> Session {
        let user_limits = fe.shared.admission.user(&user.config.name);
        let mut settings = Vec::new();
        // Server connections speak utf8mb4; a client that asked for another character set
        // gets it on every connection it uses.
        if hello.collation != crate::backend::mysql::DEFAULT_COLLATION
            && let Some(names) = set_names(hello.collation)
        {
            settings.push(names);
        }
        let mut session = Session {
            user_name: Arc::from(user.config.name.as_str()),
            database_name: Arc::from(hello.database.as_deref().unwrap_or("")),
            client_addr: Arc::from(peer.ip().to_string()),
            attributes: Arc::from(hello.attributes),
            fe,
            stream,
            reader,
            // Grown by the first answer and kept: a client that only logs in and waits costs
            // nothing here (16 KiB up front was half of an idle client's memory).
            out: BytesMut::new(),
            user,
            _slot: slot,
            user_limits,
            peer,
            capabilities: hello.capabilities,
            nonce: hello.nonce,
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            database: hello.database,
            settings,
            settings_hash: 0,
            pinned: None,
            in_transaction: false,
            autocommit: true,
            held: None,
            capture: None,
            invalidate: None,
            buckets: MyBucketMemo::default(),
            statements: statements::Statements::default(),
            last_insert_id: 0,
            last_counts: LastCounts::default(),
            statements_run: 0,
            own_position: None,
            unit_wrote: false,
            last_write: None,
        };
        session.settings_hash = hash_settings(&session.settings);
        session
    }

    pub(super) async fn run(mut self) {
        let mut drain = self.fe.shared.drain.clone();
        loop {
            let idle = !self.in_transaction && self.pinned.is_none();
            if idle && *drain.borrow() != Drain::Running {
                return self
                    .close_with(MyError::new(
                        response::ER_SERVER_SHUTDOWN,
                        "08S01",
                        "Server shutdown in progress",
                    ))
                    .await;
            }
            let packet = tokio::select! {
                p = self.reader.packet(&mut self.stream, MAX_CLIENT_PACKET) => p,
                _ = drain.changed() => continue,
            };
            let (seq, payload) = match packet {
                Ok(p) => p,
                Err(PacketError::TooLarge { .. }) => {
                    return self
                        .close_with(MyError::new(
                            response::ER_NET_PACKET_TOO_LARGE,
                            "08S01",
                            "Got a packet bigger than 'max_allowed_packet' bytes",
                        ))
                        .await;
                }
                Err(_) => return,
            };
            if seq != 0 {
                return self
                    .close_with(MyError::new(
                        response::ER_NET_PACKETS_OUT_OF_ORDER,
                        "08S01",
                        "Got packets out of order",
                    ))
                    .await;
            }
            let Some(&command) = payload.first() else {
                return self
                    .close_with(MyError::new(
                        response::ER_UNKNOWN_COM_ERROR,
                        "08S01",
                        "Empty command packet",
                    ))
                    .await;
            };
            let result = match command {
                COM_QUIT => return,
                COM_PING => self.answer_ok().await,
                COM_QUERY => self.query(payload).await,
                COM_INIT_DB => self.init_db(payload).await,
                COM_RESET_CONNECTION => self.reset_connection().await,
                COM_CHANGE_USER => self.change_user(payload).await,
                COM_STMT_PREPARE => self.prepare(payload).await,
                COM_STMT_EXECUTE
                | COM_STMT_SEND_LONG_DATA
                | COM_STMT_CLOSE
                | COM_STMT_RESET
                | COM_STMT_FETCH => self.statement_command(command, payload).await,
                _ => self.other_command(command, payload).await,
            };
            if result.is_err() {
                return;
            }
        }
    }

    /// Commands relayed on a held connection (or one taken for them), or refused.
    async fn other_command(&mut self, command: u8, payload: BytesMut) -> Result<(), Closed> {
        match handling(command) {
            Handling::Refused(name) => {
                let error = MyError::new(
                    response::ER_UNKNOWN_COM_ERROR,
                    "08S01",
                    format!("{name} is not relayed by Switchyard"),
                );
                self.answer_error(error).await
            }
            // The statement commands without an answer are handled before this.
            Handling::NoAnswer => Ok(()),
            Handling::Relay(answer) => {
                if self.held.is_none() {
                    let verdict = proxy_verdict(StatementKind::Utility);
                    if let Err(e) = self
                        .ensure_conn(&verdict, &crate::model::Route::Primary, false)
                        .await?
                    {
                        return self.answer_error(e).await;
                    }
                }
                if command == COM_SET_OPTION {
                    self.pinned.get_or_insert("COM_SET_OPTION");
                }
                let answer = self.relay(&payload, answer).await?;
                self.finish_unit(&answer, false).await
            }
        }
    }

    /// COM_INIT_DB: checked against the allow-list, then run on a server connection so that an
    /// unknown database gets the server's own error.
    async fn init_db(&mut self, payload: BytesMut) -> Result<(), Closed> {
        let db = String::from_utf8_lossy(&payload[1..]).into_owned();
        if !self.fe.databases.allows(&self.user.config, &db) {
            let ip = crate::guard::canonical_ip(self.peer.ip());
            return self
                .answer_error(database_denied(&self.user.config.name, ip, &db))
                .await;
        }
        if self.held.is_none() {
            let verdict = self.decide("").map_err(|_| Closed)?;
            if let Err(e) = self
                .ensure_conn(&verdict, &crate::model::Route::Default, false)
                .await?
            {
                return self.answer_error(e).await;
            }
        }
        let answer = self.relay(&payload, Answer::Single).await?;
        if !answer.error {
            self.set_database(db);
        }
        self.finish_unit(&answer, false).await
    }

    /// COM_RESET_CONNECTION: the session starts over (settings, pins, variables) but keeps its
    /// database, as MySQL does; a held connection is reset too and goes back to the pool.
    async fn reset_connection(&mut self) -> Result<(), Closed> {
        self.settings.clear();
        self.settings_hash = hash_settings(&self.settings);
        self.pinned = None;
        self.last_insert_id = 0;
        self.last_counts = LastCounts::default();
        self.autocommit = true;
        self.statements.clear();
        if self.held.is_some() {
            let answer = self.relay(&[COM_RESET_CONNECTION], Answer::Single).await?;
            if let Some(held) = self.held.as_mut() {
                let conn = held.conn.conn();
                conn.settings = 0;
                conn.prepared.clear();
            }
            return self.finish_unit(&answer, false).await;
        }
        self.in_transaction = false;
        self.answer_ok().await
    }

    /// The session as a fresh login of `user` would have it (COM_CHANGE_USER).
    fn start_over_as(&mut self, user: Arc<User>, slot: SessionSlot, database: Option<String>) {
        // Whatever the connection holds belongs to the previous user: closed, not pooled.
        self.held = None;
        self.buckets.clear();
        self.user_limits = self.fe.shared.admission.user(&user.config.name);
        self.user_name = Arc::from(user.config.name.as_str());
        self.user = user;
        self._slot = slot;
        self.database_name = Arc::from(database.as_deref().unwrap_or(""));
        self.database = database;
        self.settings.clear();
        self.settings_hash = 0;
        self.pinned = None;
        self.in_transaction = false;
        self.autocommit = true;
        self.statements.clear();
        self.last_insert_id = 0;
        self.last_counts = LastCounts::default();
        self.own_position = None;
        self.unit_wrote = false;
        self.last_write = None;
    }

    fn set_database(&mut self, db: String) {
        self.database_name = Arc::from(db.as_str());
        if let Some(held) = self.held.as_mut() {
            held.conn.conn().database = Some(db.clone());
        }
        self.database = Some(db);
    }

    /// Classifies `sql` and asks the policy.
    fn decide(&self, sql: &str) -> Result<Verdict, MyError> {
        let shared = &self.fe.shared;
        let context = QueryContext {
            protocol: Protocol::Mysql,
            sql: sql.to_owned(),
            classification: shared.classifier.classify(Protocol::Mysql, sql),
            user: self.user_name.clone(),
            database: self.database_name.clone(),
            client_addr: self.client_addr.clone(),
            in_transaction: self.in_transaction,
            attributes: match self.pinned {
                Some(reason) => self
                    .attributes
                    .iter()
                    .cloned()
                    .chain([("pinned".to_owned(), reason.to_owned())])
                    .collect(),
                None => self.attributes.clone(),
            },
        };
        let source: Arc<dyn crate::policy::BackendStateSource> = self.fe.backend.router().clone();
        pipeline::decide(&shared.classifier, &shared.policy, &context, Some(&source)).map_err(|e| {
            MyError::new(
                response::ER_SPECIFIC_ACCESS_DENIED_ERROR,
                "42000",
                format!("policy error: {e}"),
            )
        })
    }

    /// Counts a statement in the metrics and the digest table.
    fn record(&self, seen: &Seen<'_>, verdict: Option<&Verdict>, outcome: Outcome, failed: bool) {
        let now = Instant::now();
        self.fe.shared.metrics.record(&QueryEvent {
            query_id: seen.query_id,
            protocol: Protocol::Mysql,
            user: &self.user.config.name,
            route: verdict.map_or("none", |v| v.decision.route.kind()),
            pool: seen.pool.as_ref().map_or("", |p| p.name()),
            outcome,
            cache: seen.cache,
            fingerprint: verdict.map_or(0, |v| v.effective.fingerprint),
            sql: seen.sql,
            tags: verdict.map_or(&[], |v| &v.decision.tags),
            elapsed: now.saturating_duration_since(seen.started),
            backend: seen.sent.map(|s| now.saturating_duration_since(s)),
            policy: verdict.map_or(std::time::Duration::ZERO, |v| v.policy_time),
            failed,
        });
    }

    fn status(&self) -> StatusFlags {
        let mut status = StatusFlags::empty();
        if self.autocommit {
            status |= StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        }
        if self.in_transaction {
            status |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        status
    }

    async fn answer_ok(&mut self) -> Result<(), Closed> {
        let status = self.status();
        put_ok(&mut self.out, 1, status);
        self.flush().await
    }

    async fn answer_error(&mut self, error: MyError) -> Result<(), Closed> {
        error.put(&mut self.out, 1);
        self.flush().await
    }

    async fn close_with(&mut self, error: MyError) {
        error.put(&mut self.out, 1);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.out).await;
        self.out.clear();
        result.map_err(|_| Closed)
    }

    /// Whether the client wants an UPDATE's matched rather than changed rows (its logins'
    /// `CLIENT_FOUND_ROWS`).
    fn found_rows(&self) -> bool {
        self.capabilities
            .contains(CapabilityFlags::CLIENT_FOUND_ROWS)
    }

    fn session_mode(&self, pool: &Pool) -> bool {
        pool.config().mode == PoolMode::Session
    }
}

/// The verdict for a command that carries no SQL (COM_INIT_DB, COM_FIELD_LIST, ...): the
/// policy is not asked about it; it runs on the route its kind gets.
fn proxy_verdict(kind: StatementKind) -> Verdict {
    let mut effective = crate::model::Classification::unknown(0);
    effective.kind = kind;
    Verdict {
        decision: crate::model::Decision::forward_default(),
        effective,
        policy_time: std::time::Duration::ZERO,
    }
}

/// What the metrics record of a statement, gathered as it goes.
struct Seen<'a> {
    query_id: u64,
    started: Instant,
    sql: &'a str,
    cache: CacheOutcome,
    /// The pool it ran on.
    pool: Option<Arc<Pool>>,
    /// When it was handed to a server.
    sent: Option<Instant>,
}

impl<'a> Seen<'a> {
    /// A statement starting now.
    fn new(fe: &MyFrontend, sql: &'a str) -> Seen<'a> {
        Seen {
            query_id: fe.shared.metrics.next_query_id(),
            started: Instant::now(),
            sql,
            cache: CacheOutcome::Off,
            pool: None,
            sent: None,
        }
    }
}

/// The client is gone (or must be closed): the session ends.
#[derive(Debug)]
pub(super) struct Closed;

fn hash_settings(settings: &[String]) -> u64 {
    if settings.is_empty() {
        return 0;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in settings {
        h.update(s.as_bytes());
        h.update(&[0]);
    }
    // 0 means "as after login".
    h.digest().max(1)
}

/// `SET NAMES <charset> COLLATE <collation>` for a handshake collation id.
fn set_names(collation: u8) -> Option<String> {
    let c = mysql_common::collations::Collation::resolve(
        mysql_common::collations::CollationId::from(u16::from(collation)),
    );
    let (charset, name) = (c.charset(), c.collation());
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (safe(charset) && safe(name)).then(|| format!("SET NAMES {charset} COLLATE {name}"))
}

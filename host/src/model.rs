//! Protocol-neutral types shared by every part of the proxy: what a statement is (`Classification`),
//! what the policy sees of it (`QueryContext`), what the policy decided (`Decision`) and how far a
//! server's log has come (`Lsn`).
//!
//! Frontends build a `QueryContext`; the policy engine maps it to and from the WIT types in one
//! place (`policy::convert`); everything downstream (cache, routing, pools) reads `Decision`.

mod facts;
mod lsn;

use std::sync::Arc;

use smallvec::SmallVec;

pub use facts::{Access, ObjectKind, ObjectRef, StatementFacts};
pub use lsn::{Lsn, LsnParseError, WalLayout};

/// The wire protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Postgres,
    ClickhouseHttp,
    Mysql,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::ClickhouseHttp => "clickhouse-http",
            Protocol::Mysql => "mysql",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "postgres" | "postgresql" => Ok(Protocol::Postgres),
            "clickhouse-http" | "clickhouse" => Ok(Protocol::ClickhouseHttp),
            "mysql" => Ok(Protocol::Mysql),
            other => Err(format!(
                "unknown protocol `{other}` (expected postgres, clickhouse-http or mysql)"
            )),
        }
    }
}

/// What a statement does. Ordered by "strength": for a multi-statement text the strongest wins.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StatementKind {
    Read,
    Session,
    Transaction,
    Utility,
    Write,
    Ddl,
    Unknown,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Session => "session",
            StatementKind::Utility => "utility",
            StatementKind::Unknown => "unknown",
        }
    }
}

/// Facts about a statement beyond its kind.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct QueryFlags {
    /// UPDATE/DELETE with a WHERE clause.
    pub has_where: bool,
    /// The outermost query has LIMIT / FETCH FIRST / TOP.
    pub has_limit: bool,
    /// Calls a volatile function (now(), random(), nextval(), ...): never cached.
    pub volatile: bool,
    /// More than one statement in the text.
    pub multi_statement: bool,
}

/// The classifier's verdict on one SQL text. Cheap to clone (shared lists).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Classification {
    pub kind: StatementKind,
    pub flags: QueryFlags,
    /// Equal for statements differing only in literals, whitespace and comments.
    pub fingerprint: u64,
    pub tables_read: Arc<[String]>,
    pub tables_written: Arc<[String]>,
    /// Functions called, lower-cased, deduplicated.
    pub functions: Arc<[String]>,
    /// What the text does to resident session state, for every statement in text order; empty
    /// for almost every statement (and then without an allocation). PostgreSQL only; the rules
    /// are in `classify::resident`.
    pub resident: ResidentEffects,
    /// Every statement of the text with what the parser found in it, for policies (empty only
    /// for texts classified without a policy in mind, such as the proxy's own).
    pub statements: Arc<[StatementFacts]>,
}

impl Classification {
    /// A statement the classifier could not parse.
    pub fn unknown(fingerprint: u64) -> Self {
        Classification {
            kind: StatementKind::Unknown,
            flags: QueryFlags::default(),
            fingerprint,
            tables_read: Arc::from(Vec::new()),
            tables_written: Arc::from(Vec::new()),
            functions: Arc::from(Vec::new()),
            resident: ResidentEffects::new(),
            statements: Arc::from(Vec::new()),
        }
    }
}

/// The resident effects of one text; one fits without an allocation.
pub type ResidentEffects = SmallVec<[ResidentEffect; 1]>;

/// What one statement does to *resident* session state: server-side state that lives on the
/// client's server connection and cannot be re-created on another one (ARCHITECTURE.md, "One
/// session-state model for every frontend"). While a session holds any, its client is pinned to
/// its connection.
///
/// Effects say what a statement does when it succeeds. A transaction that rolls back undoes some
/// of them: temporary objects, cursors, LISTEN/UNLISTEN, DROP and SET/RESET SESSION AUTHORIZATION
/// are transactional; PREPARE/DEALLOCATE, advisory locks and LOAD are not. Staying pinned after
/// a create was rolled back is only a lost chance to share; releasing before the transaction
/// commits is not safe (`BEGIN; DROP TABLE t; ROLLBACK` keeps `t`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "effect", content = "state")]
pub enum ResidentEffect {
    /// Creates this state (or may: `pg_try_advisory_lock` can fail).
    Create(Resident),
    /// Ends this one piece of state if the session holds it: a `DROP TABLE t` where `t` was not
    /// a temporary table, a `CLOSE` of a cursor without HOLD, an unlock of a lock not held end
    /// nothing.
    Release(Resident),
    /// Ends all state of one sort.
    ReleaseAll(ResidentSort),
    /// May have created resident state that cannot be told (a `DO` block, an unparsable `CREATE`
    /// mentioning TEMP, a `PREPARE` of a statement that would create some at `EXECUTE`). Only
    /// the end of the connection is sure to end it; `DISCARD ALL` ends everything except a
    /// library loaded by the unknown statement.
    Unknown,
}

impl ResidentEffect {
    /// Whether the effect may leave resident state behind (`Create` or `Unknown`).
    pub fn creates(&self) -> bool {
        matches!(self, ResidentEffect::Create(_) | ResidentEffect::Unknown)
    }
}

/// One piece of resident state. Names are spelled as PostgreSQL resolves them (see
/// `classify::resident`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "name")]
pub enum Resident {
    /// A temporary table, view or sequence (`CREATE TEMP ..`, `SELECT .. INTO TEMP`, a name in
    /// `pg_temp`), named without its `pg_temp` schema; released by `DROP TABLE/VIEW/SEQUENCE`
    /// of the name, `DISCARD TEMP` and `DISCARD ALL`.
    TempObject(Arc<str>),
    /// A SQL `PREPARE name`; released by `DEALLOCATE`.
    Prepared(Arc<str>),
    /// A cursor declared `WITH HOLD`; released by `CLOSE`.
    Cursor(Arc<str>),
    /// A `LISTEN` channel; released by `UNLISTEN`.
    Channel(Arc<str>),
    /// One session-level advisory lock (`pg_advisory_lock`, `pg_try_advisory_lock` and their
    /// `_shared` forms; the key is not reported). `pg_advisory_unlock(_shared)` releases one,
    /// `pg_advisory_unlock_all()` all.
    AdvisoryLock,
    /// `SET SESSION AUTHORIZATION role`; released by `RESET SESSION AUTHORIZATION` and
    /// `SET SESSION AUTHORIZATION DEFAULT`.
    SessionAuthorization,
    /// A library loaded with `LOAD`: it stays for the life of the connection, nothing releases it.
    Library,
}

/// A sort of resident state that one statement ends all of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResidentSort {
    /// `DISCARD TEMP`.
    TempObjects,
    /// `DEALLOCATE ALL`.
    Prepared,
    /// `CLOSE ALL`.
    Cursors,
    /// `UNLISTEN *`.
    Channels,
    /// `pg_advisory_unlock_all()`.
    AdvisoryLocks,
    /// `DISCARD ALL`: everything except `Library`.
    All,
}

/// Everything the policy may know about one statement.
#[derive(Debug, Clone)]
pub struct QueryContext {
    pub protocol: Protocol,
    pub sql: String,
    pub classification: Classification,
    /// Shared, not copied per statement: a session builds a context for every statement, and
    /// these stay the same for its whole life.
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub client_addr: Arc<str>,
    pub in_transaction: bool,
    /// Protocol attributes (HTTP params without `password`, PostgreSQL startup params, ...).
    pub attributes: Arc<[(String, String)]>,
}

/// What a pool is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolRole {
    Primary,
    Replica,
    Other,
}

/// A health snapshot of one pool, offered to the policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolState {
    pub name: String,
    pub role: PoolRole,
    pub healthy_nodes: u32,
    pub total_nodes: u32,
    pub replica_lag_ms: Option<u64>,
    pub replica_lag_bytes: Option<u64>,
}

/// Where a statement should run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "name")]
pub enum Route {
    /// Reads → replica, everything else → primary.
    Default,
    Primary,
    Replica,
    /// A named pool of the cluster.
    Pool(String),
}

impl Route {
    /// `default` or `replica`: the proxy picks a replica or the primary for a read (by
    /// availability, the session's causal position, and shapes learnt to write), where
    /// `primary` and a named pool are the policy's final word.
    pub fn is_read_routing(&self) -> bool {
        matches!(self, Route::Default | Route::Replica)
    }

    /// The kind of route, as a metric label (a named pool is `pool`; the pool label names it).
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Default => "default",
            Route::Primary => "primary",
            Route::Replica => "replica",
            Route::Pool(_) => "pool",
        }
    }
}

/// Whether and how to cache a read's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheDirective {
    pub ttl_ms: u32,
    pub namespace: Option<String>,
    pub shared: bool,
}

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "value")]
pub enum Action {
    Forward,
    Block(String),
    Rewrite(String),
}

/// The policy's answer for one statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub action: Action,
    pub route: Route,
    pub cache: Option<CacheDirective>,
    pub affinity_key: Option<String>,
    pub tags: Vec<(String, String)>,
    pub mirror: Option<String>,
}

impl Decision {
    /// Forward with the default route and nothing else.
    pub fn forward_default() -> Self {
        Decision {
            action: Action::Forward,
            route: Route::Default,
            cache: None,
            affinity_key: None,
            tags: Vec::new(),
            mirror: None,
        }
    }
}

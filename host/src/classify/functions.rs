//! What calling a function does to a statement: volatile results (never cache), side effects that
//! make a read a write (sequences, advisory locks), and session-scoped state (`currval`,
//! `LAST_INSERT_ID()`) that only the connection that changed it can see.
//!
//! Volatility is checked against one list for all dialects: marking a function volatile only
//! costs a cache miss, so a name that is volatile anywhere counts everywhere. Side effects are
//! per dialect, because they change routing.

use crate::model::{Protocol, StatementKind};

/// The effect of one call, looked up by lower-case name (a schema qualifier is ignored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Effect {
    pub volatile: bool,
    /// `Write` for side effects that must run on the primary, `Session` for functions that read
    /// per-connection state.
    pub kind: Option<StatementKind>,
    /// A PostgreSQL session-level advisory lock taken or given back (resident state).
    pub lock: Option<LockCall>,
}

/// What a call does to the session-level advisory locks (the `_xact_` forms end with their
/// transaction and are not resident).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockCall {
    Lock,
    Unlock,
    UnlockAll,
}

/// The lock call of a lower-case function name without its schema.
pub(crate) fn lock_call(name: &str) -> Option<LockCall> {
    match name {
        "pg_advisory_lock"
        | "pg_advisory_lock_shared"
        | "pg_try_advisory_lock"
        | "pg_try_advisory_lock_shared" => Some(LockCall::Lock),
        "pg_advisory_unlock" | "pg_advisory_unlock_shared" => Some(LockCall::Unlock),
        "pg_advisory_unlock_all" => Some(LockCall::UnlockAll),
        _ => None,
    }
}

pub(crate) fn effect(protocol: Protocol, name: &str) -> Effect {
    let base = name.rsplit('.').next().unwrap_or(name);
    let (kind, lock) = match protocol {
        Protocol::Postgres => postgres_kind(base),
        Protocol::Mysql => (mysql_kind(base), None),
        Protocol::ClickhouseHttp => (None, None),
    };
    Effect {
        volatile: kind.is_some() || is_volatile(base),
        kind,
        lock,
    }
}

fn postgres_kind(name: &str) -> (Option<StatementKind>, Option<LockCall>) {
    if name.starts_with("pg_advisory") || name.starts_with("pg_try_advisory") {
        return (Some(StatementKind::Write), lock_call(name));
    }
    let write = matches!(
        name,
        "nextval"
            | "setval"
            | "pg_notify"
            // Assigning a transaction id fails on a standby.
            | "txid_current"
            | "pg_current_xact_id"
            | "lo_create"
            | "lo_creat"
            | "lo_import"
            | "lo_unlink"
            | "lo_put"
            | "lo_from_bytea"
            | "pg_terminate_backend"
            | "pg_cancel_backend"
    );
    if write {
        return (Some(StatementKind::Write), None);
    }
    let session = matches!(name, "currval" | "lastval" | "set_config");
    (session.then_some(StatementKind::Session), None)
}

fn mysql_kind(name: &str) -> Option<StatementKind> {
    // Named locks live on one server: every client must ask the same one.
    if matches!(
        name,
        "get_lock" | "release_lock" | "release_all_locks" | "is_free_lock" | "is_used_lock"
    ) {
        return Some(StatementKind::Write);
    }
    matches!(name, "last_insert_id" | "found_rows" | "row_count").then_some(StatementKind::Session)
}

fn is_volatile(name: &str) -> bool {
    // ClickHouse: now/now64/nowInBlock, rand*/random*/randConstant, generateUUIDv4/v7/ULID/...
    if name.starts_with("now")
        || name.starts_with("rand")
        || name.starts_with("generateuuid")
        || name.starts_with("generateulid")
        || name.starts_with("generatesnowflake")
        || name.starts_with("generaterandom")
        || name.starts_with("uuid_generate")
        || name.starts_with("pg_sleep")
    {
        return true;
    }
    matches!(
        name,
        // SQL standard and PostgreSQL
        "current_timestamp"
            | "current_time"
            | "current_date"
            | "localtime"
            | "localtimestamp"
            | "transaction_timestamp"
            | "statement_timestamp"
            | "clock_timestamp"
            | "timeofday"
            | "setseed"
            | "gen_random_uuid"
            | "uuidv4"
            | "uuidv7"
            | "txid_current_if_assigned"
            | "pg_current_xact_id_if_assigned"
            | "pg_backend_pid"
            | "inet_client_addr"
            | "inet_client_port"
            | "current_user"
            | "current_role"
            | "session_user"
            | "user"
            | "current_schema"
            | "current_schemas"
            | "current_catalog"
            | "current_database"
            | "current_setting"
            // ClickHouse
            | "today"
            | "yesterday"
            | "currentuser"
            | "currentdatabase"
            | "currentroles"
            | "currentprofiles"
            | "queryid"
            | "initialqueryid"
            | "hostname"
            | "uptime"
            | "blocknumber"
            | "rownumberinblock"
            | "rownumberinallblocks"
            | "fuzzbits"
            // MySQL
            | "sysdate"
            | "curdate"
            | "curtime"
            | "utc_date"
            | "utc_time"
            | "utc_timestamp"
            | "unix_timestamp"
            | "uuid"
            | "uuid_short"
            | "connection_id"
            | "sleep"
            | "benchmark"
            | "system_user"
            | "database"
            | "schema"
    )
}

//! The admin console: a virtual database `switchyard` that answers PgBouncer-style commands
//! over the simple query protocol (`psql -d switchyard -c 'SHOW POOLS'`).
//!
//! SHOW POOLS | CLIENTS | SERVERS | STATS | POLICY | HELP, RELOAD (the policy), PAUSE, RESUME.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::PgFrontend;
use super::cancel::CancelHandle;
use super::client::{ClientError, ClientIo};
use super::users::User;
use crate::postgres::protocol::backend::{Field, ready_for_query};
use crate::postgres::protocol::{BackendMessage, ErrorFields, FrontendMessage, TransactionStatus};

/// How long PAUSE waits for running transactions to finish.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    fe: Arc<PgFrontend>,
    mut io: ClientIo<S>,
    user: Arc<User>,
    _cancel: CancelHandle,
) {
    tracing::info!(user = user.config.name, "admin console session");
    let mut drain = fe.shared.drain.clone();
    loop {
        // The console holds no transaction: a shutdown ends it at once.
        let read = tokio::select! {
            read = io.read_message() => read,
            true = async { drain.wait_for(|d| *d != crate::frontend::Drain::Running).await.is_ok() } => {
                io.fatal(ErrorFields::fatal(
                    "57P01",
                    "terminating connection due to administrator command: Switchyard is shutting down",
                ))
                .await;
                return;
            }
        };
        let msg = match read {
            Ok(m) => m,
            Err(ClientError::Protocol(e)) => {
                io.fatal(ErrorFields::fatal("08P01", format!("invalid message: {e}")))
                    .await;
                return;
            }
            Err(_) => return,
        };
        match msg.tag() {
            b'X' => return,
            b'Q' => {
                let sql = match FrontendMessage::decode(&msg) {
                    Ok(FrontendMessage::Query { sql }) => sql.into_string(),
                    _ => String::new(),
                };
                for command in sql.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                    if let Err(e) = run(&fe, &mut io, command).await {
                        io.error(&e);
                        break;
                    }
                }
                ready_for_query(&mut io.wbuf, TransactionStatus::Idle);
            }
            b'S' => {
                io.error(&ErrorFields::error(
                    "0A000",
                    "the admin console speaks the simple query protocol only",
                ));
                ready_for_query(&mut io.wbuf, TransactionStatus::Idle);
            }
            // Everything else of an extended batch is skipped until its Sync.
            _ => continue,
        }
        if io.flush().await.is_err() {
            return;
        }
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    fe: &Arc<PgFrontend>,
    io: &mut ClientIo<S>,
    command: &str,
) -> Result<(), ErrorFields> {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let table = match words.as_slice() {
        ["SHOW", "POOLS"] => pools(fe),
        ["SHOW", "CLIENTS"] => clients(fe),
        ["SHOW", "SERVERS"] => servers(fe),
        ["SHOW", "STATS"] => stats(fe),
        ["SHOW", "POLICY"] => policy(fe),
        ["SHOW", "HELP"] | ["HELP"] => help(),
        ["RELOAD"] => {
            let policy = fe.shared.policy.clone();
            tokio::task::spawn_blocking(move || policy.reload())
                .await
                .map_err(|e| ErrorFields::error("XX000", e.to_string()))?
                .map_err(|e| ErrorFields::error("XX000", format!("policy reload failed: {e}")))?;
            return complete(io, "RELOAD");
        }
        ["PAUSE"] => {
            fe.set_paused(true);
            // Like PgBouncer: returns once running transactions have finished.
            let started = std::time::Instant::now();
            while fe
                .backend
                .buckets()
                .iter()
                .any(|b| b.stats.active.load(Ordering::Relaxed) > 0)
            {
                if started.elapsed() > PAUSE_WAIT {
                    return Err(ErrorFields::error(
                        "57014",
                        "paused, but transactions are still running after 30s",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return complete(io, "PAUSE");
        }
        ["RESUME"] => {
            fe.set_paused(false);
            return complete(io, "RESUME");
        }
        _ => {
            return Err(
                ErrorFields::error("42601", format!("unknown admin command: {command}"))
                    .hint("SHOW HELP lists the commands"),
            );
        }
    };
    table.write(io);
    Ok(())
}

fn complete<S>(io: &mut ClientIo<S>, tag: &str) -> Result<(), ErrorFields> {
    BackendMessage::CommandComplete {
        tag: tag.to_owned(),
    }
    .encode(&mut io.wbuf);
    Ok(())
}

/// A result set of text columns.
struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, values: Vec<String>) {
        self.rows.push(values);
    }

    fn write<S>(self, io: &mut ClientIo<S>) {
        BackendMessage::RowDescription(self.columns.iter().map(|c| Field::text(*c)).collect())
            .encode(&mut io.wbuf);
        let n = self.rows.len();
        for row in self.rows {
            BackendMessage::DataRow(row.into_iter().map(|v| Some(v.into())).collect())
                .encode(&mut io.wbuf);
        }
        BackendMessage::CommandComplete {
            tag: format!("SHOW {n}"),
        }
        .encode(&mut io.wbuf);
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn pools(fe: &PgFrontend) -> Table {
    let mut t = Table::new(&[
        "cluster",
        "pool",
        "role",
        "node",
        "healthy",
        "position",
        "lag_ms",
        "lag_bytes",
        "user",
        "database",
        "size",
        "active",
        "idle",
        "waiting",
        "checkouts",
        "timeouts",
        "avg_wait_us",
        "connects",
        "connect_failures",
    ]);
    let router = fe.backend.router();
    for pool in router.pools() {
        let buckets: Vec<_> = fe
            .backend
            .buckets()
            .into_iter()
            .filter(|b| b.pool() == pool.name())
            .collect();
        for node in pool.nodes() {
            let role = format!("{:?}", pool.role()).to_lowercase();
            let mut any = false;
            for b in buckets.iter().filter(|b| b.node().index() == node.index()) {
                any = true;
                let s = &b.stats;
                let checkouts = s.checkouts.load(Ordering::Relaxed);
                t.row(vec![
                    router.cluster().to_owned(),
                    pool.name().to_owned(),
                    role.clone(),
                    node.addr().to_owned(),
                    node.is_available().to_string(),
                    opt(node.position()),
                    opt(node.lag_ms()),
                    opt(node.lag_bytes()),
                    b.login().user.clone(),
                    b.login().database.clone(),
                    b.size().to_string(),
                    s.active.load(Ordering::Relaxed).to_string(),
                    b.idle_count().to_string(),
                    s.waiting.load(Ordering::Relaxed).to_string(),
                    checkouts.to_string(),
                    s.timeouts.load(Ordering::Relaxed).to_string(),
                    (s.wait_us.load(Ordering::Relaxed) / checkouts.max(1)).to_string(),
                    s.connects.load(Ordering::Relaxed).to_string(),
                    s.connect_failures.load(Ordering::Relaxed).to_string(),
                ]);
            }
            if !any {
                let mut row = vec![
                    router.cluster().to_owned(),
                    pool.name().to_owned(),
                    role,
                    node.addr().to_owned(),
                    node.is_available().to_string(),
                    opt(node.position()),
                    opt(node.lag_ms()),
                    opt(node.lag_bytes()),
                ];
                row.resize(19, String::new());
                t.row(row);
            }
        }
    }
    t
}

fn clients(fe: &PgFrontend) -> Table {
    let mut t = Table::new(&[
        "pid",
        "user",
        "database",
        "addr",
        "state",
        "server",
        "server_pid",
        "connected_secs",
        "pinned",
    ]);
    for (pid, info, server, pinned) in fe.cancels.clients() {
        let (state, addr, spid) = match server {
            Some((a, p)) => ("active", a, p.to_string()),
            None => ("idle", String::new(), String::new()),
        };
        t.row(vec![
            pid.to_string(),
            info.user.clone(),
            info.database.clone(),
            info.addr.clone(),
            state.to_owned(),
            addr,
            spid,
            info.since
                .elapsed()
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string(),
            pinned.unwrap_or("").to_owned(),
        ]);
    }
    t
}

fn servers(fe: &PgFrontend) -> Table {
    let mut t = Table::new(&["pool", "node", "user", "database", "active", "idle", "size"]);
    for b in fe.backend.buckets() {
        t.row(vec![
            b.pool().to_owned(),
            b.node().addr().to_owned(),
            b.login().user.clone(),
            b.login().database.clone(),
            b.stats.active.load(Ordering::Relaxed).to_string(),
            b.idle_count().to_string(),
            b.size().to_string(),
        ]);
    }
    t
}

fn stats(fe: &PgFrontend) -> Table {
    let mut t = Table::new(&["name", "value"]);
    let mut add = |k: &str, v: u64| t.row(vec![k.to_owned(), v.to_string()]);
    add(
        "client_connections_total",
        fe.stats.sessions.load(Ordering::Relaxed),
    );
    add("client_logins", fe.stats.logins.load(Ordering::Relaxed));
    add(
        "client_login_failures",
        fe.stats.login_failures.load(Ordering::Relaxed),
    );
    add("clients_now", fe.cancels.len() as u64);
    add(
        "causal_reads_on_primary",
        fe.stats.causal_primary.load(Ordering::Relaxed),
    );
    add(
        "causal_cache_bypasses",
        fe.stats.causal_cache_bypass.load(Ordering::Relaxed),
    );
    add(
        "causal_shared_position_failures",
        fe.stats.shared_position_failures.load(Ordering::Relaxed),
    );
    let buckets = fe.backend.buckets();
    let sum = |f: &dyn Fn(&crate::backend::postgres::BucketStats) -> u64| {
        buckets.iter().map(|b| f(&b.stats)).sum::<u64>()
    };
    add(
        "server_checkouts",
        sum(&|s| s.checkouts.load(Ordering::Relaxed)),
    );
    add(
        "server_connects",
        sum(&|s| s.connects.load(Ordering::Relaxed)),
    );
    add(
        "server_connect_failures",
        sum(&|s| s.connect_failures.load(Ordering::Relaxed)),
    );
    add(
        "pool_timeouts",
        sum(&|s| s.timeouts.load(Ordering::Relaxed)),
    );
    add(
        "pool_wait_us_total",
        sum(&|s| s.wait_us.load(Ordering::Relaxed)),
    );
    let p = fe.shared.policy.stats();
    add("policy_calls", p.calls);
    add("policy_failed_open", p.failed_open);
    add("policy_failed_closed", p.failed_closed);
    if let Some(cache) = &fe.shared.cache {
        let c = cache.stats();
        add("cache_hits_local", c.hits_local);
        add("cache_hits_redis", c.hits_redis);
        add("cache_misses", c.misses);
        add("cache_stores", c.stores);
        add("cache_coalesced_waits", c.coalesced_waits);
    }
    t
}

fn policy(fe: &PgFrontend) -> Table {
    let mut t = Table::new(&[
        "name",
        "path",
        "sha256",
        "calls",
        "failures",
        "reloads",
        "reload_failures",
    ]);
    let s = fe.shared.policy.stats();
    let failures = s.failures_deadline + s.failures_memory + s.failures_trap;
    match fe.shared.policy.current() {
        Some(p) => t.row(vec![
            p.name().to_owned(),
            p.path().display().to_string(),
            p.sha256().to_owned(),
            s.calls.to_string(),
            failures.to_string(),
            s.reloads.to_string(),
            s.reload_failures.to_string(),
        ]),
        None => t.row(vec![
            "(built-in default)".to_owned(),
            String::new(),
            String::new(),
            s.calls.to_string(),
            failures.to_string(),
            s.reloads.to_string(),
            s.reload_failures.to_string(),
        ]),
    }
    t
}

fn help() -> Table {
    let mut t = Table::new(&["command", "does"]);
    for (c, d) in [
        (
            "SHOW POOLS",
            "server connections per pool, node and backend login; node health and lag",
        ),
        (
            "SHOW CLIENTS",
            "client sessions and the server each is using",
        ),
        ("SHOW SERVERS", "server connections, active and idle"),
        (
            "SHOW STATS",
            "counters: logins, checkouts, pool timeouts, policy calls, cache",
        ),
        ("SHOW POLICY", "the loaded policy and its counters"),
        ("RELOAD", "reload the policy from its file"),
        (
            "PAUSE",
            "stop handing out server connections; returns when running transactions end",
        ),
        ("RESUME", "hand out server connections again"),
    ] {
        t.row(vec![c.to_owned(), d.to_owned()]);
    }
    t
}

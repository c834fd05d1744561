//! Getting a server connection for a statement: limits, the route (with read-your-writes and
//! causal targets), the checkout (with the pool's fallback), and bringing the connection to the
//! session's state: its database, its settings (a connection that carries another session's
//! settings is reset with COM_RESET_CONNECTION first), and its LAST_INSERT_ID().

use std::sync::Arc;
use std::time::Instant;

use super::{Closed, Held, Session};
use crate::backend::mysql::{MyBackendError, MyLogin, MyServerConn};
use crate::config::Consistency;
use crate::frontend::mysql::MyFrontend;
use crate::frontend::mysql::users::User;
use crate::model::{PoolRole, Route, StatementKind};
use crate::mysql::command::{COM_QUERY, COM_RESET_CONNECTION};
use crate::mysql::response::{self, MyError};
use crate::pipeline::Verdict;
use crate::route::{NodeIndices, Pool};

/// The backend login for `user`'s statements on `pool` (the user's `backend`, the pool's
/// `auth`, else the user's own name and password); without a user, the login the proxy uses
/// for itself (the pool's `auth`, else the first user with a password).
pub(in crate::frontend::mysql) fn backend_login(
    fe: &MyFrontend,
    user: Option<&User>,
    pool: &Pool,
    found_rows: bool,
) -> MyLogin {
    let credentials = match user {
        Some(u) => Some(u.config.backend_credentials(pool.config())),
        None => pool.config().auth.clone().or_else(|| {
            fe.users_with_password()
                .map(|u| u.config.backend_credentials(pool.config()))
        }),
    };
    MyLogin {
        user: credentials
            .as_ref()
            .map(|c| c.user.clone())
            .unwrap_or_default(),
        password: credentials
            .and_then(|c| c.password)
            .map(|p| p.expose().to_owned()),
        found_rows,
    }
}

impl Session {
    /// Makes sure a server connection suited to the statement is held. `Ok(Err(..))` is an
    /// error for the client (the session goes on).
    pub(super) async fn ensure_conn(
        &mut self,
        verdict: &Verdict,
        route: &Route,
        reads_insert_id: bool,
    ) -> Result<Result<(), MyError>, Closed> {
        let kind = verdict.effective.kind;
        if let Some(held) = &self.held {
            let stays = self.in_transaction || self.pinned.is_some() || {
                // Session mode between transactions: keep the connection if the statement
                // goes to its pool anyway.
                let router = self.fe.backend.router();
                router
                    .resolve_target(route, kind, false)
                    .is_ok_and(|t| t.pool.name() == held.pool.name())
            };
            if stays {
                return Ok(self.sync_conn(reads_insert_id).await);
            }
            if let Some(held) = self.held.take() {
                held.conn.release();
            }
        }
        // Between units of work: the moment to move to a reloaded config.
        self.follow_reload();
        let work = match self
            .fe
            .shared
            .admission
            .admit(&self.user_limits, &verdict.decision.tags, true)
            .await
        {
            Ok(w) => w,
            Err(e) => {
                return Ok(Err(MyError::new(
                    response::ER_USER_LIMIT_REACHED,
                    "42000",
                    e.to_string(),
                )));
            }
        };
        let mut route = route.clone();
        if let (Some(window), Some(at)) = (self.fe.read_your_writes, self.last_write)
            && at.elapsed() < window
            && route.is_read_routing()
        {
            route = Route::Primary;
        }
        let router = self.fe.backend.router().clone();
        let target = match router.resolve_target(&route, kind, self.in_transaction) {
            Ok(t) => t,
            Err(e) => return Ok(Err(MyError::new(1105, "HY000", e.to_string()))),
        };
        let (pool, exclude) = if route.is_read_routing() && target.pool.role() == PoolRole::Replica
        {
            self.causal_target(target.pool.clone(), target.exclude())
                .await
        } else {
            (target.pool.clone(), target.exclude().into_iter().collect())
        };
        let mut work = work;
        if let Some(limits) = pool.limits() {
            match limits.acquire(work.tenant()).await {
                Ok(permit) => work.hold(permit),
                Err(e) => {
                    return Ok(Err(MyError::new(
                        response::ER_USER_LIMIT_REACHED,
                        "42000",
                        e.to_string(),
                    )));
                }
            }
        }
        let tenant = work.tenant().clone();
        let (fe, user, found_rows) = (self.fe.clone(), self.user.clone(), self.found_rows());
        let login = |pool: &Pool| backend_login(&fe, Some(&user), pool, found_rows);
        let mut result = fe
            .backend
            .checkout(&pool, || login(&pool), &exclude, &tenant, &mut self.buckets)
            .await;
        let mut used = pool.clone();
        if let Err(e) = &result
            && (e.is_node_failure() || matches!(e, MyBackendError::NoNode { .. }))
            && let Some(fallback) = pool
                .config()
                .fallback_pool
                .as_deref()
                .and_then(|name| router.pool(name))
                .cloned()
        {
            result = fe
                .backend
                .checkout(
                    &fallback,
                    || login(&fallback),
                    &[],
                    &tenant,
                    &mut self.buckets,
                )
                .await;
            used = fallback;
        }
        match result {
            Ok(conn) => {
                self.held = Some(Held {
                    conn,
                    pool: used,
                    _work: Some(work),
                });
                Ok(self.sync_conn(reads_insert_id).await)
            }
            Err(e) => Ok(Err(e.to_client())),
        }
    }

    /// The replica pool and the nodes to skip for a read that must see the session's writes
    /// (`session`) or everything committed before it began (`global`); the primary when no
    /// replica gets there within `causal_wait`.
    async fn causal_target(
        &mut self,
        pool: Arc<Pool>,
        exclude: Vec<usize>,
    ) -> (Arc<Pool>, NodeIndices) {
        let router = self.fe.backend.router().clone();
        let needed = match router.consistency() {
            Consistency::Eventual => return (pool, exclude.into_iter().collect()),
            Consistency::Session => self.own_position,
            Consistency::Global => {
                match router
                    .primary_position_since(Instant::now(), router.causal_wait())
                    .await
                {
                    Some(lsn) => Some(lsn),
                    None => return self.primary_instead(pool, exclude).await,
                }
            }
        };
        let Some(lsn) = needed else {
            return (pool, exclude.into_iter().collect());
        };
        if lsn == super::relay::UNKNOWN_WRITE {
            // No replica can be shown to have the session's write: not worth waiting for.
            return self.primary_instead(pool, exclude).await;
        }
        if pool.reached(lsn) || pool.wait_reached(lsn, router.causal_wait()).await {
            let mut skip = pool.nodes_behind(lsn);
            skip.extend(exclude);
            return (pool, skip);
        }
        self.primary_instead(pool, exclude).await
    }

    async fn primary_instead(
        &mut self,
        pool: Arc<Pool>,
        exclude: Vec<usize>,
    ) -> (Arc<Pool>, NodeIndices) {
        self.fe
            .stats
            .causal_primary
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self
            .fe
            .backend
            .router()
            .resolve_target(&Route::Primary, StatementKind::Write, false)
        {
            Ok(t) => {
                let skip = t.exclude().into_iter().collect();
                (t.pool, skip)
            }
            Err(_) => (pool, exclude.into_iter().collect()),
        }
    }

    /// After a config reload, moves the session to the new generation of its frontend (new
    /// pools, limits and user settings). A user the new config removed keeps its old settings
    /// until it disconnects.
    fn follow_reload(&mut self) {
        let Some(next) = self.fe.newest() else {
            return;
        };
        if let Some(user) = next.users.get(&self.user.config.name) {
            self.user = user.clone();
            self.user_limits = next.shared.admission.user(&user.config.name);
        }
        self.buckets.clear();
        self.fe = next;
    }

    /// Brings the held connection to the session's database, settings and LAST_INSERT_ID().
    async fn sync_conn(&mut self, reads_insert_id: bool) -> Result<(), MyError> {
        let Some(held) = self.held.as_mut() else {
            return Err(MyError::new(1105, "HY000", "no server connection"));
        };
        let conn = held.conn.conn();
        let result = sync(
            conn,
            self.database.as_deref(),
            &self.settings,
            self.settings_hash,
            (reads_insert_id && self.last_insert_id != 0).then_some((self.id, self.last_insert_id)),
        )
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(server_error)) => Err(server_error),
            Err(broken) => {
                self.held = None;
                Err(broken.to_client())
            }
        }
    }
}

async fn sync(
    conn: &mut MyServerConn,
    database: Option<&str>,
    settings: &[String],
    settings_hash: u64,
    insert_id: Option<(u64, u64)>,
) -> Result<Result<(), MyError>, MyBackendError> {
    if conn.settings != settings_hash {
        if conn.settings != 0 {
            // Another session's settings: back to the state after login (the database stays).
            if let Err(e) = conn.simple_command(&[COM_RESET_CONNECTION]).await? {
                return Ok(Err(e));
            }
            conn.settings = 0;
            conn.insert_id = (0, 0);
            // The reset closed every statement prepared on it.
            conn.prepared.clear();
        }
        for setting in settings {
            let mut payload = Vec::with_capacity(setting.len() + 1);
            payload.push(COM_QUERY);
            payload.extend_from_slice(setting.as_bytes());
            if let Err(e) = conn.simple_command(&payload).await? {
                return Ok(Err(e));
            }
        }
        conn.settings = settings_hash;
    }
    if let Some(db) = database
        && conn.database.as_deref() != Some(db)
        && let Err(e) = conn.init_db(db).await?
    {
        return Ok(Err(e));
    }
    // The same session's older value is as wrong as another session's.
    if let Some(wanted) = insert_id
        && conn.insert_id != wanted
    {
        let sql = format!("\x03DO LAST_INSERT_ID({})", wanted.1);
        if let Err(e) = conn.simple_command(sql.as_bytes()).await? {
            return Ok(Err(e));
        }
        conn.insert_id = wanted;
    }
    Ok(Ok(()))
}

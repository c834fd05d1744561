//! Causal reads: a session never reads older data than it wrote. When a unit of work that
//! wrote ends (the server says idle again), the session asks the same server connection for
//! its WAL insert position before giving it back; that position is at or after the commit.
//! Later reads go only to replicas that have replayed it (or wait up to `causal_wait` for one),
//! otherwise to the primary. `SET switchyard.min_lsn = '…'` adds a position learnt elsewhere
//! (a consumer told the commit LSN of a message), and the `global` level makes every read
//! wait for the primary's position as of its start.
//!
//! The probe costs one extra statement per writing transaction on a connection the session
//! already holds, and no round trip the client waits for: the client's ReadyForQuery is
//! relayed before the probe is sent. A client that names a causal key has its position shared
//! through Redis with the other instances (`shared`).

mod shared;

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Consistency;
use crate::frontend::postgres::settings;
use crate::model::{Lsn, PoolRole, Route};
use crate::pipeline::Verdict;
use crate::postgres::protocol::{RawMessage, TransactionStatus};
use crate::route::{NodeIndices, Pool, Target};

use super::relay::Pending;
use super::{Session, SessionEnd};

/// The statement that reads a position at or after everything the connection committed.
const WAL_PROBE: &str = "SELECT pg_current_wal_insert_lsn()";

/// The setting by which a client states a position its reads must observe.
pub(super) const MIN_LSN_SETTING: &str = "switchyard.min_lsn";
/// The setting by which a client names the key its position is shared under (`shared`).
pub(super) const CAUSAL_KEY_SETTING: &str = "switchyard.causal_key";

/// What the session knows of the positions its reads must see.
#[derive(Debug, Default)]
pub(super) struct CausalState {
    /// The newest position of this session's own committed writes.
    own: Option<Lsn>,
    /// `switchyard.min_lsn`, as the client set it.
    min: Option<Lsn>,
    /// The unit of work in progress wrote: learn the position when it ends.
    unit_wrote: bool,
    /// A probe to send once the ReadyForQuery that ended the unit has been relayed.
    probe_due: bool,
    /// A probe was lost (its server failed, or it answered no position) after a write that
    /// committed before this instant: reads need a primary position sampled after it.
    unknown_since: Option<Instant>,
    /// `switchyard.causal_key`: the key the client's position is shared under.
    shared_key: Option<String>,
    /// The ReadyForQuery of a unit that wrote, held back until its position is shared.
    held_ready: Option<bytes::Bytes>,
}

impl CausalState {
    /// Positions and keys from the startup packet's `options`
    /// (`-c switchyard.min_lsn=0/16B3748 -c switchyard.causal_key=order-42`).
    pub(super) fn from_startup(attributes: &[(String, String)]) -> CausalState {
        let option = |setting: &str| {
            attributes
                .iter()
                .find(|(name, _)| name == "options")
                .and_then(|(_, options)| {
                    options
                        .split_ascii_whitespace()
                        .filter_map(|o| o.strip_prefix(setting)?.strip_prefix('='))
                        .next_back()
                })
        };
        CausalState {
            min: option(MIN_LSN_SETTING).and_then(|v| v.parse().ok()),
            shared_key: option(CAUSAL_KEY_SETTING).and_then(shared::valid_key),
            ..CausalState::default()
        }
    }

    /// Whether the client named no causal key (see `shared`).
    pub(super) fn shared_key_is_none(&self) -> bool {
        self.shared_key.is_none()
    }

    /// The position a read must see, if any.
    pub(super) fn required(&self) -> Option<Lsn> {
        self.own.max(self.min)
    }

    /// A session setting changed: follow `switchyard.min_lsn`.
    pub(super) fn setting_changed(&mut self, change: &settings::Change) {
        match change {
            settings::Change::Set { name, sql } if name == MIN_LSN_SETTING => {
                self.min = setting_value(sql).and_then(|v| v.parse().ok());
            }
            settings::Change::Reset(name) if name == MIN_LSN_SETTING => self.min = None,
            settings::Change::Set { name, sql } if name == CAUSAL_KEY_SETTING => {
                self.shared_key = setting_value(sql).and_then(shared::valid_key);
            }
            settings::Change::Reset(name) if name == CAUSAL_KEY_SETTING => self.shared_key = None,
            settings::Change::ResetAll => {
                self.min = None;
                self.shared_key = None;
            }
            _ => {}
        }
    }
}

/// The value of `SET name {=|TO} value` with quotes removed.
fn setting_value(sql: &str) -> Option<&str> {
    let lower = sql.to_ascii_lowercase();
    let at = lower
        .find('=')
        .map(|i| i + 1)
        .or_else(|| lower.find(" to ").map(|i| i + 4))?;
    let value = sql.get(at..)?.trim().trim_end_matches(';').trim();
    Some(value.trim_matches('\''))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// The consistency level of a read: the cluster's, unless the policy tagged the statement
    /// `consistency = eventual | session | global`.
    fn consistency(&self, verdict: &Verdict) -> Consistency {
        let level = verdict
            .decision
            .tags
            .iter()
            .find(|(k, _)| k == "consistency")
            .and_then(|(_, v)| match v.as_str() {
                "eventual" => Some(Consistency::Eventual),
                "session" => Some(Consistency::Session),
                "global" => Some(Consistency::Global),
                _ => None,
            })
            .unwrap_or_else(|| self.fe.backend.router().consistency());
        // Session positions are not learnt where nothing needs them (an `eventual` cluster
        // without a causal key), and with a causal key but no Redis the client's writes through
        // other instances cannot be known: a `session` read then waits for the primary's
        // position instead, which covers the client's own writes too.
        if level == Consistency::Session && !self.learns_positions()
            || level == Consistency::Session
                && self.causal.shared_key.is_some()
                && !self.shares_positions()
        {
            return Consistency::Global;
        }
        level
    }

    /// Where a read with read routing may run so that it sees what it must: `target` itself
    /// with the replicas still behind excluded, or the primary. Returns the target and the
    /// nodes to skip.
    pub(super) async fn causal_target(
        &mut self,
        verdict: &Verdict,
        route: &Route,
        target: Target,
        in_transaction: bool,
    ) -> (Target, NodeIndices) {
        let mut exclude: NodeIndices = target.exclude().into_iter().collect();
        if !route.is_read_routing() || target.pool.role() != PoolRole::Replica {
            return (target, exclude);
        }
        let consistency = self.consistency(verdict);
        let router = self.fe.backend.router().clone();
        let wait = router.causal_wait();
        if consistency != Consistency::Eventual
            && let Some(since) = self.causal.unknown_since
        {
            match router
                .primary_position_since(since, wait.max(GLOBAL_SAMPLE_WAIT))
                .await
            {
                Some(lsn) => {
                    self.causal.own = self.causal.own.max(Some(lsn));
                    self.causal.unknown_since = None;
                }
                // No writable node answers (the primary is down, none promoted yet): the write
                // is on the replicas or lost with the primary, and a primary read cannot run.
                // Reads go on from the replicas rather than fail.
                None if !primary_reachable(&router) => {}
                None => return self.to_primary(target, verdict, in_transaction),
            }
        }
        let mut required = match consistency {
            Consistency::Eventual => None,
            Consistency::Session | Consistency::Global => self.causal.required(),
        };
        if consistency == Consistency::Global {
            // Everything committed before this read began: a primary position sampled after now.
            let started = Instant::now();
            match router
                .primary_position_since(started, wait.max(GLOBAL_SAMPLE_WAIT))
                .await
            {
                Some(now) => required = required.max(Some(now)),
                None => return self.to_primary(target, verdict, in_transaction),
            }
        }
        let Some(lsn) = required else {
            return (target, exclude);
        };
        if !target.pool.wait_reached(lsn, wait).await {
            self.fe
                .stats
                .causal_primary
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return self.to_primary(target, verdict, in_transaction);
        }
        exclude.extend(target.pool.nodes_behind(lsn));
        (target, exclude)
    }

    /// The primary instead of `replica` (or the replica target itself when the cluster has no
    /// primary to go to).
    fn to_primary(
        &self,
        replica: Target,
        verdict: &Verdict,
        in_transaction: bool,
    ) -> (Target, NodeIndices) {
        match self.fe.backend.router().resolve_target(
            &Route::Primary,
            verdict.effective.kind,
            in_transaction,
        ) {
            Ok(primary) => {
                let exclude = primary.exclude().into_iter().collect();
                (primary, exclude)
            }
            Err(_) => {
                let exclude = replica.exclude().into_iter().collect();
                (replica, exclude)
            }
        }
    }

    /// The position a cached answer to this read must reflect (`CachedResponse::reflects`),
    /// 0 for any: what the read's routing would require of a replica, but for `global`, which
    /// the cache cannot know (it is held to the session's own positions).
    pub(super) fn cache_floor(&self, verdict: &Verdict) -> u64 {
        match self.causal.required() {
            Some(lsn) if self.consistency(verdict) != Consistency::Eventual => lsn.as_u64(),
            _ => 0,
        }
    }

    /// The nodes of `pool` a retried read must skip besides the failed one.
    pub(super) fn causal_exclude(&self, pool: &Pool) -> NodeIndices {
        match self.causal.required() {
            Some(lsn) if pool.role() == PoolRole::Replica => pool.nodes_behind(lsn),
            _ => NodeIndices::new(),
        }
    }

    /// A unit's ReadyForQuery: remember whether it wrote and, when the server is idle again
    /// after a unit that wrote on the primary, schedule the position probe.
    pub(super) fn causal_completed(&mut self, pending: &Pending, status: TransactionStatus) {
        self.causal.unit_wrote |= pending.wrote;
        if status != TransactionStatus::Idle || !self.causal.unit_wrote {
            return;
        }
        self.causal.unit_wrote = false;
        let on_replica = self
            .held
            .as_ref()
            .is_none_or(|h| h.pool.role() == PoolRole::Replica);
        let has_replicas = self
            .fe
            .backend
            .router()
            .pools()
            .any(|p| p.role() == PoolRole::Replica);
        self.causal.probe_due = !on_replica && has_replicas && self.learns_positions();
    }

    /// Whether the session learns the positions of its writes: not in an `eventual` cluster
    /// (unless the client shares its position with other instances), where no read asks.
    fn learns_positions(&self) -> bool {
        self.fe.backend.router().consistency() != Consistency::Eventual
            || self.causal.shared_key.is_some()
    }

    /// Sends the scheduled probe (after the client's ReadyForQuery is in its buffer).
    pub(super) async fn send_wal_probe(&mut self) -> Result<(), SessionEnd> {
        if !std::mem::take(&mut self.causal.probe_due) {
            return Ok(());
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let mut out = BytesMut::with_capacity(48);
        crate::backend::postgres::put_query(&mut out, WAL_PROBE);
        held.queue.push_back(Pending {
            silent: true,
            hide_ready: true,
            wal_probe: true,
            ..Pending::default()
        });
        held.conn
            .conn()
            .write_all(&out)
            .await
            .map_err(SessionEnd::Server)
    }

    /// The probe will not answer: the position is taken from the primary's polls instead.
    pub(super) fn causal_probe_lost(&mut self) {
        self.causal.unknown_since.get_or_insert_with(Instant::now);
        self.release_held_ready();
    }

    /// A message of the probe's answer: its one DataRow holds the position.
    pub(super) fn wal_probe_answer(&mut self, msg: &RawMessage) {
        if msg.tag() == b'E' {
            self.causal_probe_lost();
        }
        if msg.tag() != b'D' {
            return;
        }
        let Some(lsn) = first_text_column(msg.body_slice()).and_then(|t| t.parse::<Lsn>().ok())
        else {
            static NO_POSITION: crate::log_limit::LogLimit = crate::log_limit::LogLimit::standard();
            crate::warn_limited!(NO_POSITION, client = %self.peer, "the WAL position probe answered no position");
            self.causal_probe_lost();
            return;
        };
        let lsn = self.fe.backend.router().normalize(lsn);
        self.causal.own = self.causal.own.max(Some(lsn));
    }
}

/// Whether the cluster's writes pool has a node in rotation.
fn primary_reachable(router: &crate::route::Router) -> bool {
    router
        .pools()
        .any(|p| p.role() == PoolRole::Primary && p.has_available())
}

/// How long a `global` read waits at least for a fresh primary position (one poll round trip).
const GLOBAL_SAMPLE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The first column of a DataRow body as text.
fn first_text_column(body: &[u8]) -> Option<&str> {
    let columns = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if columns == 0 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(6..6 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_lsn_from_set_and_startup_options() {
        let mut state = CausalState::default();
        for sql in [
            "SET switchyard.min_lsn = '0/16B3748'",
            "set switchyard.min_lsn to '0/16B3748';",
            "SET SESSION switchyard.min_lsn='0/16B3748'",
        ] {
            state.setting_changed(&settings::Change::Set {
                name: MIN_LSN_SETTING.to_owned(),
                sql: sql.to_owned(),
            });
            assert_eq!(state.required(), Some(Lsn(0x16B3748)), "{sql}");
        }
        state.setting_changed(&settings::Change::ResetAll);
        assert_eq!(state.required(), None);
        let mut state = CausalState::from_startup(&[(
            "options".to_owned(),
            "-c search_path=x -c switchyard.min_lsn=1/0 -c switchyard.causal_key=order-42"
                .to_owned(),
        )]);
        assert_eq!(state.required(), Some(Lsn(1 << 32)));
        assert_eq!(state.shared_key.as_deref(), Some("order-42"));
        state.setting_changed(&settings::Change::Set {
            name: CAUSAL_KEY_SETTING.to_owned(),
            sql: "SET switchyard.causal_key = 'cart-7'".to_owned(),
        });
        assert_eq!(state.shared_key.as_deref(), Some("cart-7"));
        state.setting_changed(&settings::Change::Reset(CAUSAL_KEY_SETTING.to_owned()));
        assert!(state.shared_key_is_none());
    }

    #[test]
    fn reads_the_first_column_of_a_data_row() {
        let mut body = vec![0, 1, 0, 0, 0, 9];
        body.extend_from_slice(b"0/16B3748");
        assert_eq!(first_text_column(&body), Some("0/16B3748"));
        assert_eq!(first_text_column(&[0, 1, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(first_text_column(&[0, 0]), None);
    }
}

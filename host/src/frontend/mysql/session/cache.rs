//! The query cache seen from a MySQL session: the key of a read the policy caches (a text query,
//! or a prepared statement's execution with its parameters), the lookup, what a hit replays
//! (the server's frames as they came: the answer to COM_QUERY or COM_STMT_EXECUTE starts at
//! sequence id 1 whoever asks and names no statement id, so nothing needs patching), the capture
//! of a miss, and invalidation by table after writes.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Closed, Seen, Session};
use crate::cache::{CacheKey, CachedResponse, FillGuard, KeyEncoder, Lookup, TableRef};
use crate::config::Consistency;
use crate::metrics::{CacheOutcome, Outcome};
use crate::model::{Lsn, PoolRole, Protocol, StatementKind};
use crate::mysql::response::{Answer, MyError, track_recorded};
use crate::pipeline::Verdict;

/// An answer being recorded for the cache.
pub(super) struct Capture {
    pub(super) fill: FillGuard,
    pub(super) buf: BytesMut,
    pub(super) ttl: Duration,
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

impl Session {
    /// The cache key of a read the policy wants cached, if it may be: a read outside a
    /// transaction, in autocommit, from a client holding no connection state. `params`: the
    /// parameters of a prepared statement's execution (binary protocol), `None` for a text
    /// query; the two never share an entry, their answers differ in row format.
    pub(super) fn cache_key(
        &self,
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
            && !verdict.effective.flags.multi_statement
            && !self.in_transaction
            && self.autocommit
            && self.pinned.is_none()
            && self.held.is_none();
        if !cacheable {
            return None;
        }
        let shared = directive.shared || cache.config().shared;
        let database = self.database.as_deref().unwrap_or("");
        let mut encoder = KeyEncoder::new(
            Protocol::Mysql,
            database,
            &self.user.config.name,
            shared,
            directive.namespace.as_deref(),
            sql,
            1 + usize::from(params.is_some()) + self.settings.len(),
        );
        // In the encoder's (alphabetical) order: "params" < "protocol" < "set:…".
        match params {
            None => encoder.setting(&["protocol"], b"text"),
            Some(values) => {
                encoder.setting(&["params"], values);
                encoder.setting(&["protocol"], b"binary");
            }
        }
        // Settings in the order they ran: "set:000" < "set:001" < … keeps the encoder's order.
        for (i, setting) in self.settings.iter().enumerate() {
            encoder.setting(&["set:", &format!("{i:03}")], setting.as_bytes());
        }
        let mut tables = tables(self.database.as_deref(), &verdict.effective.tables_read);
        tables.sort();
        tables.dedup();
        Some(encoder.finish(directive.namespace.as_deref(), tables.into()))
    }

    /// The cache's part in a statement: marks `seen` with what the cache did and, on a hit,
    /// answers the client (`true`); on a miss the answer about to be relayed is recorded.
    /// `key`: `None` when the statement may not be cached.
    pub(super) async fn consult_cache(
        &mut self,
        key: Option<CacheKey>,
        verdict: &Verdict,
        seen: &mut Seen<'_>,
    ) -> Result<bool, Closed> {
        if verdict
            .decision
            .cache
            .as_ref()
            .is_some_and(|d| d.ttl_ms > 0)
        {
            seen.cache = CacheOutcome::NotCacheable;
        }
        let Some(key) = key else {
            return Ok(false);
        };
        seen.cache = CacheOutcome::Miss;
        match self.lookup(key, verdict).await? {
            CacheStep::Answered { failed } => {
                seen.cache = CacheOutcome::Hit;
                let outcome = Outcome::of(&verdict.decision.action);
                self.record(seen, Some(verdict), outcome, failed);
                Ok(true)
            }
            CacheStep::Fill(capture) => {
                self.capture = Some(capture);
                Ok(false)
            }
            CacheStep::Run => Ok(false),
        }
    }

    /// Looks a cacheable read up. An entry that may predate the session's own last write (by
    /// GTID) is not used: the read runs, routed causally, and stores nothing.
    async fn lookup(&mut self, key: CacheKey, verdict: &Verdict) -> Result<CacheStep, Closed> {
        let Some(cache) = self.fe.shared.cache.clone() else {
            return Ok(CacheStep::Run);
        };
        let floor = match self.own_position {
            Some(lsn) if self.fe.backend.router().consistency() != Consistency::Eventual => lsn.0,
            _ => 0,
        };
        let found = match cache.lookup_local(&key) {
            Some(entry) => Lookup::Hit(entry),
            None => {
                cache
                    .lookup_past_local(&key, cache.config().grace_time)
                    .await
            }
        };
        match found {
            Lookup::Hit(entry) if !entry.reflects(floor) => Ok(CacheStep::Run),
            Lookup::Hit(entry) => {
                let answer = track_recorded(Answer::ResultSets, &entry.body);
                self.note_statement(
                    answer.error,
                    answer.ended_with_rows.then_some(answer.rows),
                    answer.ok,
                    false,
                );
                self.out.extend_from_slice(&entry.body);
                self.flush().await?;
                Ok(CacheStep::Answered { failed: false })
            }
            Lookup::Failed(message) => {
                self.answer_error(MyError::new(1105, "HY000", message))
                    .await?;
                Ok(CacheStep::Answered { failed: true })
            }
            Lookup::Leader(fill) => Ok(CacheStep::Fill(Capture {
                fill,
                buf: BytesMut::new(),
                ttl: Duration::from_millis(
                    verdict
                        .decision
                        .cache
                        .as_ref()
                        .map_or(0, |c| u64::from(c.ttl_ms)),
                ),
            })),
            Lookup::Bypass => Ok(CacheStep::Run),
        }
    }

    /// Stores what the capture recorded, or tells waiting clients the read failed.
    pub(super) fn complete_capture(&mut self, capture: Capture, failed: bool) {
        if failed {
            capture.fill.fail("the read failed on the server");
            return;
        }
        let mut fill = capture.fill;
        let position = match &self.held {
            Some(held) if held.pool.role() == PoolRole::Primary => CachedResponse::COMPLETE,
            Some(held) => held.conn.bucket().node().position().map_or(0, Lsn::as_u64),
            None => 0,
        };
        if let (Some(window), Some(held)) = (self.fe.read_your_writes, &self.held)
            && held.pool.role() != PoolRole::Primary
        {
            fill.served_by_replica(window);
        }
        let response = CachedResponse::new(Bytes::new(), capture.buf.freeze(), capture.ttl)
            .with_position(position);
        tokio::spawn(fill.complete_now(response));
    }

    /// After a write: the entries that read its tables go, locally before the client has its
    /// answer (its next read must not be a stale hit), elsewhere in the background.
    pub(super) fn invalidate(&self, tables_written: &[String]) {
        if !self.fe.invalidate_on_write || tables_written.is_empty() {
            return;
        }
        let Some(cache) = self.fe.shared.cache.as_ref() else {
            return;
        };
        let mut by_db: HashMap<String, Vec<String>> = HashMap::new();
        for t in tables(self.database.as_deref(), tables_written) {
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
}

/// Tables as the cache tags them: `(database, table)`, a name qualified with its database
/// (`shop.orders`) under that database, others under the session's.
fn tables(database: Option<&str>, names: &[String]) -> Vec<TableRef> {
    names
        .iter()
        .map(|t| match t.split_once('.') {
            Some((db, table)) => TableRef::new(db, table),
            None => TableRef::new(database.unwrap_or(""), t.as_str()),
        })
        .collect()
}

//! The query cache seen from a session: the key of a cacheable read, the lookup, and what a
//! hit replays.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::cache::{CacheKey, FillGuard, KeyEncoder, Lookup, TableRef};
use crate::model::{Protocol, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::backend::ready_for_query;
use crate::postgres::protocol::{ErrorFields, TransactionStatus};

use super::extended::Item;
use super::{Session, SessionEnd};

/// A response being recorded for the cache.
pub(super) struct Capture {
    pub(super) fill: FillGuard,
    pub(super) buf: BytesMut,
    pub(super) ttl: Duration,
    /// ParseComplete of the batch: not part of what is replayed for other clients.
    pub(super) skip_parse: bool,
    /// What the answer is known to reflect (`CachedResponse::position`), set when the query is
    /// sent (see `Held::data_position`).
    pub(super) position: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) fn tables(&self, names: &[String]) -> Vec<TableRef> {
        tables(&self.database, names)
    }

    /// The cache key of a read the policy wants cached, if it may be. Runs for every cached
    /// read, hits included: see `postgres_key`.
    pub(super) fn cache_key(
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
            && !self
                .fe
                .shared
                .metrics
                .learned_writes
                .contains(Protocol::Postgres, verdict.effective.fingerprint)
            && self.status == TransactionStatus::Idle
            && self.held.is_none()
            // Another instance's entry may predate this client's write through it.
            && self.causal.shared_key_is_none();
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
    pub(super) fn key_tables(&mut self, names: &Arc<[String]>) -> Arc<[TableRef]> {
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
    pub(super) fn extended_cache_key(
        &mut self,
        verdict: &Verdict,
        items: &[Item],
    ) -> Option<CacheKey> {
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
        // Text that is not UTF-8 has only a lossy view, in which two different literals can
        // read the same: it never gets a key.
        if executes != 1 || !stmt.sql.is_utf8() {
            return None;
        }
        self.cache_key(verdict, stmt.sql.as_str(), Some(&rest))
    }

    /// Looks a cacheable read up. An entry that may predate a position the session's reads
    /// must see (its own writes, `switchyard.min_lsn`: see `causal`) is not used: the read runs
    /// as if uncached, routed causally, and stores nothing (the entry stays for sessions that
    /// can use it).
    pub(super) async fn lookup(
        &mut self,
        key: CacheKey,
        verdict: &Verdict,
        parse_complete: bool,
    ) -> Result<CacheStep, SessionEnd> {
        let Some(cache) = self.fe.shared.cache.as_ref() else {
            return Ok(CacheStep::Run);
        };
        let floor = self.cache_floor(verdict);
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
            Lookup::Hit(entry) if !entry.reflects(floor) => {
                self.fe
                    .stats
                    .causal_cache_bypass
                    .fetch_add(1, Ordering::Relaxed);
                Ok(CacheStep::Run)
            }
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
                ttl: ttl_of(verdict),
                skip_parse: false,
                position: 0,
            })),
            Lookup::Bypass => Ok(CacheStep::Run),
        }
    }
}

#[allow(clippy::large_enum_variant)] // short-lived, never stored
pub(super) enum CacheStep {
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

/// The key `CacheKey::builder` gives for `sql` with the settings `protocol` (`simple`, or
/// `extended` with `params`), `bind` (the Bind's parameters in hex) and `set:<name>` per session
/// setting; encoded without copying any of them. `tables` are sorted and deduplicated.
#[allow(clippy::too_many_arguments)]
pub(super) fn postgres_key<'a>(
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
pub(super) fn tables(database: &str, names: &[String]) -> Vec<TableRef> {
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

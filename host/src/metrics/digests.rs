//! The digest table: per statement fingerprint, how often it ran, for how long and how often it
//! failed (ProxySQL's `stats_mysql_query_digest`). Shown by `GET /digests`.
//!
//! Sharded by fingerprint; a statement seen before only takes its shard's read lock and bumps
//! atomics, so many threads running one hot statement do not serialise on a lock. The write lock
//! is taken once per new fingerprint. Bounded: past `capacity` fingerprints, new ones are only
//! counted in `dropped` (a flood of unique statements must not grow the process).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::Protocol;

const SHARDS: usize = 32;
/// Digest text longer than this is cut (the table is for people).
const MAX_TEXT: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct DigestRow {
    pub protocol: &'static str,
    /// The fingerprint in hex, as `policy check` prints it.
    pub fingerprint: String,
    /// The statement with literals as `?`.
    pub digest_text: String,
    pub count: u64,
    pub errors: u64,
    pub total_time_us: u64,
    pub max_time_us: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Debug)]
struct Stats {
    text: String,
    count: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    max_us: AtomicU64,
    /// Time on a server (sent to answered), for statements that reached one.
    server_us: AtomicU64,
    server_count: AtomicU64,
    first_seen: u64,
    last_seen: AtomicU64,
}

impl Stats {
    fn add(&self, us: u64, server: Option<Duration>, failed: bool, now: u64) {
        if let Some(server) = server {
            let us = u64::try_from(server.as_micros()).unwrap_or(u64::MAX);
            self.server_us.fetch_add(us, Ordering::Relaxed);
            self.server_count.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.last_seen.store(now, Ordering::Relaxed);
    }
}

type Shard = RwLock<HashMap<(Protocol, u64), Stats>>;

#[derive(Debug)]
pub struct Digests {
    shards: Box<[Shard]>,
    per_shard: usize,
    dropped: AtomicU64,
}

/// Which column `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestOrder {
    Count,
    TotalTime,
    Errors,
}

impl Digests {
    pub fn new(capacity: usize) -> Self {
        Digests {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn record(
        &self,
        protocol: Protocol,
        fingerprint: u64,
        sql: &str,
        elapsed: Duration,
        server: Option<Duration>,
        failed: bool,
    ) {
        let shard = &self.shards[(fingerprint as usize) % SHARDS];
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let now = unix_now();
        let key = (protocol, fingerprint);
        if let Some(stats) = shard.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            stats.add(us, server, failed, now);
            return;
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= self.per_shard {
            drop(map);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        map.entry(key)
            .or_insert_with(|| Stats {
                // Once per fingerprint: rare, and bounded.
                text: crate::classify::digest_text(protocol, sql, MAX_TEXT),
                count: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                total_us: AtomicU64::new(0),
                max_us: AtomicU64::new(0),
                server_us: AtomicU64::new(0),
                server_count: AtomicU64::new(0),
                first_seen: now,
                last_seen: AtomicU64::new(now),
            })
            .add(us, server, failed, now);
    }

    /// The mean time a statement shape spent on a server, in µs, once it has reached one.
    pub fn mean_server_us(&self, protocol: Protocol, fingerprint: u64) -> Option<u64> {
        let shard = &self.shards[(fingerprint as usize) % SHARDS];
        let map = shard.read().unwrap_or_else(|p| p.into_inner());
        let stats = map.get(&(protocol, fingerprint))?;
        let count = stats.server_count.load(Ordering::Relaxed);
        (count > 0).then(|| stats.server_us.load(Ordering::Relaxed) / count)
    }

    /// Statements not recorded because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The `limit` largest rows by `order`.
    pub fn top(&self, order: DigestOrder, limit: usize) -> Vec<DigestRow> {
        let mut rows = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            rows.extend(map.iter().map(|((protocol, fp), s)| DigestRow {
                protocol: protocol.as_str(),
                fingerprint: format!("{fp:016x}"),
                digest_text: s.text.clone(),
                count: get(&s.count),
                errors: get(&s.errors),
                total_time_us: get(&s.total_us),
                max_time_us: get(&s.max_us),
                first_seen: s.first_seen,
                last_seen: get(&s.last_seen),
            }));
        }
        let key = |r: &DigestRow| match order {
            DigestOrder::Count => r.count,
            DigestOrder::TotalTime => r.total_time_us,
            DigestOrder::Errors => r.errors,
        };
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then(a.fingerprint.cmp(&b.fingerprint)));
        rows.truncate(limit);
        rows
    }

    /// Empties the table (`DELETE /digests`).
    pub fn reset(&self) {
        for shard in self.shards.iter() {
            shard.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::fingerprint;

    #[test]
    fn statements_differing_in_literals_share_a_row_with_placeholders() {
        let d = Digests::new(100);
        for (sql, ms, failed) in [
            ("SELECT * FROM t WHERE id = 1", 2, false),
            ("select *  from t where id = 42", 4, true),
            ("SELECT 1", 1, false),
        ] {
            let fp = fingerprint(Protocol::Postgres, sql);
            d.record(
                Protocol::Postgres,
                fp,
                sql,
                Duration::from_millis(ms),
                (ms > 1).then(|| Duration::from_millis(ms - 1)),
                failed,
            );
        }
        let shape = fingerprint(Protocol::Postgres, "SELECT * FROM t WHERE id = 1");
        // The mean of the server times recorded (1 and 3 ms), not of the whole statements'.
        assert_eq!(d.mean_server_us(Protocol::Postgres, shape), Some(2000));
        let one = fingerprint(Protocol::Postgres, "SELECT 1");
        assert_eq!(d.mean_server_us(Protocol::Postgres, one), None);
        let top = d.top(DigestOrder::Count, 10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].count, 2);
        assert_eq!(top[0].errors, 1);
        assert_eq!(top[0].total_time_us, 6000);
        assert_eq!(top[0].max_time_us, 4000);
        assert_eq!(top[0].digest_text, "SELECT * FROM t WHERE id = ?");
        assert_eq!(d.top(DigestOrder::TotalTime, 1)[0].count, 2);
    }

    #[test]
    fn a_full_table_counts_what_it_drops() {
        let d = Digests::new(SHARDS);
        for i in 0..(SHARDS * 4) as u64 {
            d.record(
                Protocol::Postgres,
                i,
                "SELECT 1",
                Duration::ZERO,
                None,
                false,
            );
        }
        let kept = d.top(DigestOrder::Count, usize::MAX).len() as u64;
        assert_eq!(kept, SHARDS as u64);
        assert_eq!(d.dropped(), (SHARDS * 3) as u64);
    }
}

//! Invalidation by generation counters: no scan of the cache, O(tags) per hit.
//!
//! Every table (database, table), every namespace and the cache as a whole have a counter. An
//! invalidation takes the next value of one global sequence and writes it into the counters it
//! touches. An entry keeps the counters it depends on together with their values when it was
//! stored (a [`Stamp`]); it is fresh while all of them are unchanged, which a hit checks with a
//! few atomic loads — the entry holds the counters themselves, so a hit does no map lookup.
//!
//! A fill snapshots the global sequence *before* the query runs. When it stores, a counter
//! above that snapshot means the table changed while the query ran, so its result may predate
//! the write: it is not stored. This closes the race "read old data, write + invalidate, store
//! the old data" without any lock between readers and writers.
//!
//! The same snapshot guards single-flight: a flight remembers the snapshot its leader took, and a
//! lookup does not join a flight when something the key depends on was invalidated after it
//! ([`Generations::changed_since`]). Otherwise a session that has just written (and invalidated)
//! could be handed the answer of a query sent before its write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::key::{CacheKey, TableRef};
use super::shard::Sharded;

type Counter = Arc<AtomicU64>;

pub(crate) struct Generations {
    seq: AtomicU64,
    all: Counter,
    namespaces: Sharded<Arc<str>, Counter>,
    tables: Sharded<TableRef, Counter>,
    /// When each table was last invalidated (written), for fills served by a replica that may
    /// lag: counters order events, but a replica's lag is a matter of time.
    written: Sharded<TableRef, Instant>,
}

/// The generations an entry was built with.
pub(crate) struct Stamp {
    deps: Box<[(Counter, u64)]>,
}

impl Stamp {
    /// Whether no table, namespace or purge-all touched the entry since it was stored.
    pub(crate) fn is_fresh(&self) -> bool {
        self.deps
            .iter()
            .all(|(counter, seen)| counter.load(Ordering::Acquire) == *seen)
    }

    /// Number of counters, for the entry's weight.
    pub(crate) fn len(&self) -> usize {
        self.deps.len()
    }
}

impl Generations {
    pub(crate) fn new() -> Self {
        Generations {
            seq: AtomicU64::new(0),
            all: Arc::new(AtomicU64::new(0)),
            namespaces: Sharded::new(),
            tables: Sharded::new(),
            written: Sharded::new(),
        }
    }

    /// The snapshot a fill takes before its query runs.
    pub(crate) fn snapshot(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// The stamp for an entry of `key` whose fill started at `since`, or `None` when something
    /// it depends on was invalidated after `since`.
    pub(crate) fn stamp(&self, key: &CacheKey, since: u64) -> Option<Stamp> {
        let mut deps = Vec::with_capacity(2 + key.tables().len());
        deps.push(self.all.clone());
        if let Some(ns) = key.namespace() {
            deps.push(self.namespace_counter(ns));
        }
        for table in key.tables() {
            deps.push(counter(&self.tables, table));
        }
        let deps: Box<[(Counter, u64)]> = deps
            .into_iter()
            .map(|c| {
                let seen = c.load(Ordering::SeqCst);
                (c, seen)
            })
            .collect();
        deps.iter()
            .all(|(_, seen)| *seen <= since)
            .then_some(Stamp { deps })
    }

    /// Whether anything `key` depends on was invalidated after the snapshot `since`: a query sent
    /// after `since` was taken may predate that invalidation's write. Creates no counter (one
    /// that does not exist was never bumped).
    pub(crate) fn changed_since(&self, key: &CacheKey, since: u64) -> bool {
        let moved = |c: Option<Counter>| c.is_some_and(|c| c.load(Ordering::SeqCst) > since);
        if self.all.load(Ordering::SeqCst) > since {
            return true;
        }
        if let Some(ns) = key.namespace()
            && moved(self.namespaces.with(ns, |map| map.get(ns).cloned()))
        {
            return true;
        }
        key.tables()
            .iter()
            .any(|t| moved(self.tables.with(t, |map| map.get(t).cloned())))
    }

    /// Whether a table `key` reads was invalidated (written) at or after `instant`.
    pub(crate) fn written_since(&self, key: &CacheKey, instant: Instant) -> bool {
        key.tables().iter().any(|t| {
            self.written
                .with(t, |map| map.get(t).is_some_and(|at| *at >= instant))
        })
    }

    pub(crate) fn invalidate_tables<T: AsRef<str>>(&self, database: &str, tables: &[T]) {
        let generation = self.next();
        let now = Instant::now();
        for table in tables {
            let table = TableRef::new(database, table.as_ref());
            self.written.with(&table, |map| match map.get_mut(&table) {
                Some(at) => *at = (*at).max(now),
                None => {
                    map.insert(table.clone(), now);
                }
            });
            counter(&self.tables, &table).fetch_max(generation, Ordering::SeqCst);
        }
    }

    pub(crate) fn invalidate_namespace(&self, namespace: &str) {
        let generation = self.next();
        self.namespace_counter(namespace)
            .fetch_max(generation, Ordering::SeqCst);
    }

    pub(crate) fn invalidate_all(&self) {
        let generation = self.next();
        self.all.fetch_max(generation, Ordering::SeqCst);
    }

    fn namespace_counter(&self, namespace: &str) -> Counter {
        self.namespaces
            .with(namespace, |map| match map.get(namespace) {
                Some(c) => c.clone(),
                None => map.entry(Arc::from(namespace)).or_default().clone(),
            })
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The counter of `table`, created on first use. An invalidation creates it too, so that a fill
/// which started before the invalidation and stores after it still sees the change.
fn counter(map: &Sharded<TableRef, Counter>, table: &TableRef) -> Counter {
    map.with(table, |map| match map.get(table) {
        Some(c) => c.clone(),
        None => map.entry(table.clone()).or_default().clone(),
    })
}

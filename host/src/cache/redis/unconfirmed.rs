//! What Redis may not know yet of this replica's invalidations.
//!
//! A write's invalidation is applied to the local tier before its client is answered, but reaches
//! Redis (`INCR` of the table's generation) only afterwards, in the background. Until it lands,
//! Redis still holds and validates entries older than the write: a lookup from the writer (whose
//! local entry is gone, so it asks Redis) would be served one. So an invalidation is registered
//! here before it is applied locally and released once Redis has answered it, and a lookup of a
//! key reading a registered table does not read Redis ([`Unconfirmed::covers`]).
//!
//! An invalidation that fails to reach Redis (or whose future is dropped before it does) is
//! *lost*: Redis keeps validating older entries until the purge of everything that makes it good
//! (`pubsub.rs`) lands. While one is lost, no lookup reads Redis. Lost and repaired are counters
//! rather than one flag, so that an invalidation lost while a purge is being delivered is not
//! cleared by that purge's success.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::cache::shard::Sharded;
use crate::cache::{CacheKey, Invalidation, TableRef};

pub(crate) struct Unconfirmed {
    /// Registered table invalidations in flight, to skip the map when there are none (the common
    /// case on read-mostly traffic).
    in_flight: AtomicUsize,
    tables: Sharded<TableRef, usize>,
    /// Invalidations lost so far.
    lost: AtomicU64,
    /// `lost` as it was when the last successful purge of everything was read.
    repaired: AtomicU64,
}

impl Unconfirmed {
    pub(crate) fn new() -> Self {
        Unconfirmed {
            in_flight: AtomicUsize::new(0),
            tables: Sharded::new(),
            lost: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
        }
    }

    /// Whether Redis may lack an invalidation of ours that `key` depends on.
    pub(crate) fn covers(&self, key: &CacheKey) -> bool {
        if self.is_lost() {
            return true;
        }
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return false;
        }
        key.tables()
            .iter()
            .any(|t| self.tables.with(t, |map| map.contains_key(t)))
    }

    /// Registers `invalidation` until the returned guard is [finished](InFlight::finish) (Redis
    /// answered) or dropped (lost). Purges of a namespace or of everything are awaited by their
    /// callers before anything reads again, so only tables are registered.
    pub(crate) fn register(self: &Arc<Self>, invalidation: &Invalidation) -> InFlight {
        let tables = match invalidation {
            Invalidation::Tables { database, tables } => tables
                .iter()
                .map(|t| TableRef::new(database.as_str(), t.as_str()))
                .collect(),
            Invalidation::Namespace(_) | Invalidation::All => Vec::new(),
        };
        for table in &tables {
            self.tables
                .with(table, |map| *map.entry(table.clone()).or_default() += 1);
        }
        self.in_flight.fetch_add(tables.len(), Ordering::SeqCst);
        InFlight {
            owner: Arc::downgrade(self),
            tables,
            delivered: false,
        }
    }

    pub(crate) fn mark_lost(&self) {
        self.lost.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst) > self.repaired.load(Ordering::SeqCst)
    }

    /// The mark to pass to [`Self::repaired`] once a purge started now has landed.
    pub(crate) fn lost_mark(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// A purge of everything that started when `lost` was `mark` landed: every invalidation lost
    /// before it is made good.
    pub(crate) fn repaired(&self, mark: u64) {
        self.repaired.fetch_max(mark, Ordering::SeqCst);
    }
}

/// One registered invalidation on its way to Redis.
pub(crate) struct InFlight {
    owner: Weak<Unconfirmed>,
    tables: Vec<TableRef>,
    delivered: bool,
}

impl InFlight {
    /// Redis answered; `landed` says whether the invalidation is there. One that did not land is
    /// recorded as lost before its tables are released, so that at no moment neither keeps
    /// lookups off Redis.
    pub(crate) fn finish(mut self, landed: bool) {
        self.delivered = landed;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(owner) = self.owner.upgrade() else {
            return;
        };
        if !self.delivered {
            owner.mark_lost();
        }
        for table in &self.tables {
            owner.tables.with(table, |map| {
                if let Some(n) = map.get_mut(table) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(table);
                    }
                }
            });
        }
        owner
            .in_flight
            .fetch_sub(self.tables.len(), Ordering::SeqCst);
    }
}

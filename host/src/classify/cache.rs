//! `Classifier`: `classify` behind a small concurrent cache keyed by the exact SQL text.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::model::{Classification, Protocol};

/// Texts longer than this are classified every time: they are mostly one-off bulk `INSERT`s, and
/// keeping them would let a few clients pin megabytes in the cache.
pub const MAX_CACHED_SQL: usize = 16 * 1024;

/// Classifies statements, remembering the answer for texts seen before.
///
/// Applications send the same few hundred statement texts over and over (prepared statements,
/// ORM queries), so an exact-text cache turns a ~10 µs parse into a hash and a compare.
///
/// Design: a fixed, direct-mapped array of slots, each an `ArcSwapOption<Entry>`. A lookup hashes
/// the text (xxh3 with a per-instance random seed, so nobody can aim texts at one slot), loads
/// the slot without taking a lock, and compares protocol and the full text, so a hash collision
/// is a miss, never a wrong answer. A miss classifies and overwrites the slot. There is no global
/// lock and no lock at all on the hit path: readers never wait on each other or on writers, and
/// memory is bounded by `capacity` entries of at most `MAX_CACHED_SQL` bytes of text each.
/// The price of direct mapping is that two hot texts landing in one slot keep evicting each other;
/// that costs a re-classification, and a capacity a few times the working set makes it rare.
pub struct Classifier {
    slots: Box<[ArcSwapOption<Entry>]>,
    /// Second level, keyed by statement shape (the token stream with literals replaced): texts
    /// that differ only in literals — every `pgbench -S` query, ORMs that inline values — are
    /// parsed once per shape instead of once per text. A lexer pass costs a fraction of a parse.
    shapes: Box<[ArcSwapOption<ShapeEntry>]>,
    /// Per slot, the hash of the last text with inline literals answered by its shape and not
    /// remembered: such a text is remembered on its second sighting only (hot keys repeat,
    /// `pgbench -S` literals do not), at the cost of one plain store for a one-off text.
    seen: Box<[AtomicU64]>,
    mask: usize,
    seed: u64,
}

struct Entry {
    protocol: Protocol,
    sql: Box<str>,
    classification: Classification,
}

struct ShapeEntry {
    protocol: Protocol,
    /// 128-bit keyed hash of the shape (see `fingerprint::shape_key`).
    key: u128,
    classification: Classification,
}

impl Classifier {
    /// A cache of `capacity` entries (rounded up to a power of two); 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let len = if capacity == 0 {
            0
        } else {
            capacity.next_power_of_two()
        };
        Classifier {
            slots: (0..len).map(|_| ArcSwapOption::empty()).collect(),
            shapes: (0..len).map(|_| ArcSwapOption::empty()).collect(),
            seen: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len.saturating_sub(1),
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Same answer as [`super::classify`], from the cache when this exact text was seen.
    pub fn classify(&self, protocol: Protocol, sql: &str) -> Classification {
        if self.slots.is_empty() || sql.len() > MAX_CACHED_SQL {
            return super::classify(protocol, sql);
        }
        let (hash, slot) = self.slot(protocol, sql);
        let Some(slot) = slot else {
            return super::classify(protocol, sql);
        };
        if let Some(entry) = slot.load().as_deref()
            && entry.holds(protocol, sql)
        {
            return entry.classification.clone();
        }
        let (classification, remember) = self.classify_shape(protocol, sql);
        if remember || self.seen_before(hash) {
            slot.store(Some(Arc::new(Entry {
                protocol,
                sql: sql.into(),
                classification: classification.clone(),
            })));
        }
        classification
    }
}

impl Entry {
    fn holds(&self, protocol: Protocol, sql: &str) -> bool {
        self.protocol == protocol && *self.sql == *sql
    }
}

impl Classifier {
    /// The exact-text slot of `sql`, and the hash that chose it.
    fn slot(&self, protocol: Protocol, sql: &str) -> (u64, Option<&ArcSwapOption<Entry>>) {
        let hash = xxh3_64_with_seed(sql.as_bytes(), self.seed ^ protocol as u64);
        (hash, self.slots.get(hash as usize & self.mask))
    }

    /// Whether a text with this hash was let go before in its slot; notes it if not.
    fn seen_before(&self, hash: u64) -> bool {
        let Some(seen) = self.seen.get(hash as usize & self.mask) else {
            return false;
        };
        if seen.load(Ordering::Relaxed) == hash {
            return true;
        }
        seen.store(hash, Ordering::Relaxed);
        false
    }

    /// The classification of a text not seen before: from the shape cache when another text of
    /// the same shape was classified, else by parsing. The flag says whether the exact text is
    /// worth remembering at once: not when it carries inline literals and its shape was known
    /// (every `pgbench -S` text is new; storing each would cost an allocation and a slot write
    /// per statement for no later hit; see `seen`), but always after a parse.
    fn classify_shape(&self, protocol: Protocol, sql: &str) -> (Classification, bool) {
        let shape = super::fingerprint::shape_key(protocol, sql, self.seed);
        let key = shape.key;
        let Some(slot) = self.shapes.get(key as usize & self.mask) else {
            let parsed = super::classify_with_fingerprint(protocol, sql, shape.fingerprint);
            return (parsed, true);
        };
        if let Some(entry) = slot.load().as_deref()
            && entry.protocol == protocol
            && entry.key == key
        {
            return (entry.classification.clone(), !shape.inline_literals);
        }
        let classification = super::classify_with_fingerprint(protocol, sql, shape.fingerprint);
        slot.store(Some(Arc::new(ShapeEntry {
            protocol,
            key,
            classification: classification.clone(),
        })));
        (classification, true)
    }
}

#[cfg(test)]
impl Classifier {
    /// Whether this exact text has its own slot (for tests of what is remembered).
    pub(crate) fn remembers(&self, protocol: Protocol, sql: &str) -> bool {
        self.slot(protocol, sql).1.is_some_and(|slot| {
            slot.load()
                .as_deref()
                .is_some_and(|e| e.holds(protocol, sql))
        })
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

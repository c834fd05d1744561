//! A read-mostly map from label values to a metric cell, for metrics recorded on every query.
//!
//! Reads are lock-free (an `arc-swap` load and a hash lookup on the borrowed label values, no
//! allocation, and no reference count touched: the cells are shared by every worker thread, and
//! bumping an `Arc` of one costs a contended cache line per query); a new label set copies the
//! map under a mutex that only writers take, which happens once per distinct label set. Past
//! `cap` label sets, new ones share one overflow cell whose labels are all `_other`, so a policy
//! that tags with unbounded values cannot grow the process (or the scrape) without bound.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub const OVERFLOW: &str = "_other";

#[derive(Debug)]
pub struct Entry<T> {
    pub labels: Box<[Box<str>]>,
    pub value: T,
}

/// Keyed by [`LabelMap::hash`], already a seeded hash: the map uses it as is instead of hashing it
/// again with SipHash.
type Buckets<T> = HashMap<u64, Vec<Arc<Entry<T>>>, BuildHasherDefault<Prehashed>>;

#[derive(Debug)]
pub struct LabelMap<T> {
    map: ArcSwap<Buckets<T>>,
    /// Per map, random: label values can come from clients (user names, policy tags), so nobody
    /// can aim them at one bucket. A collision only lengthens a bucket: `find` compares the
    /// labels themselves.
    seed: u64,
    write: Mutex<()>,
    cap: usize,
}

impl<T: Default> LabelMap<T> {
    pub fn new(cap: usize) -> Self {
        LabelMap {
            map: ArcSwap::from_pointee(HashMap::default()),
            seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u64),
            write: Mutex::new(()),
            cap,
        }
    }

    /// Runs `f` on the cell of `labels`, creating it on first use.
    pub fn with<R>(&self, labels: &[&str], f: impl FnOnce(&T) -> R) -> R {
        let hash = self.hash(labels);
        {
            // The guard keeps the map, and so the cell, alive while `f` runs.
            let map = self.map.load();
            if let Some(entry) = find(&map, hash, labels) {
                return f(&entry.value);
            }
        }
        let entry = self.insert(hash, labels);
        f(&entry.value)
    }

    /// Each label's length goes in with it, so `["ab", "c"]` and `["a", "bc"]` differ.
    fn hash(&self, labels: &[&str]) -> u64 {
        labels.iter().fold(self.seed, |h, l| {
            xxh3_64_with_seed(l.as_bytes(), h ^ (l.len() as u64).rotate_left(32))
        })
    }

    fn insert(&self, hash: u64, labels: &[&str]) -> Arc<Entry<T>> {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load_full();
        if let Some(entry) = find(&current, hash, labels) {
            return entry.clone();
        }
        let count: usize = current.values().map(Vec::len).sum();
        let (hash, labels): (u64, Vec<&str>) = if count >= self.cap {
            let other = vec![OVERFLOW; labels.len()];
            let hash = self.hash(&other);
            if let Some(entry) = find(&current, hash, &other) {
                return entry.clone();
            }
            (hash, other)
        } else {
            (hash, labels.to_vec())
        };
        let entry = Arc::new(Entry {
            labels: labels.iter().map(|l| Box::<str>::from(*l)).collect(),
            value: T::default(),
        });
        let mut next = (*current).clone();
        next.entry(hash).or_default().push(entry.clone());
        self.map.store(Arc::new(next));
        entry
    }

    /// Every cell, for the exporter.
    pub fn entries(&self) -> Vec<Arc<Entry<T>>> {
        let mut all: Vec<Arc<Entry<T>>> = self.map.load().values().flatten().cloned().collect();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all
    }
}

fn find<'m, T>(map: &'m Buckets<T>, hash: u64, labels: &[&str]) -> Option<&'m Arc<Entry<T>>> {
    map.get(&hash)?.iter().find(|e| {
        e.labels.len() == labels.len() && e.labels.iter().zip(labels).all(|(a, b)| &**a == *b)
    })
}

/// Passes a `u64` key through (see [`Buckets`]).
#[derive(Debug, Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with it; fold anything else in rather than lose it.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn label_sets_get_their_own_cells_until_the_cap() {
        let map: LabelMap<AtomicU64> = LabelMap::new(2);
        for labels in [["a", "x"], ["a", "x"], ["b", "y"], ["c", "z"], ["d", "w"]] {
            map.with(&labels, |c| c.fetch_add(1, Ordering::Relaxed));
        }
        let got: Vec<(Vec<String>, u64)> = map
            .entries()
            .iter()
            .map(|e| {
                (
                    e.labels.iter().map(|l| l.to_string()).collect(),
                    e.value.load(Ordering::Relaxed),
                )
            })
            .collect();
        let expect = |l: [&str; 2], n| (l.iter().map(|s| s.to_string()).collect(), n);
        assert_eq!(
            got,
            vec![
                expect([OVERFLOW, OVERFLOW], 2),
                expect(["a", "x"], 2),
                expect(["b", "y"], 1)
            ]
        );
    }
}

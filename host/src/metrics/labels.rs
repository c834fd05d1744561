//! A read-mostly map from label values to a metric cell, for metrics recorded on every query.
//!
//! Reads are lock-free (an `arc-swap` load and a hash lookup on the borrowed label values, no
//! allocation); a new label set copies the map under a mutex that only writers take, which happens
//! once per distinct label set. Past `cap` label sets, new ones share one overflow cell whose
//! labels are all `_other`, so a policy that tags with unbounded values cannot grow the process
//! (or the scrape) without bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub const OVERFLOW: &str = "_other";

#[derive(Debug)]
pub struct Entry<T> {
    pub labels: Box<[Box<str>]>,
    pub value: T,
}

type Buckets<T> = HashMap<u64, Vec<Arc<Entry<T>>>>;

#[derive(Debug)]
pub struct LabelMap<T> {
    map: ArcSwap<Buckets<T>>,
    hasher: RandomState,
    write: Mutex<()>,
    cap: usize,
}

impl<T: Default> LabelMap<T> {
    pub fn new(cap: usize) -> Self {
        LabelMap {
            map: ArcSwap::from_pointee(HashMap::new()),
            hasher: RandomState::new(),
            write: Mutex::new(()),
            cap,
        }
    }

    /// Runs `f` on the cell of `labels`, creating it on first use.
    pub fn with<R>(&self, labels: &[&str], f: impl FnOnce(&T) -> R) -> R {
        let hash = self.hasher.hash_one(labels);
        if let Some(entry) = find(&self.map.load(), hash, labels) {
            return f(&entry.value);
        }
        let entry = self.insert(hash, labels);
        f(&entry.value)
    }

    fn insert(&self, hash: u64, labels: &[&str]) -> Arc<Entry<T>> {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load_full();
        if let Some(entry) = find(&current, hash, labels) {
            return entry;
        }
        let count: usize = current.values().map(Vec::len).sum();
        let (hash, labels): (u64, Vec<&str>) = if count >= self.cap {
            let other = vec![OVERFLOW; labels.len()];
            let hash = self.hasher.hash_one(other.as_slice());
            if let Some(entry) = find(&current, hash, &other) {
                return entry;
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

fn find<T>(map: &Buckets<T>, hash: u64, labels: &[&str]) -> Option<Arc<Entry<T>>> {
    map.get(&hash)?
        .iter()
        .find(|e| {
            e.labels.len() == labels.len() && e.labels.iter().zip(labels).all(|(a, b)| &**a == *b)
        })
        .cloned()
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

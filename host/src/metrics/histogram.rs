//! A latency histogram made of atomics: recording is a few relaxed adds, no lock.
//!
//! prometheus-client's own `Histogram` takes a write lock on every observation; one histogram per
//! frontend would put a lock every query takes on the hot path, so observations land here and the
//! exporter reads them at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds of end-to-end and backend latency buckets (100 µs .. 30 s).
pub const QUERY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Upper bounds in seconds of policy call buckets (1 µs .. 10 ms: the default deadline).
pub const POLICY_BUCKETS: &[f64] = &[
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01,
];

#[derive(Debug)]
pub struct AtomicHistogram {
    /// Bucket bounds in nanoseconds, from `bounds_s`.
    bounds_ns: Box<[u64]>,
    bounds_s: &'static [f64],
    /// One more than the bounds: the last counts what is above every bound (+Inf).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds_s: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds_ns: bounds_s.iter().map(|s| (s * 1e9) as u64).collect(),
            bounds_s,
            counts: (0..=bounds_s.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and cumulative `(upper bound, count)` pairs ending with +Inf: the
    /// shape the Prometheus encoder takes.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let bound = self.bounds_s.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, cumulative, buckets)
    }

    /// The smallest bucket bound below which at least `q` of the observations fall (a coarse
    /// quantile for the admin API; Prometheus computes its own from the buckets).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let (_, count, buckets) = self.snapshot();
        if count == 0 {
            return None;
        }
        let target = (count as f64 * q).ceil() as u64;
        buckets.iter().find(|(_, c)| *c >= target).map(|(b, _)| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 3), (f64::INFINITY, 4)]);
        assert!((sum - 1.0065).abs() < 1e-9, "{sum}");
        assert_eq!(h.quantile_bound(0.5), Some(0.001));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
    }
}

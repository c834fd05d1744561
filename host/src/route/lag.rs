//! Replica lag from WAL positions. The positions the pollers sample are the one source of truth:
//! lag in bytes is the primary's last known position minus the replica's replay position, lag
//! in time comes from a history of the primary's positions, and both feed the pools'
//! `max_replica_lag` / `max_replica_lag_bytes` limits as well as the admin views, the metrics
//! and the policy's backend state.

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::node::now_ms;
use super::{NodeState, Pool, PositionSample, Router};
use crate::model::Lsn;

/// Samples kept. Older ones are merged as the history fills (see [`PrimaryHistory::record`]),
/// so it spans any lag, with a resolution that coarsens with age.
const CAPACITY: usize = 256;
/// A sample this close to the previous one is merged into it: on-demand polls can come
/// back-to-back, and a history of them would cover too short a time.
const MIN_SPACING_MS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    lsn: Lsn,
    /// `now_ms` clock.
    at_ms: u64,
}

/// The primary's position over time: when it was first seen at or past each position.
///
/// Positions only grow within a history. A merged sample keeps the earlier time with the later
/// position: it claims the primary got there sooner than seen, which can only make a lag
/// estimate larger, never hide one.
#[derive(Debug, Default)]
pub(super) struct PrimaryHistory {
    samples: VecDeque<Sample>,
}

impl PrimaryHistory {
    /// The newest position.
    pub fn last(&self) -> Option<Lsn> {
        self.samples.back().map(|s| s.lsn)
    }

    /// Records the primary at `lsn` at `at_ms`.
    pub fn record(&mut self, lsn: Lsn, at_ms: u64) {
        let Some(last) = self.samples.back_mut() else {
            self.samples.push_back(Sample { lsn, at_ms });
            return;
        };
        if lsn < last.lsn {
            // The log went back: another node took over (a promotion, on its own timeline).
            // The old positions say nothing about the new primary's.
            self.samples.clear();
        } else if lsn == last.lsn {
            // Only the first time it was seen there matters.
            return;
        } else if at_ms.saturating_sub(last.at_ms) < MIN_SPACING_MS {
            last.lsn = lsn;
            return;
        }
        self.samples.push_back(Sample { lsn, at_ms });
        if self.samples.len() > CAPACITY {
            self.thin_oldest_half();
        }
    }

    /// Merges the older half's samples pairwise: each fill doubles the time the oldest part
    /// covers, and recent samples, which small lags need, stay sharp.
    fn thin_oldest_half(&mut self) {
        let half = self.samples.len() / 2;
        let mut kept = VecDeque::with_capacity(CAPACITY);
        let mut old = self.samples.drain(..half);
        while let Some(mut first) = old.next() {
            if let Some(second) = old.next() {
                first.lsn = second.lsn;
            }
            kept.push_back(first);
        }
        drop(old);
        kept.extend(self.samples.drain(..));
        self.samples = kept;
    }

    /// How long a node at `replayed` has been behind, as of `now_ms`: the time since the
    /// primary was first seen past `replayed` (0 when the primary was never seen past it).
    /// Sampling makes it short by up to one poll interval at worst. `None`: no history.
    ///
    /// "Past", not "at": a primary seen exactly at the replica's position had written nothing
    /// the replica lacks, so that time does not count (with "at", a replica that stopped on an
    /// idle primary would show the whole idle time as lag once the primary wrote again).
    pub fn lag_ms(&self, replayed: Lsn, now_ms: u64) -> Option<u64> {
        let last = self.samples.back()?;
        if last.lsn <= replayed {
            return Some(0);
        }
        // Positions grow along the history: the first one past `replayed` is found by halving.
        // If even the oldest is past it, the replica is behind all of the history, and the
        // history's age is what can be said (a lower bound).
        let first_past = self.samples.partition_point(|s| s.lsn <= replayed);
        let at = self.samples.get(first_past).map_or(last.at_ms, |s| s.at_ms);
        Some(now_ms.saturating_sub(at))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.samples.len()
    }
}

// === impl Router ===

impl Router {
    /// Takes a poll's answer for `node` (`None`: the poll failed, the position is unknown until
    /// one succeeds): the node's position, the cluster's primary position, and every replica's
    /// lag and whether it is over its pool's limit. Then wakes whoever waits for a poll.
    pub fn record_position(&self, node: &NodeState, sample: Option<PositionSample>) {
        node.wal().store(sample);
        let now = now_ms();
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if sample.is_some_and(|s| s.writable) {
                // Every writable node counts: after a promotion the old primary may still be
                // up (Switchyard does not arbitrate split brain), and the larger position is
                // the one no read may miss.
                let primary = self
                    .pools
                    .values()
                    .flat_map(|p| p.nodes())
                    .filter(|n| n.wal().is_writable() == Some(true))
                    .filter_map(|n| n.wal().lsn())
                    .max();
                if let Some(primary) = primary {
                    history.record(primary, now);
                    let last = history.last().unwrap_or(primary);
                    self.primary_lsn.store(last.0, Ordering::Release);
                }
            }
            for pool in self.pools.values() {
                for n in pool.nodes() {
                    refresh_lag(pool, n, &history, now);
                }
            }
        }
        node.wal().notify_polled();
    }
}

/// A standby's lag against the primary's last known position, and whether it is too far.
fn refresh_lag(pool: &Pool, node: &NodeState, history: &PrimaryHistory, now: u64) {
    let (Some(false), Some(replayed)) = (node.wal().is_writable(), node.wal().lsn()) else {
        node.set_lag(None, None, false);
        return;
    };
    let bytes = history.last().map(|primary| primary.bytes_after(replayed));
    let ms = history.lag_ms(replayed, now);
    let config = pool.config();
    let too_far = config
        .max_replica_lag
        .zip(ms)
        .is_some_and(|(max, ms)| u128::from(ms) > max.as_millis())
        || config
            .max_replica_lag_bytes
            .zip(bytes)
            .is_some_and(|(max, bytes)| bytes > max);
    node.set_lag(ms, bytes, too_far);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(samples: &[(u64, u64)]) -> PrimaryHistory {
        let mut h = PrimaryHistory::default();
        for &(lsn, at) in samples {
            h.record(Lsn(lsn), at);
        }
        h
    }

    #[test]
    fn no_history_no_estimate() {
        assert_eq!(PrimaryHistory::default().lag_ms(Lsn(5), 100), None);
    }

    #[test]
    fn a_replica_at_or_past_the_primary_has_no_lag() {
        let h = history(&[(100, 1_000), (200, 2_000)]);
        assert_eq!(h.lag_ms(Lsn(200), 9_000), Some(0));
        assert_eq!(h.lag_ms(Lsn(250), 9_000), Some(0));
    }

    #[test]
    fn lag_is_the_time_since_the_primary_first_went_past_the_replica() {
        let h = history(&[(100, 1_000), (200, 2_000), (300, 3_000)]);
        // The replica has 100: the primary was first seen past it at 2 s.
        assert_eq!(h.lag_ms(Lsn(100), 3_500), Some(1_500));
        assert_eq!(h.lag_ms(Lsn(150), 3_500), Some(1_500));
        assert_eq!(h.lag_ms(Lsn(200), 3_500), Some(500));
        // It grows while the replica stands still.
        assert_eq!(h.lag_ms(Lsn(200), 4_500), Some(1_500));
        // Behind all of the history: its age, a lower bound.
        assert_eq!(h.lag_ms(Lsn(50), 3_500), Some(2_500));
    }

    #[test]
    fn an_idle_primary_does_not_age_its_position() {
        // Seen at 100 for a long time, then it writes: a replica stopped at 100 lags from the
        // write on, not from when 100 was first seen.
        let h = history(&[(100, 1_000), (100, 50_000), (100, 90_000), (180, 100_000)]);
        assert_eq!(h.lag_ms(Lsn(100), 100_400), Some(400));
    }

    #[test]
    fn close_samples_merge_into_the_earlier_time() {
        let h = history(&[(100, 1_000), (150, 1_004), (160, 1_009), (300, 1_050)]);
        assert_eq!(h.len(), 2);
        // 150 and 160 count as seen at 1000: the estimate errs long, not short.
        assert_eq!(h.lag_ms(Lsn(120), 1_100), Some(100));
        assert_eq!(h.lag_ms(Lsn(160), 1_100), Some(50));
    }

    #[test]
    fn a_position_going_back_starts_a_new_history() {
        let h = history(&[(1_000, 1_000), (2_000, 2_000), (500, 3_000), (600, 4_000)]);
        assert_eq!(h.last(), Some(Lsn(600)));
        assert_eq!(h.lag_ms(Lsn(550), 4_500), Some(500));
        assert_eq!(h.lag_ms(Lsn(100), 4_500), Some(1_500));
    }

    #[test]
    fn a_full_history_keeps_spanning_from_its_start() {
        let mut h = PrimaryHistory::default();
        // 10 000 polls 100 ms apart, the primary writing all along.
        for i in 1..=10_000u64 {
            h.record(Lsn(i * 10), i * 100);
        }
        assert!(h.len() <= CAPACITY, "{}", h.len());
        let now = 10_000 * 100;
        // A replica stuck near the start still shows (nearly) the whole time.
        let stuck = h.lag_ms(Lsn(15), now).expect("history");
        assert!(stuck >= now - 2 * 100 * 64 && stuck <= now, "{stuck}");
        // Recent positions stay precise to a sample.
        assert_eq!(h.lag_ms(Lsn(9_990 * 10), now), Some(900));
        // Never short of the truth: the primary first went past 50 000 at 5 000 * 100 + 100.
        let mid = h.lag_ms(Lsn(50_000), now).expect("history");
        assert!(mid >= now - (5_001 * 100), "{mid}");
    }
}

//! Node selection strategies as pure functions over a snapshot of the available nodes, so they are
//! tested without servers or clocks.

use crate::config::Strategy;

/// What a strategy may know about one available node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Position of the node in its pool.
    pub index: usize,
    pub in_flight: u32,
    pub weight: u32,
    /// Latency average in microseconds (0: unknown yet).
    pub ewma_us: u64,
    /// A stable hash of the node's address (consistent hashing).
    pub addr_hash: u64,
}

/// The per-call inputs that vary: a shared counter's next value and a random number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Draw {
    pub tick: u64,
    pub random: u64,
}

/// Picks one of `candidates` (never empty) and returns its position in the slice.
pub(crate) fn select(
    strategy: Strategy,
    candidates: &[Candidate],
    draw: Draw,
    affinity: Option<u64>,
) -> usize {
    let n = candidates.len();
    debug_assert!(n > 0);
    if n <= 1 {
        return 0;
    }
    let modulo = |v: u64| usize::try_from(v % n as u64).unwrap_or(0);
    match strategy {
        Strategy::RoundRobin => modulo(draw.tick),
        Strategy::Random => modulo(draw.random),
        Strategy::LeastConn => {
            // Ties rotate, so equally idle nodes share the load.
            let start = modulo(draw.tick);
            (0..n)
                .map(|i| (start + i) % n)
                .min_by_key(|&i| candidates[i].in_flight)
                .unwrap_or(start)
        }
        Strategy::Weighted => {
            let total: u64 = candidates.iter().map(|c| u64::from(c.weight.max(1))).sum();
            // Multiplying by a prime coprime to `total` permutes each cycle of `total` ticks:
            // the split stays exact per cycle, but a 90/10 canary gets every ~10th query rather
            // than 10 in a row.
            let total = total.max(1);
            let slot = draw.tick % total;
            let mut point = if total.is_multiple_of(INTERLEAVE) {
                slot
            } else {
                let spread = u128::from(slot) * u128::from(INTERLEAVE) % u128::from(total);
                u64::try_from(spread).unwrap_or(slot)
            };
            for (i, c) in candidates.iter().enumerate() {
                let w = u64::from(c.weight.max(1));
                if point < w {
                    return i;
                }
                point -= w;
            }
            n - 1
        }
        Strategy::ConsistentHash => match affinity {
            // Rendezvous (highest random weight) hashing: a key moves only when its node leaves.
            Some(key) => (0..n)
                .max_by_key(|&i| mix(key ^ candidates[i].addr_hash))
                .unwrap_or(0),
            None => modulo(draw.tick),
        },
        Strategy::PeakEwma => {
            // Power of two choices on latency × load.
            let a = modulo(draw.random);
            let b = (a + 1 + modulo(draw.random >> 32) % (n - 1)) % n;
            let cost = |c: &Candidate| {
                u128::from(c.ewma_us.max(1)) * u128::from(c.in_flight.saturating_add(1))
            };
            if cost(&candidates[b]) < cost(&candidates[a]) {
                b
            } else {
                a
            }
        }
    }
}

/// A prime (2^32 / golden ratio): interleaves weighted picks (see `Strategy::Weighted`).
const INTERLEAVE: u64 = 2_654_435_761;

/// SplitMix64's finaliser: spreads the bits of a 64-bit value.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (affinity keys, node addresses).
pub(crate) fn hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

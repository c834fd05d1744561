//! Helpers for tests that assert on latency: a percentile, and a lock so that two such tests of
//! the binary never measure while the other floods the machine.

use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

static MEASURING: Mutex<()> = Mutex::const_new(());

/// Held for the whole of a latency test.
pub async fn alone() -> MutexGuard<'static, ()> {
    MEASURING.lock().await
}

/// The 99th percentile (nearest rank) of `samples`; panics when there are none.
pub fn p99(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100);
    samples[rank.saturating_sub(1)]
}

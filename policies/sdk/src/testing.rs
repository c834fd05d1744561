//! Test support: initialise a policy from literal key/values, and (on native targets, where the
//! host imports are stubs) control what [`crate::log`], [`crate::now_ms`] and
//! [`crate::backend_state`] do.
//!
//! The stub state is per thread, and `cargo test` runs each test on its own thread, so tests do
//! not see each other's logs, clock or backend state.

#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;

#[cfg(not(target_arch = "wasm32"))]
use crate::Level;
use crate::{Config, Policy, PoolRole, PoolState};

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    static NOW_MS: RefCell<Option<u64>> = const { RefCell::new(None) };
    static BACKENDS: RefCell<Vec<PoolState>> = const { RefCell::new(Vec::new()) };
}

/// `P::init` with the given key/values; panics with the policy's error if it refuses them.
pub fn init<P: Policy>(pairs: &[(&str, &str)]) -> P {
    match P::init(Config::from_pairs(pairs.iter().copied())) {
        Ok(p) => p,
        Err(e) => panic!("init refused the configuration: {e}"),
    }
}

/// `P::init` with the given key/values, returning its error (to test configuration checks).
pub fn init_err<P: Policy>(pairs: &[(&str, &str)]) -> String {
    match P::init(Config::from_pairs(pairs.iter().copied())) {
        Ok(_) => panic!("init accepted the configuration {pairs:?}"),
        Err(e) => e,
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Take the lines logged through [`crate::log`] on this thread so far.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with_borrow_mut(std::mem::take)
}

#[cfg(not(target_arch = "wasm32"))]
/// Pin what [`crate::now_ms`] returns on this thread (`None`: the system clock).
pub fn set_now_ms(ms: Option<u64>) {
    NOW_MS.with_borrow_mut(|n| *n = ms);
}

#[cfg(not(target_arch = "wasm32"))]
/// Set what [`crate::backend_state`] returns on this thread.
pub fn set_backend_state(pools: Vec<PoolState>) {
    BACKENDS.with_borrow_mut(|b| *b = pools);
}

/// A pool snapshot for [`set_backend_state`]: `healthy` of `total` nodes up, no lag known.
pub fn pool(name: &str, role: PoolRole, healthy: u32, total: u32) -> PoolState {
    PoolState {
        name: name.to_string(),
        role,
        healthy_nodes: healthy,
        total_nodes: total,
        replica_lag_ms: None,
        replica_lag_bytes: None,
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: Level, message: &str) {
    eprintln!("[policy {}] {message}", level.as_str());
    LOGS.with_borrow_mut(|l| l.push((level, message.to_string())));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now_ms() -> u64 {
    NOW_MS.with_borrow(|n| *n).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn backend_state() -> Vec<PoolState> {
    BACKENDS.with_borrow(|b| b.clone())
}

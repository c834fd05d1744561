//! The host imports (`switchyard:policy/host`), callable on every target.
//!
//! On `wasm32` they call the host. Elsewhere (native unit tests) they are stubs controlled by
//! [`crate::testing`]: `log` records the line (and prints it to the test's captured stderr),
//! `now_ms` reads the system clock unless a test pinned it, `backend_state` returns what the
//! test injected (empty by default).

use crate::{Level, PoolState};

/// Write a line to the proxy's log, tagged with the policy's name. This is the hot path:
/// rate-limit yourself.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::switchyard::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::switchyard::policy::host::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::now_ms();
}

/// The backend pools of the cluster this query is for, as the health checks last saw them.
/// The host builds the list lazily: call it only when you route on it.
pub fn backend_state() -> Vec<PoolState> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::switchyard::policy::host::backend_state();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::backend_state();
}

impl Level {
    /// The level's name in lower case (`"info"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl PoolState {
    /// True when at least one node of the pool is in rotation.
    pub fn is_up(&self) -> bool {
        self.healthy_nodes > 0
    }
}

//! The policy engine: runs the user's WebAssembly component (the `switchyard:policy` world in
//! `wit/`) once per statement and turns its answer into a [`Decision`].
//!
//! Shape:
//! - [`PolicyRuntime`] is shared by everything: one wasmtime `Engine` (with epoch interruption and a
//!   ticker thread) and the directory of precompiled artifacts.
//! - [`LoadedPolicy`] is one compiled, `init`-ed module with a bounded pool of reusable instances.
//! - [`PolicyHandle`] is what the hot path holds: an `arc-swap`ped current policy (or the built-in
//!   default), the failure mode, counters, and `reload()` for live swaps (file watcher, SIGHUP).
//!
//! A call never blocks on I/O: it is a bounded CPU computation (epoch deadline, memory cap), so the
//! frontends call [`PolicyHandle::decide`] inline on their task rather than paying for a thread hop
//! that would cost more than the call itself.

mod artifact;
mod bindings;
mod builtin;
pub mod cases;
mod deadline;
mod handle;
mod loaded;
mod runtime;
mod shadow;
mod state;
mod watch;

pub use crate::config::FailMode;
pub use builtin::builtin_decision;
pub use handle::{PolicyHandle, PolicySettings, PolicyStats, PolicyStatsSnapshot};
pub use loaded::{CompiledPolicy, InstanceLimits, LoadedPolicy};
pub use runtime::PolicyRuntime;
pub use shadow::ShadowStatsSnapshot;
pub use state::BackendStateSource;
pub use watch::PolicyWatcher;

use std::path::PathBuf;

/// Everything that can go wrong loading or calling a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a core Wasm module, not a component: build the policy for wasm32-wasip2 (or run `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a WebAssembly component")]
    NotWasm { path: PathBuf },
    #[error("cannot compile policy {path}: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("policy {path} does not fit the switchyard:policy world: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error(
        "policy {path} was built against the contract {found}; this Switchyard loads {expected}: \
         rebuild it with the current SDK (`wit/policy.wit`)"
    )]
    ContractVersion {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("policy {path} refused its configuration in init: {reason}")]
    Init { path: PathBuf, reason: String },
    #[error("policy `{policy}` failed: {reason}")]
    Call { policy: String, reason: CallFailure },
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Why one `on-query` call did not produce a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("deadline of {0:?} exceeded")]
    Deadline(std::time::Duration),
    #[error("memory limit of {0} bytes exceeded")]
    Memory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not start a fresh instance: {0}")]
    Instantiate(String),
}

//! Per-instance store state: the deny-all WASI context, the memory limiter and the host functions
//! the guest may import (`log`, `now-ms`, `backend-state`).

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{HostImports, Level, pool_state_to_wit, wit};
use super::deadline::CallDeadline;
use crate::model::PoolState;

/// Where `backend-state` gets its answer. The router implements it; the snapshot is only built when
/// a policy asks for it.
pub trait BackendStateSource: Send + Sync {
    fn pool_states(&self) -> Vec<PoolState>;
}

/// Longest message a guest may log in one call; longer ones are cut so a buggy policy cannot
/// flood the log with megabytes per query.
const MAX_LOG_MESSAGE: usize = 4096;

pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory_limit: usize,
    /// Set when the guest tried to grow past `memory_limit`, so the failure is reported as such
    /// rather than as a generic trap.
    pub memory_exceeded: bool,
    /// Linear memory of all the instance's memories together, in bytes (a Python or JS component
    /// has several); for measurements, the cap applies to each memory.
    pub linear_memory: usize,
    /// `linear_memory` once `init` returned: the instance's own size, before any call.
    pub baseline_memory: usize,
    /// The running call's deadline state (see `deadline.rs`).
    pub deadline: CallDeadline,
    /// The backend view of the statement being decided; replaced before each call.
    pub backend: Option<Arc<dyn BackendStateSource>>,
    policy_name: Arc<str>,
}

impl StoreState {
    pub fn new(policy_name: Arc<str>, memory_limit: usize) -> Self {
        // The defaults already deny filesystem (no preopens), env, args and stdin, and send
        // stdout/stderr nowhere; sockets are switched off explicitly rather than relying on the
        // default address check.
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            memory_limit,
            memory_exceeded: false,
            linear_memory: 0,
            baseline_memory: 0,
            deadline: CallDeadline::default(),
            backend: None,
            policy_name,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded",
                self.memory_limit
            )));
        }
        self.linear_memory += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any sane policy.
        Ok(desired <= 1 << 20)
    }
}

impl HostImports for StoreState {
    fn log(&mut self, level: Level, message: String) {
        let mut end = message.len().min(MAX_LOG_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = &message[..end];
        let policy = &*self.policy_name;
        match level {
            Level::Trace => {
                tracing::trace!(target: "switchyard::policy::guest", policy, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "switchyard::policy::guest", policy, "{message}")
            }
            Level::Info => tracing::info!(target: "switchyard::policy::guest", policy, "{message}"),
            Level::Warn => tracing::warn!(target: "switchyard::policy::guest", policy, "{message}"),
            Level::Error => {
                tracing::error!(target: "switchyard::policy::guest", policy, "{message}")
            }
        }
    }

    fn now_ms(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn backend_state(&mut self) -> Vec<wit::PoolState> {
        match &self.backend {
            Some(source) => source.pool_states().iter().map(pool_state_to_wit).collect(),
            None => Vec::new(),
        }
    }
}

impl wit::Host for StoreState {}

//! The hot-path handle: the current policy behind an `arc-swap`, the failure mode, counters and
//! live reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::builtin::builtin_decision;
use super::loaded::{InstanceLimits, LoadedPolicy};
use super::runtime::PolicyRuntime;
use super::state::BackendStateSource;
use super::{CallFailure, PolicyError};
use crate::config::FailMode;
use crate::model::{Decision, QueryContext};

/// How to load and run the policy.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// The component file; `None` runs the built-in default.
    pub path: Option<PathBuf>,
    pub fail_mode: FailMode,
    pub deadline: Duration,
    pub memory_limit: usize,
    pub instances: usize,
    /// The `[policy.config]` table, passed to `init`.
    pub config: Vec<(String, String)>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            path: None,
            fail_mode: FailMode::FailClosed,
            deadline: Duration::from_millis(10),
            memory_limit: 64 << 20,
            instances: 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            config: Vec::new(),
        }
    }
}

/// Counters over the life of the handle (they survive swaps).
#[derive(Debug, Default)]
pub struct PolicyStats {
    calls: AtomicU64,
    failures_deadline: AtomicU64,
    failures_memory: AtomicU64,
    failures_trap: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStatsSnapshot {
    pub calls: u64,
    pub failures_deadline: u64,
    pub failures_memory: u64,
    pub failures_trap: u64,
    /// Failed calls answered with the built-in default (`fail-open`).
    pub failed_open: u64,
    /// Failed calls turned into an error for the client (`fail-closed`).
    pub failed_closed: u64,
    pub reloads: u64,
    pub reload_failures: u64,
}

impl PolicyStats {
    pub fn snapshot(&self) -> PolicyStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PolicyStatsSnapshot {
            calls: get(&self.calls),
            failures_deadline: get(&self.failures_deadline),
            failures_memory: get(&self.failures_memory),
            failures_trap: get(&self.failures_trap),
            failed_open: get(&self.failed_open),
            failed_closed: get(&self.failed_closed),
            reloads: get(&self.reloads),
            reload_failures: get(&self.reload_failures),
        }
    }
}

pub struct PolicyHandle {
    runtime: PolicyRuntime,
    settings: PolicySettings,
    current: ArcSwapOption<LoadedPolicy>,
    stats: PolicyStats,
    /// Serialises reloads (watcher and SIGHUP may fire together); never taken on the hot path.
    reload_lock: Mutex<()>,
}

impl PolicyHandle {
    /// Loads the configured policy (blocking: reads and compiles the module). An error here means
    /// the proxy must not start.
    pub fn new(runtime: PolicyRuntime, settings: PolicySettings) -> Result<Self, PolicyError> {
        let handle = PolicyHandle {
            runtime,
            settings,
            current: ArcSwapOption::empty(),
            stats: PolicyStats::default(),
            reload_lock: Mutex::new(()),
        };
        if let Some(policy) = handle.load()? {
            handle.current.store(Some(Arc::new(policy)));
        }
        Ok(handle)
    }

    /// Decides one statement. `Err` only in `fail-closed` mode when the policy failed; its
    /// Display names the policy and the failure, for the client's error message.
    pub fn decide(
        &self,
        query: &QueryContext,
        backend: Option<&Arc<dyn BackendStateSource>>,
    ) -> Result<Decision, PolicyError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // The guard keeps this module alive for the call even if a swap happens meanwhile.
        let guard = self.current.load();
        let Some(policy) = guard.as_ref() else {
            return Ok(builtin_decision(query));
        };
        match policy.call(query, backend) {
            Ok(decision) => Ok(decision),
            Err(failure) => self.on_failure(policy, query, failure),
        }
    }

    fn on_failure(
        &self,
        policy: &LoadedPolicy,
        query: &QueryContext,
        failure: CallFailure,
    ) -> Result<Decision, PolicyError> {
        let counter = match failure {
            CallFailure::Deadline(_) => &self.stats.failures_deadline,
            CallFailure::Memory(_) => &self.stats.failures_memory,
            CallFailure::Trap(_) | CallFailure::Instantiate(_) => &self.stats.failures_trap,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(policy = policy.name(), fail_mode = ?self.settings.fail_mode, error = %failure, "policy call failed");
        match self.settings.fail_mode {
            FailMode::FailOpen => {
                self.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                Ok(builtin_decision(query))
            }
            FailMode::FailClosed => {
                self.stats.failed_closed.fetch_add(1, Ordering::Relaxed);
                Err(PolicyError::Call {
                    policy: policy.name().to_owned(),
                    reason: failure,
                })
            }
        }
    }

    /// Re-reads the policy file, compiles and `init`s it, and swaps it in. On error the running
    /// policy stays and the error (naming the file and the reason) is returned and logged.
    /// Blocking: run it on a blocking thread.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.load() {
            Ok(policy) => {
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = &policy {
                    tracing::info!(policy = p.name(), sha256 = p.sha256(), path = %p.path().display(), "policy loaded");
                }
                self.current.store(policy.map(Arc::new));
                Ok(())
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "policy reload failed; the previous policy stays in force");
                Err(e)
            }
        }
    }

    fn load(&self) -> Result<Option<LoadedPolicy>, PolicyError> {
        let Some(path) = &self.settings.path else {
            return Ok(None);
        };
        let limits = InstanceLimits {
            deadline: self.settings.deadline,
            memory_limit: self.settings.memory_limit,
            instances: self.settings.instances,
            init_deadline: Duration::from_secs(1).max(self.settings.deadline),
        };
        LoadedPolicy::load(&self.runtime, path, self.settings.config.clone(), limits).map(Some)
    }

    /// The policy in force (`None`: the built-in default).
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        self.current.load_full()
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    pub fn stats(&self) -> PolicyStatsSnapshot {
        self.stats.snapshot()
    }
}

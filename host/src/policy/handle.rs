//! The hot-path handle: the current policy behind an `arc-swap`, the failure mode, counters and
//! live reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::builtin::builtin_decision;
use super::loaded::{InstanceLimits, LoadedPolicy};
use super::runtime::PolicyRuntime;
use super::shadow::{ShadowStats, ShadowStatsSnapshot};
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
    /// Replaced by a config reload ([`PolicyHandle::reconfigure`]).
    settings: ArcSwap<PolicySettings>,
    current: ArcSwapOption<LoadedPolicy>,
    /// A candidate called next to `current` whose decisions are only compared.
    shadow: ArcSwapOption<LoadedPolicy>,
    stats: PolicyStats,
    shadow_stats: ShadowStats,
    /// Serialises reloads (watcher and SIGHUP may fire together); never taken on the hot path.
    reload_lock: Mutex<()>,
}

impl PolicyHandle {
    /// Loads the configured policy (blocking: reads and compiles the module). An error here means
    /// the proxy must not start.
    pub fn new(runtime: PolicyRuntime, settings: PolicySettings) -> Result<Self, PolicyError> {
        let handle = PolicyHandle {
            runtime,
            settings: ArcSwap::from_pointee(settings),
            current: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
            stats: PolicyStats::default(),
            shadow_stats: ShadowStats::default(),
            reload_lock: Mutex::new(()),
        };
        if let Some(policy) = handle.load(&handle.settings())? {
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
        let decided = match guard.as_ref() {
            None => Ok(builtin_decision(query)),
            Some(policy) => match policy.call(query, backend) {
                Ok(decision) => Ok(decision),
                Err(failure) => self.on_failure(policy, query, failure),
            },
        };
        let shadow = self.shadow.load();
        if let Some(candidate) = shadow.as_ref() {
            self.run_shadow(candidate, query, backend, &decided);
        }
        decided
    }

    /// Calls the shadow candidate and compares; nothing it does reaches the client.
    fn run_shadow(
        &self,
        candidate: &LoadedPolicy,
        query: &QueryContext,
        backend: Option<&Arc<dyn BackendStateSource>>,
        active: &Result<Decision, PolicyError>,
    ) {
        match (candidate.call(query, backend), active) {
            (Ok(shadow), Ok(active)) => {
                self.shadow_stats
                    .compare(candidate.name(), query, active, &shadow)
            }
            (Ok(shadow), Err(_)) => {
                // The active policy failed closed: compare with what failing closed means.
                let refused = Decision {
                    action: crate::model::Action::Block("policy failure".to_owned()),
                    ..Decision::forward_default()
                };
                self.shadow_stats
                    .compare(candidate.name(), query, &refused, &shadow)
            }
            (Err(failure), _) => self.shadow_stats.failed(candidate.name(), &failure),
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
        let fail_mode = self.settings.load().fail_mode;
        tracing::warn!(policy = policy.name(), fail_mode = ?fail_mode, error = %failure, "policy call failed");
        match fail_mode {
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
        let loaded = self.load(&self.settings());
        self.swap_in(loaded).map(|_| ())
    }

    /// Counts and logs a load, and swaps a loaded policy in.
    fn swap_in(
        &self,
        loaded: Result<Option<LoadedPolicy>, PolicyError>,
    ) -> Result<Option<Arc<LoadedPolicy>>, PolicyError> {
        match loaded {
            Ok(policy) => {
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = &policy {
                    tracing::info!(policy = p.name(), sha256 = p.sha256(), path = %p.path().display(), "policy loaded");
                }
                let policy = policy.map(Arc::new);
                self.current.store(policy.clone());
                Ok(policy)
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "policy reload failed; the previous policy stays in force");
                Err(e)
            }
        }
    }

    /// An uploaded module (admin `POST /policy`): validated, `init`-ed with the configured
    /// `[policy.config]`, then swapped in, or refused with the reason while the running policy
    /// stays. `label` names it (its file stem becomes the policy's name). Blocking.
    pub fn install(&self, label: &Path, bytes: &[u8]) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = self.load_bytes(&self.settings(), label, bytes).map(Some);
        let installed = self.swap_in(loaded)?;
        installed.ok_or_else(|| PolicyError::Engine("no policy was loaded".to_owned()))
    }

    /// Loads a candidate into shadow mode (replacing any earlier candidate). Blocking.
    pub fn install_shadow(
        &self,
        label: &Path,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPolicy>, PolicyError> {
        let candidate = Arc::new(self.load_bytes(&self.settings(), label, bytes)?);
        self.shadow_stats.reset();
        tracing::info!(
            candidate = candidate.name(),
            sha256 = candidate.sha256(),
            "shadow policy loaded: its decisions are compared, not applied"
        );
        self.shadow.store(Some(candidate.clone()));
        Ok(candidate)
    }

    /// Makes the shadow candidate the active policy; `None` when there is none.
    pub fn promote(&self) -> Option<Arc<LoadedPolicy>> {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = self.shadow.swap(None)?;
        self.current.store(Some(candidate.clone()));
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            policy = candidate.name(),
            sha256 = candidate.sha256(),
            "shadow policy promoted"
        );
        Some(candidate)
    }

    /// Stops shadow mode; returns the candidate that was running, if any.
    pub fn drop_shadow(&self) -> Option<Arc<LoadedPolicy>> {
        self.shadow.swap(None)
    }

    pub fn shadow(&self) -> Option<Arc<LoadedPolicy>> {
        self.shadow.load_full()
    }

    pub fn shadow_stats(&self) -> ShadowStatsSnapshot {
        self.shadow_stats.snapshot()
    }

    /// New settings from a config reload: when what a module depends on changed (file, init
    /// config, limits), the policy is loaded again with them first; if that fails, nothing
    /// changes. Blocking.
    pub fn reconfigure(&self, settings: PolicySettings) -> Result<(), PolicyError> {
        let _serialised = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.settings();
        let same_module = old.path == settings.path
            && old.config == settings.config
            && old.deadline == settings.deadline
            && old.memory_limit == settings.memory_limit
            && old.instances == settings.instances;
        if !same_module {
            let loaded = self.load(&settings);
            self.swap_in(loaded)?;
        }
        self.settings.store(Arc::new(settings));
        Ok(())
    }

    fn limits(settings: &PolicySettings) -> InstanceLimits {
        InstanceLimits {
            deadline: settings.deadline,
            memory_limit: settings.memory_limit,
            instances: settings.instances,
            init_deadline: Duration::from_secs(1).max(settings.deadline),
        }
    }

    fn load(&self, settings: &PolicySettings) -> Result<Option<LoadedPolicy>, PolicyError> {
        let Some(path) = &settings.path else {
            return Ok(None);
        };
        LoadedPolicy::load(
            &self.runtime,
            path,
            settings.config.clone(),
            Self::limits(settings),
        )
        .map(Some)
    }

    fn load_bytes(
        &self,
        settings: &PolicySettings,
        label: &Path,
        bytes: &[u8],
    ) -> Result<LoadedPolicy, PolicyError> {
        LoadedPolicy::from_bytes(
            &self.runtime,
            label,
            bytes,
            settings.config.clone(),
            Self::limits(settings),
        )
    }

    /// The policy in force (`None`: the built-in default).
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        self.current.load_full()
    }

    pub fn settings(&self) -> Arc<PolicySettings> {
        self.settings.load_full()
    }

    pub fn stats(&self) -> PolicyStatsSnapshot {
        self.stats.snapshot()
    }
}

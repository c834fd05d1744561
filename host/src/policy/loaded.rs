//! One compiled policy module with a bounded pool of ready, `init`-ed instances.
//!
//! Instantiating costs ~20 µs and a call on a warm instance ~1 µs, so instances are reused: a call
//! pops one from a lock-free queue, or instantiates when the queue is empty (a burst), and pushes
//! it back afterwards if there is room. An instance that trapped is dead and is dropped; the next
//! call gets a fresh one from the `PolicyPre`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use wasmtime::Store;

use super::bindings::{
    Policy, PolicyPacked, PolicyPackedPre, PolicyPre, decision_from_wit, pack_query, with_wit_query,
};
use super::deadline::Verdict;
use super::runtime::PolicyRuntime;
use super::state::{BackendStateSource, StoreState};
use super::{CallFailure, PolicyError};
use crate::model::{Decision, QueryContext};

/// Limits applied to every instance of a policy.
#[derive(Debug, Clone)]
pub struct InstanceLimits {
    pub deadline: Duration,
    pub memory_limit: usize,
    /// Warm instances kept for reuse.
    pub instances: usize,
    /// Deadline for `init`, which may legitimately parse a large configuration.
    pub init_deadline: Duration,
}

struct Instance {
    store: Store<StoreState>,
    bindings: Bindings,
    /// The packed query record, reused from call to call.
    packed: Vec<u8>,
}

/// A component of either world: `on-query` with the record, or `on-query-packed`.
#[derive(Clone)]
enum Pre {
    Record(PolicyPre<StoreState>),
    Packed(PolicyPackedPre<StoreState>),
}

enum Bindings {
    Record(Policy),
    Packed(PolicyPacked),
}

impl Pre {
    fn engine(&self) -> &wasmtime::Engine {
        match self {
            Pre::Record(p) => p.engine(),
            Pre::Packed(p) => p.engine(),
        }
    }

    fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Pre::Record(p) => Bindings::Record(p.instantiate(store)?),
            Pre::Packed(p) => Bindings::Packed(p.instantiate(store)?),
        })
    }
}

impl Bindings {
    fn call_init(
        &self,
        store: &mut Store<StoreState>,
        config: &[(&str, &str)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Bindings::Record(b) => b.call_init(store, config),
            Bindings::Packed(b) => b.call_init(store, config),
        }
    }
}

pub struct LoadedPolicy {
    name: Arc<str>,
    path: PathBuf,
    sha256: String,
    pre: Pre,
    config: Vec<(String, String)>,
    limits: InstanceLimits,
    idle: ArrayQueue<Instance>,
    instantiations: AtomicU64,
    retired: AtomicU64,
    loaded_at: std::time::SystemTime,
}

/// A compiled and linked policy module, not yet instantiated: `load` it with a config as often
/// as needed (`policy test` tries several configs on one module without compiling it again).
#[derive(Clone)]
pub struct CompiledPolicy {
    name: Arc<str>,
    path: PathBuf,
    sha256: String,
    pre: Pre,
}

impl CompiledPolicy {
    /// Reads, compiles (or loads the precompiled artifact of) and links the component at `path`.
    /// Blocking (file read, compilation): call it from a blocking context.
    pub fn compile(runtime: &PolicyRuntime, path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::compile_bytes(runtime, path, &bytes)
    }

    /// [`CompiledPolicy::compile`] for module bytes already in memory (an admin upload); `path`
    /// names the policy in logs and errors and gives it its name (the file stem).
    pub fn compile_bytes(
        runtime: &PolicyRuntime,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Self, PolicyError> {
        let component = runtime.component(path, bytes)?;
        check_contract_version(runtime, &component, path)?;
        let link_error = |e: wasmtime::Error| PolicyError::Link {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let packed = component
            .component_type()
            .exports(runtime.engine())
            .any(|(name, _)| name == "on-query-packed");
        let pre = if packed {
            Pre::Packed(PolicyPackedPre::new(instance_pre).map_err(link_error)?)
        } else {
            Pre::Record(PolicyPre::new(instance_pre).map_err(link_error)?)
        };
        let name: Arc<str> = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "policy".to_owned())
            .into();
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        Ok(CompiledPolicy {
            name,
            path: path.to_path_buf(),
            sha256,
            pre,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the first instance and calls `init(config)` on it.
    pub fn load(
        &self,
        config: Vec<(String, String)>,
        limits: InstanceLimits,
    ) -> Result<LoadedPolicy, PolicyError> {
        let policy = LoadedPolicy {
            name: self.name.clone(),
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            pre: self.pre.clone(),
            config,
            idle: ArrayQueue::new(limits.instances.max(1)),
            limits,
            instantiations: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            loaded_at: std::time::SystemTime::now(),
        };
        let path = &self.path;
        let first = policy.instantiate().map_err(|e| match e {
            CallFailure::Instantiate(reason) => PolicyError::Init {
                path: path.clone(),
                reason,
            },
            other => PolicyError::Init {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let _ = policy.idle.push(first);
        Ok(policy)
    }
}

impl LoadedPolicy {
    /// Compiles (or loads the precompiled artifact of) the component at `path`, links it, and
    /// creates one instance, calling `init(config)` on it, so that a module that does not fit the
    /// world or refuses its config is rejected here and never reaches the hot path.
    /// Blocking (file read, compilation): call it from a blocking context.
    pub fn load(
        runtime: &PolicyRuntime,
        path: &Path,
        config: Vec<(String, String)>,
        limits: InstanceLimits,
    ) -> Result<Self, PolicyError> {
        CompiledPolicy::compile(runtime, path)?.load(config, limits)
    }

    /// [`LoadedPolicy::load`] for module bytes already in memory (an admin upload).
    pub fn from_bytes(
        runtime: &PolicyRuntime,
        path: &Path,
        bytes: &[u8],
        config: Vec<(String, String)>,
        limits: InstanceLimits,
    ) -> Result<Self, PolicyError> {
        CompiledPolicy::compile_bytes(runtime, path, bytes)?.load(config, limits)
    }

    /// When this module was loaded (the admin API shows it).
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// The file stem, used in logs, metrics and error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex SHA-256 of the module bytes: identifies exactly which policy is running.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Linear memory of one warm instance (all its memories), if one is idle: what each pooled
    /// instance costs, for sizing `[policy] instances`.
    pub fn instance_memory_bytes(&self) -> Option<usize> {
        let instance = self.idle.pop()?;
        let bytes = instance.store.data().linear_memory;
        let _ = self.idle.push(instance);
        Some(bytes)
    }

    pub fn instantiations(&self) -> u64 {
        self.instantiations.load(Ordering::Relaxed)
    }

    /// Runs `on-query` for one statement on a warm instance.
    pub fn call(
        &self,
        query: &QueryContext,
        backend: Option<&Arc<dyn BackendStateSource>>,
    ) -> Result<Decision, CallFailure> {
        let mut instance = match self.idle.pop() {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        instance.store.data_mut().backend = backend.cloned();
        let ticks = instance
            .store
            .data_mut()
            .deadline
            .start(self.limits.deadline);
        instance.store.set_epoch_deadline(ticks);
        let result = match &instance.bindings {
            Bindings::Record(b) => {
                with_wit_query(query, |q| b.call_on_query(&mut instance.store, q))
            }
            Bindings::Packed(b) => {
                pack_query(query, &mut instance.packed);
                b.call_on_query_packed(&mut instance.store, &instance.packed)
            }
        };
        match result {
            Ok(decision) => {
                let state = instance.store.data_mut();
                state.backend = None;
                if self.worn_out(state) {
                    self.retired.fetch_add(1, Ordering::Relaxed);
                } else {
                    // A full queue means a burst created extra instances; let this one go.
                    let _ = self.idle.push(instance);
                }
                Ok(decision_from_wit(decision))
            }
            Err(error) => Err(self.classify_failure(&instance.store, error)),
        }
    }

    /// Some guests never give memory back: a componentize-js instance grows by ~0.4 KiB per call
    /// (its bindings leak the lowered arguments) and would hit the cap after ~100k calls, failing
    /// that call. An instance that has used half its headroom above its own size is retired
    /// after a successful call instead; the next call instantiates a fresh one (~1.5 ms for
    /// Python/JS). Instances that do not grow (Rust) are never retired.
    fn worn_out(&self, state: &StoreState) -> bool {
        let headroom = self
            .limits
            .memory_limit
            .saturating_sub(state.baseline_memory);
        state.linear_memory > state.baseline_memory + headroom / 2
    }

    /// Instances dropped by [`Self::worn_out`].
    pub fn retired(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }

    fn instantiate(&self) -> Result<Instance, CallFailure> {
        self.instantiations.fetch_add(1, Ordering::Relaxed);
        let state = StoreState::new(self.name.clone(), self.limits.memory_limit);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| s);
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().deadline.on_epoch() {
            Verdict::Continue(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
            Verdict::Stop => Err(wasmtime::Trap::Interrupt.into()),
        });
        let ticks = store.data_mut().deadline.start(self.limits.init_deadline);
        store.set_epoch_deadline(ticks);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallFailure::Instantiate(format!("{e:#}")))?;
        let config: Vec<(&str, &str)> = self
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match bindings.call_init(&mut store, &config) {
            Ok(Ok(())) => {
                let state = store.data_mut();
                state.baseline_memory = state.linear_memory;
                Ok(Instance {
                    store,
                    bindings,
                    packed: Vec::new(),
                })
            }
            Ok(Err(reason)) => Err(CallFailure::Instantiate(reason)),
            Err(e) => Err(CallFailure::Instantiate(
                self.classify_failure(&store, e).to_string(),
            )),
        }
    }

    fn classify_failure(&self, store: &Store<StoreState>, error: wasmtime::Error) -> CallFailure {
        if store.data().memory_exceeded {
            return CallFailure::Memory(self.limits.memory_limit as u64);
        }
        if store.data().deadline.exceeded {
            return CallFailure::Deadline(self.limits.deadline);
        }
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallFailure::Deadline(self.limits.deadline),
            Some(trap) => CallFailure::Trap(trap.to_string()),
            None => CallFailure::Trap(format!("{error:#}")),
        }
    }
}

/// The contract this host implements (`package` in `wit/policy.wit`).
pub const CONTRACT: &str = "switchyard:policy@0.2.0";

/// A component built against another version of the contract imports its `host` interface
/// under that version: say so, rather than the linker's message about a missing import.
fn check_contract_version(
    runtime: &PolicyRuntime,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<(), PolicyError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(runtime.engine()) {
        if let Some(rest) = name.strip_prefix("switchyard:policy/")
            && let Some((_, version)) = rest.split_once('@')
            && !CONTRACT.ends_with(&format!("@{version}"))
        {
            return Err(PolicyError::ContractVersion {
                path: path.to_path_buf(),
                found: format!("switchyard:policy@{version}"),
                expected: CONTRACT,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component built against the first contract (a policy that blocks everything) is
    /// refused with the versions named, not with a linker message.
    #[test]
    fn an_older_contract_is_named_in_the_error() {
        let runtime = PolicyRuntime::new(None).expect("runtime");
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/contract-0.1.0.wasm");
        let error = CompiledPolicy::compile(&runtime, &path)
            .err()
            .expect("an older contract is refused");
        let text = error.to_string();
        assert!(
            matches!(error, PolicyError::ContractVersion { .. }),
            "{text}"
        );
        assert!(text.contains("switchyard:policy@0.1.0"), "{text}");
        assert!(text.contains(CONTRACT), "{text}");
    }
}

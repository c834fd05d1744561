//! The shared wasmtime engine: compilation settings, the linker with the host functions and the
//! deny-all WASI imports, and the epoch ticker that bounds every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::PolicyError;
use super::artifact;
use super::bindings::Policy;
use super::state::StoreState;

/// How often the ticker thread advances the engine's epoch: the resolution of call deadlines.
/// Every tick wakes a thread (a context switch, and on a small machine a preemption of a worker
/// or of the database): 1 ms keeps that to 1,000 a second, fine against the default 10 ms
/// deadline (whose first check comes at half the budget).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Shared by every loaded policy; cheap to clone.
#[derive(Clone)]
pub struct PolicyRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    artifact_dir: Option<PathBuf>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyRuntime {
    /// `artifact_dir`: where precompiled modules are kept between restarts (`None`: compile every
    /// time, e.g. for the CLI's one-shot `policy check`).
    pub fn new(artifact_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(e.to_string()))?;

        let mut linker = Linker::<StoreState>::new(&engine);
        // A std guest built for wasm32-wasip2 imports the WASI CLI world even if it never calls
        // it; link it to the deny-all context of `StoreState` so instantiation succeeds.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| PolicyError::Engine(format!("linking WASI: {e}")))?;
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PolicyError::Engine(format!("linking host functions: {e}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), ticker_stop.clone())?;

        Ok(PolicyRuntime {
            inner: Arc::new(Inner {
                engine,
                linker,
                artifact_dir,
                ticker_stop,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<StoreState> {
        &self.inner.linker
    }

    /// Compiles `bytes` (read from `path`), or loads the precompiled artifact for them.
    pub(crate) fn component(&self, path: &Path, bytes: &[u8]) -> Result<Component, PolicyError> {
        artifact::load_or_compile(
            &self.inner.engine,
            self.inner.artifact_dir.as_deref(),
            path,
            bytes,
        )
    }
}

fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), PolicyError> {
    std::thread::Builder::new()
        .name("policy-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))
}

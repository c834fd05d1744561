//! Precompiled policy artifacts, so a restart or a swap back to a known module costs a ~1 ms load
//! instead of a multi-millisecond Cranelift compile that stalls a small machine.
//!
//! An artifact is named after the SHA-256 of the component bytes and the engine's compatibility
//! hash (wasmtime version and compilation settings), so a changed module or an upgraded proxy
//! never loads a stale artifact; wasmtime checks the header again on load.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PolicyError;

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

pub(crate) fn load_or_compile(
    engine: &Engine,
    artifact_dir: Option<&Path>,
    path: &Path,
    bytes: &[u8],
) -> Result<Component, PolicyError> {
    check_header(path, bytes)?;
    let Some(dir) = artifact_dir else {
        return compile(engine, path, bytes);
    };
    let artifact = artifact_path(engine, dir, bytes);
    // Read into memory rather than `deserialize_file`'s mmap: a file truncated under a mapping
    // (by a careless operator or another tool) would SIGBUS the whole proxy.
    if let Ok(bytes_on_disk) = std::fs::read(&artifact) {
        // SAFETY: the file was written by `store` below from our own compilation output, in a
        // directory the operator owns; wasmtime validates its header and engine compatibility.
        // Deserializing an artifact crafted by an attacker with write access to that directory is
        // unsound, which is why the directory must not be writable by others.
        match unsafe { Component::deserialize(engine, &bytes_on_disk) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!(
                artifact = %artifact.display(),
                error = %e,
                "precompiled policy artifact unusable, recompiling"
            ),
        }
    }
    let serialized = engine
        .precompile_component(bytes)
        .map_err(|e| compile_error(path, e))?;
    if let Err(e) = store(dir, &artifact, &serialized) {
        tracing::warn!(artifact = %artifact.display(), error = %e, "cannot store precompiled policy");
    }
    // SAFETY: `serialized` was produced just now by `precompile_component` of this engine.
    unsafe { Component::deserialize(engine, &serialized) }.map_err(|e| compile_error(path, e))
}

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component, PolicyError> {
    Component::new(engine, bytes).map_err(|e| compile_error(path, e))
}

fn compile_error(path: &Path, e: wasmtime::Error) -> PolicyError {
    PolicyError::Compile {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    }
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PolicyError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(PolicyError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(PolicyError::CoreModule {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn artifact_path(engine: &Engine, dir: &Path, bytes: &[u8]) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    dir.join(format!(
        "{}-{:016x}.cwasm",
        hex::encode(&digest[..16]),
        hasher.finish()
    ))
}

/// Writes to a temporary file and renames it, so a concurrent reader never sees half an artifact.
fn store(dir: &Path, artifact: &Path, serialized: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized)?;
    std::fs::rename(&tmp, artifact)
}

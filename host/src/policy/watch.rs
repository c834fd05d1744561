//! Reloads the policy when its file changes.
//!
//! The parent directory is watched rather than the file: deploy tools replace a file by renaming a
//! new one over it, which a watch on the old inode would never see.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{PolicyError, PolicyHandle};

/// Events closer together than this are one change: `cp` truncates then writes, editors write a
/// backup then rename.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Stops watching when dropped.
pub struct PolicyWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyWatcher {
    /// Starts watching the handle's policy file. Must be called inside a tokio runtime. Returns
    /// `Ok(None)` when no policy file is configured.
    pub fn spawn(handle: Arc<PolicyHandle>) -> Result<Option<Self>, PolicyError> {
        let Some(path) = handle.settings().path.clone() else {
            return Ok(None);
        };
        let file_name = path.file_name().map(|n| n.to_os_string());
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        };
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, EventKind::Access(_)) {
                    return;
                }
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
                if ours {
                    // A full channel already holds a pending reload; one is enough.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| PolicyError::Engine(format!("cannot watch {}: {e}", dir.display())))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| PolicyError::Engine(format!("cannot watch {}: {e}", dir.display())))?;

        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let handle = handle.clone();
                // Compilation is CPU-heavy: keep it off the runtime's worker threads.
                let _ = tokio::task::spawn_blocking(move || handle.reload()).await;
            }
        });
        Ok(Some(PolicyWatcher {
            _watcher: watcher,
            task,
        }))
    }
}

//! Live swap under load: the policy file is replaced while tasks keep calling.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard::model::Action;
use switchyard::policy::{PolicyHandle, PolicyRuntime, PolicySettings, PolicyWatcher};
use switchyard_tests::policies::{pg_query, policy_wasm};

/// Replaces `target` atomically (write + rename), the way a deploy tool does.
fn replace(target: &Path, source: &Path) {
    let tmp = target.with_extension("tmp");
    std::fs::copy(source, &tmp).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn wait_for_reloads(handle: &PolicyHandle, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while handle.stats().reloads < at_least {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload (reloads = {}, want {at_least})",
            handle.stats().reloads
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_callers_see_no_failure_while_the_file_is_replaced_twenty_times() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("policy.wasm");
    let rw_split = policy_wasm("rw-split");
    let guard = policy_wasm("guard");
    std::fs::copy(&rw_split, &live).unwrap();

    let runtime = PolicyRuntime::new(Some(dir.path().join("artifacts"))).unwrap();
    let settings = PolicySettings {
        path: Some(live.clone()),
        instances: 4,
        ..PolicySettings::default()
    };
    let handle = Arc::new(PolicyHandle::new(runtime, settings).unwrap());
    let _watcher = PolicyWatcher::spawn(handle.clone()).unwrap().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Stops the callers even when an assertion below panics, so a failure cannot hang the run.
    let _stop_on_exit = StopOnDrop(stop.clone());
    let calls = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (handle, stop, calls) = (handle.clone(), stop.clone(), calls.clone());
        callers.push(tokio::task::spawn_blocking(move || {
            // rw-split forwards a DROP to the primary; guard blocks it. Either is a valid answer
            // mid-swap; an error is not.
            let query = pg_query("DROP TABLE users");
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match handle.decide(&query, None) {
                    Ok(d) if matches!(d.action, Action::Forward | Action::Block(_)) => {}
                    other => {
                        if failures == 0 {
                            eprintln!("first failed call: {other:?}");
                        }
                        failures += 1
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }

    for i in 1..=20u64 {
        let source = if i % 2 == 1 { &guard } else { &rw_split };
        replace(&live, source);
        wait_for_reloads(&handle, i).await;
        // Let the callers run on this version for a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The 20th replacement installed rw-split; one more installs guard and must be seen by all.
    replace(&live, &guard);
    wait_for_reloads(&handle, 21).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    for caller in callers {
        failures += caller.await.unwrap();
    }
    assert_eq!(failures, 0, "failed calls during swaps");
    assert!(
        calls.load(Ordering::Relaxed) > 1000,
        "the callers barely ran"
    );
    assert_eq!(handle.stats().reload_failures, 0);

    // After the last swap every call sees guard, on every instance.
    let query = pg_query("DROP TABLE users");
    for _ in 0..100 {
        let d = handle.decide(&query, None).unwrap();
        assert!(matches!(d.action, Action::Block(_)), "{d:?}");
    }
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("policy.wasm");
    std::fs::copy(policy_wasm("guard"), &live).unwrap();
    let settings = PolicySettings {
        path: Some(live.clone()),
        ..PolicySettings::default()
    };
    let handle = Arc::new(PolicyHandle::new(PolicyRuntime::new(None).unwrap(), settings).unwrap());
    let before = handle.current().unwrap().sha256().to_owned();

    for broken in [policy_wasm("bad-init"), dir.path().join("garbage")] {
        if !broken.exists() {
            std::fs::write(&broken, b"not wasm at all").unwrap();
        }
        replace(&live, &broken);
        let error = tokio::task::spawn_blocking({
            let handle = handle.clone();
            move || handle.reload()
        })
        .await
        .unwrap()
        .expect_err("a broken policy must not load");
        assert!(error.to_string().contains("policy.wasm"), "{error}");
        assert_eq!(handle.current().unwrap().sha256(), before);
        let d = handle.decide(&pg_query("DROP TABLE users"), None).unwrap();
        assert!(matches!(d.action, Action::Block(_)));
    }
    assert_eq!(handle.stats().reload_failures, 2);
}

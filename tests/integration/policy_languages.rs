//! The Rust, Python and JavaScript builds of `guard` and `tenant-router` decide alike: each case
//! file in `policies/cases/` passes on all three builds (library API and CLI), their decisions
//! are equal case by case, and the runner fails on a case that does not hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use switchyard::policy::PolicyRuntime;
use switchyard::policy::cases::{CaseFile, Report, Runner};
use switchyard_tests::policies::{policy_wasm, repo_root, switchyard_binary};

const LANGS: [&str; 3] = ["", "-py", "-js"];

/// A Python or JS component takes seconds to compile: one runtime for the module, whose
/// artifact directory the CLI runs reuse, and each module compiled once (under the lock, so two
/// tests never compile the same module at the same time).
fn runtime() -> &'static (tempfile::TempDir, PolicyRuntime) {
    static RUNTIME: OnceLock<(tempfile::TempDir, PolicyRuntime)> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let dir = tempfile::tempdir().expect("artifact dir");
        let runtime = PolicyRuntime::new(Some(dir.path().to_path_buf())).expect("runtime");
        (dir, runtime)
    })
}

fn runner(policy: &Path) -> Arc<Runner> {
    static RUNNERS: OnceLock<Mutex<HashMap<PathBuf, Arc<Runner>>>> = OnceLock::new();
    let mut runners = RUNNERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    runners
        .entry(policy.to_path_buf())
        .or_insert_with(|| {
            Arc::new(Runner::new(&runtime().1, policy).unwrap_or_else(|e| panic!("{e}")))
        })
        .clone()
}

/// `switchyard policy test` with the artifacts of [`runtime`] (compiled by [`runner`] first).
fn cli(policy: &Path, extra: &[&str], file: &Path) -> std::process::Output {
    runner(policy);
    Command::new(switchyard_binary())
        .args(["policy", "test", "--artifact-dir"])
        .arg(runtime().0.path())
        .args(extra)
        .arg("--policy")
        .arg(policy)
        .arg(file)
        .output()
        .expect("run switchyard")
}

fn cases(name: &str) -> PathBuf {
    repo_root()
        .join("policies/cases")
        .join(format!("{name}.toml"))
}

fn run(policy: &Path, file: &Path) -> Report {
    let cases = CaseFile::load(file).unwrap_or_else(|e| panic!("{e}"));
    runner(policy)
        .run(&cases, &[])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `file` on the three builds of `policy`; every case passes and the decisions are equal.
fn same_in_every_language(policy: &str, file: &str) {
    let reports: Vec<Report> = LANGS
        .iter()
        .map(|lang| run(&policy_wasm(&format!("{policy}{lang}")), &cases(file)))
        .collect();
    for report in &reports {
        assert_eq!(report.failed(), 0, "\n{}", report.render());
        assert!(report.passed() >= 3, "{}", report.render());
    }
    let rust = &reports[0];
    for other in &reports[1..] {
        for (a, b) in rust.outcomes.iter().zip(&other.outcomes) {
            // Beyond what the case checks: the whole decision is the same.
            assert_eq!(
                a.decision,
                b.decision,
                "{} vs {} on `{}`",
                rust.policy.display(),
                other.policy.display(),
                a.label
            );
        }
    }
}

#[test]
fn guard_decides_alike_in_rust_python_and_javascript() {
    same_in_every_language("guard", "guard");
    same_in_every_language("guard", "guard-unknown-allow");
}

#[test]
fn tenant_router_decides_alike_in_rust_python_and_javascript() {
    same_in_every_language("tenant-router", "tenant-router");
    same_in_every_language("tenant-router", "tenant-router-block");
    same_in_every_language("tenant-router", "tenant-router-database");
}

#[test]
fn the_cli_runs_the_shared_case_file_on_each_build() {
    for lang in LANGS {
        let policy = policy_wasm(&format!("guard{lang}"));
        let out = cli(&policy, &[], &cases("guard"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("  ok    DROP TABLE users\n"), "{stdout}");
        assert!(stdout.trim_end().ends_with(" passed, 0 failed"), "{stdout}");
    }
}

const WRONG: &str = r#"
[config]
"limit.*" = 10

[[case]]
name = "right"
sql = "DROP TABLE t"
expect = { action = "block", reason = "guard: DROP TABLE is not allowed" }

[[case]]
name = "deliberately wrong"
sql = "SELECT * FROM t"
expect = { action = "forward", route = "primary", tags = {} }

[[config_error]]
config = { "limit.*" = "ten" }
error = "some other message"
"#;

#[test]
fn a_case_that_does_not_hold_fails_the_run_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, WRONG).unwrap();

    for lang in LANGS {
        let report = run(&policy_wasm(&format!("guard{lang}")), &file);
        assert_eq!(
            (report.passed(), report.failed()),
            (1, 2),
            "{}",
            report.render()
        );
    }

    let out = cli(&policy_wasm("guard"), &[], &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for line in [
        "  ok    right\n",
        "  FAIL  deliberately wrong\n",
        "          action: expected forward\n",
        "                  got      rewrite \"SELECT * FROM t LIMIT 10\"\n",
        "          route: expected primary\n",
        "                 got      replica\n",
        "          tags: expected {}\n",
        "                got      { guard = \"limit\" }\n",
        "          init: expected refused: \"some other message\"\n",
        "1 passed, 2 failed\n",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }

    // --set is merged over [config]: with limit 0 the second case's action holds.
    let out = cli(&policy_wasm("guard"), &["--set", "limit.*=0"], &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("action: expected forward"), "{stdout}");
    assert!(stdout.contains("route: expected primary"), "{stdout}");
}

#[test]
fn unusable_files_exit_2_with_one_line() {
    let missing = cli(
        &policy_wasm("guard"),
        &[],
        Path::new("/nonexistent/cases.toml"),
    );
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("switchyard: cannot read case file /nonexistent/cases.toml"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[case]]\nsql = \"SELECT 1\"\nexpect = { action = \"allow\" }\n",
    )
    .unwrap();
    let out = cli(&policy_wasm("guard"), &[], &bad);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("allow"),
        "{stderr}"
    );
}

/// Python and JS instances carry their interpreter's heap (~9-13 MiB of linear memory): they fit
/// the default 64 MiB cap, a pool of several serves concurrent calls, and a cap below their
/// size refuses the module at load time, naming the limit.
#[test]
fn python_and_js_instances_fit_the_default_memory_cap_and_pool() {
    use switchyard::model::Route;
    use switchyard::policy::{PolicyHandle, PolicySettings};
    use switchyard_tests::policies::query_as;

    for lang in ["-py", "-js"] {
        let path = policy_wasm(&format!("tenant-router{lang}"));
        runner(&path); // compiled once, into the shared artifact directory
        let settings = PolicySettings {
            path: Some(path.clone()),
            instances: 2,
            config: vec![
                ("tenant_attribute".into(), "user".into()),
                ("pool.alice".into(), "shard_a".into()),
            ],
            ..PolicySettings::default()
        };
        let handle = PolicyHandle::new(runtime().1.clone(), settings.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        // Four threads on a pool of two: bursts instantiate extra instances.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let d = handle.decide(&query_as("SELECT 1", "alice"), None).unwrap();
                        assert_eq!(d.route, Route::Pool("shard_a".into()));
                    }
                });
            }
        });
        let policy = handle.current().unwrap();
        let memory = policy.instance_memory_bytes().expect("an idle instance");
        assert!(
            (2 << 20..64 << 20).contains(&memory),
            "{lang}: {memory} bytes of linear memory per instance"
        );
        assert_eq!(handle.stats().failed_closed, 0);

        let small = PolicySettings {
            memory_limit: 2 << 20,
            ..settings
        };
        let error = PolicyHandle::new(runtime().1.clone(), small)
            .err()
            .unwrap_or_else(|| panic!("{lang}: loaded under a 2 MiB cap"));
        assert!(
            error
                .to_string()
                .contains("memory limit of 2097152 bytes exceeded"),
            "{lang}: {error}"
        );
    }
}

/// componentize-js instances grow by ~0.4 KiB per call and never shrink: without retirement an
/// instance under a 20 MiB cap fails a call after ~25k calls. The engine retires an instance that
/// used half its headroom, so every call succeeds.
#[test]
fn growing_js_instances_are_retired_before_they_hit_the_cap() {
    use switchyard::policy::{PolicyHandle, PolicySettings};
    use switchyard_tests::policies::query_as;

    let path = policy_wasm("tenant-router-js");
    runner(&path);
    let settings = PolicySettings {
        path: Some(path),
        instances: 1,
        memory_limit: 20 << 20,
        config: vec![("tenant_attribute".into(), "user".into())],
        ..PolicySettings::default()
    };
    let handle = PolicyHandle::new(runtime().1.clone(), settings).unwrap_or_else(|e| panic!("{e}"));
    let query = query_as("SELECT * FROM orders WHERE id = 1", "alice");
    for i in 0..40_000 {
        if let Err(e) = handle.decide(&query, None) {
            panic!("call {i} failed: {e}");
        }
    }
    let policy = handle.current().unwrap();
    assert!(policy.retired() >= 1, "no instance was retired");
    assert_eq!(handle.stats().failures_memory, 0);
}

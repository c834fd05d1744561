//! The `switchyard` binary's offline commands: output, one-line errors and exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run switchyard")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn policy(name: &str) -> String {
    let path = repo_root()
        .join("policies/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run policies/build.sh",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(text.trim_end().lines().count(), 1, "not one line: {text:?}");
    assert!(!text.contains("backtrace"), "{text}");
    text
}

#[test]
fn policy_check_prints_classification_and_decision_as_json() {
    let guard = policy("guard");
    let out = switchyard(&[
        "policy",
        "check",
        "--policy",
        &guard,
        "--sql",
        "SELECT * FROM orders",
        "--user",
        "alice",
        "--set",
        "limit.alice=100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["classification"]["kind"], "read");
    assert_eq!(json["classification"]["tables_read"][0], "orders");
    assert_eq!(json["decision"]["action"]["type"], "rewrite");
    assert_eq!(
        json["decision"]["action"]["value"],
        "SELECT * FROM orders LIMIT 100"
    );
    assert_eq!(json["effective_classification"]["flags"]["has_limit"], true);
    assert_eq!(json["policy"]["name"], "guard");

    let out = switchyard(&[
        "policy",
        "check",
        "--policy",
        &guard,
        "--sql",
        "DROP TABLE users",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["decision"]["action"]["type"], "block");
}

#[test]
fn policy_check_without_a_policy_uses_the_builtin_default() {
    let out = switchyard(&[
        "policy",
        "check",
        "--sql",
        "SELECT 1",
        "--protocol",
        "clickhouse-http",
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["policy"], "built-in default");
    assert_eq!(json["decision"]["route"]["type"], "replica");
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let core = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(core.path(), b"\0asm\x01\0\0\0").unwrap();
    let core = core.path().to_string_lossy().into_owned();
    let bad_init = policy("bad-init");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["policy", "check", "--bogus"], "unexpected argument"),
        (
            vec!["policy", "check", "--sql", "x", "--protocol", "db2"],
            "unknown protocol",
        ),
        (
            vec!["policy", "check", "--sql", "x", "--set", "novalue"],
            "is not KEY=VALUE",
        ),
        (
            vec![
                "policy",
                "check",
                "--policy",
                "/nonexistent.wasm",
                "--sql",
                "x",
            ],
            "does not exist",
        ),
        (
            vec!["policy", "check", "--policy", &core, "--sql", "x"],
            "not a component",
        ),
        (
            vec!["policy", "check", "--policy", &bad_init, "--sql", "x"],
            "refusing config",
        ),
        (
            vec!["config", "check", "/nonexistent.toml"],
            "cannot read config file",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let out = switchyard(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = stderr_line(&out);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
}

#[test]
fn config_check_accepts_the_examples_and_names_the_bad_key() {
    for example in ["examples/postgres.toml", "examples/clickhouse.toml"] {
        let out = switchyard(&["config", "check", example]);
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(repo_root().join("examples/clickhouse.toml"))
        .unwrap()
        .replace("[[listener]]", "[[listener]]\nmax_connectoins = 5");
    std::fs::write(&bad, text).unwrap();
    let out = switchyard(&["config", "check", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    let line = stderr_line(&out);
    assert!(line.contains("max_connectoins"), "{line}");
}

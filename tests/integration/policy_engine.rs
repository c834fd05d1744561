//! The policy engine against the real example policies and fixtures: limits, failure modes,
//! loading errors, and the deny-all WASI context.

use std::time::{Duration, Instant};

use switchyard::model::{Action, Route};
use switchyard::policy::{
    CallFailure, FailMode, PolicyError, PolicyHandle, PolicyRuntime, PolicySettings,
};
use switchyard_tests::policies::{pg_query, policy_wasm, query_as};

fn handle(name: &str, fail_mode: FailMode) -> PolicyHandle {
    let settings = PolicySettings {
        path: Some(policy_wasm(name)),
        fail_mode,
        instances: 2,
        ..PolicySettings::default()
    };
    PolicyHandle::new(PolicyRuntime::new(None).expect("runtime"), settings).expect("load policy")
}

#[test]
fn rw_split_module_matches_the_builtin_default() {
    let policy = handle("rw-split", FailMode::FailClosed);
    let read = policy
        .decide(&pg_query("SELECT * FROM users WHERE id = 1"), None)
        .unwrap();
    assert_eq!(read.route, Route::Replica);
    assert_eq!(read.action, Action::Forward);
    let write = policy
        .decide(&pg_query("UPDATE users SET a = 1 WHERE id = 1"), None)
        .unwrap();
    assert_eq!(write.route, Route::Primary);
    let mut in_txn = pg_query("SELECT 1");
    in_txn.in_transaction = true;
    assert_eq!(policy.decide(&in_txn, None).unwrap().route, Route::Primary);
    let builtin = switchyard::policy::builtin_decision(&pg_query("SELECT * FROM users"));
    assert_eq!(builtin.route, Route::Replica);
}

#[test]
fn runaway_policy_is_stopped_at_its_deadline_and_the_next_call_works() {
    let settings = PolicySettings {
        path: Some(policy_wasm("runaway")),
        deadline: Duration::from_millis(10),
        instances: 1,
        ..PolicySettings::default()
    };
    let policy = PolicyHandle::new(PolicyRuntime::new(None).unwrap(), settings).unwrap();
    let started = Instant::now();
    let error = policy
        .decide(&pg_query("SELECT 'spin'"), None)
        .expect_err("the runaway call must fail");
    let elapsed = started.elapsed();
    match &error {
        PolicyError::Call { policy, reason } => {
            assert_eq!(policy, "runaway");
            assert_eq!(*reason, CallFailure::Deadline(Duration::from_millis(10)));
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        error.to_string().contains("deadline of 10ms exceeded"),
        "{error}"
    );
    // Generous bound: the point is "interrupted", not a benchmark (the tick adds at most 0.5 ms).
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    // The trapped instance is gone; a fresh one answers.
    let ok = policy
        .decide(&pg_query("SELECT 1"), None)
        .expect("fresh instance");
    assert_eq!(ok.action, Action::Forward);
    let current = policy.current().unwrap();
    assert!(current.instantiations() >= 2);
    assert_eq!(policy.stats().failures_deadline, 1);
    assert_eq!(policy.stats().failed_closed, 1);
}

#[test]
fn memory_hog_hits_the_cap_and_is_reported_as_such() {
    let settings = PolicySettings {
        path: Some(policy_wasm("memory-hog")),
        memory_limit: 16 << 20,
        instances: 1,
        ..PolicySettings::default()
    };
    let policy = PolicyHandle::new(PolicyRuntime::new(None).unwrap(), settings).unwrap();
    let error = policy.decide(&pg_query("SELECT 'hog'"), None).unwrap_err();
    assert!(
        matches!(&error, PolicyError::Call { reason: CallFailure::Memory(m), .. } if *m == 16 << 20),
        "{error}"
    );
    assert!(policy.decide(&pg_query("SELECT 1"), None).is_ok());
    assert_eq!(policy.stats().failures_memory, 1);
}

#[test]
fn fail_open_applies_the_default_and_fail_closed_names_the_policy() {
    let open = handle("trap", FailMode::FailOpen);
    let decision = open.decide(&pg_query("SELECT * FROM t"), None).unwrap();
    assert_eq!(decision.route, Route::Replica);
    assert_eq!(open.stats().failed_open, 1);

    let closed = handle("trap", FailMode::FailClosed);
    let error = closed
        .decide(&pg_query("SELECT * FROM t"), None)
        .unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("policy `trap` failed: trapped"), "{text}");
    assert_eq!(closed.stats().failed_closed, 1);
}

#[test]
fn bad_init_is_refused_with_the_file_and_the_reason() {
    let settings = PolicySettings {
        path: Some(policy_wasm("bad-init")),
        ..PolicySettings::default()
    };
    let error = match PolicyHandle::new(PolicyRuntime::new(None).unwrap(), settings) {
        Err(e) => e,
        Ok(_) => panic!("bad-init must not load"),
    };
    let text = error.to_string();
    assert!(matches!(error, PolicyError::Init { .. }), "{text}");
    assert!(
        text.contains("bad-init.wasm") && text.contains("bad-init: refusing config"),
        "{text}"
    );
}

#[test]
fn a_core_module_or_garbage_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"hello world, not wasm").unwrap();
    for (path, expected) in [
        (&core, "core Wasm module"),
        (&garbage, "not a WebAssembly component"),
    ] {
        let settings = PolicySettings {
            path: Some(path.clone()),
            ..PolicySettings::default()
        };
        match PolicyHandle::new(PolicyRuntime::new(None).unwrap(), settings) {
            Err(e) => assert!(e.to_string().contains(expected), "{e}"),
            Ok(_) => panic!("{} must not load", path.display()),
        }
    }
}

#[test]
fn precompiled_artifacts_are_reused_across_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let settings = PolicySettings {
        path: Some(policy_wasm("guard")),
        ..PolicySettings::default()
    };
    let first = PolicyHandle::new(
        PolicyRuntime::new(Some(dir.path().to_path_buf())).unwrap(),
        settings.clone(),
    )
    .unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "one artifact per module");
    let second = PolicyHandle::new(
        PolicyRuntime::new(Some(dir.path().to_path_buf())).unwrap(),
        settings,
    )
    .unwrap();
    for policy in [&first, &second] {
        let d = policy.decide(&pg_query("DROP TABLE users"), None).unwrap();
        assert!(matches!(d.action, Action::Block(_)), "{d:?}");
    }
    // A corrupt artifact is detected and replaced, not trusted.
    std::fs::write(artifacts[0].path(), b"corrupt").unwrap();
    let third = PolicyHandle::new(
        PolicyRuntime::new(Some(dir.path().to_path_buf())).unwrap(),
        PolicySettings {
            path: Some(policy_wasm("guard")),
            ..PolicySettings::default()
        },
    )
    .unwrap();
    assert!(third.decide(&pg_query("SELECT 1"), None).is_ok());
}

#[test]
fn guest_gets_no_filesystem_environment_or_network() {
    // The `escape` fixture tries each capability and reports what happened in its tags.
    let policy = handle("escape", FailMode::FailClosed);
    let decision = policy
        .decide(&query_as("SELECT 1", "mallory"), None)
        .unwrap();
    let tag = |k: &str| {
        decision
            .tags
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing tag {k}: {:?}", decision.tags))
    };
    assert_eq!(tag("fs"), "denied");
    assert_eq!(tag("env"), "empty");
    assert_eq!(tag("tcp"), "denied");
    assert_eq!(tag("stdout"), "ok");
}

/// Rust policies receive the query record packed into one buffer (`on-query-packed`) and the
/// SDK decodes it: every field must arrive as the host has it.
#[test]
fn a_rust_policy_receives_every_field_of_the_query_record() {
    let policy = handle("echo", FailMode::FailClosed);
    let sql = "UPDATE public.accounts SET n = n + 1 WHERE id = 1 LIMIT 2; \
               EXPLAIN SELECT lower(x) FROM \"Q\".t";
    let mut q = query_as(sql, "bob");
    q.client_addr = "10.1.2.3:4567".into();
    q.in_transaction = true;
    q.attributes = vec![
        ("startup.application_name".to_owned(), "billing".to_owned()),
        ("extended".to_owned(), "true".to_owned()),
    ]
    .into();
    let decision = policy.decide(&q, None).expect("decide");
    let echo = decision
        .tags
        .iter()
        .find(|(k, _)| k == "query")
        .map(|(_, v)| v.as_str())
        .expect("the echo tag");
    let fingerprint = format!("fingerprint: {},", q.classification.fingerprint);
    let sql_field = format!("sql: {sql:?}");
    for expected in [
        "protocol: Protocol::Postgres",
        sql_field.as_str(),
        fingerprint.as_str(),
        "kind: StatementKind::Write",
        "HAS_WHERE",
        "HAS_LIMIT",
        "MULTI_STATEMENT",
        "tables-read: [\"Q.t\"]",
        "tables-written: [\"public.accounts\"]",
        "functions: [\"lower\"]",
        "user: \"bob\"",
        "database: \"app\"",
        "client-addr: \"10.1.2.3:4567\"",
        "in-transaction: true",
        "command: \"UPDATE\"",
        "command: \"EXPLAIN\"",
        "command: \"SELECT\"",
        "schema: Some(\"public\"), name: \"accounts\", access: Access::Write, guessed: false",
        "schema: Some(\"Q\"), name: \"t\"",
        "depth: 1",
        "has-where: true, has-limit: true",
        "kind: ObjectKind::Function, schema: None, name: \"lower\", access: Access::Call",
        "runs: false",
        "attributes: [(\"startup.application_name\", \"billing\"), (\"extended\", \"true\")]",
    ] {
        assert!(echo.contains(expected), "missing {expected} in {echo}");
    }
}

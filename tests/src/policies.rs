//! The example policies and fixtures, built by `policies/build.sh` into `policies/dist/`.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The built component `policies/dist/<name>.wasm`. Panics with the command to run when it is
/// missing, so a test never silently skips.
pub fn policy_wasm(name: &str) -> PathBuf {
    let path = repo_root()
        .join("policies/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the example policies first with `policies/build.sh`",
        path.display()
    );
    path
}

use switchyard::model::{Protocol, QueryContext};

/// A PostgreSQL statement from user `alice`, classified by the real classifier.
pub fn pg_query(sql: &str) -> QueryContext {
    query_as(sql, "alice")
}

pub fn query_as(sql: &str, user: &str) -> QueryContext {
    QueryContext {
        protocol: Protocol::Postgres,
        sql: sql.to_owned(),
        classification: switchyard::classify::classify(Protocol::Postgres, sql),
        user: user.into(),
        database: "app".into(),
        client_addr: "127.0.0.1:40000".into(),
        in_transaction: false,
        attributes: Vec::new().into(),
    }
}

/// The `switchyard` binary built next to this test binary (`cargo test --workspace` builds it,
/// since the host package's CLI tests need it). Panics with the command to run when it is
/// missing.
pub fn switchyard_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/integration-<hash> -> target/<profile>/switchyard
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("switchyard"))
        .unwrap_or_default();
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p switchyard --bin switchyard`",
        path.display()
    );
    path
}

//! Config tests: the example files, each validation rule (by key path), `${ENV}` expansion,
//! defaults, redaction, and the value parsers. No server or file system needed except where a
//! test writes its own temporary file.

mod access;
mod backend_tls;
mod causal;
mod env;
mod examples;
mod guards;
mod parse;
mod rules;
mod values;

use std::collections::HashMap;

use super::{Config, ConfigError, Reason};

/// A small valid config that tests extend (TOML forbids redefining a table, so tests append new
/// tables or `replace` lines).
const BASE: &str = r#"
[[listener]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:6432"
cluster = "main"

[cluster.main]
protocol = "postgres"

[cluster.main.pool.primary]
role = "primary"
nodes = ["127.0.0.1:5432"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["127.0.0.1:5433", "127.0.0.1:5434"]

[[user]]
name = "app"
password = "secret"
databases = ["app"]
"#;

fn no_env(_: &str) -> Option<String> {
    None
}

/// Parses with an empty environment.
fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with_env(text, &no_env)
}

/// Parses with the given variables as the environment.
fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::parse_with_env(text, &move |name| vars.get(name).cloned())
}

/// `BASE` followed by `extra`.
fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

/// The key path and reason of the error `text` must produce.
#[track_caller]
fn fails(text: &str) -> (String, Reason) {
    match parse(text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(err) => {
            let display = err.to_string();
            assert!(!display.contains('\n'), "error is not one line: {display}");
            match err {
                ConfigError::Key { path, reason, .. } => (path.to_string(), reason),
                other => panic!("expected a key error, got: {other}"),
            }
        }
    }
}

/// Asserts `text` fails at `path` with a reason matching `check`.
#[track_caller]
fn fails_at(text: &str, path: &str, check: impl Fn(&Reason) -> bool) {
    let (got_path, reason) = fails(text);
    assert_eq!(got_path, path, "wrong key path (reason: {reason})");
    assert!(check(&reason), "unexpected reason at {path}: {reason:?}");
}

#[test]
fn base_config_is_valid() {
    let config = parse(BASE).expect("BASE is valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.users.len(), 1);
}

//! The case file format (TOML) and its loading.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::CaseError;
use crate::config::PolicyParams;
use crate::model::Protocol;

/// A parsed case file: the policy config and the statements with their expected decisions.
#[derive(Debug, Clone)]
pub struct CaseFile {
    /// `[config]`: handed to `init` (flattened like `[policy.config]`).
    pub config: Vec<(String, String)>,
    pub cases: Vec<Case>,
    pub config_errors: Vec<ConfigErrorCase>,
}

/// One statement and what the policy must decide for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Shown in the report; defaults to the SQL.
    #[serde(default)]
    pub name: Option<String>,
    pub sql: String,
    #[serde(default = "postgres")]
    pub user: String,
    #[serde(default = "postgres")]
    pub database: String,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default)]
    pub in_transaction: bool,
    /// Protocol attributes (`"startup.application_name" = "acme"`); dotted keys may be written
    /// unquoted, as in `[policy.config]`.
    #[serde(default)]
    pub attributes: PolicyParams,
    #[serde(default = "default_client_addr")]
    pub client_addr: String,
    pub expect: Expect,
}

impl Case {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.sql)
    }
}

/// A config `init` must refuse, with exactly this message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigErrorCase {
    #[serde(default)]
    pub name: Option<String>,
    pub config: PolicyParams,
    pub error: String,
}

/// The expected decision. Only `action` is required; a field left out is not checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub action: ExpectedAction,
    /// The block reason (with `action = "block"`).
    #[serde(default)]
    pub reason: Option<String>,
    /// The rewritten SQL (with `action = "rewrite"`).
    #[serde(default)]
    pub sql: Option<String>,
    /// `default`, `primary`, `replica` or `pool:<name>`.
    #[serde(default)]
    pub route: Option<String>,
    /// `false`: no cache directive; a table: exactly this one.
    #[serde(default)]
    pub cache: Option<OrNone<ExpectedCache>>,
    /// `false`: no affinity key.
    #[serde(default)]
    pub affinity_key: Option<OrNone<String>>,
    /// The exact tags, in any order (`{}`: none).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// `false`: no mirror.
    #[serde(default)]
    pub mirror: Option<OrNone<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedAction {
    Forward,
    Block,
    Rewrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCache {
    pub ttl_ms: u32,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub shared: bool,
}

/// `false` (there must be none) or a value. TOML has no null, hence the boolean.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OrNone<T> {
    None(bool),
    Some(T),
}

impl<T> OrNone<T> {
    pub fn as_option(&self) -> Option<&T> {
        match self {
            OrNone::None(_) => None,
            OrNone::Some(v) => Some(v),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    config: PolicyParams,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
    #[serde(default, rename = "config_error")]
    config_errors: Vec<ConfigErrorCase>,
}

fn postgres() -> String {
    "postgres".to_owned()
}

fn default_protocol() -> Protocol {
    Protocol::Postgres
}

fn default_client_addr() -> String {
    "127.0.0.1:50000".to_owned()
}

impl CaseFile {
    pub fn load(path: &Path) -> Result<Self, CaseError> {
        let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CaseError> {
        let invalid = |reason: String| CaseError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| invalid(one_line(&e.to_string())))?;
        if raw.cases.is_empty() && raw.config_errors.is_empty() {
            return Err(invalid("no [[case]] and no [[config_error]]".to_owned()));
        }
        for case in &raw.cases {
            check_expect(case)
                .map_err(|reason| invalid(format!("case `{}`: {reason}", case.label())))?;
        }
        Ok(CaseFile {
            config: raw.config.to_pairs(),
            cases: raw.cases,
            config_errors: raw.config_errors,
        })
    }
}

/// Catches expectations that could never be met, which would make a case fail for the wrong
/// reason (or, for `true`, read as "any value").
fn check_expect(case: &Case) -> Result<(), String> {
    let e = &case.expect;
    if e.reason.is_some() && e.action != ExpectedAction::Block {
        return Err("`reason` only goes with action = \"block\"".to_owned());
    }
    if e.sql.is_some() && e.action != ExpectedAction::Rewrite {
        return Err("`sql` only goes with action = \"rewrite\"".to_owned());
    }
    if let Some(route) = &e.route {
        super::expect::parse_route(route)?;
    }
    let is_true = |b: Option<bool>| b == Some(true);
    let flag = |o: &Option<OrNone<String>>| match o {
        Some(OrNone::None(b)) => Some(*b),
        _ => None,
    };
    let cache_flag = match &e.cache {
        Some(OrNone::None(b)) => Some(*b),
        _ => None,
    };
    if is_true(cache_flag) || is_true(flag(&e.affinity_key)) || is_true(flag(&e.mirror)) {
        return Err("`true` is not an expectation: write `false` (none) or the value".to_owned());
    }
    Ok(())
}

/// TOML errors span several lines (a source excerpt); the CLI prints one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}

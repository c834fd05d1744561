//! `switchyard policy test`: runs a policy over a case file (statements with their expected
//! decisions) through the real engine and reports every difference.
//!
//! The same case file run on the Rust, Python and JavaScript builds of a policy is what shows
//! they decide alike. Format (TOML):
//!
//! ```toml
//! [config]                      # handed to init, like [policy.config]
//! "limit.alice" = 100
//!
//! [[case]]
//! name = "unbounded select gets a limit"   # optional, defaults to the SQL
//! sql = "SELECT * FROM t"
//! user = "alice"                # optional: user, database ("postgres"), protocol ("postgres"),
//! attributes = { tenant = "a" } #   in_transaction (false), attributes ({}), client_addr
//! expect = { action = "rewrite", sql = "SELECT * FROM t LIMIT 100", route = "replica", tags = { guard = "limit" } }
//!
//! [[config_error]]              # a config init must refuse, with exactly this message
//! config = { "limit.alice" = "lots" }
//! error = "config key `limit.alice`: expected a whole number, got `lots`"
//! ```
//!
//! `expect`: `action` (`forward`, `block`, `rewrite`) is required; `reason` (block), `sql`
//! (rewrite), `route` (`default`, `primary`, `replica`, `pool:<name>`), `cache` (`false` or
//! `{ ttl_ms, namespace, shared }`), `affinity_key` and `mirror` (`false` or a string) and
//! `tags` (exact, any order) are checked when given.

mod expect;
mod file;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use expect::{Mismatch, compare, show_action, show_route};
pub use file::{Case, CaseFile, ConfigErrorCase, Expect, ExpectedAction, ExpectedCache, OrNone};

use super::{CompiledPolicy, InstanceLimits, PolicyError, PolicyRuntime, PolicySettings};
use crate::classify::classify;
use crate::model::{Decision, QueryContext};

/// Why a case file could not be run (a mismatch is not an error: it is in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read case file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("case file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    /// The policy's decision (`None` for a `[[config_error]]` case or a failed call).
    pub decision: Option<Decision>,
    /// Empty when the case passed.
    pub mismatches: Vec<Mismatch>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Every case's outcome for one policy module.
#[derive(Debug, Clone)]
pub struct Report {
    pub policy: PathBuf,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|o| !o.passed()).count()
    }

    pub fn passed(&self) -> usize {
        self.outcomes.len() - self.failed()
    }

    /// One line per case, the differences under each failed one, and an `N passed, N failed`
    /// summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.policy.display());
        for o in &self.outcomes {
            let _ = writeln!(
                out,
                "  {}  {}",
                if o.passed() { "ok  " } else { "FAIL" },
                o.label
            );
            for m in &o.mismatches {
                for line in m.to_string().lines() {
                    let _ = writeln!(out, "          {line}");
                }
            }
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}

/// Runs case files against one compiled policy module.
pub struct Runner {
    compiled: CompiledPolicy,
    limits: InstanceLimits,
}

impl Runner {
    /// Compiles the module once; every config of the case file is then an instance of it.
    pub fn new(runtime: &PolicyRuntime, policy: &Path) -> Result<Self, CaseError> {
        let defaults = PolicySettings::default();
        Ok(Runner {
            compiled: CompiledPolicy::compile(runtime, policy)?,
            limits: InstanceLimits {
                deadline: defaults.deadline,
                memory_limit: defaults.memory_limit,
                instances: 1,
                init_deadline: std::time::Duration::from_secs(1).max(defaults.deadline),
            },
        })
    }

    /// The deadline and memory cap the cases run under (default: the proxy's defaults).
    pub fn with_limits(mut self, limits: InstanceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs every case. `extra_config` (`--set`) is merged over the file's `[config]`.
    pub fn run(
        &self,
        file: &CaseFile,
        extra_config: &[(String, String)],
    ) -> Result<Report, CaseError> {
        let mut config: BTreeMap<String, String> = file.config.iter().cloned().collect();
        config.extend(extra_config.iter().cloned());
        let mut outcomes = Vec::new();
        if !file.cases.is_empty() {
            let policy = self
                .compiled
                .load(config.into_iter().collect(), self.limits.clone())?;
            for case in &file.cases {
                let (decision, mismatches) = match policy.call(&query(case), None) {
                    Ok(d) => {
                        let mismatches = compare(&case.expect, &d);
                        (Some(d), mismatches)
                    }
                    Err(failure) => (
                        None,
                        vec![Mismatch {
                            field: "call",
                            expected: "a decision".to_owned(),
                            actual: format!("failure: {failure}"),
                        }],
                    ),
                };
                outcomes.push(Outcome {
                    label: case.label().to_owned(),
                    decision,
                    mismatches,
                });
            }
        }
        for case in &file.config_errors {
            outcomes.push(self.config_error(case));
        }
        Ok(Report {
            policy: self.compiled.path().to_path_buf(),
            outcomes,
        })
    }

    fn config_error(&self, case: &ConfigErrorCase) -> Outcome {
        let label = case
            .name
            .clone()
            .unwrap_or_else(|| format!("config refused: {}", case.error));
        let actual = match self
            .compiled
            .load(case.config.to_pairs(), self.limits.clone())
        {
            Ok(_) => "accepted".to_owned(),
            Err(PolicyError::Init { reason, .. }) if reason == case.error => {
                return Outcome {
                    label,
                    decision: None,
                    mismatches: Vec::new(),
                };
            }
            Err(PolicyError::Init { reason, .. }) => format!("refused: {reason:?}"),
            Err(other) => format!("failed: {other}"),
        };
        Outcome {
            label,
            decision: None,
            mismatches: vec![Mismatch {
                field: "init",
                expected: format!("refused: {:?}", case.error),
                actual,
            }],
        }
    }
}

/// The statement as the proxy would hand it over, classified by the real classifier.
pub fn query(case: &Case) -> QueryContext {
    QueryContext {
        protocol: case.protocol,
        sql: case.sql.clone(),
        classification: classify(case.protocol, &case.sql),
        user: case.user.as_str().into(),
        database: case.database.as_str().into(),
        client_addr: case.client_addr.as_str().into(),
        in_transaction: case.in_transaction,
        attributes: case.attributes.to_pairs().into(),
    }
}

#[cfg(test)]
mod tests;

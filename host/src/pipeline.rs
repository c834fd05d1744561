//! The protocol-neutral front half of every query: classify, ask the policy, and classify again
//! when the policy rewrote the statement. Frontends call [`decide`] and act on the [`Verdict`].

use std::sync::Arc;

use crate::classify::Classifier;
use crate::model::{Action, Classification, Decision, QueryContext};
use crate::policy::{BackendStateSource, PolicyError, PolicyHandle};

/// What the front half concluded about one statement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// The policy's decision, as returned.
    pub decision: Decision,
    /// The classification of the statement that will run: the rewritten one after a rewrite.
    pub effective: Classification,
    /// How long the policy call took (metrics).
    #[serde(skip)]
    pub policy_time: std::time::Duration,
}

impl Verdict {
    /// The SQL to send to the backend: the rewrite, or the original.
    pub fn sql<'a>(&'a self, original: &'a str) -> &'a str {
        match &self.decision.action {
            Action::Rewrite(sql) => sql,
            _ => original,
        }
    }
}

/// Asks the policy about `query` (already classified) and re-classifies a rewrite, so routing and
/// caching see what will really run — a rewrite that turns a read into a write goes to the primary.
pub fn decide(
    classifier: &Classifier,
    policy: &PolicyHandle,
    query: &QueryContext,
    backend: Option<&Arc<dyn BackendStateSource>>,
) -> Result<Verdict, PolicyError> {
    let started = std::time::Instant::now();
    let decision = policy.decide(query, backend)?;
    let policy_time = started.elapsed();
    let effective = match &decision.action {
        Action::Rewrite(sql) => classifier.classify(query.protocol, sql),
        _ => query.classification.clone(),
    };
    Ok(Verdict {
        decision,
        effective,
        policy_time,
    })
}

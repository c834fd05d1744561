//! What a session remembers about a statement until its answer completes, for metrics, the digest
//! table and the slow-query log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::statements::Statement;
use crate::metrics::{CacheOutcome, Metrics, Outcome, QueryEvent};
use crate::model::Protocol;
use crate::pipeline::Verdict;

/// The statement's text, kept without copying.
pub(super) enum Text {
    Sql(String),
    Prepared(Arc<Statement>),
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Sql(s) => s,
            Text::Prepared(stmt) => stmt.sql.as_str(),
        }
    }
}

pub(super) struct Observed {
    pub query_id: u64,
    pub started: Instant,
    /// When it was handed to a server.
    pub sent: Option<Instant>,
    /// Shared, not copied: fingerprint, route and tags are read from it when the answer is
    /// counted (the tags would cost allocations per statement, cache hits included).
    verdict: Arc<Verdict>,
    outcome: Outcome,
    pub cache: CacheOutcome,
    policy: Duration,
    text: Text,
}

impl Observed {
    /// The policy's verdict on the statement and its classification.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The statement's fingerprint.
    pub fn fingerprint(&self) -> u64 {
        self.verdict.effective.fingerprint
    }

    /// Whether the policy let the proxy pick between replicas and the primary (`default` or
    /// `replica`, not a forced `primary` or named pool).
    pub fn routed_by_default(&self) -> bool {
        self.verdict.decision.route.is_read_routing()
    }

    pub fn new(
        query_id: u64,
        started: Instant,
        verdict: Arc<Verdict>,
        text: Text,
        cache: CacheOutcome,
    ) -> Observed {
        Observed {
            query_id,
            started,
            sent: None,
            outcome: Outcome::of(&verdict.decision.action),
            cache,
            policy: verdict.policy_time,
            verdict,
            text,
        }
    }

    /// The statement's text as the client sent it.
    pub fn sql(&self) -> &str {
        self.text.as_str()
    }

    pub fn without_policy_call(mut self) -> Observed {
        self.policy = Duration::ZERO;
        self
    }

    /// Refused before a server saw it (a routing or pool error).
    pub fn refused(mut self) -> Observed {
        self.outcome = Outcome::Refused;
        self
    }

    pub fn finish(self, metrics: &Metrics, user: &str, pool: &str, failed: bool) {
        let now = Instant::now();
        metrics.record(&QueryEvent {
            query_id: self.query_id,
            protocol: Protocol::Postgres,
            user,
            route: self.verdict.decision.route.kind(),
            pool,
            outcome: self.outcome,
            cache: self.cache,
            fingerprint: self.verdict.effective.fingerprint,
            sql: self.text.as_str(),
            tags: &self.verdict.decision.tags,
            elapsed: now.saturating_duration_since(self.started),
            backend: self.sent.map(|s| now.saturating_duration_since(s)),
            policy: self.policy,
            failed,
        });
    }
}

/// The cache outcome for a statement the cache was not asked about.
pub(super) fn cache_outcome(verdict: &Verdict, looked_up: bool) -> CacheOutcome {
    match (&verdict.decision.cache, looked_up) {
        (_, true) => CacheOutcome::Miss,
        (Some(d), false) if d.ttl_ms > 0 => CacheOutcome::NotCacheable,
        _ => CacheOutcome::Off,
    }
}

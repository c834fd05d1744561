//! What one request's metrics need, filled in as the request learns it (who, which statement,
//! what the policy said, how long the backend took) and reported once its answer is ready.
//!
//! Latencies are to the response head: a streamed body is not waited for.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Response;

use super::respond::X_CACHE;
use crate::metrics::{CacheOutcome, Metrics, Outcome, QueryEvent};
use crate::model::{Protocol, QueryContext};
use crate::pipeline::Verdict;

pub(super) struct Trace {
    pub query_id: u64,
    started: Instant,
    statement: Mutex<Option<Statement>>,
    backend_ns: AtomicU64,
}

struct Statement {
    user: String,
    route: &'static str,
    pool: String,
    outcome: Outcome,
    cache_requested: bool,
    fingerprint: u64,
    sql: String,
    tags: Vec<(String, String)>,
    policy: Duration,
}

impl Trace {
    pub fn new(query_id: u64) -> Trace {
        Trace {
            query_id,
            started: Instant::now(),
            statement: Mutex::new(None),
            backend_ns: AtomicU64::new(0),
        }
    }

    /// The policy decided (`verdict`), or failed (`None`). Takes the context's SQL (the context
    /// is not needed after the decision).
    pub fn decided(&self, context: &mut QueryContext, verdict: Option<&Verdict>, pool: &str) {
        let statement = Statement {
            user: context.user.to_string(),
            route: verdict.map_or("none", |v| v.decision.route.kind()),
            pool: pool.to_owned(),
            outcome: verdict.map_or(Outcome::PolicyError, |v| Outcome::of(&v.decision.action)),
            cache_requested: verdict
                .and_then(|v| v.decision.cache.as_ref())
                .is_some_and(|c| c.ttl_ms > 0),
            fingerprint: context.classification.fingerprint,
            sql: std::mem::take(&mut context.sql),
            tags: verdict.map(|v| v.decision.tags.clone()).unwrap_or_default(),
            policy: verdict.map_or(Duration::ZERO, |v| v.policy_time),
        };
        *self.statement.lock().unwrap_or_else(|p| p.into_inner()) = Some(statement);
    }

    pub fn backend_took(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.backend_ns.store(ns, Ordering::Relaxed);
    }

    /// Records the request, if it got as far as a statement.
    pub fn finish<B>(&self, metrics: &Metrics, response: &Response<B>) {
        let Some(s) = self
            .statement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let failed = !response.status().is_success();
        let cache = match response.headers().get(X_CACHE).map(|v| v.as_bytes()) {
            Some(b"HIT") => CacheOutcome::Hit,
            Some(b"MISS") => CacheOutcome::Miss,
            _ if s.cache_requested => CacheOutcome::NotCacheable,
            _ => CacheOutcome::Off,
        };
        let backend_ns = self.backend_ns.load(Ordering::Relaxed);
        let backend = (backend_ns > 0).then(|| Duration::from_nanos(backend_ns));
        let outcome = match s.outcome {
            Outcome::Forward | Outcome::Rewrite
                if failed && backend.is_none() && cache != CacheOutcome::Hit =>
            {
                Outcome::Refused
            }
            other => other,
        };
        let pool = if backend.is_some() {
            s.pool.as_str()
        } else {
            ""
        };
        metrics.record(&QueryEvent {
            query_id: self.query_id,
            protocol: Protocol::ClickhouseHttp,
            user: &s.user,
            route: s.route,
            pool,
            outcome,
            cache,
            fingerprint: s.fingerprint,
            sql: &s.sql,
            tags: &s.tags,
            elapsed: self.started.elapsed(),
            backend,
            policy: s.policy,
            failed,
        });
    }
}

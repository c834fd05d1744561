//! Shadow mode: a candidate policy called on live traffic next to the active one; its decisions
//! are compared, counted and sampled in logs, never applied.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Decision, QueryContext};

/// The parts of a decision compared, in the order of [`ShadowStatsSnapshot::differences`].
pub const FIELDS: [&str; 6] = ["action", "route", "cache", "affinity_key", "tags", "mirror"];

/// Least time between two sampled difference log lines.
const LOG_EVERY_MS: u64 = 1000;

#[derive(Debug, Default)]
pub struct ShadowStats {
    calls: AtomicU64,
    /// Calls whose decision differed in at least one field.
    differing: AtomicU64,
    failures: AtomicU64,
    by_field: [AtomicU64; FIELDS.len()],
    last_log_ms: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShadowStatsSnapshot {
    pub calls: u64,
    pub differing: u64,
    pub failures: u64,
    /// `(field, calls where that field differed)`.
    pub differences: Vec<(&'static str, u64)>,
}

impl ShadowStats {
    pub fn snapshot(&self) -> ShadowStatsSnapshot {
        ShadowStatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            differing: self.differing.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            differences: FIELDS
                .iter()
                .zip(&self.by_field)
                .map(|(f, c)| (*f, c.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    pub fn reset(&self) {
        for c in [&self.calls, &self.differing, &self.failures]
            .into_iter()
            .chain(&self.by_field)
        {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn failed(&self, candidate: &str, error: &dyn std::fmt::Display) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        if self.may_log() {
            tracing::warn!(target: "switchyard::policy::shadow", candidate, error = %error, "shadow policy call failed");
        }
    }

    /// Counts one comparison; logs a sample of differences (at most one line a second).
    pub(super) fn compare(
        &self,
        candidate: &str,
        query: &QueryContext,
        active: &Decision,
        shadow: &Decision,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let differs = differences(active, shadow);
        if !differs.iter().any(|d| *d) {
            return;
        }
        self.differing.fetch_add(1, Ordering::Relaxed);
        for (counter, _) in self.by_field.iter().zip(differs).filter(|(_, d)| *d) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if self.may_log() {
            let fields: Vec<&str> = FIELDS
                .iter()
                .zip(differs)
                .filter_map(|(f, d)| d.then_some(*f))
                .collect();
            tracing::info!(
                target: "switchyard::policy::shadow",
                candidate,
                user = &*query.user,
                fingerprint = %format_args!("{:016x}", query.classification.fingerprint),
                fields = ?fields,
                active = ?active,
                shadow = ?shadow,
                "shadow policy decided differently"
            );
        }
    }

    fn may_log(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_EVERY_MS
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

fn differences(a: &Decision, b: &Decision) -> [bool; FIELDS.len()] {
    [
        a.action != b.action,
        a.route != b.route,
        a.cache != b.cache,
        a.affinity_key != b.affinity_key,
        a.tags != b.tags,
        a.mirror != b.mirror,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Protocol, Route};

    #[test]
    fn each_differing_field_is_counted_once_per_call() {
        let stats = ShadowStats::default();
        let query = QueryContext {
            protocol: Protocol::Postgres,
            sql: "SELECT 1".into(),
            classification: crate::classify::classify(Protocol::Postgres, "SELECT 1"),
            user: "u".into(),
            database: "d".into(),
            client_addr: "127.0.0.1:1".into(),
            in_transaction: false,
            attributes: Vec::new().into(),
        };
        let active = Decision::forward_default();
        let mut shadow = Decision::forward_default();
        stats.compare("c", &query, &active, &shadow);
        shadow.route = Route::Primary;
        shadow.action = Action::Block("no".into());
        stats.compare("c", &query, &active, &shadow);
        stats.failed("c", &"trap");
        let s = stats.snapshot();
        assert_eq!((s.calls, s.differing, s.failures), (3, 1, 1));
        assert_eq!(s.differences[0], ("action", 1));
        assert_eq!(s.differences[1], ("route", 1));
        assert_eq!(s.differences[2], ("cache", 0));
    }
}

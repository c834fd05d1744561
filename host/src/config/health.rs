//! `[cluster.<name>.pool.<pool>.health]`: how a pool's nodes are checked and banned.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::units;
use super::validate::Problems;

/// Health checks and bans for the nodes of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    #[serde(with = "units::duration")]
    pub interval: Duration,
    #[serde(with = "units::duration")]
    pub timeout: Duration,
    /// The check; `None` uses the protocol's: `SELECT 1` (PostgreSQL, plus the replication
    /// lag queries on replicas), `GET /ping` (ClickHouse HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Consecutive failed checks or connection attempts that ban a node.
    pub failures_before_ban: u32,
    /// How long a banned node stays out of rotation before it is checked again.
    #[serde(with = "units::duration")]
    pub ban_time: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            query: None,
            failures_before_ban: 3,
            ban_time: Duration::from_secs(30),
        }
    }
}

// === impl HealthConfig ===

impl HealthConfig {
    pub(super) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        problems.duration(path.key("interval"), self.interval, ms, hour);
        problems.duration(path.key("timeout"), self.timeout, ms, hour);
        if self.timeout > self.interval {
            problems.add(
                path.key("timeout"),
                Reason::Exceeds {
                    other: "interval".to_string(),
                    limit: units::format_duration(self.interval),
                },
            );
        }
        if self.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            problems.add(path.key("query"), Reason::Empty);
        }
        problems.range(
            path.key("failures_before_ban"),
            self.failures_before_ban,
            1,
            1000,
        );
    }
}

//! `[server]`: process-wide settings: the runtime and how shutdown drains.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::KeyPath;
use super::units;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// On SIGTERM, how long in-flight queries and open transactions may finish before the
    /// remaining connections are closed.
    #[serde(with = "units::duration")]
    pub drain_timeout: Duration,
    /// Runtime worker threads; `None`: one per CPU core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u32>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            drain_timeout: Duration::from_secs(30),
            worker_threads: None,
        }
    }
}

impl ServerConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        problems.duration(
            path.key("drain_timeout"),
            self.drain_timeout,
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        if let Some(threads) = self.worker_threads {
            problems.range(path.key("worker_threads"), threads, 1, 1024);
        }
    }
}

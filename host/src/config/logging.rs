//! `[log]`: what is logged and how.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::units;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `warn,switchyard=debug`, ... (`RUST_LOG` overrides it).
    pub level: String,
    pub format: LogFormat,
    /// Queries slower than this are logged at `warn` with their fingerprint and timings.
    #[serde(with = "units::duration_opt", skip_serializing_if = "Option::is_none")]
    pub slow_query_threshold: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
            slow_query_threshold: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.level.trim().is_empty() {
            problems.add(path.key("level"), Reason::Empty);
        }
    }
}

//! `[[limit]]`: limits per value of a tag the policy returns (`tenant = "acme"`), each value
//! limited on its own, with optional overrides for named values.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::units;
use super::validate::Problems;

/// Distinct values tracked per rule when `max_values` is not set.
pub const DEFAULT_MAX_VALUES: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagLimitConfig {
    /// The tag whose values are limited.
    pub tag: String,
    // The limit keys are spelled out rather than a flattened `TagLimitValues`: serde's
    // `deny_unknown_fields` does not work through `flatten`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_queue_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Distinct values with state at once; idle ones are forgotten first, and values beyond it
    /// share one overflow limit.
    #[serde(default = "default_max_values")]
    pub max_values: u32,
    /// Per-value overrides of the keys above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, TagLimitValues>,
}

/// The limit keys of a rule or of one value's override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagLimitValues {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_queue_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
}

fn default_max_values() -> u32 {
    DEFAULT_MAX_VALUES
}

impl TagLimitValues {
    /// These keys over `base` (an override over its rule).
    pub fn over(&self, base: &TagLimitValues) -> TagLimitValues {
        TagLimitValues {
            max_concurrent_queries: self.max_concurrent_queries.or(base.max_concurrent_queries),
            max_queue_size: self.max_queue_size.or(base.max_queue_size),
            max_queue_time: self.max_queue_time.or(base.max_queue_time),
            requests_per_minute: self.requests_per_minute.or(base.requests_per_minute),
        }
    }

    fn is_empty(&self) -> bool {
        self.max_concurrent_queries.is_none() && self.requests_per_minute.is_none()
    }

    /// `effective` is what applies (the rule's keys merged in for an override).
    fn check(&self, effective: &TagLimitValues, path: &KeyPath, problems: &mut Problems) {
        check_query_limits(
            QueryLimitKeys {
                max_concurrent_queries: self.max_concurrent_queries,
                limited: effective.max_concurrent_queries.is_some(),
                max_queue_size: self.max_queue_size,
                max_queue_time: self.max_queue_time,
                requests_per_minute: self.requests_per_minute,
            },
            path,
            problems,
        );
    }
}

/// The query-limit keys users and tag rules share, as the check needs them.
pub(super) struct QueryLimitKeys {
    pub max_concurrent_queries: Option<u32>,
    /// Whether a concurrency limit applies (the queue keys need one).
    pub limited: bool,
    pub max_queue_size: Option<u32>,
    pub max_queue_time: Option<Duration>,
    pub requests_per_minute: Option<u32>,
}

/// Positive limits, queue keys only with a concurrency limit, a queue time of 1ms..=1d.
pub(super) fn check_query_limits(keys: QueryLimitKeys, path: &KeyPath, problems: &mut Problems) {
    problems.positive(
        path.key("max_concurrent_queries"),
        keys.max_concurrent_queries,
    );
    problems.positive(path.key("requests_per_minute"), keys.requests_per_minute);
    if !keys.limited {
        let queue_keys = [
            ("max_queue_size", keys.max_queue_size.is_some()),
            ("max_queue_time", keys.max_queue_time.is_some()),
        ];
        for (key, set) in queue_keys {
            if set {
                problems.add(
                    path.key(key),
                    Reason::OnlyFor {
                        condition: "max_concurrent_queries is set".to_string(),
                    },
                );
            }
        }
    }
    if let Some(time) = keys.max_queue_time {
        let (ms, day) = (Duration::from_millis(1), Duration::from_secs(86_400));
        problems.duration(path.key("max_queue_time"), time, ms, day);
    }
}

impl TagLimitConfig {
    /// The rule's own limits (what values without an override get).
    pub fn limits(&self) -> TagLimitValues {
        TagLimitValues {
            max_concurrent_queries: self.max_concurrent_queries,
            max_queue_size: self.max_queue_size,
            max_queue_time: self.max_queue_time,
            requests_per_minute: self.requests_per_minute,
        }
    }

    /// What applies to `value`.
    pub fn limits_for(&self, value: &str) -> TagLimitValues {
        let base = self.limits();
        match self.values.get(value) {
            Some(over) => over.over(&base),
            None => base,
        }
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.tag.is_empty() {
            problems.add(path.key("tag"), Reason::Empty);
        }
        let base = self.limits();
        base.check(&base, path, problems);
        if base.is_empty() && self.values.is_empty() {
            problems.add(
                path.key("max_concurrent_queries"),
                Reason::Required {
                    when: "a [[limit]] sets no other limit (give it or `requests_per_minute`)"
                        .to_string(),
                },
            );
        }
        problems.range(path.key("max_values"), self.max_values, 1, 1_000_000);
        for (value, over) in &self.values {
            let value_path = path.key("values").key(value.as_str());
            over.check(&over.over(&base), &value_path, problems);
        }
    }
}

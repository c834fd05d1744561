//! Limits per value of a policy tag (`[[limit]] tag = "tenant"`): every distinct value the
//! policy returns gets its own [`Limits`], created on first use.
//!
//! Memory is bounded by `max_values`. When a rule is full, values that are idle (no query holds
//! or waits for their permits, and none started for [`IDLE_AFTER`]) are forgotten; forgetting
//! one loses nothing, since its token bucket has refilled completely by then. Values that still
//! find no room share one overflow limit until room frees up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{ConcurrencyConfig, Limits, QueueConfig, Tenant};
use crate::config::{TagLimitConfig, TagLimitValues};

/// How long a value must go unused before it may be forgotten: a full token bucket's refill.
pub const IDLE_AFTER: Duration = Duration::from_secs(60);

/// How often a full rule looks for idle values (a sweep walks every value).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One tag value's limits and the tenant its waiters queue as.
#[derive(Debug)]
pub struct TagValue {
    pub limits: Limits,
    pub tenant: Tenant,
    /// Milliseconds since the rule's epoch when a query last started.
    last_used: AtomicU64,
}

/// One `[[limit]]` rule.
#[derive(Debug)]
pub struct TagRule {
    config: TagLimitConfig,
    epoch: Instant,
    values: RwLock<HashMap<Box<str>, Arc<TagValue>>>,
    overflow: Arc<TagValue>,
    last_sweep: Mutex<Option<Instant>>,
}

impl TagRule {
    pub fn new(config: &TagLimitConfig) -> TagRule {
        let overflow = TagValue {
            limits: limits_of(format!("tag {}=<overflow>", config.tag), &config.limits()),
            tenant: Tenant::tag(&config.tag, "<overflow>"),
            last_used: AtomicU64::new(0),
        };
        TagRule {
            config: config.clone(),
            epoch: Instant::now(),
            values: RwLock::new(HashMap::new()),
            overflow: Arc::new(overflow),
            last_sweep: Mutex::new(None),
        }
    }

    pub fn tag(&self) -> &str {
        &self.config.tag
    }

    /// Values with state now.
    pub fn tracked(&self) -> usize {
        self.values.read().map_or(0, |v| v.len())
    }

    /// The values with state now and their limits (for the admin API and metrics). The
    /// snapshot keeps them from being forgotten only while it lives.
    pub fn values(&self) -> Vec<(String, Arc<TagValue>)> {
        self.values.read().map_or_else(
            |_| Vec::new(),
            |values| {
                values
                    .iter()
                    .map(|(value, limits)| (value.to_string(), limits.clone()))
                    .collect()
            },
        )
    }

    /// The overflow limit's counters (queries of values beyond `max_values`).
    pub fn overflow(&self) -> &Arc<TagValue> {
        &self.overflow
    }

    /// The limits of `value`, created on first use.
    pub fn value(&self, value: &str) -> Arc<TagValue> {
        self.value_at(value, Instant::now())
    }

    pub(crate) fn value_at(&self, value: &str, now: Instant) -> Arc<TagValue> {
        let stamp = self.stamp(now);
        let found = self
            .values
            .read()
            .ok()
            .and_then(|values| values.get(value).cloned());
        let found = match found {
            Some(found) => found,
            None => self.insert(value, now),
        };
        found.last_used.fetch_max(stamp, Ordering::Relaxed);
        found
    }

    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn insert(&self, value: &str, now: Instant) -> Arc<TagValue> {
        let Ok(mut values) = self.values.write() else {
            return self.overflow.clone();
        };
        if let Some(found) = values.get(value) {
            return found.clone();
        }
        let max = self.config.max_values as usize;
        if values.len() >= max && self.sweep_due(now) {
            let stamp = self.stamp(now);
            let idle_ms = u64::try_from(IDLE_AFTER.as_millis()).unwrap_or(u64::MAX);
            // Held by the map alone: no query runs or waits under it.
            values.retain(|_, v| {
                Arc::strong_count(v) > 1
                    || stamp.saturating_sub(v.last_used.load(Ordering::Relaxed)) < idle_ms
            });
        }
        if values.len() >= max {
            return self.overflow.clone();
        }
        let created = Arc::new(TagValue {
            limits: limits_of(
                format!("tag {}={value}", self.config.tag),
                &self.config.limits_for(value),
            ),
            tenant: Tenant::tag(&self.config.tag, value),
            last_used: AtomicU64::new(self.stamp(now)),
        });
        values.insert(value.into(), created.clone());
        created
    }

    fn sweep_due(&self, now: Instant) -> bool {
        let Ok(mut last) = self.last_sweep.lock() else {
            return false;
        };
        if last.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

fn limits_of(owner: String, values: &TagLimitValues) -> Limits {
    let concurrency = values.max_concurrent_queries.map(|max| ConcurrencyConfig {
        max_concurrent: max,
        queue: QueueConfig::from_keys(values.max_queue_size, values.max_queue_time),
    });
    Limits::new(owner, concurrency, values.requests_per_minute)
}

//! Protocol-neutral admission limits: queries running at once with a bounded waiting queue, and
//! requests per minute. One [`Limits`] per proxy user, per value of a limited tag (see
//! [`tags`]) and per backend pool; a frontend asks [`Admission`] for the user's and the tags'
//! permits once the policy has decided, takes the pool's, and maps a [`LimitError`] to its
//! protocol.
//!
//! Queues are fair across tenants ([`fair`]): the pool's limit (and a PostgreSQL pool's
//! connections) serve the waiting tenants round-robin. Waiters are safe to cancel: a client that
//! goes away while queued leaves the queue.

mod admission;
pub mod fair;
mod rate;
mod stats;
pub mod tags;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use admission::{Admission, Admitted, UserLimits};
pub use fair::{FairPermit, FairSemaphore, Tenant, WaitError};
pub use rate::RateLimit;
pub use stats::LimitStats;
pub use tags::{TagRule, TagValue};

/// How long a queued query waits when only `max_queue_size` is configured.
pub const DEFAULT_QUEUE_TIME: Duration = Duration::from_secs(10);

/// Which limit refused a query. The Display names the limit and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// All slots are busy and there is no queue.
    #[error("limits for {owner} are exceeded: max_concurrent_queries limit: {limit}")]
    Concurrency { owner: String, limit: u32 },
    /// All slots are busy and the queue is full.
    #[error(
        "limits for {owner} are exceeded: max_queue_size limit: {limit} queries already waiting"
    )]
    QueueFull { owner: String, limit: u32 },
    /// The query waited in the queue for its whole `max_queue_time`.
    #[error(
        "limits for {owner} are exceeded: waited max_queue_time ({waited:?}) for a free slot of max_concurrent_queries {limit}"
    )]
    QueueTimeout {
        owner: String,
        limit: u32,
        waited: Duration,
    },
    #[error("limits for {owner} are exceeded: requests_per_minute limit: {limit}")]
    Rate { owner: String, limit: u32 },
}

/// How a concurrency limit behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyConfig {
    pub max_concurrent: u32,
    /// `None`: no queue, a busy limit refuses at once.
    pub queue: Option<QueueConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u32,
    pub max_time: Duration,
}

impl QueueConfig {
    /// From the optional `max_queue_size` / `max_queue_time` keys: a queue exists when either is
    /// set; an unset size is unbounded, an unset time is [`DEFAULT_QUEUE_TIME`].
    pub fn from_keys(size: Option<u32>, time: Option<Duration>) -> Option<QueueConfig> {
        if size.is_none() && time.is_none() {
            return None;
        }
        Some(QueueConfig {
            max_size: size.unwrap_or(u32::MAX),
            max_time: time.unwrap_or(DEFAULT_QUEUE_TIME),
        })
    }
}

/// The limits of one owner (a proxy user, a tag value, a backend pool).
#[derive(Debug)]
pub struct Limits {
    owner: String,
    concurrency: Option<(ConcurrencyConfig, Arc<FairSemaphore>)>,
    rate: Option<RateLimit>,
    stats: LimitStats,
}

/// Held while a query runs; frees its slot on drop.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<FairPermit>,
}

impl Permit {
    /// A permit of an owner without a concurrency limit.
    pub fn unlimited() -> Permit {
        Permit { _slot: None }
    }

    fn is_limited(&self) -> bool {
        self._slot.is_some()
    }
}

impl Limits {
    /// `owner` is how errors name it (`user "grafana"`, `pool "reader"`).
    pub fn new(
        owner: impl Into<String>,
        concurrency: Option<ConcurrencyConfig>,
        requests_per_minute: Option<u32>,
    ) -> Limits {
        Limits {
            owner: owner.into(),
            concurrency: concurrency
                .filter(|c| c.max_concurrent > 0)
                .map(|c| (c, Arc::new(FairSemaphore::new(c.max_concurrent)))),
            rate: requests_per_minute
                .filter(|&r| r > 0)
                .map(RateLimit::per_minute),
            stats: LimitStats::default(),
        }
    }

    /// A pool's `max_concurrent_queries`, over all users (chproxy's cluster-user limit). Queries
    /// wait for a slot as long as they would wait for a connection (`checkout_timeout`), served
    /// in turn across tenants. `None` when the pool sets no limit.
    pub fn for_pool(name: &str, config: &crate::config::PoolConfig) -> Option<Limits> {
        let max = config.max_concurrent_queries?;
        let concurrency = ConcurrencyConfig {
            max_concurrent: max,
            queue: QueueConfig::from_keys(None, Some(config.checkout_timeout)),
        };
        Some(Limits::new(
            format!("pool \"{name}\""),
            Some(concurrency),
            None,
        ))
    }

    pub fn none(owner: impl Into<String>) -> Limits {
        Limits::new(owner, None, None)
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether any limit is set (an owner without one costs nothing per query).
    pub fn is_limited(&self) -> bool {
        self.concurrency.is_some() || self.rate.is_some()
    }

    /// Counters for the admin API and metrics.
    pub fn stats(&self) -> &LimitStats {
        &self.stats
    }

    /// Counts one request against `requests_per_minute`.
    pub fn check_rate(&self) -> Result<(), LimitError> {
        match &self.rate {
            Some(rate) if !rate.try_take() => {
                self.stats.count_rejected(&LimitErrorKind::Rate);
                Err(LimitError::Rate {
                    owner: self.owner.clone(),
                    limit: rate.per_minute_limit(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.concurrency
            .as_ref()
            .map_or(0, |(_, semaphore)| semaphore.waiting())
    }

    /// Takes a slot, waiting in the queue if there is one; waiters of different tenants are
    /// served in turn.
    pub async fn acquire(&self, tenant: &Tenant) -> Result<Permit, LimitError> {
        let Some((config, semaphore)) = &self.concurrency else {
            return Ok(Permit::unlimited());
        };
        if let Some(slot) = semaphore.try_acquire() {
            self.stats.count_admitted();
            return Ok(Permit { _slot: Some(slot) });
        }
        let Some(queue) = config.queue else {
            self.stats.count_rejected(&LimitErrorKind::Concurrency);
            return Err(LimitError::Concurrency {
                owner: self.owner.clone(),
                limit: config.max_concurrent,
            });
        };
        let started = Instant::now();
        let waited = semaphore
            .acquire(tenant, queue.max_time, queue.max_size)
            .await;
        if !matches!(waited, Err(WaitError::QueueFull)) {
            self.stats.add_wait(started.elapsed());
        }
        match waited {
            Ok(slot) => {
                self.stats.count_admitted();
                Ok(Permit { _slot: Some(slot) })
            }
            Err(WaitError::QueueFull) => {
                self.stats.count_rejected(&LimitErrorKind::QueueFull);
                Err(LimitError::QueueFull {
                    owner: self.owner.clone(),
                    limit: queue.max_size,
                })
            }
            Err(WaitError::TimedOut) => {
                self.stats.count_rejected(&LimitErrorKind::QueueTimeout);
                Err(LimitError::QueueTimeout {
                    owner: self.owner.clone(),
                    limit: config.max_concurrent,
                    waited: queue.max_time,
                })
            }
        }
    }
}

/// The kinds of [`LimitError`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitErrorKind {
    Concurrency,
    QueueFull,
    QueueTimeout,
    Rate,
}

impl LimitError {
    pub fn kind(&self) -> LimitErrorKind {
        match self {
            LimitError::Concurrency { .. } => LimitErrorKind::Concurrency,
            LimitError::QueueFull { .. } => LimitErrorKind::QueueFull,
            LimitError::QueueTimeout { .. } => LimitErrorKind::QueueTimeout,
            LimitError::Rate { .. } => LimitErrorKind::Rate,
        }
    }
}

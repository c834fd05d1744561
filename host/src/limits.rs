//! Protocol-neutral admission limits: queries running at once with a bounded waiting queue, and
//! requests per minute. One [`Limits`] per proxy user and one per backend pool; a frontend takes a
//! [`Permit`] from each before it runs a query and maps a [`LimitError`] to its protocol.
//!
//! Waiters are safe to cancel: a client that goes away while queued leaves the queue (its
//! `acquire` future is dropped, the queue count is restored by a guard).

mod rate;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use rate::RateLimit;

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

/// The limits of one owner (a proxy user, a backend pool).
#[derive(Debug)]
pub struct Limits {
    owner: String,
    concurrency: Option<(ConcurrencyConfig, Arc<Semaphore>)>,
    waiting: Arc<AtomicU32>,
    rate: Option<RateLimit>,
}

/// Held while a query runs; frees its slot on drop.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// A permit of an owner without a concurrency limit.
    pub fn unlimited() -> Permit {
        Permit { _slot: None }
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
                .map(|c| (c, Arc::new(Semaphore::new(c.max_concurrent as usize)))),
            waiting: Arc::new(AtomicU32::new(0)),
            rate: requests_per_minute
                .filter(|&r| r > 0)
                .map(RateLimit::per_minute),
        }
    }

    pub fn none(owner: impl Into<String>) -> Limits {
        Limits::new(owner, None, None)
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Counts one request against `requests_per_minute`.
    pub fn check_rate(&self) -> Result<(), LimitError> {
        match &self.rate {
            Some(rate) if !rate.try_take() => Err(LimitError::Rate {
                owner: self.owner.clone(),
                limit: rate.per_minute_limit(),
            }),
            _ => Ok(()),
        }
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Takes a slot, waiting in the queue if there is one.
    pub async fn acquire(&self) -> Result<Permit, LimitError> {
        let Some((config, semaphore)) = &self.concurrency else {
            return Ok(Permit::unlimited());
        };
        if let Ok(slot) = semaphore.clone().try_acquire_owned() {
            return Ok(Permit { _slot: Some(slot) });
        }
        let Some(queue) = config.queue else {
            return Err(LimitError::Concurrency {
                owner: self.owner.clone(),
                limit: config.max_concurrent,
            });
        };
        let _queued = match Queued::enter(&self.waiting, queue.max_size) {
            Some(q) => q,
            None => {
                return Err(LimitError::QueueFull {
                    owner: self.owner.clone(),
                    limit: queue.max_size,
                });
            }
        };
        match tokio::time::timeout(queue.max_time, semaphore.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(Permit { _slot: Some(slot) }),
            // The semaphore is never closed; treat it like a timeout if it ever is.
            Ok(Err(_)) | Err(_) => Err(LimitError::QueueTimeout {
                owner: self.owner.clone(),
                limit: config.max_concurrent,
                waited: queue.max_time,
            }),
        }
    }
}

/// A place in the queue, given back on drop (also when the waiting future is cancelled).
struct Queued<'a>(&'a AtomicU32);

impl<'a> Queued<'a> {
    fn enter(waiting: &'a AtomicU32, max: u32) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Queued(waiting))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

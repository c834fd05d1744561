//! Client-side protocols: each frontend turns its wire protocol into protocol-neutral queries,
//! runs them through classify → policy → cache → route → backend, and maps every outcome back to
//! its protocol's native answers and errors.

pub mod clickhouse_http;
pub mod mysql;
pub mod postgres;

/// Where a shutdown is: frontends watch it to finish their clients politely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drain {
    #[default]
    Running,
    /// No new clients; sessions end at their next idle moment (outside a transaction).
    Draining,
    /// The drain timeout passed: every session ends now, with a protocol-correct error.
    Closing,
}

/// The sessions a user has open, counted against its `max_connections`.
#[derive(Debug, Default)]
pub struct SessionCount(std::sync::Arc<std::sync::atomic::AtomicU32>);

/// One counted session; uncounted on drop.
#[derive(Debug)]
pub struct SessionSlot(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl SessionCount {
    /// Counts a new session, or `None` when `max` are open already.
    pub fn open(&self, max: Option<u32>) -> Option<SessionSlot> {
        use std::sync::atomic::Ordering;
        let max = max.unwrap_or(u32::MAX);
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.0.clone()))
    }

    /// Sessions open now.
    pub fn now(&self) -> u32 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

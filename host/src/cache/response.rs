//! What the cache stores: opaque bytes that a frontend encodes and replays.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// One cached response. The cache never looks inside `meta` or `body`.
///
/// Pass `Bytes` that own exactly their data (`Bytes::from(vec)`, `Bytes::copy_from_slice`):
/// a slice of a larger buffer keeps the whole buffer alive while the cache weighs only the slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    /// Frontend-owned metadata: HTTP headers and format, a row description, ...
    pub meta: Bytes,
    /// The result, uncompressed and independent of the client's transport encoding.
    pub body: Bytes,
    /// When the backend produced it (wall clock, so that it means the same on every replica).
    pub created_at: SystemTime,
    /// How long it may be served; capped by the cache's `max_ttl` when stored.
    pub ttl: Duration,
    /// The backend's log position (a PostgreSQL WAL position) the data is known to reflect:
    /// every commit at or below it is in the answer. A lower bound, or [`Self::COMPLETE`] when
    /// the answer saw every commit made before its query was sent (a primary's, or a backend
    /// without positions). A reader that must see a position compares it with
    /// [`Self::reflects`]; the cache itself never looks at it.
    pub position: u64,
}

impl CachedResponse {
    /// A response produced now, to be kept for `ttl` (the policy directive's TTL).
    pub fn new(meta: Bytes, body: Bytes, ttl: Duration) -> Self {
        CachedResponse {
            meta,
            body,
            created_at: SystemTime::now(),
            ttl,
            position: Self::COMPLETE,
        }
    }

    /// [`position`](Self::position): it saw every commit made before its query was sent.
    pub const COMPLETE: u64 = u64::MAX;

    /// The response with the position its data is known to reflect (see [`Self::position`]).
    pub fn with_position(mut self, position: u64) -> Self {
        self.position = position;
        self
    }

    /// Whether its data includes every commit at or below `position`.
    pub fn reflects(&self, position: u64) -> bool {
        self.position >= position
    }

    /// Payload bytes, compared with `max_payload_size`.
    pub fn size(&self) -> usize {
        self.meta.len() + self.body.len()
    }

    /// How old it is (for an `Age` header); zero if the clock went backwards.
    pub fn age(&self) -> Duration {
        self.created_at.elapsed().unwrap_or_default()
    }

    /// Time left before it expires, `None` once expired.
    pub fn remaining_ttl(&self) -> Option<Duration> {
        self.ttl.checked_sub(self.age()).filter(|d| !d.is_zero())
    }
}

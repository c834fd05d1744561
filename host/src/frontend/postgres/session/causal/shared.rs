//! A client's causal position shared between Switchyard instances. A client that names a key
//! (`SET switchyard.causal_key = 'order-42'`, or the startup option) has the position of each of
//! its writes raised in Redis under that key (scoped by cluster and user) before it is told the
//! write is done, and each of its reads first takes the position stored there: a client that
//! writes through one instance and reads through another (a load balancer in front, a retry
//! elsewhere) still reads its own writes. It costs one Redis round trip per write and per read
//! of such a client, and such a client is not served from the cache (another instance's entry
//! may predate the write until that instance hears of its invalidation).
//!
//! Without a Redis tier the key makes that client's reads `global`; when Redis fails, a read
//! needs a primary position sampled after the failure (as after a lost probe).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Consistency;
use crate::model::{Lsn, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::TransactionStatus;

use super::super::Session;

/// How long a shared position outlives its last raise: far longer than any replica lag a read
/// would wait out, short enough that keys of clients gone do not pile up.
const SHARED_POSITION_TTL: Duration = Duration::from_secs(3600);

/// The longest key accepted (bytes).
const MAX_KEY_LEN: usize = 200;

/// A key as the client gave it, if usable (non-empty, not too long).
pub(super) fn valid_key(value: &str) -> Option<String> {
    (!value.is_empty() && value.len() <= MAX_KEY_LEN).then(|| value.to_owned())
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Whether this instance can share positions (a Redis tier is configured).
    pub(in super::super) fn shares_positions(&self) -> bool {
        self.fe.shared.cache.as_ref().is_some_and(|c| c.has_redis())
    }

    /// Whether the ReadyForQuery of the unit just completed waits for its position to be
    /// shared: a keyed client, Redis to share through, a probe to learn the position, and no
    /// later unit of the client's already on its way (whose answers must follow it).
    pub(in super::super) fn holds_ready_for_sharing(&self) -> bool {
        self.causal.probe_due
            && self.causal.shared_key.is_some()
            && self.shares_positions()
            && self.held.as_ref().is_some_and(|h| h.queue.is_empty())
    }

    pub(in super::super) fn hold_ready(&mut self, ready: bytes::Bytes) {
        self.causal.held_ready = Some(ready);
    }

    /// The client's held ReadyForQuery goes out.
    pub(in super::super) fn release_held_ready(&mut self) {
        if let Some(ready) = self.causal.held_ready.take() {
            self.io.wbuf.extend_from_slice(&ready);
        }
    }

    fn shared_name(&self) -> Option<String> {
        let key = self.causal.shared_key.as_deref()?;
        Some(format!(
            "{}:{}:{key}",
            self.fe.backend.router().cluster(),
            self.user.config.name
        ))
    }

    /// The probe answered: a keyed client's position is raised in Redis, then its held
    /// ReadyForQuery goes out.
    pub(in super::super) async fn share_position(&mut self) {
        if let (Some(name), Some(own), Some(cache)) = (
            self.shared_name(),
            self.causal.own,
            self.fe.shared.cache.clone(),
        ) && self.causal.unknown_since.is_none()
            && cache.has_redis()
        {
            match cache
                .raise_shared_position(&name, own.as_u64(), SHARED_POSITION_TTL)
                .await
            {
                Ok(()) => {}
                Err(e) => {
                    self.fe
                        .stats
                        .shared_position_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %self.peer, error = %e, "a causal position could not be shared through Redis: reads of this client through other instances may miss this write");
                }
            }
        }
        self.release_held_ready();
    }

    /// Before a read of a keyed client: the position its writes through any instance reached.
    pub(in super::super) async fn refresh_shared_position(&mut self, verdict: &Verdict) {
        if self.causal.shared_key.is_none()
            || verdict.effective.kind != StatementKind::Read
            || self.status != TransactionStatus::Idle
            || self.consistency(verdict) == Consistency::Eventual
        {
            return;
        }
        let (Some(name), Some(cache)) = (self.shared_name(), self.fe.shared.cache.clone()) else {
            return;
        };
        if !cache.has_redis() {
            return;
        }
        match cache.shared_position(&name).await {
            Ok(Some(position)) => {
                self.causal.own = self.causal.own.max(Some(Lsn(position)));
            }
            Ok(None) => {}
            Err(e) => {
                self.fe
                    .stats
                    .shared_position_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %self.peer, error = %e, "a shared causal position could not be read: the read needs a fresh primary position");
                self.causal.unknown_since.get_or_insert_with(Instant::now);
            }
        }
    }
}

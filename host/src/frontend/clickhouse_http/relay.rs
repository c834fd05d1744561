//! The running query's side of a streamed response: the backend's body passed to the client as it
//! comes, the query's deadline, and `KILL QUERY` when the proxy gives up on it.
//!
//! [`KillGuard`] sends the kill when dropped armed: the client went away (hyper drops the
//! response body, or the request future while waiting for the backend), or the deadline passed.
//! It is disarmed when the backend finished the response or never received the query.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::error::{ChError, code};
use crate::backend::clickhouse_http::{BoxError, ChBackend};
use crate::config::Credentials;
use crate::limits::Admitted;
use crate::route::{InFlight, NodeState, Pool};

/// Sends `KILL QUERY` for a query when dropped armed.
pub struct KillGuard {
    target: Option<KillTarget>,
}

struct KillTarget {
    backend: Arc<ChBackend>,
    pool: Arc<Pool>,
    node: Arc<NodeState>,
    credentials: Credentials,
    query_id: String,
}

impl KillGuard {
    pub fn armed(
        backend: Arc<ChBackend>,
        pool: Arc<Pool>,
        node: Arc<NodeState>,
        credentials: Credentials,
        query_id: String,
    ) -> KillGuard {
        KillGuard {
            target: Some(KillTarget {
                backend,
                pool,
                node,
                credentials,
                query_id,
            }),
        }
    }

    /// The query finished (or never started): nothing to kill.
    pub fn disarm(&mut self) {
        self.target = None;
    }

    /// Kills now (once).
    pub fn fire(&mut self) {
        if let Some(t) = self.target.take() {
            tracing::debug!(
                node = t.node.addr(),
                query_id = t.query_id,
                "killing abandoned query"
            );
            t.backend
                .kill_query(&t.pool, &t.node, &t.credentials, &t.query_id);
        }
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        self.fire();
    }
}

/// What a running query holds until its response is over (the permits and the in-flight count
/// are released by dropping them).
pub struct Held {
    pub _permits: Option<Admitted>,
    pub _in_flight: InFlight,
    pub kill: KillGuard,
}

/// A query's deadline and how to report it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub limit: Duration,
    pub started: Instant,
}

impl Deadline {
    pub fn error(&self) -> ChError {
        ChError::new(
            http::StatusCode::GATEWAY_TIMEOUT,
            code::TIMEOUT_EXCEEDED,
            format!(
                "Timeout exceeded: elapsed {:.3} seconds, maximum: {:.3} (max_execution_time of the proxy; the query was killed)",
                self.started.elapsed().as_secs_f64(),
                self.limit.as_secs_f64()
            ),
        )
    }
}

/// The backend's body with the first chunk (already read to be sure the node answered) put back.
pub struct Relay {
    first: VecDeque<Bytes>,
    inner: Option<Incoming>,
    deadline: Option<(Deadline, Pin<Box<Sleep>>)>,
    held: Option<Held>,
}

impl Relay {
    pub fn new(
        first: VecDeque<Bytes>,
        inner: Option<Incoming>,
        deadline: Option<Deadline>,
        held: Held,
    ) -> Relay {
        let mut relay = Relay {
            first,
            inner,
            deadline: deadline.map(|d| (d, Box::pin(tokio::time::sleep_until(d.at)))),
            held: Some(held),
        };
        if relay.inner.is_none() {
            relay.finish();
        }
        relay
    }

    /// The backend completed the response: release everything without a kill.
    fn finish(&mut self) {
        self.inner = None;
        self.deadline = None;
        if let Some(mut held) = self.held.take() {
            held.kill.disarm();
        }
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if let Some((deadline, sleep)) = self.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            // Headers are out: like ClickHouse, append the error text to the body and end it.
            let text = deadline.error().body_text();
            self.inner = None;
            self.deadline = None;
            if let Some(mut held) = self.held.take() {
                held.kill.fire();
            }
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                // The node broke the stream: end the client's response abnormally, so the client
                // sees a truncated transfer rather than a clean end.
                self.inner = None;
                self.deadline = None;
                self.held = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.inner.is_none()
    }
}

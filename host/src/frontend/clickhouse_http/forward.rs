//! Sending a planned query to a node of its pool: node choice, one retry of reads on another node
//! while nothing has reached the client, the deadline, and the kill guard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::timeout_at;

use super::body;
use super::error::ChError;
use super::relay::{Deadline, Held, KillGuard};
use crate::backend::clickhouse_http::{BackendRequest, Body, ChBackend};
use crate::config::Credentials;
use crate::limits::Admitted;
use crate::log_limit::LogLimit;
use crate::route::Pool;

/// The request body of a planned query.
pub enum PlannedBody {
    /// Fully in memory: can be sent again (retries).
    Replayable(Bytes),
    /// A stream that can be sent once.
    Stream(Option<Body>),
}

/// Everything needed to run one query on a pool.
pub struct Plan {
    pub pool: Arc<Pool>,
    pub credentials: Credentials,
    pub method: Method,
    pub query_string: String,
    pub headers: HeaderMap,
    pub body: PlannedBody,
    /// A read whose body is replayable: it may go to a second node.
    pub retry: bool,
    pub query_id: String,
    pub affinity: Option<String>,
    /// Pins the query to one node by this key (a session id), whatever the strategy.
    pub sticky: Option<String>,
    pub deadline: Option<Deadline>,
}

/// A node's answer, its first chunk already read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body's first chunks (what had arrived with the headers).
    pub first: VecDeque<Bytes>,
    /// `None` when the body ended with `first`.
    pub rest: Option<Incoming>,
    pub held: Held,
    pub node: String,
}

/// Body bytes gathered without waiting before the response starts.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Polls a future once, without waiting.
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Runs the plan: at most two attempts for retryable reads, one otherwise.
pub async fn send(
    backend: &Arc<ChBackend>,
    mut plan: Plan,
    permits: Admitted,
) -> Result<Answer, ChError> {
    let attempts = if plan.retry { 2 } else { 1 };
    let mut tried: Vec<usize> = Vec::new();
    let mut permits = Some(permits);
    let mut last_error: Option<ChError> = None;
    for attempt in 0..attempts {
        let picked = match &plan.sticky {
            Some(key) => plan.pool.pick_sticky(key, &tried),
            None => plan.pool.pick(plan.affinity.as_deref(), &tried),
        };
        let Some(node) = picked else {
            break;
        };
        tried.push(node.index());
        let in_flight = node.begin();
        let mut kill = KillGuard::armed(
            backend.clone(),
            plan.pool.clone(),
            node.clone(),
            plan.credentials.clone(),
            plan.query_id.clone(),
        );
        let request_body = match &mut plan.body {
            PlannedBody::Replayable(bytes) => body::full(bytes.clone()),
            PlannedBody::Stream(stream) => stream.take().unwrap_or_else(body::empty),
        };
        let request = BackendRequest {
            method: plan.method.clone(),
            query_string: plan.query_string.clone(),
            headers: plan.headers.clone(),
            body: request_body,
            credentials: plan.credentials.clone(),
        };
        let sent = backend.send(&plan.pool, &node, request);
        let response = match with_deadline(plan.deadline, sent).await {
            Err(deadline) => {
                kill.fire();
                return Err(deadline.error());
            }
            Ok(Err(err)) => {
                if err.nothing_sent() {
                    kill.disarm();
                }
                // The client's body failed (corrupt, too large, cut off): that is the client's
                // answer, and the body is spent, so there is nothing to retry.
                if let Some(e) = err.body_error::<ChError>() {
                    return Err(e.clone());
                }
                static FAILED: LogLimit = LogLimit::standard();
                crate::warn_limited!(FAILED, node = node.addr(), attempt, error = %err, "ClickHouse request failed");
                last_error = Some(ChError::bad_gateway(err.to_string()));
                continue;
            }
            Ok(Ok(response)) => response,
        };
        node.record_success();
        let (parts, mut incoming) = response.into_parts();
        let gateway = matches!(
            parts.status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        );
        if gateway && attempt + 1 < attempts {
            kill.disarm();
            last_error = Some(ChError::bad_gateway(format!(
                "ClickHouse at {} answered {}",
                node.addr(),
                parts.status
            )));
            continue;
        }
        let first = match with_deadline(plan.deadline, next_data(&mut incoming)).await {
            Err(deadline) => {
                kill.fire();
                return Err(deadline.error());
            }
            Ok(Err(e)) => {
                static BROKE: LogLimit = LogLimit::standard();
                crate::warn_limited!(BROKE, node = node.addr(), attempt, error = %e, "ClickHouse response broke before its first byte");
                last_error = Some(ChError::bad_gateway(format!(
                    "ClickHouse at {} broke the response: {e}",
                    node.addr()
                )));
                continue;
            }
            Ok(Ok(first)) => first,
        };
        // Take what else is already here: a small result that is complete then goes to the
        // client in one write with a Content-Length, instead of a chunked stream.
        let mut chunks: VecDeque<Bytes> = first.into_iter().collect();
        let mut size: usize = chunks.iter().map(Bytes::len).sum();
        let mut ended = chunks.is_empty();
        let mut broken = None;
        while !ended && size < COALESCE_LIMIT {
            match poll_once(next_data(&mut incoming)) {
                Some(Ok(Some(data))) => {
                    size += data.len();
                    chunks.push_back(data);
                }
                Some(Ok(None)) => ended = true,
                Some(Err(e)) => {
                    broken = Some(e);
                    break;
                }
                None => break,
            }
        }
        if let Some(e) = broken {
            // Still nothing sent to the client: like a failure before the first byte.
            last_error = Some(ChError::bad_gateway(format!(
                "ClickHouse at {} broke the response: {e}",
                node.addr()
            )));
            continue;
        }
        let rest = (!ended).then_some(incoming);
        return Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            first: chunks,
            rest,
            held: Held {
                _permits: permits.take(),
                _in_flight: in_flight,
                kill,
            },
            node: node.addr().to_owned(),
        });
    }
    Err(last_error.unwrap_or_else(|| {
        ChError::bad_gateway(format!(
            "no available node in pool `{}` ({} nodes, all unhealthy or banned)",
            plan.pool.name(),
            plan.pool.nodes().len()
        ))
    }))
}

/// The next data chunk (skipping empty ones and trailers); `None` at the end of the body.
async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, hyper::Error> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    return Ok(Some(data));
                }
            }
        }
    }
}

async fn with_deadline<F: std::future::Future>(
    deadline: Option<Deadline>,
    future: F,
) -> Result<F::Output, Deadline> {
    match deadline {
        Some(d) => timeout_at(d.at, future).await.map_err(|_| d),
        None => Ok(future.await),
    }
}

/// Reads the rest of an answer into memory, up to `max` bytes (the first chunk included).
/// `Ok(Err(partial))` when it is larger: the chunks read so far, the stream still open.
pub async fn collect(answer: &mut Answer, max: u64) -> Result<Result<Bytes, Vec<Bytes>>, ChError> {
    let mut chunks: Vec<Bytes> = std::mem::take(&mut answer.first).into();
    let mut size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    if let Some(rest) = answer.rest.as_mut() {
        loop {
            if size > max {
                return Ok(Err(chunks));
            }
            match next_data(rest).await {
                Ok(Some(data)) => {
                    size += data.len() as u64;
                    chunks.push(data);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ChError::bad_gateway(format!(
                        "ClickHouse at {} broke the response: {e}",
                        answer.node
                    )));
                }
            }
        }
    }
    answer.rest = None;
    answer.held.kill.disarm();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    for c in &chunks {
        out.extend_from_slice(c);
    }
    Ok(Ok(Bytes::from(out)))
}

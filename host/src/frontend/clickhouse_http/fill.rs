//! The cache leader's path: run the query with `wait_end_of_query=1`, so ClickHouse answers only
//! once the result is complete (an error then gets a proper error status instead of being
//! appended to a 200 stream), keep it in memory up to `max_payload_size`, store only a complete
//! 200, and hand errors to the waiters without storing them.

use std::sync::Arc;

use http::{Response, StatusCode};

use super::ChFrontend;
use super::error::ChError;
use super::forward::{self, collect};
use super::query::Prepared;
use super::relay::Relay;
use super::respond::{self, CacheStatus};
use crate::backend::clickhouse_http::Body;
use crate::cache::{CachedResponse, FillGuard};

/// An error body kept for the waiters is cut at this size.
const MAX_ERROR_BODY: u64 = 64 * 1024;

impl ChFrontend {
    pub(super) async fn fill(
        self: &Arc<Self>,
        p: Prepared,
        guard: FillGuard,
    ) -> Result<Response<Body>, ChError> {
        let ttl_ms = p.verdict.decision.cache.as_ref().map_or(0, |d| d.ttl_ms);
        let ttl = std::time::Duration::from_millis(u64::from(ttl_ms));
        let compress = p.compress;
        let trace = p.trace.clone();
        let (planned, permits) = match self.plan(p, true).await {
            Ok(planned) => planned,
            Err(e) => {
                guard.fail(e.body_text().trim_end());
                return Err(e);
            }
        };
        let deadline = planned.deadline;
        let sent = std::time::Instant::now();
        let answer = forward::send(&self.backend, planned.plan, permits).await;
        trace.backend_took(sent.elapsed());
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                guard.fail(e.body_text().trim_end());
                return Err(e);
            }
        };
        let max = if answer.status == StatusCode::OK {
            self.shared
                .cache
                .as_ref()
                .map_or(0, |c| c.max_payload_size())
        } else {
            MAX_ERROR_BODY
        };
        let collected = match deadline {
            Some(d) => match tokio::time::timeout_at(d.at, collect(&mut answer, max)).await {
                Ok(result) => result,
                Err(_) => {
                    answer.held.kill.fire();
                    let e = d.error();
                    guard.fail(e.body_text().trim_end());
                    return Err(e);
                }
            },
            None => collect(&mut answer, max).await,
        };
        let headers = respond::passed_headers(&answer.headers);
        match collected {
            Err(e) => {
                guard.fail(e.body_text().trim_end());
                Err(e)
            }
            Ok(Ok(data)) if answer.status == StatusCode::OK => {
                let entry = CachedResponse::new(respond::encode_meta(&headers), data.clone(), ttl);
                // Stored locally and handed to the waiters now (a spawned local store would leave
                // the flight open for a while); the client need not wait for the Redis write.
                let remote = guard.complete_now(entry);
                tokio::spawn(async move {
                    let outcome = remote.await;
                    tracing::trace!(?outcome, "cache fill");
                });
                Ok(respond::whole(
                    StatusCode::OK,
                    headers,
                    data,
                    compress,
                    CacheStatus::Miss,
                ))
            }
            Ok(Ok(data)) => {
                // ClickHouse's error: never stored; the waiters get its text.
                guard.fail(String::from_utf8_lossy(&data).trim_end());
                Ok(respond::whole(
                    answer.status,
                    headers,
                    data,
                    compress,
                    CacheStatus::Miss,
                ))
            }
            Ok(Err(chunks)) => {
                // Too large to store (or an oversized error): stream it; waiters run their own.
                guard.skip();
                let status = answer.status;
                let relay = Relay::new(chunks.into(), answer.rest.take(), deadline, answer.held);
                let body: Body = http_body_util::BodyExt::boxed_unsync(relay);
                let mut response = Response::new(match compress {
                    Some(c) => c.stream(body),
                    None => body,
                });
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                if let Some(c) = compress {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_ENCODING, c.header_value());
                }
                response
                    .headers_mut()
                    .insert(respond::X_CACHE, CacheStatus::Miss.header());
                Ok(response)
            }
        }
    }
}

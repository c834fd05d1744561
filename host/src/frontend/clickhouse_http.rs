//! The ClickHouse HTTP frontend: clients talk to Switchyard exactly as to ClickHouse (curl,
//! clickhouse-connect, @clickhouse/client, Grafana), and each request goes through
//!
//! ```text
//! auth (params | X-ClickHouse-User/Key | Basic) → allowed_networks → requests_per_minute
//!   → query text (param + body head; INSERT data streams) → classify → policy (block/rewrite/route)
//!   → cache lookup (reads the policy caches) → tag rates + user, tag and pool concurrency
//!   (queues; the pool's fair across tenants)
//!   → node (strategy, health) → backend as the route's backend user → response (streamed or stored)
//! ```
//!
//! Statuses of the proxy's own answers (bodies are ClickHouse-style `Code: N, e.displayText() =
//! DB::Exception: ...`):
//!
//! | case | status | code |
//! |---|---|---|
//! | wrong user or password | 401 | 516 |
//! | mixed authentication methods | 401 | 194 |
//! | client network not allowed | 403 | 195 |
//! | policy block, cluster not allowed | 403 | 497 |
//! | database not opened to the user (`database` parameter, `X-ClickHouse-Database`, cluster `database`) | 404 | 81 |
//! | `requests_per_minute`, `max_concurrent_queries` without queue (user or `[[limit]]`) | 429 | 201 / 202 |
//! | queue full, queue wait over | 503 | 202 |
//! | `max_execution_time` / `request_timeout` (the query is killed) | 504 | 159 |
//! | no reachable node | 502 | 210 |
//! | policy failure (fail-closed) | 500 | 1001 |
//! | body over `max_body_size` (also found while it streams to the backend) | 413 | 307 |
//! | unreadable body (corrupt or truncated gzip/deflate, also while it streams) | 400 | 36 |
//!
//! Everything else is the backend's own answer, passed through.

mod auth;
mod body;
mod compress;
mod database;
mod decode;
mod error;
mod fill;
mod forward;
mod head;
mod inflate;
mod mirror;
mod params;
mod query;
mod relay;
mod respond;
#[cfg(test)]
mod tests;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::backend::clickhouse_http::{Body, ChBackend};
use crate::cache::QueryCache;
use crate::classify::Classifier;
use crate::config::{Config, DatabaseAccess, ListenerConfig};
use crate::limits::{Admission, LimitError};
use crate::policy::PolicyHandle;

pub use error::ChError;

/// What the frontend shares with the rest of the proxy.
#[derive(Clone)]
pub struct Shared {
    pub policy: Arc<PolicyHandle>,
    pub classifier: Arc<Classifier>,
    pub cache: Option<QueryCache>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Shutdown progress (PostgreSQL sessions end on it; hyper drains HTTP itself).
    pub drain: tokio::sync::watch::Receiver<super::Drain>,
    /// User and tag limits, shared by every listener (rebuilt by a config reload).
    pub admission: Arc<Admission>,
}

/// One ClickHouse HTTP listener's request handler.
pub struct ChFrontend {
    listener: ListenerConfig,
    backend: Arc<ChBackend>,
    users: auth::Users,
    /// The databases clients may open (cluster and user `databases`).
    databases: DatabaseAccess,
    shared: Shared,
    invalidate_on_write: bool,
    query_ids: QueryIds,
}

impl ChFrontend {
    pub fn new(
        listener: ListenerConfig,
        config: &Config,
        backend: Arc<ChBackend>,
        shared: Shared,
    ) -> ChFrontend {
        let databases = config
            .cluster(&listener.cluster)
            .map(DatabaseAccess::of)
            .unwrap_or_default();
        ChFrontend {
            listener,
            backend,
            databases,
            users: auth::Users::new(&config.users, &shared.admission),
            shared,
            invalidate_on_write: config.cache.invalidate_on_write,
            query_ids: QueryIds::new(),
        }
    }

    pub fn listener(&self) -> &ListenerConfig {
        &self.listener
    }

    /// Answers one request; every failure becomes a ClickHouse-style error response.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        use tracing::Instrument;
        let trace = Arc::new(trace::Trace::new(self.shared.metrics.next_query_id()));
        let span = tracing::debug_span!("query", query_id = trace.query_id, client = %peer);
        let mut drain = self.shared.drain.clone();
        let served = tokio::select! {
            served = self.serve(request, peer, &trace).instrument(span) => served,
            // Past the drain timeout a request still waiting for its answer gets a clear error
            // instead of a cut connection (a body already streaming cannot be taken back).
            true = async { drain.wait_for(|d| *d == super::Drain::Closing).await.is_ok() } => {
                Err(ChError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    error::code::QUERY_WAS_CANCELLED,
                    "Switchyard is shutting down (server.drain_timeout passed): the query was cancelled",
                ))
            }
        };
        let response = match served {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(client = %peer, status = %err.status, error = %err, "request refused");
                let mut response = err.into_response();
                response.headers_mut().insert(
                    respond::X_CACHE,
                    respond::CacheStatus::NotApplicable.header(),
                );
                response
            }
        };
        trace.finish(&self.shared.metrics, &response);
        response
    }
}

/// A limit refusal as ClickHouse-style error: 429 when the limit has no queue or is a rate, 503
/// when the queue is full or the wait ran out.
fn limit_error(err: LimitError) -> ChError {
    use http::StatusCode;
    let (status, code) = match &err {
        LimitError::Rate { .. } => (StatusCode::TOO_MANY_REQUESTS, error::code::QUOTA_EXPIRED),
        LimitError::Concurrency { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            error::code::TOO_MANY_SIMULTANEOUS_QUERIES,
        ),
        LimitError::QueueFull { .. } | LimitError::QueueTimeout { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            error::code::TOO_MANY_SIMULTANEOUS_QUERIES,
        ),
    };
    ChError::new(status, code, err.to_string())
}

/// Query ids for requests that bring none: unique per process and across restarts.
struct QueryIds {
    prefix: u64,
    next: AtomicU64,
}

impl QueryIds {
    fn new() -> QueryIds {
        use std::hash::BuildHasher;
        let prefix = std::hash::RandomState::new()
            .hash_one((std::process::id(), std::time::SystemTime::now()));
        QueryIds {
            prefix,
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("switchyard-{:016x}-{n}", self.prefix)
    }
}

/// The request decoding the ClickHouse frontend does itself, for the fuzz targets
/// (`host/fuzz`): URL parameters, and a body in each content encoding it accepts, bounded.
#[cfg(any(fuzzing, test))]
pub fn fuzz_request(query: &str, body: &[u8]) {
    let params = params::Params::parse(Some(query));
    let _ = params.attributes();
    let _ = params.backend_query_string(&[("query", "SELECT 1")]);
    let _ = params.settings().count();
    for encoding in [None, Some("gzip"), Some("deflate")] {
        if let Some(mut decoder) = decode::Decoder::new(encoding) {
            if decoder.feed(body, 1 << 20).is_ok() {
                let _ = decoder.finish();
            }
            let _ = decoder.take();
        }
    }
}

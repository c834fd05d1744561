//! The ClickHouse HTTP frontend: clients talk to Switchyard exactly as to ClickHouse (curl,
//! clickhouse-connect, @clickhouse/client, Grafana), and each request goes through
//!
//! ```text
//! auth (params | X-ClickHouse-User/Key | Basic) → allowed_networks → requests_per_minute
//!   → query text (param + body head; INSERT data streams) → classify → policy (block/rewrite/route)
//!   → cache lookup (reads the policy caches) → user + pool concurrency (queue)
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
//! | `requests_per_minute`, `max_concurrent_queries` without queue | 429 | 201 / 202 |
//! | queue full, queue wait over | 503 | 202 |
//! | `max_execution_time` / `request_timeout` (the query is killed) | 504 | 159 |
//! | no reachable node | 502 | 210 |
//! | policy failure (fail-closed) | 500 | 1001 |
//! | body over `max_body_size` | 413 | 307 |
//!
//! Everything else is the backend's own answer, passed through.

mod auth;
mod body;
mod compress;
mod error;
mod fill;
mod forward;
mod head;
mod mirror;
mod params;
mod query;
mod relay;
mod respond;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;

use crate::backend::clickhouse_http::{Body, ChBackend};
use crate::cache::QueryCache;
use crate::classify::Classifier;
use crate::config::{Config, ListenerConfig};
use crate::limits::{ConcurrencyConfig, LimitError, Limits, QueueConfig};
use crate::policy::PolicyHandle;

pub use error::ChError;

/// What the frontend shares with the rest of the proxy.
#[derive(Clone)]
pub struct Shared {
    pub policy: Arc<PolicyHandle>,
    pub classifier: Arc<Classifier>,
    pub cache: Option<QueryCache>,
}

/// One ClickHouse HTTP listener's request handler.
pub struct ChFrontend {
    listener: ListenerConfig,
    backend: Arc<ChBackend>,
    users: auth::Users,
    pool_limits: HashMap<String, Limits>,
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
        let pool_limits = backend
            .router()
            .pools()
            .map(|pool| {
                // A pool's limit is over all users (chproxy's cluster-user limit); queries wait
                // for a slot as long as they would wait for a connection.
                let concurrency =
                    pool.config()
                        .max_concurrent_queries
                        .map(|max| ConcurrencyConfig {
                            max_concurrent: max,
                            queue: QueueConfig::from_keys(
                                None,
                                Some(pool.config().checkout_timeout),
                            ),
                        });
                let owner = format!("pool \"{}\"", pool.name());
                (
                    pool.name().to_owned(),
                    Limits::new(owner, concurrency, None),
                )
            })
            .collect();
        ChFrontend {
            listener,
            backend,
            users: auth::Users::new(&config.users),
            pool_limits,
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
        match self.serve(request, peer).await {
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
        }
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

//! The ClickHouse HTTP backend: a hyper keep-alive client per pool (hyper keeps idle connections
//! per node), heartbeat health checks per node, and `KILL QUERY` for queries the proxy gives up on.
//!
//! The backend knows nothing about proxy users or the policy: it sends a [`BackendRequest`] with
//! the credentials it is given to the node it is given, and reports failures to the node's
//! health state so that an unreachable node leaves rotation.

mod client;
mod health;
mod kill;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;

use crate::backend::tls::PoolTlsError;
use crate::config::Credentials;
use crate::route::{NodeState, Pool, Router};
use client::ChClient;

pub use kill::kill_statement;

/// Errors inside bodies: hyper's, ours, the client's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies as they flow through the proxy (streaming, not buffered).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Why a request did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No connection could be made: nothing was sent, so any query may go elsewhere.
    #[error("cannot connect to ClickHouse at {node}: {reason}")]
    Connect { node: String, reason: String },
    /// The connection failed after the request (or part of it) was sent, or the request's own
    /// body failed (see [`BackendError::body_error`]).
    #[error("request to ClickHouse at {node} failed: {reason}")]
    Request {
        node: String,
        reason: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("invalid request to ClickHouse at {node}: {reason}")]
    Build { node: String, reason: String },
}

impl BackendError {
    /// Whether nothing reached the server (a write may then be sent elsewhere too).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, BackendError::Connect { .. })
    }

    /// The error of type `E` somewhere in the causes: a request body that fails with its own
    /// error type (a client's corrupt or oversized upload) is found again this way, so that the
    /// caller can answer with it rather than with a failed request.
    pub fn body_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            cause = e.source();
        }
        None
    }
}

/// One request for a node, fully prepared by the frontend.
pub struct BackendRequest {
    pub method: Method,
    /// Already-encoded query string (`query=...&database=...`), without `?`.
    pub query_string: String,
    /// Headers passed on from the client (content type and encoding, format hints...).
    pub headers: HeaderMap,
    pub body: Body,
    pub credentials: Credentials,
}

/// The clients of every pool of one cluster, and their health checkers.
pub struct ChBackend {
    router: Arc<Router>,
    clients: BTreeMap<String, ChClient>,
    checkers: Vec<tokio::task::JoinHandle<()>>,
}

impl ChBackend {
    /// Builds a client per pool and starts the health checkers of pools that enable them. Must
    /// be called inside a tokio runtime. Fails when a pool's TLS settings cannot be used.
    pub fn start(router: Arc<Router>) -> Result<ChBackend, PoolTlsError> {
        let mut clients = BTreeMap::new();
        for pool in router.pools() {
            let client = ChClient::for_pool(pool.config()).map_err(|source| PoolTlsError {
                pool: pool.name().to_owned(),
                source,
            })?;
            clients.insert(pool.name().to_owned(), client);
        }
        let mut checkers = Vec::new();
        for pool in router.pools() {
            let Some(client) = clients.get(pool.name()) else {
                continue;
            };
            if pool.config().health.enabled {
                for node in pool.nodes() {
                    checkers.push(tokio::spawn(health::run(
                        client.clone(),
                        pool.clone(),
                        node.clone(),
                    )));
                }
            }
        }
        Ok(ChBackend {
            router,
            clients,
            checkers,
        })
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Sends `request` to `node` of `pool`. A connection failure counts against the node's
    /// health.
    pub async fn send(
        &self,
        pool: &Pool,
        node: &NodeState,
        request: BackendRequest,
    ) -> Result<Response<Incoming>, BackendError> {
        let client = self.client(pool)?;
        let http_request = build(client, node, request)?;
        match client.http.request(http_request).await {
            Ok(response) => Ok(response),
            Err(err) => {
                let reason = error_chain(&err);
                if err.is_connect() {
                    node.record_failure(&pool.config().health, &reason);
                    Err(BackendError::Connect {
                        node: node.addr().to_owned(),
                        reason,
                    })
                } else {
                    Err(BackendError::Request {
                        node: node.addr().to_owned(),
                        reason,
                        source: err,
                    })
                }
            }
        }
    }

    /// Sends `KILL QUERY WHERE query_id = '<id>'` to the node, in the background. ClickHouse
    /// keeps running a query whose client went away, so the proxy must ask.
    pub fn kill_query(
        &self,
        pool: &Arc<Pool>,
        node: &Arc<NodeState>,
        credentials: &Credentials,
        query_id: &str,
    ) {
        let Ok(client) = self.client(pool) else {
            return;
        };
        tokio::spawn(kill::kill(
            client.clone(),
            node.clone(),
            credentials.clone(),
            query_id.to_owned(),
        ));
    }

    fn client(&self, pool: &Pool) -> Result<&ChClient, BackendError> {
        self.clients
            .get(pool.name())
            .ok_or_else(|| BackendError::Build {
                node: pool.name().to_owned(),
                reason: "no client for this pool".to_owned(),
            })
    }
}

impl Drop for ChBackend {
    fn drop(&mut self) {
        for checker in &self.checkers {
            checker.abort();
        }
    }
}

/// The HTTP request for a node: URL, Basic credentials, passed-on headers.
fn build(
    client: &ChClient,
    node: &NodeState,
    request: BackendRequest,
) -> Result<Request<Body>, BackendError> {
    let uri = if request.query_string.is_empty() {
        client.url(node, "")
    } else {
        client.url(node, &format!("?{}", request.query_string))
    };
    let mut builder = Request::builder().method(request.method).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        *headers = request.headers;
        headers.insert(AUTHORIZATION, basic_auth(&request.credentials)?);
    }
    builder.body(request.body).map_err(|e| BackendError::Build {
        node: node.addr().to_owned(),
        reason: e.to_string(),
    })
}

/// `Authorization: Basic ...` for backend credentials (works on every ClickHouse version and
/// never puts the password in a URL that could be logged).
pub(crate) fn basic_auth(credentials: &Credentials) -> Result<HeaderValue, BackendError> {
    let password = credentials.password.as_ref().map_or("", |p| p.expose());
    let token = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{password}", credentials.user));
    let mut value =
        HeaderValue::from_str(&format!("Basic {token}")).map_err(|e| BackendError::Build {
            node: String::new(),
            reason: e.to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An error and its causes on one line (hyper's top-level messages say little on their own).
/// Sends a small control request (heartbeat, KILL QUERY) and reads the whole answer, so the
/// connection goes back to the pool.
pub(crate) async fn send_whole(
    client: &ChClient,
    request: Request<Body>,
) -> Result<(http::StatusCode, Bytes), String> {
    use http_body_util::BodyExt as _;
    let response = client
        .http
        .request(request)
        .await
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| error_chain(&e))?
        .to_bytes();
    Ok((status, body))
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

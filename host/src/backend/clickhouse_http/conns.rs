//! Keep-alive HTTP/1.1 connections to the nodes of one pool, driven inside the task that uses
//! them.
//!
//! hyper-util's pooled client runs every connection as a task of its own and talks to it through
//! channels, so each request crossed tasks (and often worker threads) four times: on a 2-core box
//! that cost more CPU than the request itself (context switches were ~46 % of the proxy's
//! samples on cache misses). Here the request's own task polls the connection: while waiting for
//! the response head in [`PoolConns::send`], and while the response body is read through
//! [`ResponseBody`]. A connection whose response was read to the end goes back to its node's
//! idle list; one dropped early is closed (HTTP/1.1 cannot abandon a response and keep the
//! connection).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service as _;

use super::Body;
use crate::config::PoolConfig;
use crate::route::NodeState;

type Driver = http1::Connection<TokioIo<TcpStream>, Body>;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No connection could be made: nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// The exchange failed after the request (or part of it) may have been sent.
    #[error(transparent)]
    Request(hyper::Error),
}

/// One connection: the handle that sends requests and the state machine that does the I/O.
struct Conn {
    sender: http1::SendRequest<Body>,
    /// `None` once the connection finished (closed by either side, or failed).
    driver: Option<Driver>,
}

impl Conn {
    /// Advances the connection's I/O; `false` once it is finished.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(driver) = self.driver.as_mut()
            && Pin::new(driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
        self.driver.is_some()
    }

    /// Whether an idle connection can take a request: still open, and its previous exchange
    /// complete. Polls it once so that a close by the server since it went idle is noticed.
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.sender.is_ready()
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One node's idle connections, most recently used last.
struct NodeConns {
    host: HeaderValue,
    uri: Uri,
    idle: Mutex<Vec<Idle>>,
}

/// The connections of one pool, per node (indexed like the pool's nodes).
pub struct PoolConns {
    connector: HttpConnector,
    max_idle: usize,
    idle_timeout: Option<Duration>,
    nodes: Vec<NodeConns>,
}

impl PoolConns {
    pub fn new(config: &PoolConfig, nodes: &[Arc<NodeState>]) -> PoolConns {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let nodes = nodes
            .iter()
            .map(|node| NodeConns {
                // A node address that is no valid header or authority cannot be connected to;
                // the connect attempt reports that, per request.
                host: HeaderValue::from_str(node.addr())
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                uri: format!("http://{}/", node.addr())
                    .parse()
                    .unwrap_or_else(|_| Uri::from_static("http://invalid/")),
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        PoolConns {
            connector,
            max_idle: config.size as usize,
            idle_timeout: (!config.idle_timeout.is_zero()).then_some(config.idle_timeout),
            nodes,
        }
    }

    /// Sends `request` (origin-form URI; the `Host` header is set here) to `node` on an idle
    /// connection, or a new one. A request that a reused connection could not take (it closed
    /// as the request arrived) goes once more on a new connection.
    pub async fn send(
        self: &Arc<Self>,
        node: &NodeState,
        mut request: Request<Body>,
    ) -> Result<Response<ResponseBody>, ConnError> {
        let slot = self.slot(node)?;
        request.headers_mut().insert(HOST, slot.host.clone());
        let mut conn = match self.checkout(slot).await {
            Some(conn) => conn,
            None => self.connect(slot).await?,
        };
        let head = match exchange(&mut conn, request).await {
            Ok(head) => head,
            Err(mut e) => match e.take_message() {
                Some(request) => {
                    conn = self.connect(slot).await?;
                    exchange(&mut conn, request)
                        .await
                        .map_err(|e| ConnError::Request(e.into_error()))?
                }
                None => return Err(ConnError::Request(e.into_error())),
            },
        };
        Ok(head.map(|incoming| ResponseBody {
            incoming,
            conn: Some(conn),
            home: Some((self.clone(), node.index())),
        }))
    }

    fn slot(&self, node: &NodeState) -> Result<&NodeConns, ConnError> {
        self.nodes
            .get(node.index())
            .ok_or_else(|| ConnError::Connect(format!("node {} is not in this pool", node.addr())))
    }

    /// The most recently used idle connection that is still good; stale ones are closed.
    async fn checkout(&self, slot: &NodeConns) -> Option<Conn> {
        loop {
            let idle = lock(&slot.idle).pop()?;
            if self.expired(&idle, Instant::now()) {
                continue;
            }
            let mut conn = idle.conn;
            if poll_fn(|cx| Poll::Ready(conn.reusable(cx))).await {
                return Some(conn);
            }
        }
    }

    async fn connect(&self, slot: &NodeConns) -> Result<Conn, ConnError> {
        let io = self
            .connector
            .clone()
            .call(slot.uri.clone())
            .await
            .map_err(|e| ConnError::Connect(super::error_chain(&e)))?;
        let (sender, driver) = http1::handshake(io)
            .await
            .map_err(|e| ConnError::Connect(super::error_chain(&e)))?;
        Ok(Conn {
            sender,
            driver: Some(driver),
        })
    }

    fn checkin(&self, slot: &NodeConns, conn: Conn) {
        let now = Instant::now();
        let mut idle = lock(&slot.idle);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
        }
    }

    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|limit| now.duration_since(idle.since) >= limit)
    }

    /// Closes idle connections past the idle timeout or closed by the server. Run now and then
    /// so that a quiet pool does not keep sockets open on the nodes.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        for slot in &self.nodes {
            lock(&slot.idle)
                .retain_mut(|idle| !self.expired(idle, now) && idle.conn.drive(&mut cx));
        }
    }

    /// How often [`PoolConns::prune`] should run.
    pub fn prune_interval(&self) -> Duration {
        self.idle_timeout
            .map_or(Duration::from_secs(30), |t| t / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.nodes.iter().map(|slot| lock(&slot.idle).len()).sum()
    }
}

/// A poisoned idle list only means a panic elsewhere while it was held; its entries are still
/// whole connections.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends the request and drives the connection until the response head arrives.
async fn exchange(
    conn: &mut Conn,
    request: Request<Body>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>> {
    let mut response = std::pin::pin!(conn.sender.try_send_request(request));
    let driver = &mut conn.driver;
    poll_fn(|cx| {
        // The driver first: it writes the request and reads the head that completes `response`
        // (a failure of the connection reaches `response` as its error).
        if let Some(d) = driver.as_mut()
            && Pin::new(d).poll(cx).is_ready()
        {
            *driver = None;
        }
        response.as_mut().poll(cx)
    })
    .await
}

/// A response body that drives its connection while it is read, and gives the connection back
/// to its node's idle list once the body has ended.
pub struct ResponseBody {
    incoming: Incoming,
    conn: Option<Conn>,
    /// The pool and node index the connection goes back to.
    home: Option<(Arc<PoolConns>, usize)>,
}

impl ResponseBody {
    fn release(&mut self) {
        if let (Some(conn), Some((pool, node))) = (self.conn.take(), self.home.take())
            && conn.driver.is_some()
            && let Some(slot) = pool.nodes.get(node)
        {
            pool.checkin(slot, conn);
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(conn) = self.conn.as_mut() {
            conn.drive(cx);
        }
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests;

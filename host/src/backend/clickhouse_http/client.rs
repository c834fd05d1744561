//! The HTTP client of one pool: hyper's keep-alive pool over a connector that opens TCP and, when
//! the pool's `tls` asks, runs the TLS handshake (HTTPS; HTTP/1.1 either way).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{Body, BoxError};
use crate::backend::tls::{BackendTls, MaybeTls, TlsError};
use crate::config::{PoolConfig, TlsMode};
use crate::route::NodeState;

/// A pool's client and the URL scheme its nodes are reached with.
#[derive(Clone)]
pub(crate) struct ChClient {
    pub(crate) http: Client<Connector, Body>,
    scheme: &'static str,
}

impl ChClient {
    pub(crate) fn for_pool(pool: &PoolConfig) -> Result<ChClient, TlsError> {
        let tls = match pool.tls {
            TlsMode::Disable => None,
            _ => Some(Arc::new(BackendTls::for_pool(pool, &[b"http/1.1"])?)),
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(pool.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // The scheme is ours to choose (https when `tls` is on); TLS itself is done below.
        http.enforce_http(false);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let connector = Connector {
            http,
            tls,
            handshake_timeout: pool.connect_timeout,
        };
        let idle = (!pool.idle_timeout.is_zero()).then_some(pool.idle_timeout);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool.size as usize)
            .pool_idle_timeout(idle)
            .build(connector);
        Ok(ChClient { http, scheme })
    }

    /// `<scheme>://<node>/<path_and_query>` (`path_and_query` without its leading `/`).
    pub(crate) fn url(&self, node: &NodeState, path_and_query: &str) -> String {
        format!("{}://{}/{path_and_query}", self.scheme, node.addr())
    }
}

/// TCP from hyper's connector, then TLS when the pool uses it. Its errors are connect errors to
/// hyper, so a failed handshake counts against the node like a refused connection.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Option<Arc<BackendTls>>,
    handshake_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<MaybeTls>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_owned();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some(tls) = tls else {
                return Ok(TokioIo::new(MaybeTls::Plain(tcp)));
            };
            let stream = tokio::time::timeout(timeout, tls.handshake(&host, tcp))
                .await
                .map_err(|_| format!("TLS handshake: no answer within {timeout:?}"))?
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(TokioIo::new(MaybeTls::Tls(Box::new(stream))))
        })
    }
}

//! The admin HTTP API on its own listener (`[admin]`): health and readiness, Prometheus metrics,
//! the policy (inspect, upload, shadow, promote), cache purge, pools, the config (redacted) and
//! its reload, and the digest table.
//!
//! Every request must come from `allowed_networks` (when set). Tokens have a scope: `token` may
//! call every endpoint, `read_token` the GET endpoints only, sent as `Authorization: Bearer
//! <token>`. With no token configured the GETs are open (the config check allows that on a
//! loopback bind only) and every change is refused (see `auth`). Answers are JSON, except `/metrics` (OpenMetrics text);
//! failures are `{"error": "..."}` with a fitting status.

mod auth;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{AdminConfig, Config};
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin API: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a config reload reports: what changed, or why the new config was refused.
pub type ReloadResult = Result<serde_json::Value, String>;

/// Re-reads and applies the config file (the server implements it).
pub trait Reloader: Send + Sync {
    fn reload(&self) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + '_>>;
}

/// What the API reads and acts on.
pub struct AdminContext {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<PolicyHandle>,
    /// The config in force (replaced by a reload).
    pub config: Arc<ArcSwap<Config>>,
    pub reloader: Arc<dyn Reloader>,
    /// Set when the server starts draining: `/ready` answers 503 so load balancers move away.
    pub draining: AtomicBool,
}

impl AdminContext {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The running admin listener.
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    pub async fn start(
        config: &AdminConfig,
        context: Arc<AdminContext>,
    ) -> Result<AdminServer, AdminError> {
        let socket = TcpListener::bind(config.bind)
            .await
            .map_err(|source| AdminError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = socket.local_addr().unwrap_or(config.bind);
        tracing::info!(
            %addr,
            token = config.token.is_some(),
            read_token = config.read_token.is_some(),
            "admin API listening"
        );
        let (stop, stopped) = watch::channel(false);
        let guard = Arc::new(auth::Guard::new(config));
        let task = tokio::spawn(serve(socket, guard, context, stopped));
        Ok(AdminServer { addr, stop, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(
    socket: TcpListener,
    guard: Arc<auth::Guard>,
    context: Arc<AdminContext>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let guard = guard.clone();
        let context = context.clone();
        let service = service_fn(move |request| {
            let guard = guard.clone();
            let context = context.clone();
            async move {
                let response = match guard.check(&request, peer) {
                    Ok(()) => routes::handle(&context, request).await,
                    Err(refusal) => refusal.into_response(),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(client = %peer, error = %e, "admin connection ended with an error");
            }
        });
    }
    connections.abort_all();
}

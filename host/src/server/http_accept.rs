//! Accepting ClickHouse HTTP clients: a permit per connection before accept
//! (`max_connections`), a cap per client address (`max_connections_per_source`), time limits
//! on request heads and idle keep-alive connections ([`Watchdog`]), TLS in the connection's
//! own task, and a graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{CLOSE_GRACE, accept_next};
use crate::config::ListenerConfig;
use crate::frontend::Drain;
use crate::frontend::clickhouse_http::ChFrontend;
use crate::guard::watchdog::{ConnWatch, Watchdog, Watched};
use crate::guard::{GuardStats, PerSource};

/// Longest a TLS handshake may take on an HTTPS listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn accept_loop(
    socket: TcpListener,
    listener: ListenerConfig,
    slot: Arc<ArcSwap<ChFrontend>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<GuardStats>,
    mut stop: watch::Receiver<bool>,
    mut drain: watch::Receiver<Drain>,
) {
    let limit = Arc::new(Semaphore::new(listener.max_connections as usize));
    let per_source = PerSource::new(listener.max_connections_per_source());
    let header_timeout = listener.header_timeout();
    let idle_timeout = listener.effective_idle_timeout();
    // The watchdog times heads and idle connections for HTTP/1 and HTTP/2 alike; hyper's own
    // header timeout would also time the wait between keep-alive requests.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(Option::<Duration>::None);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // A permit before accept: past max_connections, clients wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let Some((stream, peer)) = accept_next(&socket, &mut stop).await else {
            break;
        };
        let Some(source) = per_source.try_take(peer.ip()) else {
            GuardStats::bump(&stats.refused_connections_per_source);
            let plain = tls.is_none();
            connections.spawn(async move {
                refuse(stream, peer, plain).await;
                drop(permit);
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watch = ConnWatch::new();
        let service = {
            let slot = slot.clone();
            let watch = watch.clone();
            service_fn(move |request| {
                // Each request takes the newest frontend: a config reload applies to the next
                // request on a kept-alive connection.
                let frontend = slot.load_full();
                let guard = watch.begin();
                async move {
                    let response = frontend.handle(request, peer).await;
                    Ok::<_, Infallible>(response.map(|body| Watched::new(body, guard)))
                }
            })
        };
        let stats = stats.clone();
        let Some(acceptor) = tls.clone() else {
            let io = Watchdog::new(stream, watch, header_timeout, idle_timeout, stats);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            let watched = graceful.watch(connection);
            connections.spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                drop((permit, source));
            });
            continue;
        };
        // HTTPS: the handshake runs in the connection's own task, so a slow client cannot
        // hold up the accept loop; it is bounded like any request.
        let builder = builder.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let io = Watchdog::new(stream, watch, header_timeout, idle_timeout, stats);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop((permit, source));
        });
    }
    drop(socket);
    // Idle keep-alive connections close now; requests in flight finish unless the drain
    // timeout passes first.
    let shutdown = graceful.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        true = async { drain.wait_for(|d| *d == Drain::Closing).await.is_ok() } => {
            // Requests still waiting for an answer are now answered 503 by the frontend; give
            // those answers a moment to leave before the rest is closed.
            if tokio::time::timeout(CLOSE_GRACE / 2, &mut shutdown).await.is_err() {
                tracing::warn!(open = connections.len(), "drain timeout: closing the remaining HTTP connections");
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Turns away a connection over its address's cap: a plain-text listener answers 429 with the
/// reason (ClickHouse's code for too many simultaneous queries), an HTTPS one just closes, since
/// nothing can be said before a handshake the proxy will not spend on it.
async fn refuse(mut stream: TcpStream, peer: SocketAddr, plain: bool) {
    tracing::debug!(client = %peer, "too many connections from this address");
    if !plain {
        return;
    }
    let body = "Code: 202. DB::Exception: too many connections from this address \
                (listener max_connections_per_source)\n";
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=UTF-8\r\nX-ClickHouse-Exception-Code: 202\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

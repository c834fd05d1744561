//! Accepting clients of the protocols that log in over their own connection (PostgreSQL, MySQL):
//! `max_connections` per listener, then the login gate (pending logins per listener and per
//! address, addresses that failed too often). Each refusal is an error the client can read, in
//! its protocol ([`LoginFrontend::refusal`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::accept_next;
use crate::guard::{LoginGate, PendingLogin, Refusal};

/// Why a connection is turned away before it may log in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Turned {
    /// The listener's `max_connections` are open.
    Full,
    /// The login gate said no.
    Gate(Refusal),
}

/// A frontend whose clients log in on the connection.
pub(super) trait LoginFrontend: Send + Sync + 'static {
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        pending: PendingLogin,
    ) -> impl Future<Output = ()> + Send;

    /// What a turned-away connection is sent, in the protocol's words.
    fn refusal(turned: Turned, peer: SocketAddr) -> Vec<u8>;
}

/// Accepts clients until stopped, then waits for their sessions, which end by themselves as
/// the drain proceeds (see `Server::shutdown`).
pub(super) async fn accept_loop<F: LoginFrontend>(
    socket: TcpListener,
    max_connections: u32,
    gate: Arc<LoginGate>,
    slot: Arc<ArcSwap<F>>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(max_connections as usize));
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let Some((stream, peer)) = accept_next(&socket, &mut stop).await else {
            break;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over max_connections: a clear error instead of a hang (PgBouncer and MySQL do
            // the same).
            tokio::spawn(refuse(stream, F::refusal(Turned::Full, peer)));
            continue;
        };
        let pending = match gate.admit(peer.ip()) {
            Ok(pending) => pending,
            Err(refusal) => {
                tracing::debug!(client = %peer, reason = %refusal, "connection refused before login");
                let answer = F::refusal(Turned::Gate(refusal), peer);
                sessions.spawn(async move {
                    refuse(stream, answer).await;
                    drop(permit);
                });
                continue;
            }
        };
        let frontend = slot.load_full();
        sessions.spawn(async move {
            frontend.serve(stream, peer, pending).await;
            drop(permit);
        });
    }
    drop(socket);
    while sessions.join_next().await.is_some() {}
}

/// Sends `answer` to a connection that will not be served, best effort and briefly.
async fn refuse(mut stream: TcpStream, answer: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
}

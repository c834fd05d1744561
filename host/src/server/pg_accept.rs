//! Accepting PostgreSQL clients: `max_connections` per listener, then the login gate (pending
//! logins per listener and per address, addresses that failed too often), each refusal a FATAL
//! the client can read, as PostgreSQL and PgBouncer refuse connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::accept_next;
use crate::frontend::postgres::PgFrontend;
use crate::guard::{LoginGate, Refusal};
use crate::postgres::protocol::ErrorFields;

/// Accepts clients until stopped, then waits for their sessions, which end by themselves as
/// the drain proceeds (see `Server::shutdown`).
pub(super) async fn accept_loop(
    socket: TcpListener,
    max_connections: u32,
    gate: Arc<LoginGate>,
    slot: Arc<ArcSwap<PgFrontend>>,
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
            // Over max_connections: a clear error instead of a hang (PgBouncer does the same).
            let refusal = ErrorFields::fatal(
                "53300",
                "too many client connections (listener max_connections)",
            );
            tokio::spawn(refuse(stream, refusal));
            continue;
        };
        let pending = match gate.admit(peer.ip()) {
            Ok(pending) => pending,
            Err(refusal) => {
                tracing::debug!(client = %peer, reason = %refusal, "connection refused before login");
                sessions.spawn(async move {
                    refuse(stream, refused(refusal, peer)).await;
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

/// The FATAL for a connection the gate turned away. Full pending-login caps are 53300, what
/// clients retry on; an address that failed too often gets 28000, which they do not.
fn refused(refusal: Refusal, peer: SocketAddr) -> ErrorFields {
    let code = match refusal {
        Refusal::Pending | Refusal::PendingFromSource => "53300",
        Refusal::TooManyFailures => "28000",
    };
    ErrorFields::fatal(code, format!("{refusal} ({})", peer.ip()))
}

/// Sends `error` to a connection that will not be served, best effort and briefly.
async fn refuse(mut stream: TcpStream, error: ErrorFields) {
    let mut out = bytes::BytesMut::new();
    error.encode_error(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

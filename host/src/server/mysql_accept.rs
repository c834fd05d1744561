//! Accepting MySQL clients: `max_connections` per listener, then the login gate (pending logins
//! per listener and per address, addresses that failed too often). A refused connection gets
//! an ERR packet in place of the server greeting, as MySQL sends "Too many connections".

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::accept_next;
use crate::frontend::mysql::MyFrontend;
use crate::guard::{LoginGate, Refusal};
use crate::mysql::response::{ER_CON_COUNT_ERROR, MyError};

/// Accepts clients until stopped, then waits for their sessions.
pub(super) async fn accept_loop(
    socket: TcpListener,
    max_connections: u32,
    gate: Arc<LoginGate>,
    slot: Arc<ArcSwap<MyFrontend>>,
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
            tokio::spawn(refuse(
                stream,
                MyError::new(ER_CON_COUNT_ERROR, "08004", "Too many connections"),
            ));
            continue;
        };
        let pending = match gate.admit(peer.ip()) {
            Ok(pending) => pending,
            Err(refusal) => {
                tracing::debug!(client = %peer, reason = %refusal, "connection refused before login");
                let error = match refusal {
                    Refusal::Pending | Refusal::PendingFromSource => MyError::new(
                        ER_CON_COUNT_ERROR,
                        "08004",
                        format!("Too many connections: {refusal}"),
                    ),
                    // MySQL's ER_HOST_IS_BLOCKED.
                    Refusal::TooManyFailures => MyError::new(
                        1129,
                        "HY000",
                        format!("Host '{}' is blocked: {refusal}", peer.ip()),
                    ),
                };
                sessions.spawn(async move {
                    refuse(stream, error).await;
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

/// Sends `error` to a connection that will not be served, best effort and briefly.
async fn refuse(mut stream: TcpStream, error: MyError) {
    let mut out = bytes::BytesMut::new();
    error.put(&mut out, 0);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
}

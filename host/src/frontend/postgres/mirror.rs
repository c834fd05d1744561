//! Mirrored reads: a copy of a read runs on the shadow pool in a task of its own, its answer is
//! read to the end and thrown away. The client's query never waits for it: the task is spawned
//! after the real query has its connection, holds a capped [`MirrorTicket`], and gives up after
//! a bounded time (cancelling the statement on the shadow server).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use super::statements::Statement;
use crate::backend::postgres::{BucketMemo, Login, PgBackend, send_cancel};
use crate::postgres::protocol::FrontendMessage;
use crate::postgres::protocol::TransactionStatus;
use crate::postgres::protocol::backend::ready_status;
use crate::route::MirrorTicket;

/// Longest a mirrored query may run when the shadow pool sets no `max_execution_time`.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `bytes` (a Query, or Parse/Bind/Execute/Sync) on the ticket's pool as `login`.
pub(super) fn spawn(
    backend: Arc<PgBackend>,
    ticket: MirrorTicket,
    login: Arc<Login>,
    bytes: Bytes,
) {
    tokio::spawn(async move {
        match run(&backend, &ticket, &login, &bytes).await {
            Ok(()) => ticket.succeeded(),
            Err(why) => ticket.failed(&why),
        }
    });
}

async fn run(
    backend: &PgBackend,
    ticket: &MirrorTicket,
    login: &Login,
    bytes: &[u8],
) -> Result<(), String> {
    let pool = ticket.pool();
    let limit = pool.config().max_execution_time.unwrap_or(MIRROR_TIMEOUT);
    // Mirrored queries queue for the shadow's connections as one tenant of their own, so a
    // burst of copies takes turns with the shadow's real clients instead of crowding them out.
    let tenant = crate::limits::Tenant::new("mirror");
    let mut conn = backend
        .checkout(pool, None, login, &[], &tenant, &mut BucketMemo::default())
        .await
        .map_err(|e| e.to_string())?;
    let _in_flight = conn.bucket().node().begin();
    let exchange = async {
        conn.conn()
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())?;
        let mut error = None;
        loop {
            let msg = conn
                .conn()
                .read_message()
                .await
                .map_err(|e| e.to_string())?;
            match msg.tag() {
                b'E' => error = Some("the shadow server answered an error".to_owned()),
                b'Z' => {
                    let status = ready_status(&msg).map_err(|e| e.to_string())?;
                    return Ok::<_, String>((status, error));
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok((status, error))) => {
            // The copy replaced the server's unnamed statement: sessions must not trust what
            // the connection last recorded there.
            conn.conn().unnamed = 0;
            // Only a connection back at rest may serve someone else.
            if status == TransactionStatus::Idle {
                conn.release();
            }
            error.map_or(Ok(()), Err)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let target = conn.conn_ref().cancel_target();
            drop(conn);
            let _ = send_cancel(&target).await;
            Err(format!("no answer within {limit:?}"))
        }
    }
}

/// A simple Query running `sql`.
pub(super) fn simple(sql: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    crate::backend::postgres::put_query(&mut out, sql);
    out.freeze()
}

/// One execution of `stmt` with the parameters of a client's Bind (`rest`: formats, values,
/// result formats), self-contained: the shadow connection has none of the session's
/// statements.
pub(super) fn extended(stmt: &Statement, rest: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(stmt.sql.as_bytes().len() + rest.len() + 64);
    FrontendMessage::Parse {
        name: String::new(),
        sql: stmt.sql.clone(),
        param_types: stmt.param_types.clone(),
    }
    .encode(&mut out);
    FrontendMessage::Bind {
        portal: String::new(),
        statement: String::new(),
        rest: rest.clone(),
    }
    .encode(&mut out);
    // Execute the unnamed portal, all rows; then Sync.
    out.put_u8(b'E');
    out.put_i32(9);
    out.put_u8(0);
    out.put_i32(0);
    out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
    out.freeze()
}

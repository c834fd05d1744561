//! Errors the proxy answers for a client's message, the way PostgreSQL answers them. A message
//! framed whole but unreadable inside (a Query with an embedded NUL, a string without its
//! terminator, a malformed FunctionCall) is an ERROR with SQLSTATE 08P01 and the session goes
//! on, as on PostgreSQL; nothing of it reaches a server. After an error in an extended batch,
//! the messages up to the next Sync are discarded and that Sync is answered, as PostgreSQL does.
//! A protocol violation inside a transaction fails the transaction, as it would on PostgreSQL.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::postgres::protocol::backend::ready_for_query;
use crate::postgres::protocol::{ErrorFields, ProtocolError, TransactionStatus};

use super::relay::Pending;
use super::{Session, SessionEnd};

/// SQLSTATE `protocol_violation`.
const PROTOCOL_VIOLATION: &str = "08P01";

/// The error for a message that cannot be read.
pub(super) fn invalid(e: ProtocolError) -> ErrorFields {
    ErrorFields::error(PROTOCOL_VIOLATION, format!("invalid message: {e}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A message that cannot be read; `ready` as for [`refuse`](Self::refuse).
    pub(super) async fn invalid_message(
        &mut self,
        e: ProtocolError,
        ready: bool,
    ) -> Result<(), SessionEnd> {
        self.refuse(invalid(e), ready).await
    }

    /// Answers `e` instead of a client's message, after every earlier answer. `ready` when the
    /// refused message ends a unit (a Query, a FunctionCall, a batch ending in Sync): then a
    /// ReadyForQuery follows; otherwise the client's messages up to its next Sync are dropped.
    pub(super) async fn refuse(&mut self, e: ErrorFields, ready: bool) -> Result<(), SessionEnd> {
        if !ready {
            self.discard = true;
        }
        if e.code() == Some(PROTOCOL_VIOLATION)
            && self.status == TransactionStatus::InTransaction
            && self.held.is_some()
        {
            return self.fail_transaction(&e, ready).await;
        }
        self.answer_error(e, ready).await
    }

    /// Makes the open transaction's server raise `e`, so that the transaction is failed there
    /// as PostgreSQL fails it (the client's next ReadyForQuery says so, its COMMIT rolls back)
    /// and the client gets the error from the server in order. The statement is the proxy's
    /// own: nothing of the refused message is in it.
    async fn fail_transaction(&mut self, e: &ErrorFields, ready: bool) -> Result<(), SessionEnd> {
        let message: String = e
            .message()
            .unwrap_or("invalid message")
            .chars()
            .filter(|c| *c == ' ' || (c.is_ascii_graphic() && !matches!(c, '$' | '\\' | '\'')))
            .collect();
        let sql = format!(
            "DO $sy$BEGIN RAISE EXCEPTION USING ERRCODE = '{PROTOCOL_VIOLATION}', \
             MESSAGE = '{message}'; END$sy$"
        );
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        crate::backend::postgres::put_query(&mut out, &sql);
        let pending = Pending {
            hide_ready: !ready,
            ..Pending::default()
        };
        self.send(out.freeze(), pending, true).await
    }

    /// The Sync that ends discarding: its ReadyForQuery, after every earlier answer.
    pub(super) async fn end_discard(&mut self) -> Result<(), SessionEnd> {
        self.discard = false;
        self.drain().await?;
        ready_for_query(&mut self.io.wbuf, self.status);
        self.maybe_release();
        Ok(())
    }
}

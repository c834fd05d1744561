//! The fast-path FunctionCall (`F`): libpq's `PQfn`, which its large-object functions
//! (`lo_import`, `lo_export`, `lo_read`, `lo_write`, ...) use. PostgreSQL answers it like a
//! simple Query, with FunctionCallResponse and ReadyForQuery, so it is relayed as a unit of its
//! own after whatever the client sent before it. It names its function by OID only, which the
//! policy cannot judge: it is not shown to the policy, runs on the primary (large-object
//! functions write) and counts as a write (CONFIG.md says so to users).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::model::{Classification, Decision, Route, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::{FrontendMessage, RawMessage, TransactionStatus};

use super::relay::Pending;
use super::{Session, SessionEnd};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn function_call(&mut self, raw: RawMessage) -> Result<(), SessionEnd> {
        if let Err(e) = FrontendMessage::decode(&raw) {
            return self.invalid_message(e, true).await;
        }
        // A batch that ended with Flush is synced first, so that its answers are not taken
        // for this call's (each synced unit is answered by one ReadyForQuery).
        if self.held.as_ref().is_some_and(|h| h.open.is_some()) {
            self.drain().await?;
        }
        let verdict = Verdict {
            decision: Decision {
                route: Route::Primary,
                ..Decision::forward_default()
            },
            effective: Classification {
                kind: StatementKind::Write,
                ..Classification::unknown(0)
            },
            policy_time: Duration::ZERO,
        };
        let in_transaction = self.status != TransactionStatus::Idle;
        if let Err(e) = self.ensure_conn(&verdict, in_transaction, None).await? {
            return self.answer_error(e, true).await;
        }
        let pending = Pending {
            wrote: true,
            ..Pending::default()
        };
        self.send(raw.into_bytes(), pending, true).await
    }
}

//! A simple Query: one policy decision, an optional cache lookup, then the text is sent as is
//! (or as the policy rewrote it). Text in another encoding than UTF-8 is classified and shown to
//! the policy through its lossy UTF-8 view, and its bytes are sent untouched; it is never cached,
//! mirrored or recorded as a setting, which would need the exact text.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frontend::postgres::mirror;
use crate::frontend::postgres::observe::{Observed, Text, cache_outcome};
use crate::frontend::postgres::settings;
use crate::model::{Action, StatementKind};
use crate::postgres::protocol::{ErrorFields, FrontendMessage, RawMessage, TransactionStatus};

use super::cache::CacheStep;
use super::multiplex::RideOffer;
use super::relay::Pending;
use super::server::Got;
use super::{Session, SessionEnd};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A simple Query.
    pub(super) async fn query(&mut self, raw: RawMessage) -> Result<(), SessionEnd> {
        let sql = match FrontendMessage::decode(&raw) {
            Ok(FrontendMessage::Query { sql }) => sql,
            Ok(_) => return Ok(()),
            // The message was framed whole: like PostgreSQL, refuse it and go on.
            Err(e) => return self.invalid_message(e, true).await,
        };
        let utf8 = sql.is_utf8();
        let sql = sql.into_string();
        let query_id = self.fe.shared.metrics.next_query_id();
        let started = Instant::now();
        let verdict = match self.decide(&sql, false, query_id, started) {
            Ok(v) => v,
            Err(e) => return self.answer_error(e, true).await,
        };
        let verdict = Arc::new(verdict);
        if !self.causal.shared_key_is_none() {
            Box::pin(self.refresh_shared_position(&verdict)).await;
        }
        let rewritten = matches!(&verdict.decision.action, Action::Rewrite(new) if *new != sql);
        let mut capture = None;
        let key = if utf8 {
            self.cache_key(&verdict, verdict.sql(&sql), None)
        } else {
            None
        };
        let cache = cache_outcome(&verdict, key.is_some());
        // The client's text moves into `observed` (metrics) rather than being copied; what runs
        // is read back from there.
        let observed = Observed::new(query_id, started, verdict.clone(), Text::Sql(sql), cache);
        if rewritten && !utf8 && verdict.sql(observed.sql()).contains(LOSSY) {
            self.refused(observed);
            return self.answer_error(lossy_rewrite(), true).await;
        }
        if let Some(key) = key {
            match self.lookup(key, &verdict, false).await? {
                CacheStep::Answered { failed } => {
                    self.answered_by_cache(observed, failed);
                    return Ok(());
                }
                CacheStep::Fill(c) => capture = Some(c),
                CacheStep::Run => {}
            }
        }
        let in_transaction = self.status != TransactionStatus::Idle;
        let bytes = if rewritten {
            let mut out = BytesMut::new();
            FrontendMessage::Query {
                sql: verdict.sql(observed.sql()).into(),
            }
            .encode(&mut out);
            out.freeze()
        } else {
            raw.into_bytes()
        };
        // A read about to wait for a connection may ride on a busy one instead (see
        // `multiplex`); not one filling the cache, whose answer the session must capture.
        let offer = capture.is_none().then_some(RideOffer::Query(&bytes));
        match self.ensure_conn(&verdict, in_transaction, offer).await? {
            Ok(Got::Held) => {}
            Ok(Got::Rode(rode)) => {
                self.rode(observed, rode);
                return Ok(());
            }
            Err(e) => {
                if let Some(c) = capture {
                    c.fill.fail(&e);
                }
                self.refused(observed);
                return self.answer_error(e, true).await;
            }
        }
        let final_sql = verdict.sql(observed.sql());
        if utf8 && let Some(ticket) = self.mirror_ticket(&verdict, in_transaction) {
            self.spawn_mirror(ticket, mirror::simple(final_sql));
        }
        let kind = verdict.effective.kind;
        // Recorded when its transaction commits (see `settings_completed`); not from a text that
        // is not UTF-8, whose bytes the replay could not repeat.
        let settings = if utf8
            && (kind == StatementKind::Session || verdict.effective.flags.multi_statement)
        {
            settings::parse_changes(final_sql, verdict.effective.flags.multi_statement)
        } else {
            Vec::new()
        };
        let pending = Pending {
            capture,
            settings,
            wrote: self.writes(&verdict),
            invalidate: self.tables(&verdict.effective.tables_written),
            retry: (kind == StatementKind::Read && !in_transaction).then(|| bytes.clone()),
            observed: Some(observed),
            resident: verdict.effective.resident.clone(),
            several: verdict.effective.flags.multi_statement,
            ..Pending::default()
        };
        self.send(bytes, pending, true).await
    }
}

/// What the lossy view of text that is not UTF-8 has where the original's bytes were.
pub(super) const LOSSY: char = char::REPLACEMENT_CHARACTER;

/// A policy rewrote a statement that is not UTF-8 and kept some of its text: the client's bytes
/// behind the lossy view cannot be put back, and sending the view would change the statement.
pub(super) fn lossy_rewrite() -> ErrorFields {
    ErrorFields::error(
        "0A000",
        "the policy rewrote a statement whose text is not UTF-8 (see client_encoding); \
         the rewrite cannot be sent in the client's encoding",
    )
}

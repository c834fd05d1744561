//! A simple Query: one policy decision, an optional cache lookup, then the text is sent as is
//! (or as the policy rewrote it).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::frontend::postgres::client::ClientError;
use crate::frontend::postgres::mirror;
use crate::frontend::postgres::observe::{Observed, Text, cache_outcome};
use crate::frontend::postgres::settings;
use crate::model::{Action, StatementKind};
use crate::postgres::protocol::{FrontendMessage, RawMessage, TransactionStatus};

use super::cache::{CacheStep, ttl_of};
use super::relay::Pending;
use super::{Session, SessionEnd};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A simple Query.
    pub(super) async fn query(&mut self, raw: RawMessage) -> Result<(), SessionEnd> {
        let FrontendMessage::Query { sql } =
            FrontendMessage::decode(&raw).map_err(ClientError::from)?
        else {
            return Ok(());
        };
        let query_id = self.fe.shared.metrics.next_query_id();
        let started = Instant::now();
        let verdict = match self.decide(&sql, false, query_id, started) {
            Ok(v) => v,
            Err(e) => return self.answer_error(e, true).await,
        };
        let verdict = Arc::new(verdict);
        let rewritten = matches!(&verdict.decision.action, Action::Rewrite(new) if *new != sql);
        let mut capture = None;
        let key = self.cache_key(&verdict, verdict.sql(&sql), None);
        let cache = cache_outcome(&verdict, key.is_some());
        // The client's text moves into `observed` (metrics) rather than being copied; what runs
        // is read back from there.
        let observed = Observed::new(query_id, started, verdict.clone(), Text::Sql(sql), cache);
        if let Some(key) = key {
            match self.lookup(key, ttl_of(&verdict), false).await? {
                CacheStep::Answered { failed } => {
                    self.answered_by_cache(observed, failed);
                    return Ok(());
                }
                CacheStep::Fill(c) => capture = Some(c),
                CacheStep::Run => {}
            }
        }
        let in_transaction = self.status != TransactionStatus::Idle;
        if let Err(e) = self.ensure_conn(&verdict, in_transaction).await? {
            if let Some(c) = capture {
                c.fill.fail(&e);
            }
            self.refused(observed);
            return self.answer_error(e, true).await;
        }
        let final_sql = verdict.sql(observed.sql());
        if let Some(ticket) = self.mirror_ticket(&verdict, in_transaction) {
            self.spawn_mirror(ticket, mirror::simple(final_sql));
        }
        let bytes = if rewritten {
            let mut out = BytesMut::new();
            FrontendMessage::Query {
                sql: final_sql.to_owned(),
            }
            .encode(&mut out);
            out.freeze()
        } else {
            raw.into_bytes()
        };
        let kind = verdict.effective.kind;
        // A multi-statement SET string is not tracked (documented): recording it under its
        // first name would replay it wrongly.
        let setting = if kind == StatementKind::Session
            && !in_transaction
            && !verdict.effective.flags.multi_statement
        {
            settings::parse_change(final_sql)
        } else {
            None
        };
        let pending = Pending {
            capture,
            setting,
            wrote: matches!(kind, StatementKind::Write | StatementKind::Ddl),
            invalidate: self.tables(&verdict.effective.tables_written),
            retry: (kind == StatementKind::Read && !in_transaction).then(|| bytes.clone()),
            observed: Some(observed),
            ..Pending::default()
        };
        self.send(bytes, pending, true).await
    }
}

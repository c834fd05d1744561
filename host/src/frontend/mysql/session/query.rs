//! COM_QUERY: the policy's decision, the cache, then the statement on a server connection, and
//! what it changed in the session (settings, database, pins).

use std::time::Instant;

use bytes::BytesMut;

use super::relay::local_files_disabled;
use super::{Closed, Seen, Session, hash_settings};
use crate::classify::{mysql_session_effects, substitute_last_counts};
use crate::frontend::mysql::login::database_denied;
use crate::metrics::Outcome;
use crate::model::{Action, Route, StatementKind};
use crate::mysql::CapabilityFlags;
use crate::mysql::command::COM_QUERY;
use crate::mysql::response::{self, Answer, MyError};

impl Session {
    pub(super) async fn query(&mut self, payload: BytesMut) -> Result<(), Closed> {
        let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
        let mut seen = Seen::new(&self.fe, &sql);
        let verdict = match self.decide(&sql) {
            Ok(v) => v,
            Err(e) => {
                self.record(&seen, None, Outcome::PolicyError, true);
                return self.answer_error(e).await;
            }
        };
        let refusal = match &verdict.decision.action {
            Action::Block(reason) => Some((
                Outcome::Block,
                MyError::new(
                    response::ER_TABLEACCESS_DENIED_ERROR,
                    "42000",
                    format!("blocked by policy: {reason}"),
                ),
            )),
            _ if verdict.effective.flags.multi_statement
                && !self
                    .capabilities
                    .contains(CapabilityFlags::CLIENT_MULTI_STATEMENTS) =>
            {
                Some((
                    Outcome::Refused,
                    MyError::new(
                        response::ER_PARSE_ERROR,
                        "42000",
                        "You have an error in your SQL syntax: several statements in one query need CLIENT_MULTI_STATEMENTS",
                    ),
                ))
            }
            _ => None,
        };
        if let Some((outcome, error)) = refusal {
            self.record(&seen, Some(&verdict), outcome, true);
            return self.answer_error(error).await;
        }
        let run_sql = verdict.sql(&sql);
        let effects = mysql_session_effects(run_sql);
        if effects.kills {
            // The id would name a server connection another client may be using now.
            self.record(&seen, Some(&verdict), Outcome::Refused, true);
            return self.answer_error(kill_refused()).await;
        }
        if effects.loads_local_file && !self.may_send_files() {
            self.record(&seen, Some(&verdict), Outcome::Refused, true);
            return self.answer_error(local_files_disabled()).await;
        }
        if let Some(db) = &effects.use_database
            && !self.fe.databases.allows(&self.user.config, db)
        {
            self.record(&seen, Some(&verdict), Outcome::Refused, true);
            let ip = crate::guard::canonical_ip(self.peer.ip());
            let error = database_denied(&self.user.config.name, ip, db);
            return self.answer_error(error).await;
        }
        let key = if effects.pin.is_none() && !effects.setting && effects.use_database.is_none() {
            self.cache_key(&verdict, run_sql, None)
        } else {
            None
        };
        if self.consult_cache(key, &verdict, &mut seen).await? {
            return Ok(());
        }
        let mut route = verdict.decision.route.clone();
        if effects.pin.is_some() || effects.setting {
            // State that stays on the connection belongs where writes can follow it.
            route = Route::Primary;
        }
        if let Err(e) = self
            .ensure_conn(&verdict, &route, effects.reads_insert_id)
            .await?
        {
            if let Some(capture) = self.capture.take() {
                capture.fill.fail(&e);
            }
            self.record(&seen, Some(&verdict), Outcome::Refused, true);
            return self.answer_error(e).await;
        }
        // Another statement ran on this connection since the client's last one: the client's
        // own ROW_COUNT() / FOUND_ROWS() are written in.
        let counted = if effects.reads_last_counts && !self.holds_last_statement() {
            substitute_last_counts(run_sql, self.last_counts)
        } else {
            None
        };
        let bytes = match counted.as_deref() {
            Some(text) => command_payload(text),
            None if matches!(verdict.decision.action, Action::Rewrite(_)) => {
                command_payload(run_sql)
            }
            None => payload,
        };
        let kind = verdict.effective.kind;
        let wrote = matches!(
            kind,
            StatementKind::Write | StatementKind::Ddl | StatementKind::Unknown
        ) || verdict.effective.flags.multi_statement;
        seen.sent = Some(Instant::now());
        seen.pool = self.held.as_ref().map(|h| h.pool.clone());
        // Only when the cache could hold what the write changes.
        if wrote && self.fe.shared.cache.is_some() && self.fe.invalidate_on_write {
            self.invalidate = Some(verdict.effective.tables_written.clone());
        }
        let answer = self.relay(&bytes, Answer::ResultSets).await?;
        self.note_statement(
            answer.error,
            answer.rows,
            answer.ok,
            effects.calc_found_rows,
        );
        if let Some(capture) = self.capture.take() {
            self.complete_capture(capture, answer.error);
        }
        self.record(
            &seen,
            Some(&verdict),
            Outcome::of(&verdict.decision.action),
            answer.error,
        );
        if !answer.error {
            if let Some(reason) = effects.pin {
                self.pinned.get_or_insert(reason);
            }
            if effects.setting {
                self.settings.push(run_sql.to_owned());
                self.settings_hash = hash_settings(&self.settings);
                if let Some(held) = self.held.as_mut() {
                    held.conn.conn().settings = self.settings_hash;
                }
            }
            if let Some(db) = effects.use_database {
                self.set_database(db);
            }
        }
        self.finish_unit(&answer, wrote).await
    }
}

/// A COM_QUERY of `sql`.
fn command_payload(sql: &str) -> BytesMut {
    let mut p = BytesMut::with_capacity(sql.len() + 1);
    p.extend_from_slice(&[COM_QUERY]);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// What a `KILL` statement gets: the id would name a server connection another client may be
/// using now.
pub(super) fn kill_refused() -> MyError {
    MyError::new(
        response::ER_NOT_SUPPORTED_YET,
        "42000",
        "KILL is not supported through Switchyard: server connections are shared, so a \
         connection id does not name this client's statement",
    )
}

//! Server-side prepared statements in transaction mode. A client's statement ids are its own
//! (numbered by the session); each server connection keeps the statements it has prepared by
//! the hash of their text, shared by every client that prepares the same text, with the
//! server's answer to COM_STMT_PREPARE kept to answer the next client without a round trip.
//! A statement is prepared again, silently, on whichever connection runs its next
//! COM_STMT_EXECUTE, and the parameter types a client bound once are sent again where that
//! connection has not seen them (MySQL sends types only with the first execution).
//!
//! What cannot move pins the client to its connection instead: a cursor
//! (`CURSOR_TYPE_READ_ONLY`, rows fetched later with COM_STMT_FETCH) and long data
//! (COM_STMT_SEND_LONG_DATA, collected on the server until the execution).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use std::time::Instant;

use super::query::kill_refused;
use super::{Closed, Seen, Session};
use crate::backend::mysql::{MyBackendError, MyServerConn, ServerStatement};
use crate::classify::mysql_session_effects;
use crate::metrics::Outcome;
use crate::model::{Action, Route, StatementKind};
use crate::mysql::command::*;
use crate::mysql::packet::FrameReader;
use crate::mysql::response::{self, Answer, AnswerTracker, MyError};
use crate::pipeline::Verdict;

/// Statements one server connection keeps prepared; past it the oldest is closed (MariaDB
/// caps prepared statements per server at `max_prepared_stmt_count`, 16,382 by default).
const MAX_PREPARED_PER_CONNECTION: usize = 256;

/// A statement as one client prepared it.
#[derive(Debug)]
pub(super) struct ClientStatement {
    sql: Arc<str>,
    hash: u64,
    params: u16,
    verdict: Arc<Verdict>,
    /// Why executing it pins the client to its connection (user variables, temporary tables,
    /// a session `SET`, whose parameters cannot be replayed as text, …).
    pins: Option<&'static str>,
    /// It calls LAST_INSERT_ID(): the connection must hold the session's value.
    reads_insert_id: bool,
    /// The parameter types the client last bound (`2 × params` bytes), and their hash.
    types: Option<(Bytes, u64)>,
}

/// The client's statements by the ids it was given.
#[derive(Debug, Default)]
pub(super) struct Statements {
    by_id: HashMap<u32, ClientStatement>,
    next_id: u32,
}

impl Statements {
    pub fn clear(&mut self) {
        self.by_id.clear();
    }
}

/// What one execution's parameters are, whatever the client re-sent, for the cache key: the
/// NULL bitmap, the types (sent now, or bound by an earlier execution) and the values. Their
/// lengths follow from the statement's parameter count, so the parts cannot run into each other.
fn execution_params(packet: &[u8], params: u16, types_bound: Option<&Bytes>) -> Option<Vec<u8>> {
    if params == 0 {
        return Some(Vec::new());
    }
    let bitmap = usize::from(params).div_ceil(8);
    let flag_at = 10 + bitmap;
    let types_len = 2 * usize::from(params);
    let nulls = packet.get(10..flag_at)?;
    let (types, values) = if *packet.get(flag_at)? == 1 {
        (
            packet.get(flag_at + 1..flag_at + 1 + types_len)?,
            packet.get(flag_at + 1 + types_len..)?,
        )
    } else {
        (types_bound?.as_ref(), packet.get(flag_at + 1..)?)
    };
    let mut key = Vec::with_capacity(nulls.len() + types.len() + values.len());
    key.extend_from_slice(nulls);
    key.extend_from_slice(types);
    key.extend_from_slice(values);
    Some(key)
}

/// Where a statement runs: where the policy routes it, unless it leaves state on the connection,
/// which belongs where writes can follow it.
fn statement_route(verdict: &Verdict, pins: Option<&'static str>) -> Route {
    match pins {
        Some(_) => Route::Primary,
        None => verdict.decision.route.clone(),
    }
}

fn statement_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(payload.get(1..5)?.try_into().ok()?))
}

fn unknown_statement(id: u32, command: &str) -> MyError {
    MyError::new(
        1243,
        "HY000",
        format!("Unknown prepared statement handler ({id}) given to {command}"),
    )
}

impl Session {
    /// COM_STMT_PREPARE: the policy judges the text once, here; the answer comes from the
    /// server (or from a connection that prepared the same text before) with the client's own id.
    pub(super) async fn prepare(&mut self, payload: BytesMut) -> Result<(), Closed> {
        let sql: Arc<str> = Arc::from(String::from_utf8_lossy(&payload[1..]).as_ref());
        let verdict = match self.decide(&sql) {
            Ok(v) => Arc::new(v),
            Err(e) => return self.answer_error(e).await,
        };
        match &verdict.decision.action {
            Action::Block(reason) => {
                let error = MyError::new(
                    response::ER_TABLEACCESS_DENIED_ERROR,
                    "42000",
                    format!("blocked by policy: {reason}"),
                );
                return self.answer_error(error).await;
            }
            Action::Rewrite(_) => {
                let error = MyError::new(
                    response::ER_NOT_SUPPORTED_YET,
                    "42000",
                    "the policy rewrote a prepared statement: rewriting prepared statements is not supported",
                );
                return self.answer_error(error).await;
            }
            Action::Forward => {}
        }
        let effects = mysql_session_effects(&sql);
        if effects.kills {
            return self.answer_error(kill_refused()).await;
        }
        let pins = effects.pin.or(effects
            .setting
            .then_some("a session SET prepared as a statement"));
        let route = statement_route(&verdict, pins);
        if let Err(e) = self
            .ensure_conn(&verdict, &route, effects.reads_insert_id)
            .await?
        {
            return self.answer_error(e).await;
        }
        let hash = xxhash_rust::xxh3::xxh3_64(sql.as_bytes());
        let Some(statement) = self.prepared_here(&sql, hash).await? else {
            return Ok(());
        };
        self.statements.next_id = self.statements.next_id.wrapping_add(1).max(1);
        let id = self.statements.next_id;
        let params = statement
            .answer
            .get(4 + 7..4 + 9)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        self.statements.by_id.insert(
            id,
            ClientStatement {
                sql,
                hash,
                params,
                verdict,
                pins,
                reads_insert_id: effects.reads_insert_id,
                types: None,
            },
        );
        let start = self.out.len();
        self.out.extend_from_slice(&statement.answer);
        // The first frame's payload is [0x00][statement id][…].
        self.out[start + 5..start + 9].copy_from_slice(&id.to_le_bytes());
        self.flush().await?;
        self.release_if_idle().await
    }

    /// COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_RESET, COM_STMT_FETCH and
    /// COM_STMT_CLOSE: the client's id mapped to the statement prepared on the connection that
    /// serves it.
    pub(super) async fn statement_command(
        &mut self,
        command: u8,
        payload: BytesMut,
    ) -> Result<(), Closed> {
        let Some(id) = statement_id(&payload) else {
            return self
                .answer_error(MyError::new(
                    response::ER_UNKNOWN_COM_ERROR,
                    "08S01",
                    "Malformed statement command",
                ))
                .await;
        };
        if command == COM_STMT_CLOSE {
            // The server statement stays for the next client of the same text.
            self.statements.by_id.remove(&id);
            return Ok(());
        }
        let Some(statement) = self.statements.by_id.get(&id) else {
            return match command {
                COM_STMT_SEND_LONG_DATA => Ok(()),
                COM_STMT_EXECUTE => {
                    self.answer_error(unknown_statement(id, "mysqld_stmt_execute"))
                        .await
                }
                COM_STMT_FETCH => {
                    self.answer_error(unknown_statement(id, "mysqld_stmt_fetch"))
                        .await
                }
                _ => {
                    self.answer_error(unknown_statement(id, "mysqld_stmt_reset"))
                        .await
                }
            };
        };
        let (sql, hash, verdict) = (
            statement.sql.clone(),
            statement.hash,
            statement.verdict.clone(),
        );
        let params = statement.params;
        let (pins, reads_insert_id) = (statement.pins, statement.reads_insert_id);
        let types_bound = statement.types.as_ref().map(|(types, _)| types.clone());
        match command {
            COM_STMT_RESET if self.held.is_none() => return self.answer_ok().await,
            COM_STMT_FETCH if self.held.is_none() => {
                return self
                    .answer_error(MyError::new(
                        1421,
                        "HY000",
                        "The statement has no open cursor",
                    ))
                    .await;
            }
            _ => {}
        }
        let mut route = statement_route(&verdict, pins);
        let cursor = command == COM_STMT_EXECUTE && payload.get(5).is_some_and(|f| f & 0x07 != 0);
        if command == COM_STMT_SEND_LONG_DATA || cursor {
            route = Route::Primary;
        }
        let mut seen = Seen::new(&self.fe, &sql);
        if command == COM_STMT_EXECUTE && !cursor {
            let key = execution_params(&payload, params, types_bound.as_ref())
                .and_then(|bound| self.cache_key(&verdict, &sql, Some(&bound)));
            if self.consult_cache(key, &verdict, &mut seen).await? {
                return Ok(());
            }
        }
        let reads_insert_id = reads_insert_id && command == COM_STMT_EXECUTE;
        if let Err(e) = self.ensure_conn(&verdict, &route, reads_insert_id).await? {
            if let Some(capture) = self.capture.take() {
                capture.fill.fail(&e);
            }
            return if command == COM_STMT_SEND_LONG_DATA {
                Ok(())
            } else {
                if command == COM_STMT_EXECUTE {
                    self.record(&seen, Some(&verdict), Outcome::Refused, true);
                }
                self.answer_error(e).await
            };
        }
        let Some(server) = self.prepared_here(&sql, hash).await? else {
            return Ok(());
        };
        let mut packet = payload;
        packet[1..5].copy_from_slice(&server.id.to_le_bytes());
        match command {
            COM_STMT_SEND_LONG_DATA => {
                self.pinned
                    .get_or_insert("long data (COM_STMT_SEND_LONG_DATA)");
                if let Some(held) = self.held.as_mut()
                    && held.conn.conn().write_packet(0, &packet).await.is_err()
                {
                    self.held = None;
                }
                Ok(())
            }
            COM_STMT_EXECUTE => {
                let packet = self.bind_types(id, hash, params, packet);
                if cursor {
                    self.pinned.get_or_insert("cursors");
                }
                seen.sent = Some(Instant::now());
                seen.pool = self.held.as_ref().map(|h| h.pool.clone());
                let answer = self.relay(&packet, Answer::ResultSets).await?;
                if let Some(capture) = self.capture.take() {
                    self.complete_capture(capture, answer.error);
                }
                let outcome = Outcome::of(&verdict.decision.action);
                self.record(&seen, Some(&verdict), outcome, answer.error);
                self.note_statement(answer.error, answer.rows, answer.ok, false);
                if !answer.error
                    && let Some(reason) = pins
                {
                    self.pinned.get_or_insert(reason);
                }
                let wrote = !matches!(verdict.effective.kind, StatementKind::Read);
                self.finish_unit(&answer, wrote).await
            }
            COM_STMT_FETCH => {
                let answer = self.relay(&packet, Answer::Rows).await?;
                self.finish_unit(&answer, false).await
            }
            _ => {
                let answer = self.relay(&packet, Answer::Single).await?;
                self.finish_unit(&answer, false).await
            }
        }
    }

    /// The statement `sql` as prepared on the held connection (prepared there now if it was
    /// not). `None`: the client has been answered instead (the server refused the text, or the
    /// connection broke).
    async fn prepared_here(
        &mut self,
        sql: &str,
        hash: u64,
    ) -> Result<Option<ServerStatement>, Closed> {
        let prepared = match self.held.as_mut() {
            Some(held) => prepare_on(held.conn.conn(), sql, hash).await,
            None => {
                let error = MyError::new(1105, "HY000", "no server connection");
                self.answer_error(error).await?;
                return Ok(None);
            }
        };
        match prepared {
            Ok(Ok(statement)) => Ok(Some(statement)),
            Ok(Err(error_frames)) => {
                // The server refused the text: its ERR goes to the client as it came.
                self.out.extend_from_slice(&error_frames);
                self.flush().await?;
                self.release_if_idle().await?;
                Ok(None)
            }
            Err(e) => {
                self.held = None;
                self.answer_error(e.to_client()).await?;
                Ok(None)
            }
        }
    }

    /// Records the types of an execution that binds them, or adds the client's last types to one
    /// that does not when the connection has not seen them.
    fn bind_types(&mut self, id: u32, hash: u64, params: u16, packet: BytesMut) -> BytesMut {
        if params == 0 {
            return packet;
        }
        let bitmap = usize::from(params).div_ceil(8);
        let flag_at = 10 + bitmap;
        let types_len = 2 * usize::from(params);
        let Some(&bound) = packet.get(flag_at) else {
            return packet;
        };
        let Some(held) = self.held.as_mut() else {
            return packet;
        };
        let conn = held.conn.conn();
        let Some(statement) = self.statements.by_id.get_mut(&id) else {
            return packet;
        };
        if bound == 1 {
            if let Some(types) = packet.get(flag_at + 1..flag_at + 1 + types_len) {
                let types_hash = xxhash_rust::xxh3::xxh3_64(types).max(1);
                statement.types = Some((Bytes::copy_from_slice(types), types_hash));
                if let Some(s) = conn.prepared.get_mut(&hash) {
                    s.types = types_hash;
                }
            }
            return packet;
        }
        let Some((types, types_hash)) = &statement.types else {
            return packet;
        };
        let Some(server) = conn.prepared.get_mut(&hash) else {
            return packet;
        };
        if server.types == *types_hash {
            return packet;
        }
        server.types = *types_hash;
        let mut out = BytesMut::with_capacity(packet.len() + types.len());
        out.extend_from_slice(&packet[..flag_at]);
        out.put_u8(1);
        out.extend_from_slice(types);
        out.extend_from_slice(&packet[flag_at + 1..]);
        out
    }

    /// Gives the held connection back unless something keeps it (after an answer the proxy
    /// wrote itself).
    async fn release_if_idle(&mut self) -> Result<(), Closed> {
        let answered = super::relay::Relayed {
            status: Some(self.status()),
            ..Default::default()
        };
        self.finish_unit(&answered, false).await
    }
}

/// Prepares `sql` on `conn` and keeps it there: `Ok(Err(frames))` is the server's refusal, as
/// it came.
async fn prepare_on(
    conn: &mut MyServerConn,
    sql: &str,
    hash: u64,
) -> Result<Result<ServerStatement, Bytes>, MyBackendError> {
    if let Some(s) = conn.prepared.get(&hash) {
        return Ok(Ok(s.clone()));
    }
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(COM_STMT_PREPARE);
    payload.extend_from_slice(sql.as_bytes());
    conn.write_packet(0, &payload).await?;
    let mut tracker = AnswerTracker::new(Answer::Prepare);
    let mut answer = BytesMut::new();
    while !tracker.done() {
        let frame = read_frame(&mut conn.reader, &mut conn.stream, &conn.addr).await?;
        tracker.step(&frame);
        answer.extend_from_slice(&frame.0);
    }
    let answer = answer.freeze();
    if tracker.error {
        return Ok(Err(answer));
    }
    let id = answer
        .get(5..9)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    if conn.prepared.len() >= MAX_PREPARED_PER_CONNECTION
        && let Some(old) = conn.prepared.keys().next().copied()
        && let Some(gone) = conn.prepared.remove(&old)
    {
        let mut close = [COM_STMT_CLOSE, 0, 0, 0, 0];
        close[1..5].copy_from_slice(&gone.id.to_le_bytes());
        conn.write_packet(0, &close).await?;
    }
    let statement = ServerStatement {
        id,
        answer,
        types: 0,
    };
    conn.prepared.insert(hash, statement.clone());
    Ok(Ok(statement))
}

async fn read_frame(
    reader: &mut FrameReader,
    stream: &mut crate::backend::tls::MaybeTls,
    addr: &str,
) -> Result<crate::mysql::packet::Frame, MyBackendError> {
    reader
        .frame(stream)
        .await
        .map_err(|e| MyBackendError::Protocol {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

//! The extended protocol: a batch of Parse/Bind/Describe/Execute/Close up to Sync or Flush.
//! Client statement names are mapped to server names shared by every client (prepared once per
//! server connection), so a statement survives moving between pooled connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::postgres::ServerConn;
use crate::backend::postgres::multiplex::Encoded;
use crate::frontend::postgres::observe::{Observed, Text, cache_outcome};
use crate::frontend::postgres::statements::Statement;
use crate::frontend::postgres::{mirror, settings};
use crate::model::{Action, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::backend::ready_for_query;
use crate::postgres::protocol::frontend::Target;
use crate::postgres::protocol::{
    ErrorFields, FrontendMessage, RawMessage, SqlText, TransactionStatus,
};

use super::cache::{CacheStep, tables};
use super::invalid::invalid;
use super::multiplex::RideOffer;
use super::server::Got;
use super::simple::{LOSSY, lossy_rewrite};
use super::{Session, SessionEnd};

/// One step of an extended-protocol batch after the policy has seen it.
#[derive(Clone)]
pub(super) enum Item {
    Parse {
        named: bool,
        stmt: Arc<Statement>,
        raw: RawMessage,
        rewritten: bool,
    },
    Bind {
        stmt: Arc<Statement>,
        named: bool,
        portal: String,
        rest: Bytes,
        raw: RawMessage,
    },
    DescribeStatement(Arc<Statement>),
    CloseStatement,
    Sync,
    Raw(RawMessage),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// An extended-protocol batch (ends with Sync or Flush, or is cut at `MAX_BATCH_BYTES`).
    pub(super) async fn run_batch(&mut self) -> Result<(), SessionEnd> {
        let msgs = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let synced = msgs.last().is_some_and(|m| m.tag() == b'S');
        let mut items = Vec::with_capacity(msgs.len());
        let mut route: Option<Arc<Verdict>> = None;
        let query_id = self.fe.shared.metrics.next_query_id();
        let started = Instant::now();
        for raw in msgs {
            let item = match raw.tag() {
                b'P' | b'B' | b'D' | b'C' => {
                    match self.plan_item(raw, &mut route, query_id, started) {
                        Ok(item) => item,
                        Err(e) => return self.refuse(e, synced).await,
                    }
                }
                b'S' => Item::Sync,
                _ => Item::Raw(raw),
            };
            items.push(item);
        }
        // A lone Parse + Sync (libpq's PQprepare) of a statement that has already been prepared
        // successfully on a server needs no server: the statement is prepared lazily on the
        // connection of its first Bind. Besides saving a round trip, this is what keeps pgbench
        // -M prepared from deadlocking in transaction mode (a thread blocked in PQprepare
        // waiting for a connection that its own clients hold inside their transactions).
        if self.held.is_none()
            && let [
                Item::Parse {
                    named: true, stmt, ..
                },
                Item::Sync,
            ] = items.as_slice()
            && self.fe.known_statements.contains(stmt.hash)
        {
            self.io.wbuf.extend_from_slice(&[b'1', 0, 0, 0, 4]);
            ready_for_query(&mut self.io.wbuf, self.status);
            return Ok(());
        }
        let needs_server = items
            .iter()
            .any(|i| !matches!(i, Item::Sync | Item::CloseStatement))
            || self.held.is_some();
        if !needs_server {
            // Close of named statements (and Sync): the proxy answers itself.
            self.drain().await?;
            for item in &items {
                match item {
                    Item::CloseStatement => self.io.wbuf.extend_from_slice(&[b'3', 0, 0, 0, 4]),
                    _ => ready_for_query(&mut self.io.wbuf, self.status),
                }
            }
            return Ok(());
        }
        let verdict = match route {
            Some(v) => v,
            None => Arc::new(Verdict {
                decision: crate::model::Decision::forward_default(),
                effective: crate::model::Classification::unknown(0),
                policy_time: Duration::ZERO,
            }),
        };
        if !self.causal.shared_key_is_none() {
            Box::pin(self.refresh_shared_position(&verdict)).await;
        }
        let mut capture = None;
        let key = if synced {
            self.extended_cache_key(&verdict, &items)
        } else {
            None
        };
        let cache = cache_outcome(&verdict, key.is_some());
        // The statement this batch runs (its first Parse or Bind): what metrics count.
        let observed = items.iter().find_map(|i| {
            let (stmt, decided_now) = match i {
                Item::Parse { stmt, .. } => (stmt, true),
                Item::Bind { stmt, .. } => (stmt, false),
                _ => return None,
            };
            let o = Observed::new(
                query_id,
                started,
                verdict.clone(),
                Text::Prepared(stmt.clone()),
                cache,
            );
            // A Bind of a statement prepared earlier made no policy call now.
            Some(if decided_now {
                o
            } else {
                o.without_policy_call()
            })
        });
        if let Some(key) = key {
            let had_parse = items.iter().any(|i| matches!(i, Item::Parse { .. }));
            match self.lookup(key, &verdict, had_parse).await? {
                CacheStep::Answered { failed } => {
                    if let Some(o) = observed {
                        self.answered_by_cache(o, failed);
                    }
                    return Ok(());
                }
                CacheStep::Fill(mut c) => {
                    c.skip_parse = true;
                    capture = Some(c);
                }
                CacheStep::Run => {}
            }
        }
        let in_transaction = self.status != TransactionStatus::Idle;
        // A self-contained batch (its statements bound and run, ended by Sync) about to wait for
        // a connection may ride on a busy one instead (see `multiplex`).
        let offer = (synced && capture.is_none() && rides_alone(&items))
            .then_some(RideOffer::Batch(&items));
        match self.ensure_conn(&verdict, in_transaction, offer).await? {
            Ok(Got::Held) => {}
            Ok(Got::Rode(rode)) => {
                if let Some(o) = observed {
                    self.rode(o, rode);
                }
                return Ok(());
            }
            Err(e) => {
                if let Some(c) = capture {
                    c.fill.fail(&e);
                }
                if let Some(o) = observed {
                    self.refused(o);
                }
                return self.refuse(e, synced).await;
            }
        }
        if synced
            && let Some(Item::Bind { stmt, rest, .. }) =
                items.iter().find(|i| matches!(i, Item::Bind { .. }))
            && stmt.verdict.effective.kind == StatementKind::Read
            && stmt.sql.is_utf8()
            && let Some(ticket) = self.mirror_ticket(&stmt.verdict, in_transaction)
        {
            let bytes = mirror::extended(stmt, rest);
            self.spawn_mirror(ticket, bytes);
        }
        // Every statement the batch binds counts, not only its first: JDBC sends BEGIN and the
        // UPDATE after it in one batch.
        let mut written: Vec<String> = Vec::new();
        let mut writes = false;
        for stmt in items.iter().filter_map(|i| match i {
            Item::Parse { stmt, .. } | Item::Bind { stmt, .. } => Some(stmt),
            _ => None,
        }) {
            if self.writes(&stmt.verdict) {
                writes = true;
                written.extend(stmt.verdict.effective.tables_written.iter().cloned());
            }
        }
        let binds = items.iter().any(|i| {
            matches!(i, Item::Bind { .. }) || matches!(i, Item::Raw(raw) if raw.tag() == b'E')
        });
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let mut pending = held.open.take().unwrap_or_default();
        pending.portal |= binds;
        if pending.observed.is_none() {
            pending.observed = observed;
        }
        if capture.is_some() {
            pending.capture = capture;
        }
        let kind = verdict.effective.kind;
        // A Parse or Describe alone runs nothing: only an Execute writes or creates state.
        let executes = items
            .iter()
            .any(|i| matches!(i, Item::Raw(raw) if raw.tag() == b'E'));
        if executes {
            // A `SET` through the extended protocol (pgjdbc's `Statement.execute`) counts as in
            // a simple query.
            for stmt in items.iter().filter_map(|i| match i {
                Item::Bind { stmt, .. } => Some(stmt),
                _ => None,
            }) {
                if stmt.verdict.effective.kind == StatementKind::Session && stmt.sql.is_utf8() {
                    pending
                        .settings
                        .extend(settings::parse_change(stmt.sql.as_str()));
                }
            }
            pending.wrote |= writes;
            pending
                .resident
                .extend(verdict.effective.resident.iter().cloned());
        }
        if pending.wrote {
            written.extend(verdict.effective.tables_written.iter().cloned());
            written.sort();
            written.dedup();
            pending.invalidate = tables(&self.database, &written);
        }
        let encoded = encode_items(held.conn.conn(), items);
        pending.swallow_parse += encoded.swallow_parse;
        pending.new_prepared.extend(encoded.new_prepared);
        let out = encoded.bytes;
        if synced && kind == StatementKind::Read && !in_transaction && pending.retry.is_none() {
            pending.retry = Some(out.clone());
        }
        self.send(out, pending, synced).await
    }

    /// Decodes one Parse/Bind/Describe/Close and asks the policy about Parses.
    pub(super) fn plan_item(
        &mut self,
        raw: RawMessage,
        route: &mut Option<Arc<Verdict>>,
        query_id: u64,
        started: Instant,
    ) -> Result<Item, ErrorFields> {
        let msg = FrontendMessage::decode(&raw).map_err(invalid)?;
        Ok(match msg {
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                if !name.is_empty() && self.statements.contains_key(&name) {
                    return Err(ErrorFields::error(
                        "42P05",
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                }
                let verdict = Arc::new(self.decide(sql.as_str(), true, query_id, started)?);
                // The decoded text is the statement's own unless the policy changed it.
                let (final_sql, rewritten) = match &verdict.decision.action {
                    Action::Rewrite(new) if new != sql.as_str() => {
                        if !sql.is_utf8() && new.contains(LOSSY) {
                            return Err(lossy_rewrite());
                        }
                        (SqlText::from(new.clone()), true)
                    }
                    _ => (sql, false),
                };
                let stmt = Arc::new(Statement::new(
                    final_sql,
                    param_types,
                    verdict.clone(),
                    self.settings.encoding(),
                ));
                route.get_or_insert(verdict);
                let named = !name.is_empty();
                if named {
                    self.statements.insert(name, stmt.clone());
                } else {
                    self.unnamed = Some(stmt.clone());
                }
                Item::Parse {
                    named,
                    stmt,
                    raw,
                    rewritten,
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                let named = !statement.is_empty();
                let stmt = if named {
                    self.statements.get(&statement).cloned()
                } else {
                    self.unnamed.clone()
                };
                let Some(stmt) = stmt else {
                    return Err(ErrorFields::error(
                        "26000",
                        format!("prepared statement \"{statement}\" does not exist"),
                    ));
                };
                route.get_or_insert(stmt.verdict.clone());
                Item::Bind {
                    stmt,
                    named,
                    portal,
                    rest,
                    raw,
                }
            }
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                let Some(stmt) = self.statements.get(&name).cloned() else {
                    return Err(ErrorFields::error(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    ));
                };
                route.get_or_insert(stmt.verdict.clone());
                Item::DescribeStatement(stmt)
            }
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() => {
                self.statements.remove(&name);
                Item::CloseStatement
            }
            _ => Item::Raw(raw),
        })
    }
}

pub(super) fn encode_parse(out: &mut BytesMut, name: &str, stmt: &Statement) {
    FrontendMessage::Parse {
        name: name.to_owned(),
        sql: stmt.sql.clone(),
        param_types: stmt.param_types.clone(),
    }
    .encode(out);
}

/// Whether a batch can run on another session's connection: Parse, Bind, Describe and one
/// Execute of read statements, then its Sync (nothing that closes, copies or leaves a portal).
fn rides_alone(items: &[Item]) -> bool {
    let mut executes = 0;
    for item in items {
        match item {
            Item::Parse { stmt, .. } | Item::Bind { stmt, .. } | Item::DescribeStatement(stmt) => {
                let effective = &stmt.verdict.effective;
                if effective.kind != StatementKind::Read
                    || !effective.resident.is_empty()
                    || !crate::classify::only_read_only_builtins(&effective.functions)
                {
                    return false;
                }
            }
            Item::Raw(raw) if raw.tag() == b'E' => executes += 1,
            Item::Raw(raw) if raw.tag() == b'D' => {}
            Item::Sync => {}
            _ => return false,
        }
    }
    executes == 1 && matches!(items.last(), Some(Item::Sync))
}

/// Encodes a batch for `conn`: statement names mapped to the server's, and a Parse added for
/// each statement the connection lacks (their ParseComplete is not the client's to see).
pub(super) fn encode_items(conn: &mut ServerConn, items: Vec<Item>) -> Encoded {
    let mut swallow_parse = 0;
    let mut new_prepared = Vec::new();
    let mut out = BytesMut::with_capacity(256);
    for item in items {
        match item {
            Item::Parse {
                named,
                stmt,
                raw,
                rewritten,
            } => {
                if !named {
                    conn.unnamed = stmt.hash;
                    if rewritten {
                        encode_parse(&mut out, "", &stmt);
                    } else {
                        out.extend_from_slice(raw.bytes());
                    }
                } else if conn.prepared.contains(&stmt.hash) {
                    // Already prepared here: a Parse of the unnamed statement gives the
                    // client the ParseComplete it expects, in order.
                    conn.unnamed = stmt.hash;
                    encode_parse(&mut out, "", &stmt);
                } else {
                    conn.prepared.insert(stmt.hash);
                    new_prepared.push(stmt.hash);
                    encode_parse(&mut out, &stmt.server_name(), &stmt);
                }
            }
            Item::Bind {
                stmt,
                named,
                portal,
                rest,
                raw,
            } => {
                if named {
                    if conn.prepared.insert(stmt.hash) {
                        new_prepared.push(stmt.hash);
                        swallow_parse += 1;
                        encode_parse(&mut out, &stmt.server_name(), &stmt);
                    }
                    FrontendMessage::Bind {
                        portal,
                        statement: stmt.server_name(),
                        rest,
                    }
                    .encode(&mut out);
                } else {
                    if conn.unnamed != stmt.hash {
                        // Parsed in an earlier transaction on another connection.
                        swallow_parse += 1;
                        encode_parse(&mut out, "", &stmt);
                        conn.unnamed = stmt.hash;
                    }
                    out.extend_from_slice(raw.bytes());
                }
            }
            Item::DescribeStatement(stmt) => {
                if conn.prepared.insert(stmt.hash) {
                    new_prepared.push(stmt.hash);
                    swallow_parse += 1;
                    encode_parse(&mut out, &stmt.server_name(), &stmt);
                }
                FrontendMessage::Describe {
                    target: Target::Statement,
                    name: stmt.server_name(),
                }
                .encode(&mut out);
            }
            Item::CloseStatement => {
                // The server-side statement stays for other clients; closing a name that
                // does not exist still answers CloseComplete.
                FrontendMessage::Close {
                    target: Target::Statement,
                    name: "sy_closed".to_owned(),
                }
                .encode(&mut out);
            }
            Item::Sync => out.extend_from_slice(&[b'S', 0, 0, 0, 4]),
            Item::Raw(raw) => out.extend_from_slice(raw.bytes()),
        }
    }
    Encoded {
        bytes: out.freeze(),
        swallow_parse,
        new_prepared,
    }
}

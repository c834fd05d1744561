//! Sending one command on the held server connection and relaying its answer frame by frame
//! (written to the client whenever the server's buffered frames run out, so a large result
//! streams through a bounded buffer), then what the answer says: the transaction state, the
//! LAST_INSERT_ID(), the session's causal position after a write, and whether the connection
//! goes back to the pool.

use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::{Closed, Session};
use crate::backend::mysql::parse_gtid_position;
use crate::config::Consistency;
use crate::model::Lsn;
use crate::model::PoolRole;
use crate::mysql::StatusFlags;
use crate::mysql::response::{Answer, AnswerTracker, MyError, OkInfo};

/// Client bytes buffered before they are written even though the server has sent more.
const FLUSH_AT: usize = 64 << 10;

/// The position of a write whose GTID could not be learnt: beyond every replica's.
pub(super) const UNKNOWN_WRITE: Lsn = Lsn(u64::MAX);

/// The MariaDB statement that names the last transaction this connection committed.
const LAST_GTID_QUERY: &str = "SELECT @@last_gtid";

/// What a relayed answer said.
#[derive(Debug, Default)]
pub(super) struct Relayed {
    pub error: bool,
    pub ok: Option<OkInfo>,
    /// The status flags of the answer's last OK or EOF (`None` after an ERR).
    pub status: Option<StatusFlags>,
    /// The server connection broke: it is gone, and the client's transaction with it.
    pub broken: bool,
    /// Rows of the last result set, when the answer ended with one.
    pub rows: Option<u64>,
}

impl Session {
    /// Sends `payload` (a whole command) on the held connection and relays the answer.
    /// `Err(Closed)` when the client cannot be answered any more.
    pub(super) async fn relay(
        &mut self,
        payload: &[u8],
        answer: Answer,
    ) -> Result<Relayed, Closed> {
        // Taken now, so an answer that never completes leaves nothing for the next statement.
        let invalidate = self.invalidate.take();
        let may_send_files = self.may_send_files();
        let Some(held) = self.held.as_mut() else {
            let error = MyError::new(1105, "HY000", "no server connection");
            self.answer_error(error).await?;
            return Ok(Relayed {
                error: true,
                ..Relayed::default()
            });
        };
        let conn = held.conn.conn();
        if let Err(e) = conn.write_packet(0, payload).await {
            self.held = None;
            self.answer_error(e.to_client()).await?;
            return Ok(Relayed {
                error: true,
                broken: true,
                ..Relayed::default()
            });
        }
        let mut tracker = AnswerTracker::new(answer);
        let mut written = false;

        loop {
            let frame = match conn.reader.buffered_frame() {
                Some(frame) => frame,
                None => {
                    if !self.out.is_empty() {
                        written = true;
                        let result = self.stream.write_all(&self.out).await;
                        self.out.clear();
                        result.map_err(|_| Closed)?;
                    }
                    match conn.reader.frame(&mut conn.stream).await {
                        Ok(frame) => frame,
                        Err(e) => {
                            self.held = None;
                            if written {
                                // Half an answer is out: the client cannot be told in-band.
                                return Err(Closed);
                            }
                            self.out.clear();
                            let error = MyError::new(
                                crate::mysql::response::ER_CONNECTION_KILLED,
                                "08S01",
                                format!("the server connection was lost: {e}"),
                            );
                            self.answer_error(error).await?;
                            return Ok(Relayed {
                                error: true,
                                broken: true,
                                ..Relayed::default()
                            });
                        }
                    }
                }
            };
            tracker.step(&frame);
            if tracker.wants_file() {
                if !may_send_files {
                    // Only a statement the proxy did not recognise as LOAD DATA LOCAL gets
                    // here. Telling the server the file is empty would load nothing and
                    // succeed, so the connection goes instead.
                    self.held = None;
                    self.out.clear();
                    self.answer_error(local_files_disabled()).await?;
                    return Ok(Relayed {
                        error: true,
                        broken: true,
                        ..Relayed::default()
                    });
                }
                self.out.extend_from_slice(&frame.0);
                written = true;
                let result = self.stream.write_all(&self.out).await;
                self.out.clear();
                result.map_err(|_| Closed)?;
                // The client's file, as it sends it, up to its empty packet.
                loop {
                    let Ok(chunk) = self.reader.frame(&mut self.stream).await else {
                        // The server waits for the rest of a file that will never come.
                        self.held = None;
                        return Err(Closed);
                    };
                    let last = chunk.payload().is_empty();
                    if conn.write_all(&chunk.0).await.is_err() {
                        self.held = None;
                        return Err(Closed);
                    }
                    if last {
                        break;
                    }
                }
                tracker.file_sent();
                continue;
            }
            if let Some(capture) = self.capture.as_mut() {
                capture.buf.extend_from_slice(&frame.0);
            }
            self.out.extend_from_slice(&frame.0);
            if tracker.done() {
                break;
            }
            if self.out.len() >= FLUSH_AT {
                written = true;
                let result = self.stream.write_all(&self.out).await;
                self.out.clear();
                result.map_err(|_| Closed)?;
            }
        }
        // A write's tables leave the cache before its client learns it is done.
        if let Some(tables) = invalidate
            && !tracker.error
        {
            self.invalidate(&tables);
        }
        self.flush().await?;
        Ok(Relayed {
            error: tracker.error,
            ok: tracker.ok,
            status: (!tracker.error).then(|| tracker.status()),
            broken: false,
            rows: tracker.ended_with_rows.then_some(tracker.rows),
        })
    }

    /// Whether the client may answer a server's request for a local file: its listener allows
    /// LOAD DATA LOCAL INFILE and the client negotiated it.
    pub(super) fn may_send_files(&self) -> bool {
        self.fe.listener.local_infile
            && self
                .capabilities
                .contains(crate::mysql::CapabilityFlags::CLIENT_LOCAL_FILES)
    }

    /// Remembers what a statement of the client's left for ROW_COUNT() and FOUND_ROWS()
    /// (`calc_found_rows`: it used SQL_CALC_FOUND_ROWS), and that it is the last statement of
    /// the connection it ran on, if any.
    pub(super) fn note_statement(
        &mut self,
        error: bool,
        rows: Option<u64>,
        ok: Option<OkInfo>,
        calc_found_rows: bool,
    ) {
        let counts = &mut self.last_counts;
        if error {
            counts.row_count = -1;
        } else if let Some(rows) = rows {
            counts.row_count = -1;
            counts.found_rows = (!calc_found_rows).then_some(rows);
        } else if let Some(ok) = ok {
            counts.row_count = i64::try_from(ok.affected_rows).unwrap_or(i64::MAX);
        }
        self.statements_run += 1;
        if let Some(held) = self.held.as_mut() {
            held.conn.conn().last_statement = (self.id, self.statements_run);
        }
    }

    /// Whether the held connection's last statement is the client's latest, so ROW_COUNT()
    /// and FOUND_ROWS() there are the client's own.
    pub(super) fn holds_last_statement(&mut self) -> bool {
        let latest = (self.id, self.statements_run);
        self.held
            .as_mut()
            .is_some_and(|h| h.conn.conn().last_statement == latest)
    }

    /// Takes in what the answer said and gives the connection back when nothing keeps it.
    pub(super) async fn finish_unit(
        &mut self,
        answer: &Relayed,
        wrote: bool,
    ) -> Result<(), Closed> {
        if answer.broken {
            self.in_transaction = false;
            self.unit_wrote = false;
            return Ok(());
        }
        if let Some(status) = answer.status {
            self.in_transaction = status.contains(StatusFlags::SERVER_STATUS_IN_TRANS);
            self.autocommit = status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT);
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        if let Some(ok) = answer.ok
            && ok.last_insert_id != 0
        {
            self.last_insert_id = ok.last_insert_id;
            held.conn.conn().insert_id = (self.id, ok.last_insert_id);
        }
        if wrote && !answer.error && held.pool.role() != PoolRole::Replica {
            self.unit_wrote = true;
            self.last_write = Some(Instant::now());
        }
        if self.in_transaction {
            return Ok(());
        }
        if self.unit_wrote {
            self.unit_wrote = false;
            self.learn_position().await;
        }
        let keep = self.pinned.is_some()
            || self
                .held
                .as_ref()
                .is_some_and(|h| self.session_mode(&h.pool));
        if !keep && let Some(held) = self.held.take() {
            held.conn.release();
        }
        Ok(())
    }

    /// After a unit of work that wrote: the GTID of its commit, read on the same connection,
    /// becomes the position this session's reads must see.
    async fn learn_position(&mut self) {
        let router = self.fe.backend.router().clone();
        if router.consistency() == Consistency::Eventual || self.own_position == Some(UNKNOWN_WRITE)
        {
            return;
        }
        let committed = Instant::now();
        let probed = match self.held.as_mut() {
            Some(held) => match held.conn.conn().query_rows(LAST_GTID_QUERY).await {
                Ok(Ok(rows)) => rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_deref())
                    .and_then(|v| parse_gtid_position(v).ok()),
                Ok(Err(_)) => None,
                Err(_) => {
                    self.held = None;
                    None
                }
            },
            None => None,
        };
        // Without the commit's own GTID, a primary position sampled after the commit is at or
        // after it.
        let position = match probed {
            Some(p) if p.0 > 0 => Some(p),
            _ => {
                router
                    .primary_position_since(committed, router.causal_wait())
                    .await
            }
        };
        // Where the write stands cannot be learnt (a MySQL server has no MariaDB GTIDs): no
        // replica can be shown to have it, so the session's reads stay on the primary.
        let p = position.unwrap_or(UNKNOWN_WRITE);
        self.own_position = Some(self.own_position.map_or(p, |o| o.max(p)));
    }
}

/// What MariaDB answers LOAD DATA LOCAL INFILE when the capability is off.
pub(super) fn local_files_disabled() -> MyError {
    MyError::new(
        crate::mysql::response::ER_LOAD_INFILE_CAPABILITY_DISABLED,
        "HY000",
        "The used command is not allowed because the MariaDB server or client has disabled the \
         local infile capability",
    )
}

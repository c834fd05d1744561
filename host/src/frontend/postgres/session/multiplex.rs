//! Multiplexing (see `backend::postgres::multiplex`), both sides of it.
//!
//! As a rider: when every connection of the bucket a read would check out from is busy, an
//! autocommit read of a session holding nothing is left on the board of a connection another
//! session holds, and its answer comes back through a channel. A ride lost with its connection
//! before any of its answer reached the client goes the ordinary way (a read is safe to run
//! again); one lost half-way gets an error, and the session goes on.
//!
//! As a carrier: the session opens its board while everything it has in flight is autocommit
//! work that others may queue behind, writes the rides left there onto its connection and hands
//! their answers back, and keeps the connection until the last of them is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use smallvec::SmallVec;

use crate::backend::postgres::multiplex::{
    Board, Carriers, Encode, Encoded, Ride, RideEvent, RideTicket,
};
use crate::backend::postgres::{Bucket, PgBackendError, PooledConn};
use crate::config::PoolMode;
use crate::frontend::postgres::client::WRITE_HIGH_WATER;
use crate::frontend::postgres::observe::Observed;
use crate::model::{Protocol, StatementKind};
use crate::pipeline::Verdict;
use crate::postgres::protocol::backend::ready_for_query;
use crate::postgres::protocol::{ErrorFields, RawMessage, TransactionStatus};
use crate::route::Pool;

use super::extended::{Item, encode_items};
use super::relay::{Held, Pending};
use super::{Session, SessionEnd};

/// A rider's answer is handed over in pieces of about this much.
const PART: usize = 64 << 10;

/// A held connection's board (the connection keeps it, listed in its bucket, for its life);
/// closed when the holder lets the connection go, and rides still waiting then see their
/// channel close and go elsewhere.
pub(in crate::frontend::postgres) struct BoardSlot {
    pub(super) board: Arc<Board>,
}

impl BoardSlot {
    /// The board of a connection just checked out, if its pool multiplexes.
    pub(super) fn for_conn(conn: &mut PooledConn, pool: &Pool) -> Option<BoardSlot> {
        let config = pool.config();
        if !config.multiplex.enabled || config.mode != PoolMode::Transaction {
            return None;
        }
        let carriers = conn.bucket().connector().carriers.clone();
        let server = conn.conn();
        let board = match &server.board {
            Some(board) => board.clone(),
            None => {
                let board = Arc::new(Board::new(server.cancel_target()));
                carriers.register(&board);
                server.board = Some(board.clone());
                board
            }
        };
        Some(BoardSlot { board })
    }
}

impl Drop for BoardSlot {
    fn drop(&mut self) {
        drop(self.board.close());
        self.board.set_own_running(false);
    }
}

/// Another session's unit in this connection's queue.
pub(in crate::frontend::postgres) struct Rider {
    reply: mpsc::Sender<RideEvent>,
    ticket: Arc<RideTicket>,
    buf: BytesMut,
    /// Cancelled while queued: its answer is dropped and replaced by a cancellation.
    withdrawn: bool,
    /// When the server started on it (everything before it was answered).
    started: Option<Instant>,
}

/// What a rider offers to send: a Query as is, or a batch to encode on the carrier's connection.
#[derive(Clone, Copy)]
pub(super) enum RideOffer<'a> {
    Query(&'a Bytes),
    Batch(&'a [Item]),
}

/// What became of an offer to ride.
pub(super) enum Boarding {
    /// Not a unit that may ride, or a connection is free: the ordinary way.
    No,
    /// It rode and is answered.
    Rode(Rode),
    /// No board had room: it waits in its bucket's queue of rides, and the session waits for
    /// a connection of its own too ([`Session::checkout_or_ride`]).
    Queued(QueuedRide),
}

/// A ride waiting in its bucket's queue; taken out again when dropped unanswered (the session
/// got a connection first, or went away).
pub(super) struct QueuedRide {
    carriers: Arc<Carriers>,
    ticket: Arc<RideTicket>,
    answers: mpsc::Receiver<RideEvent>,
}

impl QueuedRide {
    /// True if no carrier had taken it: the session serves it itself.
    fn withdraw(&self) -> bool {
        self.carriers.withdraw(&self.ticket)
    }
}

impl Drop for QueuedRide {
    fn drop(&mut self) {
        self.carriers.withdraw(&self.ticket);
    }
}

/// A ride's end, for the rider's metrics.
pub(super) struct Rode {
    pool: Arc<Pool>,
    pub(super) failed: bool,
    /// Time on the server (from when it was the one the server worked on).
    pub(super) ran: Duration,
}

impl Held {
    /// Units in flight and their expected server time, as riders compare connections.
    fn load(&self) -> (u32, u64) {
        let depth = u32::try_from(self.queue.len()).unwrap_or(u32::MAX);
        let expected = self
            .queue
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.expected_us.max(1)));
        (depth, expected)
    }

    /// The front unit is what the server works on now: a ride there has started (or, cancelled
    /// while queued, is withdrawn).
    pub(super) fn front_started(&mut self) {
        if let Some(rider) = self.queue.front_mut().and_then(|p| p.rider.as_mut())
            && rider.started.is_none()
        {
            rider.started = Some(Instant::now());
            rider.withdrawn = !rider.ticket.start();
        }
        if let Some(slot) = &self.board {
            let own = self.queue.front().is_some_and(|p| p.rider.is_none());
            slot.board.set_own_running(own);
            let (depth, expected) = self.load();
            slot.board.set_load(depth, expected);
        }
    }

    /// Closes the board before the connection goes back to its pool: false if rides were left
    /// on it meanwhile (they are written at the holder's next turn, and the connection stays).
    pub(super) fn keeps_no_rides(&self) -> bool {
        let Some(slot) = &self.board else {
            return true;
        };
        let rides = slot.board.close();
        if rides.is_empty() {
            return true;
        }
        slot.board.put_back(rides);
        false
    }

    /// Clients wait in the pool's queue for a connection of this bucket: one kept only for rides
    /// must go back to the pool soon, or they could wait for as long as rides keep coming.
    pub(super) fn others_wait(&self) -> bool {
        self.conn
            .bucket()
            .stats
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    }

    /// Nothing of the holder's own is outstanding, only other sessions' rides.
    pub(super) fn carrying_only(&self) -> bool {
        self.open.is_none()
            && self.queue.iter().any(|p| p.rider.is_some())
            && self.queue.iter().all(|p| p.rider.is_some() || p.silent)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Whether others may queue behind `verdict`'s statement on this session's connection, or
    /// it behind others': autocommit, one statement, no COPY, nothing that changes the session
    /// or pins it, and not a shape known to be slow. Returns its expected server time.
    pub(super) fn multiplexable(&self, verdict: &Verdict, pool: &Pool) -> Option<u64> {
        let config = &pool.config().multiplex;
        let effective = &verdict.effective;
        let plain = self.status == TransactionStatus::Idle
            && !self.copy_in
            && !self.is_pinned()
            && matches!(effective.kind, StatementKind::Read | StatementKind::Write)
            && !effective.flags.multi_statement
            && effective.resident.is_empty()
            && effective.statements.iter().all(|s| s.command != "COPY");
        if !plain {
            return None;
        }
        let expected = self
            .fe
            .shared
            .metrics
            .digests()
            .mean_server_us(Protocol::Postgres, effective.fingerprint)
            .unwrap_or(0);
        (Duration::from_micros(expected) < config.slow_statement).then_some(expected)
    }

    /// Before the session's own unit is written: a unit nobody may queue behind closes the
    /// board, and rides left there until now are written ahead of it.
    pub(super) async fn board_before_send(
        &mut self,
        pending: &mut Pending,
        synced: bool,
    ) -> Result<bool, SessionEnd> {
        let Some(held) = self.held.as_ref() else {
            return Ok(false);
        };
        if held.board.is_none() {
            return Ok(false);
        }
        let pool = held.pool.clone();
        let carriable = synced
            && pending.rider.is_none()
            && held.open.is_none()
            && held.queue.iter().all(|p| p.expected_us != u64::MAX)
            && match pending.observed.as_ref() {
                Some(o) => self.multiplexable(o.verdict(), &pool),
                None => None,
            }
            .inspect(|&e| pending.expected_us = e)
            .is_some();
        if !carriable {
            // Marks the unit as one nobody may queue behind while it is in flight.
            pending.expected_us = u64::MAX;
            self.close_board().await?;
        }
        Ok(carriable)
    }

    /// After the session's own unit was written: the board opens if it may carry.
    pub(super) fn board_after_send(&mut self, carriable: bool) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if carriable && let Some(slot) = &held.board {
            let (depth, expected) = held.load();
            let settings = held.conn.conn_ref().settings;
            slot.board.open(settings, depth, expected);
        }
    }

    /// Closes the board; rides left on it are written (they were taken while it was open).
    pub(super) async fn close_board(&mut self) -> Result<(), SessionEnd> {
        let rides = match self.held.as_ref().and_then(|h| h.board.as_ref()) {
            Some(slot) => slot.board.close(),
            None => return Ok(()),
        };
        self.write_rides(rides).await
    }

    /// Takes no more rides, lets those taken finish where they are, and gives the connection
    /// back when nothing else keeps it.
    pub(super) async fn finish_rides(&mut self) -> Result<(), SessionEnd> {
        self.close_board().await?;
        self.drain().await?;
        self.maybe_release();
        Ok(())
    }

    /// Takes rides waiting in the bucket's queue, oldest first, while the board is open and
    /// the connection has room under `max_depth`.
    pub(super) async fn pull_rides(&mut self) -> Result<(), SessionEnd> {
        let Some(held) = self.held.as_ref() else {
            return Ok(());
        };
        let Some(slot) = held.board.as_ref() else {
            return Ok(());
        };
        let carriers = &held.conn.bucket().connector().carriers;
        if carriers.queued() == 0 || !slot.board.is_open() {
            return Ok(());
        }
        let depth = u32::try_from(held.queue.len()).unwrap_or(u32::MAX);
        let room = held.pool.config().multiplex.max_depth.saturating_sub(depth);
        let server = held.conn.conn_ref();
        let rides = carriers.pull(server.settings, room);
        if rides.is_empty() {
            return Ok(());
        }
        let target = server.cancel_target();
        // Counted here: the carrier knows the depth each joins at.
        let metrics = &self.fe.shared.metrics;
        for (i, ride) in rides.iter().enumerate() {
            ride.ticket.set_carrier(&target);
            metrics.ride(held.pool.name(), depth + i as u32);
        }
        self.write_rides(rides).await
    }

    /// Writes the rides left on the board since the last time.
    pub(super) async fn take_rides(&mut self) -> Result<(), SessionEnd> {
        let rides = match self.held.as_ref().and_then(|h| h.board.as_ref()) {
            Some(slot) => slot.board.take(),
            None => return Ok(()),
        };
        self.write_rides(rides).await
    }

    async fn write_rides(&mut self, rides: Vec<Ride>) -> Result<(), SessionEnd> {
        if rides.is_empty() {
            return Ok(());
        }
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let mut out = BytesMut::new();
        for ride in rides {
            let encoded = (ride.encode)(held.conn.conn());
            out.extend_from_slice(&encoded.bytes);
            held.queue.push_back(Pending {
                swallow_parse: encoded.swallow_parse,
                new_prepared: encoded.new_prepared,
                expected_us: ride.expected_us,
                rider: Some(Box::new(Rider {
                    reply: ride.reply,
                    ticket: ride.ticket,
                    buf: BytesMut::new(),
                    withdrawn: false,
                    started: None,
                })),
                ..Pending::default()
            });
        }
        held.front_started();
        if let Err(e) = held.conn.conn().write_all(&out).await {
            return self.server_failed(e).await;
        }
        Ok(())
    }

    /// One message of the answer to the front unit, a ride: kept for its rider (handed over in
    /// pieces when long), never this session's client.
    pub(super) async fn relay_to_rider(&mut self, msg: &RawMessage) -> Result<(), SessionEnd> {
        let Some(held) = self.held.as_mut() else {
            return Ok(());
        };
        let Some(front) = held.queue.front_mut() else {
            return Ok(());
        };
        let tag = msg.tag();
        if tag == b'1' && front.swallow_parse > 0 {
            front.swallow_parse -= 1;
            return Ok(());
        }
        if tag == b'E' {
            front.failed = true;
            let conn = held.conn.conn();
            for h in front.new_prepared.drain(..) {
                conn.prepared.remove(&h);
            }
        }
        let Some(rider) = front.rider.as_mut() else {
            return Ok(());
        };
        if rider.withdrawn {
            return Ok(());
        }
        rider.buf.extend_from_slice(msg.bytes());
        if rider.buf.len() >= PART {
            let part = rider.buf.split().freeze();
            // A rider that stopped listening (its client left) loses the rest, nobody else.
            let _ = rider.reply.send(RideEvent::Part(part)).await;
        }
        Ok(())
    }

    /// The front ride's ReadyForQuery: the rest of its answer goes to its rider.
    pub(super) async fn ride_done(
        &mut self,
        mut pending: Pending,
        ready: &RawMessage,
    ) -> Result<(), SessionEnd> {
        let Some(rider) = pending.rider.take() else {
            return Ok(());
        };
        let Rider {
            reply,
            ticket,
            mut buf,
            withdrawn,
            started,
        } = *rider;
        if withdrawn {
            buf.clear();
            ErrorFields::error("57014", "canceling statement due to user request")
                .encode_error(&mut buf);
        }
        buf.extend_from_slice(ready.bytes());
        if !pending.failed {
            for hash in pending.new_prepared.drain(..) {
                self.fe.known_statements.insert(hash);
            }
        }
        ticket.finish();
        let done = RideEvent::Done {
            answer: buf.freeze(),
            failed: pending.failed || withdrawn,
            ran: started.map(|s| s.elapsed()).unwrap_or_default(),
        };
        let _ = reply.send(done).await;
        if let Some(held) = self.held.as_mut() {
            held.front_started();
        }
        Ok(())
    }

    /// Counts a statement that rode on another session's connection.
    pub(super) fn rode(&self, mut observed: Observed, rode: Rode) {
        observed.sent = Instant::now().checked_sub(rode.ran);
        observed.finish(
            &self.fe.shared.metrics,
            &self.user.config.name,
            rode.pool.name(),
            rode.failed,
        );
    }

    /// As a rider: leaves the unit on a busy connection of `pool` when a checkout would wait.
    /// `None`: it did not ride (or was lost before anything reached the client) and goes the
    /// ordinary way.
    pub(super) async fn try_ride(
        &mut self,
        verdict: &Verdict,
        pool: &Arc<Pool>,
        affinity: Option<&str>,
        exclude: &[usize],
        offer: RideOffer<'_>,
    ) -> Result<Boarding, SessionEnd> {
        let config = &pool.config().multiplex;
        if !config.enabled
            || pool.config().mode != PoolMode::Transaction
            || self.held.is_some()
            || verdict.effective.kind != StatementKind::Read
            || !crate::classify::only_read_only_builtins(&verdict.effective.functions)
            || verdict.decision.mirror.is_some()
            || pool.config().mirror.is_some()
        {
            return Ok(Boarding::No);
        }
        // A key the policy pins to a node keeps it (see `Strategy::ConsistentHash`).
        if affinity.is_some() && pool.config().strategy == crate::config::Strategy::ConsistentHash {
            return Ok(Boarding::No);
        }
        // Only when a checkout would wait on every node the pool could pick (asked without
        // picking: that would move the pool's strategy, round-robin's turn for one). Most
        // statements stop at this first look, which allocates nothing.
        let free = pool.nodes().iter().any(|node| {
            !exclude.contains(&node.index())
                && self
                    .buckets
                    .get(pool, node.index())
                    .is_some_and(|b| b.available_permits() > 0)
        });
        if free {
            return Ok(Boarding::No);
        }
        let Some(expected_us) = self.multiplexable(verdict, pool) else {
            return Ok(Boarding::No);
        };
        let mut buckets: SmallVec<[Arc<Bucket>; 4]> = SmallVec::new();
        for node in pool.nodes() {
            let index = node.index();
            if exclude.contains(&index) || !node.is_available() {
                continue;
            }
            let bucket = match self.buckets.get(pool, index) {
                Some(b) => b.clone(),
                None => {
                    let login = self.login(pool);
                    let Some(b) = self.fe.backend.bucket(pool, index, &login) else {
                        return Ok(Boarding::No);
                    };
                    self.buckets.put(pool, index, b.clone());
                    b
                }
            };
            if bucket.available_permits() > 0 {
                return Ok(Boarding::No);
            }
            buckets.push(bucket);
        }
        if buckets.is_empty() {
            return Ok(Boarding::No);
        }
        let encode: Encode = match offer {
            RideOffer::Query(bytes) => {
                let bytes = bytes.clone();
                Box::new(move |_| Encoded {
                    bytes,
                    swallow_parse: 0,
                    new_prepared: Vec::new(),
                })
            }
            RideOffer::Batch(items) => {
                let items = items.to_vec();
                Box::new(move |conn| encode_items(conn, items))
            }
        };
        let (reply, mut answers) = mpsc::channel(4);
        let ticket = Arc::new(RideTicket::default());
        let ride = Ride {
            encode,
            reply,
            ticket: ticket.clone(),
            expected_us,
            settings: self.settings.hash(),
        };
        let mut ride = Some(ride);
        let mut joined = None;
        // Sessions start at different nodes, so rides spread over a pool's nodes.
        let start = usize::try_from(self.cancel.pid.unsigned_abs()).unwrap_or(0);
        for i in 0..buckets.len() {
            let bucket = &buckets[(start + i) % buckets.len()];
            let Some(r) = ride.take() else { break };
            match bucket.connector().carriers.board(config.max_depth, r) {
                Ok(found) => joined = Some(found),
                Err(back) => ride = Some(back),
            }
        }
        let Some((depth, board)) = joined else {
            // The bucket with the shortest queue of rides keeps this one in line.
            let Some(ride) = ride else {
                return Ok(Boarding::No);
            };
            let Some(bucket) = buckets
                .iter()
                .min_by_key(|b| b.connector().carriers.queued())
            else {
                return Ok(Boarding::No);
            };
            let carriers = bucket.connector().carriers.clone();
            carriers.wait(ride);
            self.cancel.slot.set_queued_ride(ticket.clone());
            return Ok(Boarding::Queued(QueuedRide {
                carriers,
                ticket,
                answers,
            }));
        };
        if let Some(target) = board.target() {
            self.cancel.slot.set_ride(target.clone(), ticket);
        }
        drop(board);
        self.fe.shared.metrics.ride(pool.name(), depth);
        Ok(match self.ride_answers(pool, &mut answers, None).await? {
            Some(rode) => Boarding::Rode(rode),
            None => Boarding::No,
        })
    }

    /// Waits for a connection of the session's own and for a carrier to take its queued ride,
    /// whichever comes first. `Ok(Err(rode))`: a carrier served it; otherwise the checkout's
    /// result, the ride taken back (or lost before any of its answer arrived).
    pub(super) async fn checkout_or_ride(
        &mut self,
        mut queued: QueuedRide,
        pool: &Arc<Pool>,
        affinity: Option<&str>,
        exclude: &[usize],
    ) -> Result<Result<Result<(), PgBackendError>, Rode>, SessionEnd> {
        let first = {
            let checkout = self.checkout(pool, affinity, exclude);
            tokio::select! {
                biased;
                event = queued.answers.recv() => Err(event),
                result = checkout => Ok(result),
            }
        };
        let first = match first {
            Ok(result) => {
                if queued.withdraw() {
                    if !queued.ticket.is_cancelled() {
                        return Ok(Ok(result));
                    }
                    // Cancelled while it waited: answered as a statement withdrawn from a
                    // board is, without running, and the connection goes back unused.
                    if result.is_ok() {
                        self.finish_rides().await?;
                    }
                    let cancelled =
                        ErrorFields::error("57014", "canceling statement due to user request");
                    return Ok(Err(self.answered_with(pool, &cancelled)));
                }
                // A carrier took the ride meanwhile: the connection just checked out goes back
                // unused, and the answer comes from the carrier.
                if result.is_ok() {
                    self.finish_rides().await?;
                }
                None
            }
            Err(event) => Some(event),
        };
        if let Some(target) = queued.ticket.carrier() {
            self.cancel
                .slot
                .set_ride(target.clone(), queued.ticket.clone());
        }
        match self.ride_answers(pool, &mut queued.answers, first).await? {
            Some(rode) => Ok(Err(rode)),
            None => Ok(Ok(self.checkout(pool, affinity, exclude).await)),
        }
    }

    /// Ends a ride's unit with `error` and ReadyForQuery for the client, as failed.
    fn answered_with(&mut self, pool: &Arc<Pool>, error: &ErrorFields) -> Rode {
        self.cancel.slot.clear();
        self.work = None;
        self.io.error(error);
        ready_for_query(&mut self.io.wbuf, self.status);
        Rode {
            pool: pool.clone(),
            failed: true,
            ran: Duration::ZERO,
        }
    }

    /// Relays a ride's answer to the client as it comes. `first`: an event already received
    /// (`Some(None)`: the channel closed). `None` when the ride was lost before any of its
    /// answer arrived, so it may go the ordinary way.
    async fn ride_answers(
        &mut self,
        pool: &Arc<Pool>,
        answers: &mut mpsc::Receiver<RideEvent>,
        mut first: Option<Option<RideEvent>>,
    ) -> Result<Option<Rode>, SessionEnd> {
        let mut relayed = false;
        loop {
            let event = match first.take() {
                Some(event) => event,
                None => answers.recv().await,
            };
            match event {
                Some(RideEvent::Part(part)) => {
                    relayed = true;
                    self.io.wbuf.extend_from_slice(&part);
                    if self.io.wbuf.len() >= WRITE_HIGH_WATER {
                        self.io.flush().await?;
                    }
                }
                Some(RideEvent::Done {
                    answer,
                    failed,
                    ran,
                }) => {
                    self.cancel.slot.clear();
                    self.io.wbuf.extend_from_slice(&answer);
                    self.work = None;
                    return Ok(Some(Rode {
                        pool: pool.clone(),
                        failed,
                        ran,
                    }));
                }
                None => {
                    self.cancel.slot.clear();
                    if !relayed {
                        return Ok(None);
                    }
                    // Part of the answer is with the client: it cannot be sent again.
                    let lost = ErrorFields::error(
                        "08006",
                        format!(
                            "server connection lost in pool \"{}\" while answering",
                            pool.name()
                        ),
                    );
                    return Ok(Some(self.answered_with(pool, &lost)));
                }
            }
        }
    }
}

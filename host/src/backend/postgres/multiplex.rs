//! Multiplexing: other clients' autocommit reads written onto a server connection a session
//! holds (the carrier), behind the work already in flight there, instead of waiting for a free
//! connection. PostgreSQL answers a connection's Queries and Syncs in order, one ReadyForQuery
//! each, and an error ends only the Query or the Sync-ended batch it happened in, so every
//! rider's answer is the run of messages up to its own ReadyForQuery.
//!
//! Each held connection of a multiplexed pool has a [`Board`], listed in its bucket's
//! [`Carriers`] while it is held. The carrier opens its board while everything it has in flight
//! may have others behind it, and closes it before anything that may not (a transaction, a
//! setting, a slow statement) and before it gives the connection back. A rider picks the open
//! board with the least expected remaining work and leaves its [`Ride`] there; the carrier
//! writes it (encoding it against the connection's prepared statements), relays its answer
//! through the ride's channel, and never lets it touch its own session's state.
//!
//! A rider that finds no board with room waits in its bucket's queue of rides ([`Carriers`]),
//! oldest first, while it also waits for a connection of its own: whichever comes first, a
//! carrier with room taking the ride or a free connection, serves it. Riders that arrive later
//! queue behind it rather than taking the room it waits for.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::conn::ServerConn;

/// What a ride's bytes are, made on the carrier's connection when the carrier writes them.
pub struct Encoded {
    pub bytes: Bytes,
    /// Parses added for statements the connection lacked: their ParseComplete is not the
    /// rider's to see.
    pub swallow_parse: u32,
    /// Statements this ride prepares on the connection (forgotten again if it fails).
    pub new_prepared: Vec<u64>,
}

/// Encodes a ride against the connection that will run it.
pub type Encode = Box<dyn FnOnce(&mut ServerConn) -> Encoded + Send>;

/// What the carrier tells a rider. A channel closed before `Done` means the ride was lost with
/// its server connection.
#[derive(Debug)]
pub enum RideEvent {
    /// Part of the answer (a long one is handed over in pieces).
    Part(Bytes),
    /// The rest of the answer, up to and including its ReadyForQuery; whether it failed, and
    /// how long the server worked on it.
    Done {
        answer: Bytes,
        failed: bool,
        ran: Duration,
    },
}

/// A unit of work one session hands to another's connection.
pub struct Ride {
    pub encode: Encode,
    pub reply: mpsc::Sender<RideEvent>,
    pub ticket: Arc<RideTicket>,
    /// The mean server time of its statement shape, in µs (0: not known yet).
    pub expected_us: u64,
    /// The rider's settings hash: only a connection with the same may carry it.
    pub settings: u64,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;
const DONE: u8 = 3;

/// Where a ride is, for CancelRequest: a ride still queued behind others is withdrawn (its
/// answer replaced by a cancellation), only one that runs is cancelled on the server.
#[derive(Debug, Default)]
pub struct RideTicket {
    state: AtomicU8,
    /// The connection that carries the ride, once one took it from its bucket's queue (a
    /// ride left on a board is told the board's connection when it boards).
    carrier: OnceLock<super::CancelTarget>,
}

/// What a CancelRequest for a ride should do.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelRide {
    /// It runs on the server now: forward the cancel there.
    Forward,
    /// It was withdrawn before it started (or has finished): nothing to send.
    Withdrawn,
}

impl RideTicket {
    /// Called by the carrier when everything before the ride has its ReadyForQuery, so the
    /// server works on it now. False: it was cancelled while queued.
    pub fn start(&self) -> bool {
        match self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state != CANCELLED,
        }
    }

    pub fn finish(&self) {
        self.state.store(DONE, Ordering::Release);
    }

    /// A CancelRequest withdrew it before it started.
    pub fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Where a cancel for the ride goes while it runs, if a carrier took it from the queue.
    pub fn carrier(&self) -> Option<&super::CancelTarget> {
        self.carrier.get()
    }

    /// Told by the carrier that took the ride from the queue.
    pub fn set_carrier(&self, target: &super::CancelTarget) {
        let _ = self.carrier.set(target.clone());
    }

    /// A CancelRequest for the ride's client.
    pub fn cancel(&self) -> CancelRide {
        match self
            .state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => CancelRide::Withdrawn,
            Err(RUNNING) => CancelRide::Forward,
            Err(_) => CancelRide::Withdrawn,
        }
    }
}

/// A held connection's place for rides.
#[derive(Debug, Default)]
pub struct Board {
    /// Whether rides are taken now (also checked under `waiting`'s lock).
    open: AtomicBool,
    /// The settings hash of the connection (see `ServerConn::settings`): a ride needs the same.
    settings: AtomicU64,
    /// Units in flight on the connection, its own included, plus rides waiting to be written.
    depth: AtomicU32,
    /// Their expected server time, µs.
    expected_us: AtomicU64,
    waiting: Mutex<Vec<Ride>>,
    pub notify: Notify,
    /// Where a cancel for a ride running on the connection goes.
    target: Option<super::CancelTarget>,
    /// Whether the holder's own unit is the one the server works on (a cancel from the holder
    /// is forwarded only then).
    own_running: AtomicBool,
}

impl std::fmt::Debug for Ride {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ride")
            .field("expected_us", &self.expected_us)
            .finish_non_exhaustive()
    }
}

impl Board {
    pub fn new(target: super::CancelTarget) -> Board {
        Board {
            target: Some(target),
            ..Board::default()
        }
    }

    pub fn target(&self) -> Option<&super::CancelTarget> {
        self.target.as_ref()
    }

    pub fn set_own_running(&self, running: bool) {
        self.own_running.store(running, Ordering::Release);
    }

    pub fn own_running(&self) -> bool {
        self.own_running.load(Ordering::Acquire)
    }

    /// Lets rides in, for a connection with `settings` and what is in flight on it.
    pub fn open(&self, settings: u64, depth: u32, expected_us: u64) {
        self.settings.store(settings, Ordering::Relaxed);
        self.set_load(depth, expected_us);
        if let Ok(_guard) = self.waiting.lock() {
            self.open.store(true, Ordering::Release);
        }
    }

    /// Stops taking rides; returns those left but not written yet (the carrier writes them).
    pub fn close(&self) -> Vec<Ride> {
        if !self.open.load(Ordering::Acquire) {
            return self.take();
        }
        match self.waiting.lock() {
            Ok(mut waiting) => {
                self.open.store(false, Ordering::Release);
                std::mem::take(&mut *waiting)
            }
            Err(_) => Vec::new(),
        }
    }

    /// Stops taking rides, leaving those taken for the carrier's next turn.
    pub fn stop_taking(&self) {
        if self.open.load(Ordering::Acquire)
            && let Ok(_guard) = self.waiting.lock()
        {
            self.open.store(false, Ordering::Release);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Rides left since the last call.
    pub fn take(&self) -> Vec<Ride> {
        match self.waiting.lock() {
            Ok(mut waiting) if !waiting.is_empty() => std::mem::take(&mut *waiting),
            _ => Vec::new(),
        }
    }

    /// Gives back rides taken from the board that the carrier cannot write now (it was about
    /// to let its connection go): they wait for its next turn.
    pub fn put_back(&self, mut rides: Vec<Ride>) {
        if let Ok(mut waiting) = self.waiting.lock() {
            rides.append(&mut waiting);
            *waiting = rides;
        }
        self.notify.notify_one();
    }

    /// What is in flight on the connection now, as riders compare boards.
    pub fn set_load(&self, depth: u32, expected_us: u64) {
        self.depth.store(depth, Ordering::Relaxed);
        self.expected_us.store(expected_us, Ordering::Relaxed);
    }

    /// Leaves `ride` if the board is open and has room under `max_depth`.
    fn offer(&self, ride: Ride, max_depth: u32) -> Result<(), Ride> {
        let Ok(mut waiting) = self.waiting.lock() else {
            return Err(ride);
        };
        if !self.open.load(Ordering::Acquire) || self.depth.load(Ordering::Relaxed) >= max_depth {
            return Err(ride);
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.expected_us
            .fetch_add(ride.expected_us.max(1), Ordering::Relaxed);
        waiting.push(ride);
        drop(waiting);
        self.notify.notify_one();
        Ok(())
    }
}

/// The boards of one bucket's connections. A board lives as long as its connection (which
/// keeps it between checkouts, closed while idle); the list forgets boards whose connection is
/// gone as riders walk it.
#[derive(Debug, Default)]
pub struct Carriers {
    boards: Mutex<Vec<Weak<Board>>>,
    /// Rides that found no board with room, oldest first.
    queue: Mutex<VecDeque<Ride>>,
    /// How many are in `queue` (read without its lock on every carrier's turn).
    queued: AtomicUsize,
}

impl Carriers {
    pub fn register(&self, board: &Arc<Board>) {
        if let Ok(mut boards) = self.boards.lock() {
            boards.push(Arc::downgrade(board));
        }
    }

    /// Leaves `ride` on the open board with the least expected remaining work whose connection
    /// has the ride's settings and fewer than `max_depth` units in flight; returns the ride if
    /// none takes it, and otherwise the depth it joined at. While rides wait in the queue, a
    /// new one takes no room before them.
    pub fn board(&self, max_depth: u32, mut ride: Ride) -> Result<(u32, Arc<Board>), Ride> {
        if self.queued() > 0 {
            return Err(ride);
        }
        let settings = ride.settings;
        let candidates: Vec<Arc<Board>> = match self.boards.lock() {
            Ok(mut boards) => {
                boards.retain(|b| b.strong_count() > 0);
                let mut open: Vec<Arc<Board>> = boards
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|b| {
                        b.is_open()
                            && b.settings.load(Ordering::Relaxed) == settings
                            && b.depth.load(Ordering::Relaxed) < max_depth
                    })
                    .collect();
                open.sort_by_key(|b| {
                    (
                        b.expected_us.load(Ordering::Relaxed),
                        b.depth.load(Ordering::Relaxed),
                    )
                });
                open.truncate(3);
                open
            }
            Err(_) => return Err(ride),
        };
        for board in candidates {
            let depth = board.depth.load(Ordering::Relaxed);
            match board.offer(ride, max_depth) {
                Ok(()) => return Ok((depth, board)),
                Err(back) => ride = back,
            }
        }
        Err(ride)
    }

    /// Rides waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Queues a ride that found no room, behind those already waiting.
    pub fn wait(&self, ride: Ride) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push_back(ride);
            self.queued.store(queue.len(), Ordering::Release);
        }
    }

    /// Takes the ride with `ticket` out of the queue: true if it was still there (no carrier
    /// took it), so its rider serves it itself.
    pub fn withdraw(&self, ticket: &Arc<RideTicket>) -> bool {
        let Ok(mut queue) = self.queue.lock() else {
            return false;
        };
        let Some(at) = queue.iter().position(|r| Arc::ptr_eq(&r.ticket, ticket)) else {
            return false;
        };
        queue.remove(at);
        self.queued.store(queue.len(), Ordering::Release);
        true
    }

    /// Up to `room` of the oldest queued rides a connection with `settings` can carry.
    pub fn pull(&self, settings: u64, room: u32) -> Vec<Ride> {
        if room == 0 || self.queued() == 0 {
            return Vec::new();
        }
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut at = 0;
        while at < queue.len() && taken.len() < room as usize {
            if queue[at].settings != settings {
                at += 1;
                continue;
            }
            taken.extend(queue.remove(at));
        }
        self.queued.store(queue.len(), Ordering::Release);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ride() -> (Ride, mpsc::Receiver<RideEvent>) {
        ride_with(7)
    }

    fn ride_with(settings: u64) -> (Ride, mpsc::Receiver<RideEvent>) {
        let (tx, rx) = mpsc::channel(4);
        let ride = Ride {
            encode: Box::new(|_| Encoded {
                bytes: Bytes::new(),
                swallow_parse: 0,
                new_prepared: Vec::new(),
            }),
            reply: tx,
            ticket: Arc::default(),
            expected_us: 10,
            settings,
        };
        (ride, rx)
    }

    #[test]
    fn a_ride_goes_to_the_open_board_with_the_least_expected_work() {
        let carriers = Carriers::default();
        let busy = Arc::new(Board::default());
        let light = Arc::new(Board::default());
        let closed = Arc::new(Board::default());
        let other_settings = Arc::new(Board::default());
        for b in [&busy, &light, &closed, &other_settings] {
            carriers.register(b);
        }
        busy.open(7, 2, 5_000);
        light.open(7, 2, 100);
        other_settings.open(8, 1, 0);
        let (r, _rx) = ride();
        assert_eq!(carriers.board(4, r).ok().map(|(d, _)| d), Some(2));
        assert_eq!(light.take().len(), 1);
        assert!(busy.take().is_empty() && closed.take().is_empty());
        assert!(other_settings.take().is_empty());
    }

    #[test]
    fn a_full_or_closed_board_takes_no_ride() {
        let carriers = Carriers::default();
        let board = Arc::new(Board::default());
        carriers.register(&board);
        board.open(7, 3, 0);
        let (r, _rx) = ride();
        let r = match carriers.board(3, r) {
            Err(r) => r,
            Ok(_) => panic!("a board at max_depth took a ride"),
        };
        board.open(7, 1, 0);
        let (r2, _rx2) = ride();
        assert!(carriers.board(3, r2).is_ok());
        // Closing hands the ride left to the carrier, which must write it.
        assert_eq!(board.close().len(), 1);
        assert!(carriers.board(3, r).is_err());
        // A board whose connection is gone is forgotten.
        drop(board);
        let (r3, _rx3) = ride();
        assert!(carriers.board(3, r3).is_err());
        assert!(
            carriers
                .boards
                .lock()
                .map(|b| b.is_empty())
                .unwrap_or(false)
        );
    }

    #[test]
    fn queued_rides_are_served_oldest_first_and_keep_their_place() {
        let carriers = Carriers::default();
        let board = Arc::new(Board::default());
        carriers.register(&board);
        let (first, _rx1) = ride();
        let first_ticket = first.ticket.clone();
        let (other, _rx2) = ride_with(8);
        let (second, _rx3) = ride();
        let second_ticket = second.ticket.clone();
        carriers.wait(first);
        carriers.wait(other);
        carriers.wait(second);
        // Room on a board goes to the queue first, not to a ride arriving now.
        board.open(7, 1, 0);
        let (late, _rx4) = ride();
        assert!(carriers.board(8, late).is_err());
        // A carrier takes the oldest rides its settings allow, as many as it has room for.
        let pulled = carriers.pull(7, 1);
        assert_eq!(pulled.len(), 1);
        assert!(Arc::ptr_eq(&pulled[0].ticket, &first_ticket));
        assert!(
            !carriers.withdraw(&first_ticket),
            "a taken ride is the carrier's"
        );
        // A rider that got a connection of its own first takes its ride back.
        assert!(carriers.withdraw(&second_ticket));
        assert!(carriers.pull(7, 4).is_empty());
        assert_eq!(
            carriers.queued(),
            1,
            "the ride with other settings still waits"
        );
    }

    #[test]
    fn a_cancel_withdraws_a_queued_ride_and_forwards_for_a_running_one() {
        let queued = RideTicket::default();
        assert_eq!(queued.cancel(), CancelRide::Withdrawn);
        assert!(
            !queued.start(),
            "a withdrawn ride must not run as if nothing happened"
        );
        let running = RideTicket::default();
        assert!(running.start());
        assert_eq!(running.cancel(), CancelRide::Forward);
        running.finish();
        assert_eq!(running.cancel(), CancelRide::Withdrawn);
    }
}

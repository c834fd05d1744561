//! The poller's scheduling and what the router makes of its samples, with a scripted probe
//! instead of a server.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::Config;
use crate::route::Pool;

/// A probe whose polls the test drives: each poll announces itself on `started` and waits for
/// its answer on `answers`.
struct Scripted {
    started: mpsc::UnboundedSender<()>,
    answers: mpsc::UnboundedReceiver<Result<Seen, String>>,
}

impl Probe for Scripted {
    async fn sample(&mut self) -> Result<Seen, String> {
        let _ = self.started.send(());
        self.answers
            .recv()
            .await
            .unwrap_or_else(|| Err("script over".to_owned()))
    }

    fn reset(&mut self) {}
}

struct Harness {
    router: Arc<Router>,
    started: mpsc::UnboundedReceiver<()>,
    answers: mpsc::UnboundedSender<Result<Seen, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A router with a primary and one replica; a scripted poller on the replica (node 0 of
    /// pool `replicas`) that ticks every `interval`.
    fn start(interval: Duration) -> Harness {
        let text = r#"
[[listener]]
name = "l"
protocol = "postgres"
bind = "127.0.0.1:0"
cluster = "main"

[[user]]
name = "u"
password = "p"

[cluster.main]
protocol = "postgres"
database = "app"

[cluster.main.pool.primary]
role = "primary"
nodes = ["10.0.0.1"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["10.0.0.2"]
max_replica_lag_bytes = 1000
"#;
        let config = Config::parse_with_env(text, &|_| None).expect("valid config");
        let router = Arc::new(Router::new("main", &config.clusters["main"]));
        let (started_tx, started) = mpsc::unbounded_channel();
        let (answers, answers_rx) = mpsc::unbounded_channel();
        let probe = Scripted {
            started: started_tx,
            answers: answers_rx,
        };
        let node = router.pool("replicas").expect("pool").nodes()[0].clone();
        let schedule = Schedule {
            interval,
            timeout: Duration::from_secs(3600),
        };
        let task = tokio::spawn(run(router.clone(), node, schedule, probe));
        Harness {
            router,
            started,
            answers,
            task,
        }
    }

    fn replicas(&self) -> &Arc<Pool> {
        self.router.pool("replicas").expect("pool")
    }

    fn replica(&self) -> &Arc<NodeState> {
        &self.replicas().nodes()[0]
    }

    /// Waits for the next poll to start (panics after 5 s).
    async fn poll_starts(&mut self) {
        tokio::time::timeout(Duration::from_secs(5), self.started.recv())
            .await
            .expect("a poll started")
            .expect("poller alive");
    }

    /// Whether a poll starts within `within`.
    async fn no_poll_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.started.recv())
            .await
            .is_err()
    }

    fn answer(&self, answer: Result<Seen, String>) {
        self.answers.send(answer).expect("poller alive");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn standby(lsn: u64) -> Result<Seen, String> {
    Ok(Seen {
        lsn: Lsn(lsn),
        writable: false,
    })
}

const NEVER: Duration = Duration::from_secs(3600);

/// Waits until `done` holds (panics after 5 s).
async fn until(done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("condition met within 5 s");
}

#[tokio::test]
async fn requests_during_a_poll_cause_exactly_one_more() {
    let mut h = Harness::start(NEVER);
    // The first poll runs at once.
    h.poll_starts().await;
    for _ in 0..5 {
        h.replica().request_poll();
    }
    h.answer(standby(100));
    // One more for the five requests...
    h.poll_starts().await;
    h.answer(standby(110));
    // ...and no other: the interval is an hour.
    assert!(h.no_poll_within(Duration::from_millis(150)).await);
    assert_eq!(h.replica().position(), Some(Lsn(110)));

    // A request while idle wakes the poller at once.
    h.replica().request_poll();
    h.poll_starts().await;
    h.answer(standby(120));
    assert!(h.no_poll_within(Duration::from_millis(150)).await);
}

#[tokio::test]
async fn the_interval_drives_polls_without_requests() {
    let mut h = Harness::start(Duration::from_millis(20));
    for i in 0..3 {
        h.poll_starts().await;
        h.answer(standby(100 + i));
    }
}

#[tokio::test]
async fn a_failed_poll_makes_the_position_unknown_and_bans_nothing() {
    let mut h = Harness::start(Duration::from_millis(200));
    h.poll_starts().await;
    h.answer(standby(100));
    until(|| h.replica().position() == Some(Lsn(100))).await;
    h.replica().request_poll();
    h.poll_starts().await;
    h.answer(Err("connection refused".to_owned()));
    until(|| h.replica().position().is_none()).await;
    assert!(h.replica().is_available(), "a poll failure banned the node");
    assert_eq!(h.replicas().nodes_behind(Lsn(1)).as_slice(), &[0]);
    // While it fails, requests do not hurry the retry, which comes on the backoff.
    for _ in 0..3 {
        h.replica().request_poll();
    }
    assert!(h.no_poll_within(Duration::from_millis(100)).await);
    h.poll_starts().await;
    h.answer(standby(130));
    until(|| h.replica().position() == Some(Lsn(130))).await;
}

#[tokio::test]
async fn a_waiter_asks_for_a_poll_and_sees_its_answer() {
    let mut h = Harness::start(NEVER);
    h.poll_starts().await;
    h.answer(standby(100));
    until(|| h.replica().position().is_some()).await;
    let pool = h.replicas().clone();
    let target = Lsn(150);
    assert!(pool.wait_reached(Lsn(100), Duration::ZERO).await);

    // Zero timeout: only a check, but it still asks for a poll.
    assert!(!pool.wait_reached(target, Duration::ZERO).await);
    h.poll_starts().await;
    h.answer(standby(140));

    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.wait_reached(target, Duration::from_secs(10)).await }
    });
    // The waiter asked at once (the interval is an hour); 140 is not enough, so it asks again.
    h.poll_starts().await;
    h.answer(standby(145));
    h.poll_starts().await;
    h.answer(standby(150));
    assert!(waiter.await.expect("waiter"));
    assert_eq!(pool.nodes_behind(target).as_slice(), &[] as &[usize]);
    assert_eq!(pool.nodes_behind(Lsn(151)).as_slice(), &[0]);
}

#[tokio::test]
async fn a_waiter_gives_up_at_its_timeout() {
    let mut h = Harness::start(NEVER);
    h.poll_starts().await;
    h.answer(standby(100));
    let started = std::time::Instant::now();
    let reached = h
        .replicas()
        .wait_reached(Lsn(500), Duration::from_millis(100))
        .await;
    assert!(!reached);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn replica_lag_follows_the_primary_position() {
    let mut h = Harness::start(NEVER);
    let primary = h.router.pool("primary").expect("pool").nodes()[0].clone();
    let at = std::time::Instant::now();
    let writable = |lsn| PositionSample {
        lsn: Lsn(lsn),
        writable: true,
        started: at,
    };
    h.router.record_position(&primary, Some(writable(5_000)));
    assert_eq!(h.router.primary_position(), Some(Lsn(5_000)));
    h.poll_starts().await;
    h.answer(standby(4_500));
    h.replica().request_poll();
    h.poll_starts().await;
    // The answer above is recorded once this poll has started.
    assert_eq!(h.replica().lag_bytes(), Some(500));
    assert!(!h.replica().is_lagging());
    h.router.record_position(&primary, Some(writable(6_000)));
    // 1 500 bytes behind: over `max_replica_lag_bytes = 1000`, out of rotation.
    assert_eq!(h.replica().lag_bytes(), Some(1_500));
    assert!(h.replica().is_lagging());
    // The policy's backend state carries the same figure.
    assert_eq!(h.replicas().state().replica_lag_bytes, Some(1_500));
    assert!(
        !h.replicas().reached(Lsn(4_500)),
        "a lagging node counts as reached"
    );
    h.answer(standby(6_000));
    until(|| h.replica().lag_bytes() == Some(0)).await;
    assert_eq!(h.replica().lag_ms(), Some(0));
    assert!(!h.replica().is_lagging());
    // The primary is no standby: no lag.
    assert_eq!(primary.lag_bytes(), None);
}

#[tokio::test]
async fn the_primary_position_since_an_instant_needs_a_poll_started_after_it() {
    let h = Harness::start(NEVER);
    let primary = h.router.pool("primary").expect("pool").nodes()[0].clone();
    let before = std::time::Instant::now();
    h.router.record_position(
        &primary,
        Some(PositionSample {
            lsn: Lsn(7_000),
            writable: true,
            started: before,
        }),
    );
    let read_started = std::time::Instant::now();
    // A sample from before the read does not do; nobody polls the primary here.
    assert_eq!(
        h.router
            .primary_position_since(read_started, Duration::from_millis(50))
            .await,
        None
    );
    assert_eq!(h.router.primary_position(), Some(Lsn(7_000)));
    let router = h.router.clone();
    let waiter = tokio::spawn(async move {
        router
            .primary_position_since(read_started, Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.router.record_position(
        &primary,
        Some(PositionSample {
            lsn: Lsn(7_100),
            writable: true,
            started: std::time::Instant::now(),
        }),
    );
    assert_eq!(waiter.await.expect("waiter"), Some(Lsn(7_100)));
}

#[test]
fn backoff_doubles_up_to_a_second_or_the_interval() {
    let ms = Duration::from_millis;
    assert_eq!(backoff(ms(100), 1), ms(100));
    assert_eq!(backoff(ms(100), 2), ms(200));
    assert_eq!(backoff(ms(100), 4), ms(800));
    assert_eq!(backoff(ms(100), 5), ms(1000));
    assert_eq!(backoff(ms(100), 1000), ms(1000));
    assert_eq!(backoff(ms(5000), 3), ms(5000));
}

#[test]
fn positions_are_parsed_and_normalised() {
    let row = |r: &str, lsn: Option<&str>| vec![vec![Some(r.to_owned()), lsn.map(str::to_owned)]];
    let layout = WalLayout::default();
    assert_eq!(
        parse_position(&row("f", Some("0/2018")), layout),
        Ok(Seen {
            lsn: Lsn(0x2000),
            writable: true
        })
    );
    assert_eq!(
        parse_position(&row("t", Some("1/5")), layout),
        Ok(Seen {
            lsn: Lsn(0x1_0000_0005),
            writable: false
        })
    );
    assert!(parse_position(&row("t", None), layout).is_err());
    assert!(parse_position(&row("x", Some("0/1")), layout).is_err());
    assert!(parse_position(&[], layout).is_err());
    let settings = vec![vec![Some("8192".to_owned()), Some("1048576".to_owned())]];
    assert_eq!(
        parse_layout(&settings),
        WalLayout {
            page_size: 8192,
            segment_size: 1 << 20
        }
    );
    assert_eq!(parse_layout(&[]), layout);
}

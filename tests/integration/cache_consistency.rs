//! Read-your-writes through the PostgreSQL frontend's cache, under load: a session never reads a
//! value older than its own last write, whichever tier or flight answers it.
//!
//! Several writer sessions share counter rows of two tables. Each round a writer increments its
//! row (`UPDATE ... RETURNING v`: the value it wrote), then reads the row with the simple and the
//! extended protocol, both cached by the `cache-rules` policy; a read returning less than the
//! value written is stale. Some rounds write inside an explicit transaction, some pipeline the
//! write and the read. Reader sessions keep filling the same entries meanwhile, from the primary
//! and from the replica (so fills race the writes, and the writers join flights), and busy
//! threads load the machine, as on a CI runner
//! shared with a build. Once with the local tier, once with two proxies sharing one Redis.
//!
//! Regression: `postgres_policy::writes_through_the_proxy_invalidate_only_their_tables` once read
//! 38 right after writing 39 (a read joined a fill sent before the write).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use switchyard::cache::CacheStatsSnapshot;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::redis::RedisServer;

const TABLES: [&str; 2] = ["cc_a", "cc_b"];
const ROWS: i32 = 2;
/// Writers and rounds per writer, per scenario: 8 × 150 = 1,200 write-then-read rounds.
const WRITERS: usize = 8;
const ROUNDS: usize = 150;
const READERS: usize = 4;
/// Busy threads for the duration of a scenario: as many as the CI runner has cores.
const HOGS: usize = 2;

fn config(pg: &PgCluster, redis: Option<&RedisServer>) -> String {
    let redis = redis.map_or(String::new(), |r| {
        // A generous timeout: under the load below a Redis reply may take a while, and a timeout
        // would only turn the tier off for a moment (fewer Redis hits to check).
        format!(
            "[cache.redis]\nurl = \"{}\"\ntimeout = \"1s\"\nkey_prefix = \"cc\"\n",
            r.url()
        )
    });
    let ttls: Vec<String> = TABLES
        .iter()
        .map(|t| format!("\"ttl.{t}\" = 60000"))
        .collect();
    PgConfig::new(pg)
        // Reads after the session's own write go to the primary: the writers', and those of the
        // readers that write once first; the other readers read from the replica, whose fills
        // must not reach a writer while the replica may lag (60 s: more than it ever does here).
        .cluster("read_your_writes = \"60s\"")
        .primary_pool("size = 24")
        .replica_pool("size = 8")
        .extra(&format!("[cache]\nenabled = true\n{redis}"))
        .extra(&format!(
            "[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\nwatch = false\n[policy.config]\n{}\n",
            policy_wasm("cache-rules").display(),
            ttls.join("\n")
        ))
        .build()
}

/// Threads that spin until dropped.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHog {
    fn start(n: usize) -> CpuHog {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct Tally {
    rounds: AtomicU64,
    reads: AtomicU64,
    stale: AtomicU64,
}

fn select_sql(table: &str, id: i32) -> String {
    format!("SELECT v FROM {table} WHERE id = {id}")
}

async fn simple_value(client: &Client, sql: &str) -> i64 {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg::describe(&e)));
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(|v| v.parse::<i64>().expect("int")),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

async fn extended(client: &Client, stmt: &tokio_postgres::Statement, id: i32) -> i64 {
    let row = client.query_one(stmt, &[&id]).await.expect("extended read");
    i64::from(row.get::<_, i32>(0))
}

/// One writer: `ROUNDS` rounds of write-then-read on its row; stale reads are counted (with the
/// first few described on stderr).
async fn writer(client: Client, table: &'static str, id: i32, n: usize, tally: Arc<Tally>) {
    let stmt = client
        .prepare(&format!("SELECT v FROM {table} WHERE id = $1"))
        .await
        .expect("prepare");
    let select = select_sql(table, id);
    let update = format!("UPDATE {table} SET v = v + 1 WHERE id = {id} RETURNING v");
    let check = |round: usize, what: &str, wrote: i64, got: i64| {
        tally.reads.fetch_add(1, Ordering::Relaxed);
        if got < wrote {
            let before = tally.stale.fetch_add(1, Ordering::Relaxed);
            if before < 10 {
                eprintln!("writer {n} round {round}: {what} read {got} after writing {wrote}");
            }
        }
    };
    for round in 0..ROUNDS {
        let wrote = match round % 6 {
            // The write inside a transaction; a pause before COMMIT lets readers fill the
            // entry (with the old value) after the write's own invalidation.
            2 => {
                client.batch_execute("BEGIN").await.expect("BEGIN");
                let wrote = simple_value(&client, &update).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                client.batch_execute("COMMIT").await.expect("COMMIT");
                wrote
            }
            // Write and read pipelined: the read is sent before the write's answer arrives.
            4 => {
                let (wrote, got) =
                    tokio::join!(simple_value(&client, &update), extended(&client, &stmt, id));
                check(round, "pipelined extended", wrote, got);
                wrote
            }
            _ => simple_value(&client, &update).await,
        };
        let got = simple_value(&client, &select).await;
        check(round, "simple", wrote, got);
        let got = extended(&client, &stmt, id).await;
        check(round, "extended", wrote, got);
        // Likely a hit of what the reads above stored.
        let got = simple_value(&client, &select).await;
        check(round, "second simple", wrote, got);
        tally.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads every row in both protocols until `stop`: fills that race the writers' writes. From
/// the primary when `primary`, else from the replica.
async fn reader(client: Client, primary: bool, stop: Arc<AtomicBool>) {
    if primary {
        // A write of nothing: from now on `read_your_writes` routes this session to the primary.
        client
            .batch_execute(&format!("UPDATE {} SET v = v WHERE false", TABLES[0]))
            .await
            .expect("reader's write");
    }
    let mut stmts = Vec::new();
    for table in TABLES {
        let stmt = client
            .prepare(&format!("SELECT v FROM {table} WHERE id = $1"))
            .await
            .expect("prepare");
        stmts.push((table, stmt));
    }
    while !stop.load(Ordering::Relaxed) {
        for (table, stmt) in &stmts {
            for id in 1..=ROWS {
                simple_value(&client, &select_sql(table, id)).await;
                client.query_one(stmt, &[&id]).await.expect("reader read");
            }
        }
    }
}

/// Runs the writers and readers against `proxies` (session `i` on proxy `i % len`) with the
/// machine loaded; returns the tally and the proxies' cache stats.
async fn run(proxies: &[&Proxy]) -> (Arc<Tally>, Vec<CacheStatsSnapshot>) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let client = pg::connect(proxies[i % proxies.len()].addr()).await;
        readers.push(tokio::spawn(reader(client, i % 2 == 0, stop.clone())));
    }
    let hog = CpuHog::start(HOGS);
    let mut writers = Vec::new();
    for n in 0..WRITERS {
        let client = pg::connect(proxies[n % proxies.len()].addr()).await;
        let table = TABLES[n % TABLES.len()];
        // Two or more writers per row: invalidations from others, and shared flights.
        let id = (n / TABLES.len()) as i32 % ROWS + 1;
        writers.push(tokio::spawn(writer(client, table, id, n, tally.clone())));
    }
    for w in writers {
        w.await.expect("writer");
    }
    drop(hog);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    let stats = proxies
        .iter()
        .map(|p| p.deps.cache.as_ref().expect("cache enabled").stats())
        .collect();
    (tally, stats)
}

fn setup(pg: &PgCluster) {
    let mut sql = String::new();
    for table in TABLES {
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, v int); \
             INSERT INTO {table} SELECT g, 0 FROM generate_series(1, {ROWS}) g;"
        ));
    }
    pg.psql(pg.primary_port(), &sql);
    pg.wait_replicated();
}

fn assert_consistent(scenario: &str, tally: &Tally, stats: &[CacheStatsSnapshot], took: Duration) {
    let (rounds, reads, stale) = (
        tally.rounds.load(Ordering::Relaxed),
        tally.reads.load(Ordering::Relaxed),
        tally.stale.load(Ordering::Relaxed),
    );
    eprintln!("{scenario}: {rounds} rounds, {reads} checked reads in {took:?}; cache {stats:?}");
    assert_eq!(rounds, (WRITERS * ROUNDS) as u64);
    assert_eq!(
        stale, 0,
        "{scenario}: {stale} of {reads} reads were older than the session's own write"
    );
    let hits: u64 = stats
        .iter()
        .map(|s| s.hits_local + s.hits_redis + s.coalesced_waits)
        .sum();
    assert!(
        hits > reads / 10,
        "{scenario}: the cache answered only {hits} reads: the test did not exercise it"
    );
}

/// The local tier: one proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_reads_older_than_its_write_local_tier() {
    let pg = PgCluster::start(1);
    setup(&pg);
    let proxy = Proxy::start(&config(&pg, None)).await;
    let started = Instant::now();
    let (tally, stats) = run(&[&proxy]).await;
    assert_consistent("local tier", &tally, &stats, started.elapsed());
    proxy.stop().await;
}

/// The Redis tier: two proxies (replicas) sharing one Redis, sessions spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_reads_older_than_its_write_redis_tier() {
    let pg = PgCluster::start(1);
    setup(&pg);
    let redis = RedisServer::start();
    let a = Proxy::start(&config(&pg, Some(&redis))).await;
    let b = Proxy::start(&config(&pg, Some(&redis))).await;
    let started = Instant::now();
    let (tally, stats) = run(&[&a, &b]).await;
    assert_consistent("redis tier, two proxies", &tally, &stats, started.elapsed());
    assert!(
        stats.iter().map(|s| s.hits_redis).sum::<u64>() > 0,
        "no read was answered from redis: {stats:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// A read by another session that a replica answers before replaying a write must not fill the
/// cache for the writer: `read_your_writes` sends the writer's reads to the primary for a while,
/// but a cache hit is answered before any routing. Replay is paused to make the replica lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_does_not_fill_the_cache_for_a_writer() {
    let mut pg = PgCluster::start(1);
    setup(&pg);
    let proxy = Proxy::start(&config(&pg, None)).await;
    let writer = pg::connect(proxy.addr()).await;
    let reader = pg::connect(proxy.addr()).await;
    let stmt = writer
        .prepare("SELECT v FROM cc_a WHERE id = $1")
        .await
        .expect("prepare");
    let reader_stmt = reader
        .prepare("SELECT v FROM cc_a WHERE id = $1")
        .await
        .expect("prepare");
    let select = select_sql("cc_a", 1);

    pg.pause_replay(0);
    let wrote = simple_value(
        &writer,
        "UPDATE cc_a SET v = v + 1 WHERE id = 1 RETURNING v",
    )
    .await;
    // The reader has not written: the replica answers it, without the write.
    assert_eq!(simple_value(&reader, &select).await, wrote - 1);
    assert_eq!(extended(&reader, &reader_stmt, 1).await, wrote - 1);
    assert_eq!(
        simple_value(&writer, &select).await,
        wrote,
        "the writer's simple read was answered with the lagging replica's row"
    );
    assert_eq!(
        extended(&writer, &stmt, 1).await,
        wrote,
        "the writer's extended read was answered with the lagging replica's row"
    );
    pg.resume_replay(0);
    proxy.stop().await;
}

//! Issue 7: strategy distributions over 10k routed queries through real pools (atomics and all),
//! consistent-hash key movement, PostgreSQL write failover to a promoted node, and mirroring.

use std::collections::VecDeque;
use std::time::Duration;

use super::tests::router_for;
use super::*;
use crate::config::Strategy;

const QUERIES: usize = 10_000;

/// A ClickHouse cluster with one pool `p` of `n` nodes under `strategy` (`extra` pool keys).
fn pool_of(n: usize, strategy: &str, nodes: Option<&str>) -> Arc<Pool> {
    let default_nodes: Vec<String> = (0..n).map(|i| format!("\"10.0.1.{i}:8123\"")).collect();
    let nodes = nodes.map_or_else(|| default_nodes.join(", "), str::to_owned);
    let r = router_for(
        "clickhouse-http",
        &format!(
            "[cluster.main.pool.p]\nrole = \"replica\"\nstrategy = \"{strategy}\"\nnodes = [{nodes}]\n"
        ),
    );
    r.pool("p").expect("pool p").clone()
}

/// Share of each node in `picks` (indices).
fn shares(n: usize, picks: impl IntoIterator<Item = usize>) -> Vec<f64> {
    let mut counts = vec![0usize; n];
    let mut total = 0;
    for i in picks {
        counts[i] += 1;
        total += 1;
    }
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

fn assert_shares(what: &str, got: &[f64], want: &[f64], tolerance: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance,
            "{what}: node {i} got {g:.4}, want {w:.4} ± {tolerance} (all: {got:?})"
        );
    }
}

fn picks(pool: &Pool, affinity: impl Fn(usize) -> Option<String>) -> Vec<usize> {
    (0..QUERIES)
        .map(|q| {
            pool.pick(affinity(q).as_deref(), &[])
                .expect("a node")
                .index()
        })
        .collect()
}

#[test]
fn round_robin_and_random_spread_10k_queries_evenly() {
    let even = [1.0 / 3.0; 3];
    let rr = pool_of(3, "round-robin", None);
    assert_shares(
        "round-robin",
        &shares(3, picks(&rr, |_| None)),
        &even,
        0.001,
    );
    let random = pool_of(3, "random", None);
    assert_shares("random", &shares(3, picks(&random, |_| None)), &even, 0.02);
}

#[test]
fn weighted_interleaves_a_canary_instead_of_sending_it_bursts() {
    let canary = pool_of(
        2,
        "weighted",
        Some(r#"{ host = "10.0.1.0", weight = 90 }, { host = "10.0.1.1", weight = 10 }"#),
    );
    let picks = picks(&canary, |_| None);
    let longest_canary_run = picks
        .split(|&n| n == 0)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_canary_run <= 2,
        "canary run of {longest_canary_run}"
    );
    // Exact per cycle of 100.
    assert_eq!(picks[..100].iter().filter(|&&n| n == 1).count(), 10);
}

#[test]
fn weighted_splits_by_percentage() {
    let canary = pool_of(
        2,
        "weighted",
        Some(r#"{ host = "10.0.1.0", weight = 90 }, { host = "10.0.1.1", weight = 10 }"#),
    );
    assert_shares(
        "90/10 canary",
        &shares(2, picks(&canary, |_| None)),
        &[0.9, 0.1],
        0.005,
    );
    let ab = pool_of(
        3,
        "weighted",
        Some(
            r#"{ host = "10.0.1.0", weight = 45 }, { host = "10.0.1.1", weight = 45 }, { host = "10.0.1.2", weight = 10 }"#,
        ),
    );
    assert_shares(
        "45/45/10",
        &shares(3, picks(&ab, |_| None)),
        &[0.45, 0.45, 0.1],
        0.005,
    );
}

/// Runs `QUERIES` queries where each holds its node for `hold(node)` later picks.
fn simulate(pool: &Pool, hold: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut running: VecDeque<(usize, InFlight)> = VecDeque::new();
    let mut out = Vec::with_capacity(QUERIES);
    for q in 0..QUERIES {
        running.retain(|(until, _)| *until > q);
        let node = pool.pick(None, &[]).expect("a node");
        out.push(node.index());
        running.push_back((q + hold(node.index()), node.begin()));
    }
    out
}

/// Least-conn through a real pool: its in-flight counts are the state it decides on.
#[test]
fn least_conn_spreads_evenly_and_starves_the_slow_node() {
    let pool = pool_of(3, "least-conn", None);
    let even = simulate(&pool, |_| 4);
    assert_shares(
        "least-conn, equal nodes",
        &shares(3, even),
        &[1.0 / 3.0; 3],
        0.02,
    );
    // Node 0 holds its queries 4× longer: with ~6 queries in flight it should get about a
    // quarter of what each fast node gets (1/9 vs 4/9).
    let uneven = shares(3, simulate(&pool, |n| if n == 0 { 8 } else { 2 }));
    assert!(uneven[0] < 0.2, "slow node share {uneven:?}");
    assert_shares(
        "least-conn, fast nodes",
        &uneven[1..],
        &[uneven[1]; 2],
        0.02,
    );
}

/// Peak EWMA over simulated state (the pool's own averages come from real elapsed time, which a
/// unit test cannot steer): `QUERIES` picks, each query holding its node for 3 later picks.
fn simulate_ewma(ewma_us: [u64; 3]) -> Vec<f64> {
    use super::strategy::{Candidate, Draw, mix, select};
    let mut in_flight = [0u32; 3];
    let mut running: VecDeque<(usize, usize)> = VecDeque::new();
    let mut out = Vec::with_capacity(QUERIES);
    for q in 0..QUERIES {
        while running.front().is_some_and(|(until, _)| *until <= q) {
            if let Some((_, node)) = running.pop_front() {
                in_flight[node] -= 1;
            }
        }
        let candidates: Vec<Candidate> = (0..3)
            .map(|i| Candidate {
                index: i,
                in_flight: in_flight[i],
                weight: 1,
                ewma_us: ewma_us[i],
                addr_hash: 0,
            })
            .collect();
        let draw = Draw {
            tick: q as u64,
            random: mix(q as u64 ^ 0x5eed),
        };
        let node = select(Strategy::PeakEwma, &candidates, draw, None);
        in_flight[node] += 1;
        running.push_back((q + 3, node));
        out.push(node);
    }
    shares(3, out)
}

#[test]
fn peak_ewma_spreads_over_equal_nodes_and_avoids_a_slow_one() {
    let even = simulate_ewma([2_000; 3]);
    assert_shares("peak-ewma, equal nodes", &even, &[1.0 / 3.0; 3], 0.03);
    let slow = simulate_ewma([2_000, 2_000, 40_000]);
    assert!(slow[2] < 0.02, "slow node share {slow:?}");
    assert_shares("peak-ewma, fast nodes", &slow[..2], &[0.5, 0.5], 0.03);
}

#[test]
fn peak_ewma_reacts_to_a_node_getting_slow() {
    let pool = pool_of(2, "peak-ewma", None);
    pool.nodes()[0].observe(Duration::from_millis(1));
    pool.nodes()[1].observe(Duration::from_millis(1));
    // One slow answer is taken at once (the "peak"), so node 1 loses its traffic immediately.
    pool.nodes()[1].observe(Duration::from_millis(50));
    assert!(pool.nodes()[1].ewma_us() > 49_000);
    for _ in 0..100 {
        assert_eq!(pool.pick(None, &[]).map(|n| n.index()), Some(0));
    }
}

#[test]
fn consistent_hash_spreads_10k_keys_evenly() {
    let pool = pool_of(4, "consistent-hash", None);
    let got = shares(4, picks(&pool, |q| Some(format!("tenant-{q}"))));
    assert_shares("consistent-hash", &got, &[0.25; 4], 0.03);
    // Same key, same node.
    let first = pool.pick(Some("tenant-7"), &[]).map(|n| n.index());
    for _ in 0..100 {
        assert_eq!(pool.pick(Some("tenant-7"), &[]).map(|n| n.index()), first);
    }
}

#[test]
fn consistent_hash_moves_at_most_a_leaving_nodes_share_of_keys() {
    const N: usize = 5;
    let pool = pool_of(N, "consistent-hash", None);
    let key = |q: usize| Some(format!("user-{q}"));
    let before = picks(&pool, key);
    pool.nodes()[2].ban(Duration::from_secs(60));
    let after = picks(&pool, key);
    let moved: Vec<usize> = (0..QUERIES).filter(|&q| before[q] != after[q]).collect();
    assert!(
        moved.iter().all(|&q| before[q] == 2),
        "a key moved although its node stayed"
    );
    let share = moved.len() as f64 / QUERIES as f64;
    assert!(share <= 1.0 / N as f64 + 0.02, "{share} of the keys moved");

    // A node joining takes about 1/(N+1) of the keys, and only keys that now live on it move.
    let grown = pool_of(N + 1, "consistent-hash", None);
    let joined = picks(&grown, key);
    let moved: Vec<usize> = (0..QUERIES).filter(|&q| before[q] != joined[q]).collect();
    assert!(moved.iter().all(|&q| joined[q] == N));
    let share = moved.len() as f64 / QUERIES as f64;
    assert!(
        share <= 1.0 / (N + 1) as f64 + 0.02,
        "{share} of the keys moved"
    );
}

#[test]
fn an_unknown_pool_is_an_error_and_is_counted() {
    let r = router_for(
        "clickhouse-http",
        "[cluster.main.pool.a]\nrole = \"replica\"\nnodes = [\"10.0.0.1\"]\n",
    );
    assert_eq!(r.unknown_pool_errors(), 0);
    for _ in 0..3 {
        let e = r
            .resolve(&Route::Pool("nope".into()), StatementKind::Read, false)
            .map(|p| p.name().to_owned());
        assert!(matches!(e, Err(RouteError::UnknownPool { .. })), "{e:?}");
    }
    assert_eq!(r.unknown_pool_errors(), 3);
}

const PG_POOLS: &str = r#"
[cluster.main.pool.primary]
role = "primary"
nodes = ["10.0.0.1:5432"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["10.0.0.2:5432", "10.0.0.3:5432"]
"#;

fn write_target(r: &Router) -> (String, Option<usize>) {
    let t = r
        .resolve_target(&Route::Default, StatementKind::Write, false)
        .expect("a target");
    (t.pool.name().to_owned(), t.node)
}

#[test]
fn writes_follow_a_promoted_replica_while_the_primary_is_down() {
    let r = router_for("postgres", PG_POOLS);
    let primary = r.pool("primary").unwrap().nodes()[0].clone();
    let replicas = r.pool("replicas").unwrap().clone();
    primary.set_in_recovery(false);
    for n in replicas.nodes() {
        n.set_in_recovery(true);
    }
    assert_eq!(write_target(&r), ("primary".into(), None));

    // The primary goes down, nothing is promoted yet: writes still name the primary pool (its
    // checkout then fails fast), reads keep going to the replicas.
    primary.ban(Duration::from_secs(60));
    assert_eq!(write_target(&r), ("primary".into(), None));
    assert_eq!(
        r.resolve(&Route::Default, StatementKind::Read, false)
            .unwrap()
            .name(),
        "replicas"
    );

    // Replica 1 is promoted: writes go to it, pinned.
    assert!(replicas.nodes()[1].set_in_recovery(false));
    let target = r
        .resolve_target(&Route::Primary, StatementKind::Read, false)
        .unwrap();
    assert_eq!((target.pool.name(), target.node), ("replicas", Some(1)));
    assert_eq!(target.exclude(), vec![0]);
    assert_eq!(r.write_failovers(), 1);
    assert_eq!(write_target(&r), ("replicas".into(), Some(1)));
    assert_eq!(r.write_failovers(), 1, "counted once per change");

    // The old primary comes back as a standby: it takes no writes.
    primary.ban(Duration::ZERO);
    primary.record_success();
    primary.set_in_recovery(true);
    assert!(primary.is_available());
    assert_eq!(write_target(&r), ("replicas".into(), Some(1)));

    // Back as a primary (the operator failed back): writes return to the primary pool.
    primary.set_in_recovery(false);
    assert_eq!(write_target(&r), ("primary".into(), None));
}

#[test]
fn clickhouse_clusters_ignore_recovery_state() {
    let r = router(PRIMARY_FOR_CH);
    r.pool("w").unwrap().nodes()[0].ban(Duration::from_secs(60));
    r.pool("r").unwrap().nodes()[0].set_in_recovery(false);
    assert_eq!(
        r.resolve_target(&Route::Primary, StatementKind::Write, false)
            .unwrap()
            .node,
        None
    );
}

const PRIMARY_FOR_CH: &str = r#"
[cluster.main.pool.w]
role = "primary"
nodes = ["10.0.0.1:8123"]

[cluster.main.pool.r]
role = "replica"
nodes = ["10.0.0.2:8123"]
"#;

fn router(pools: &str) -> Router {
    router_for("clickhouse-http", pools)
}

const MIRRORED: &str = r#"
[cluster.main.pool.live]
role = "replica"
nodes = ["10.0.0.1:8123"]
mirror = { pool = "shadow", fraction = 0.25, max_in_flight = 3 }

[cluster.main.pool.shadow]
role = "other"
nodes = ["10.0.0.9:8123"]

[cluster.main.pool.plain]
role = "other"
nodes = ["10.0.0.5:8123"]
"#;

#[test]
fn config_mirroring_samples_its_fraction_of_reads_only() {
    let r = router(MIRRORED);
    let live = r.pool("live").unwrap().clone();
    let mut taken = 0;
    for _ in 0..QUERIES {
        if let Some(ticket) = r.mirror(&live, None, StatementKind::Read, false) {
            assert_eq!(ticket.pool().name(), "shadow");
            ticket.succeeded();
            taken += 1;
        }
    }
    let share = taken as f64 / QUERIES as f64;
    assert!((share - 0.25).abs() < 0.02, "mirrored share {share}");
    let stats = r.pool("shadow").unwrap().mirror_stats();
    assert_eq!(stats.started(), taken);
    assert_eq!(stats.succeeded(), taken);
    assert_eq!(stats.in_flight(), 0);

    for kind in [
        StatementKind::Write,
        StatementKind::Ddl,
        StatementKind::Unknown,
    ] {
        assert!(r.mirror(&live, Some("shadow"), kind, false).is_none());
    }
    assert!(
        r.mirror(&live, Some("shadow"), StatementKind::Read, true)
            .is_none(),
        "inside a transaction"
    );
    let plain = r.pool("plain").unwrap().clone();
    assert!(r.mirror(&plain, None, StatementKind::Read, false).is_none());
}

#[test]
fn mirroring_is_capped_and_counts_drops_failures_and_unknown_pools() {
    let r = router(MIRRORED);
    let live = r.pool("live").unwrap().clone();
    // The policy asks: every read, capped by the source pool's max_in_flight for that shadow.
    let held: Vec<MirrorTicket> = (0..5)
        .filter_map(|_| r.mirror(&live, Some("shadow"), StatementKind::Read, false))
        .collect();
    assert_eq!(held.len(), 3);
    let stats = r.pool("shadow").unwrap().mirror_stats();
    assert_eq!((stats.in_flight(), stats.dropped()), (3, 2));
    let mut held = held.into_iter();
    held.next().unwrap().failed("test");
    drop(held.next());
    held.next().unwrap().succeeded();
    assert_eq!(
        (stats.in_flight(), stats.failed(), stats.succeeded()),
        (0, 2, 1)
    );

    // A shadow the source's config does not describe gets the default cap.
    let plain = r.pool("plain").unwrap().clone();
    let many: Vec<MirrorTicket> = (0..DEFAULT_MAX_IN_FLIGHT + 1)
        .filter_map(|_| r.mirror(&live, Some("plain"), StatementKind::Read, false))
        .collect();
    assert_eq!(many.len() as u32, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(plain.mirror_stats().dropped(), 1);

    assert!(
        r.mirror(&live, Some("nope"), StatementKind::Read, false)
            .is_none()
    );
    assert!(
        r.mirror(&live, Some("live"), StatementKind::Read, false)
            .is_none(),
        "not onto itself"
    );
    assert_eq!(r.unknown_mirror_pools(), 1);
}

#[test]
fn an_idle_nodes_latency_average_decays_so_it_is_probed_again() {
    use super::node::decay;
    assert_eq!(decay(50_000, 0), 50_000);
    assert_eq!(decay(50_000, 5_000), 25_000);
    assert_eq!(decay(50_000, 10_000), 12_500);
    // A node once seen at 50 ms looks as cheap as a 1 ms node after ~28 s without traffic.
    assert!(decay(50_000, 29_000) < 1_000);
    assert_eq!(decay(0, 1_000), 0);
}

#[test]
fn pools_larger_than_the_stack_snapshot_pick_all_their_nodes() {
    let pool = pool_of(20, "round-robin", None);
    assert_shares(
        "20 nodes",
        &shares(20, picks(&pool, |_| None)),
        &[0.05; 20],
        0.001,
    );
    pool.nodes()[19].ban(Duration::from_secs(60));
    assert!(picks(&pool, |_| None).iter().all(|&n| n != 19));
}

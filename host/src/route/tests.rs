use std::collections::BTreeMap;
use std::time::Duration;

use super::strategy::{Candidate, Draw, select};
use super::*;
use crate::config::{Config, HealthConfig, Strategy};

fn router(pools: &str) -> Router {
    router_for("clickhouse-http", pools)
}

pub(super) fn router_for(protocol: &str, pools: &str) -> Router {
    let text = format!(
        r#"
[[listener]]
name = "l"
protocol = "{protocol}"
bind = "127.0.0.1:0"
cluster = "main"

[[user]]
name = "u"
password = "p"
databases = ["*"]

[cluster.main]
protocol = "{protocol}"
{pools}
"#
    );
    let config = Config::parse_with_env(&text, &|_| None).expect("valid config");
    Router::new("main", &config.clusters["main"])
}

const PRIMARY_AND_REPLICAS: &str = r#"
[cluster.main.pool.primary]
role = "primary"
nodes = ["10.0.0.1:8123"]

[cluster.main.pool.replicas]
role = "replica"
nodes = ["10.0.0.2:8123", "10.0.0.3:8123"]

[cluster.main.pool.reports]
role = "other"
nodes = ["10.0.0.9:8123"]
fallback_pool = "replicas"
"#;

fn name(r: Result<Arc<Pool>, RouteError>) -> String {
    r.map(|p| p.name().to_string())
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn default_route_sends_reads_to_replicas_and_the_rest_to_the_primary() {
    let r = router(PRIMARY_AND_REPLICAS);
    assert_eq!(
        name(r.resolve(&Route::Default, StatementKind::Read, false)),
        "replicas"
    );
    assert_eq!(
        name(r.resolve(&Route::Default, StatementKind::Read, true)),
        "primary"
    );
    assert_eq!(
        name(r.resolve(&Route::Default, StatementKind::Write, false)),
        "primary"
    );
    assert_eq!(
        name(r.resolve(&Route::Default, StatementKind::Unknown, false)),
        "primary"
    );
    assert_eq!(
        name(r.resolve(&Route::Primary, StatementKind::Read, false)),
        "primary"
    );
    assert_eq!(
        name(r.resolve(&Route::Replica, StatementKind::Write, false)),
        "replicas"
    );
}

#[test]
fn replica_route_falls_back_to_the_primary_when_no_replica_is_available() {
    let r = router(PRIMARY_AND_REPLICAS);
    for node in r.pool("replicas").unwrap().nodes() {
        node.ban(Duration::from_secs(60));
    }
    assert_eq!(
        name(r.resolve(&Route::Replica, StatementKind::Read, false)),
        "primary"
    );
    assert_eq!(
        name(r.resolve(&Route::Default, StatementKind::Read, false)),
        "primary"
    );
}

#[test]
fn named_pools_and_their_fallbacks() {
    let r = router(PRIMARY_AND_REPLICAS);
    let route = Route::Pool("reports".into());
    assert_eq!(
        name(r.resolve(&route, StatementKind::Read, false)),
        "reports"
    );
    r.pool("reports").unwrap().nodes()[0].ban(Duration::from_secs(60));
    assert_eq!(
        name(r.resolve(&route, StatementKind::Read, false)),
        "replicas"
    );
    let unknown = r.resolve(&Route::Pool("nope".into()), StatementKind::Read, false);
    assert_eq!(
        name(unknown),
        "cluster `main` has no pool named `nope` (known: primary, replicas, reports)"
    );
}

#[test]
fn a_cluster_without_primary_sends_writes_to_its_replica_pool() {
    let r = router(
        r#"
[cluster.main.pool.only]
role = "replica"
nodes = ["10.0.0.2:8123"]
"#,
    );
    assert_eq!(
        name(r.resolve(&Route::Primary, StatementKind::Write, false)),
        "only"
    );
}

#[test]
fn pick_skips_banned_and_excluded_nodes() {
    let r = router(PRIMARY_AND_REPLICAS);
    let pool = r.pool("replicas").unwrap();
    let first = pool.pick(None, &[]).unwrap();
    let other = pool.pick(None, &[first.index()]).unwrap();
    assert_ne!(first.index(), other.index());
    assert!(pool.pick(None, &[0, 1]).is_none());
    pool.nodes()[0].ban(Duration::from_secs(60));
    for _ in 0..10 {
        assert_eq!(pool.pick(None, &[]).unwrap().index(), 1);
    }
    assert_eq!(pool.state().healthy_nodes, 1);
    assert_eq!(r.pool_states().len(), 3);
}

#[test]
fn failures_ban_after_the_threshold_and_a_success_restores() {
    let health = HealthConfig {
        failures_before_ban: 2,
        ban_time: Duration::from_millis(30),
        ..HealthConfig::default()
    };
    let node = NodeState::new(0, &crate::config::Node::new("h", 1), true);
    assert!(!node.record_failure(&health, "x"));
    assert!(node.is_available());
    assert!(node.record_failure(&health, "x"));
    assert!(!node.is_available());
    std::thread::sleep(Duration::from_millis(40));
    // Health checks are on: the node waits for a good check after its ban.
    assert!(!node.is_available());
    node.record_success();
    assert!(node.is_available());

    let unchecked = NodeState::new(0, &crate::config::Node::new("h", 1), false);
    unchecked.ban(Duration::from_millis(20));
    assert!(!unchecked.is_available());
    std::thread::sleep(Duration::from_millis(30));
    assert!(unchecked.is_available());
}

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            index: i,
            in_flight: 0,
            weight: 1,
            ewma_us: 0,
            addr_hash: strategy::hash_str(&format!("10.0.0.{i}:8123")),
        })
        .collect()
}

fn draw(tick: u64) -> Draw {
    Draw {
        tick,
        random: strategy::mix(tick),
    }
}

#[test]
fn round_robin_and_random_spread_evenly() {
    let c = candidates(3);
    for strategy in [Strategy::RoundRobin, Strategy::Random] {
        let mut counts = [0; 3];
        for t in 0..3000 {
            counts[select(strategy, &c, draw(t), None)] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..=1200).contains(&n)),
            "{strategy:?}: {counts:?}"
        );
    }
}

#[test]
fn least_conn_prefers_the_idlest_node() {
    let mut c = candidates(3);
    c[0].in_flight = 5;
    c[1].in_flight = 1;
    c[2].in_flight = 3;
    for t in 0..10 {
        assert_eq!(select(Strategy::LeastConn, &c, draw(t), None), 1);
    }
}

#[test]
fn weighted_follows_weights() {
    let mut c = candidates(2);
    c[0].weight = 1;
    c[1].weight = 3;
    let mut counts = [0; 2];
    for t in 0..400 {
        counts[select(Strategy::Weighted, &c, draw(t), None)] += 1;
    }
    assert_eq!(counts, [100, 300]);
}

#[test]
fn consistent_hash_moves_only_the_keys_of_a_leaving_node() {
    let all = candidates(4);
    let without_2: Vec<Candidate> = all.iter().copied().filter(|c| c.index != 2).collect();
    let mut placed = BTreeMap::new();
    for k in 0..1000u64 {
        let key = strategy::hash_str(&format!("tenant-{k}"));
        let before = all[select(Strategy::ConsistentHash, &all, draw(k), Some(key))].index;
        let after =
            without_2[select(Strategy::ConsistentHash, &without_2, draw(k + 7), Some(key))].index;
        if before != 2 {
            assert_eq!(before, after, "key {k} moved although its node stayed");
        }
        *placed.entry(before).or_insert(0) += 1;
    }
    assert_eq!(placed.len(), 4);
    assert!(placed.values().all(|&n| n > 150), "{placed:?}");
}

#[test]
fn peak_ewma_avoids_the_slow_node() {
    let mut c = candidates(2);
    c[0].ewma_us = 50_000;
    c[1].ewma_us = 1_000;
    for t in 0..50 {
        assert_eq!(select(Strategy::PeakEwma, &c, draw(t), None), 1);
    }
}

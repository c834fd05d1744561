//! Every example file parses and validates, and says what it claims to.

use std::time::Duration;

use super::{parse, parse_env};
use crate::config::{Compression, Config, ConfigError, Reason, Strategy};
use crate::model::{PoolRole, Protocol};

const POSTGRES: &str = include_str!("../../../../examples/postgres.toml");
const CLICKHOUSE: &str = include_str!("../../../../examples/clickhouse.toml");
const FULL: &str = include_str!("../../../../examples/full.toml");

#[test]
fn postgres_example() {
    let config = parse(POSTGRES).expect("examples/postgres.toml is valid");
    let main = config.cluster("main").expect("cluster main");
    assert_eq!(main.protocol, Protocol::Postgres);
    let (primary_name, primary) = main.primary().expect("a primary pool");
    assert_eq!(primary_name, "primary");
    assert_eq!(primary.nodes[0].addr(), "127.0.0.1:5432");
    let (_, replicas) = main.replica().expect("a replica pool");
    assert_eq!(replicas.nodes.len(), 2);
    assert_eq!(replicas.strategy, Strategy::LeastConn);
    // Inherited from [cluster.main.defaults].
    assert_eq!(replicas.connect_timeout, Duration::from_secs(3));
    assert_eq!(replicas.health.interval, Duration::from_secs(2));
    assert_eq!(replicas.max_replica_lag_bytes, Some(16 << 20));
    assert!(!config.cache.enabled);
    let app = config.user("app").expect("user app");
    assert_eq!(app.password.as_ref().map(|p| p.expose()), Some("app"));
    assert_eq!(config.users.len(), 2);
}

#[test]
fn clickhouse_example() {
    let config = parse(CLICKHOUSE).expect("examples/clickhouse.toml is valid");
    let ch = config.cluster("ch").expect("cluster ch");
    assert_eq!(ch.protocol, Protocol::ClickhouseHttp);
    assert_eq!(ch.pools.len(), 2);
    for pool in ch.pools.values() {
        assert_eq!(pool.nodes.len(), 2);
        assert_eq!(pool.size, 32);
    }
    assert!(config.cache.enabled);
    assert_eq!(config.cache.max_size, 512 << 20);
    assert_eq!(config.listeners[0].max_body_size, Some(256 << 20));
    let reader = ch.pool("reader").expect("pool reader");
    let grafana = config.user("grafana").expect("user grafana");
    assert_eq!(grafana.backend_credentials(reader).user, "reader");
    let analyst = config.user("analyst").expect("user analyst");
    let writer = ch.pool("writer").expect("pool writer");
    assert_eq!(analyst.backend_credentials(writer).user, "reader");
}

#[test]
fn full_example() {
    let config = parse_env(FULL, &[("ADMIN_TOKEN", "t0ken")]).expect("examples/full.toml is valid");
    assert_eq!(config.listeners.len(), 3);
    let main = config.cluster("main").expect("cluster main");
    assert_eq!(main.pools.len(), 4);
    let replicas = main.pool("replicas").expect("pool replicas");
    assert_eq!(replicas.strategy, Strategy::Weighted);
    assert_eq!(replicas.nodes[2].weight, 10);
    assert_eq!(replicas.nodes[0].port, 5432, "default port filled in");
    // `health = { query = ... }` merged with [cluster.main.defaults.health].
    assert_eq!(replicas.health.query.as_deref(), Some("SELECT 1"));
    assert_eq!(replicas.health.timeout, Duration::from_millis(500));
    assert_eq!(replicas.mirror.as_ref().map(|m| m.fraction), Some(0.05));
    assert_eq!(main.pool("primary").map(|p| p.size), Some(50));
    assert_eq!(main.pool("tenants").map(|p| p.size), Some(25));
    assert_eq!(main.pool("tenants").map(|p| p.role), Some(PoolRole::Other));
    let tenants = &config.tag_limits[0];
    assert_eq!(tenants.tag, "tenant");
    assert_eq!(
        tenants.limits_for("bigcorp").max_concurrent_queries,
        Some(32)
    );
    assert_eq!(tenants.limits_for("bigcorp").max_queue_size, Some(100));
    assert_eq!(tenants.limits_for("small").max_concurrent_queries, Some(8));
    let redis = config.cache.redis.as_ref().expect("redis tier");
    assert_eq!(redis.compression, Compression::Zstd);
    assert_eq!(redis.url.expose(), "redis://:@redis.internal:6379/0");
    assert_eq!(config.policy.deadline, Duration::from_millis(5));
    assert_eq!(config.policy.config.get("limit.dashboards"), Some("1000"));
    assert_eq!(
        config.policy.config.get("deny_tables.*"),
        Some("pg_catalog.pg_authid")
    );
    let admin = config.admin.as_ref().expect("admin");
    assert_eq!(admin.token.as_ref().map(|t| t.expose()), Some("t0ken"));
}

#[test]
fn full_example_needs_its_admin_token() {
    let err = parse(FULL).expect_err("ADMIN_TOKEN has no default");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("admin.token")
    );
    assert!(matches!(err.reason(), Some(Reason::MissingEnv { var }) if var == "ADMIN_TOKEN"));
    let line = FULL
        .lines()
        .position(|l| l.starts_with("token = "))
        .expect("token line")
        + 1;
    assert_eq!(err.location().map(|l| l.line), Some(line));
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    std::fs::write(&good, POSTGRES).expect("write");
    // postgres.toml needs no environment: every ${...} has a default.
    let config = Config::load(&good).expect("loads");
    assert_eq!(config.listeners[0].name, "pg");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        POSTGRES.replace("max_connections = 5000", "max_connections = 0"),
    )
    .expect("write");
    let err = Config::load(&bad).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("config error at listener[0].max_connections: must be between 1 and"),
        "{text}"
    );
    assert!(text.contains(&format!("{}:", bad.display())), "{text}");

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).expect_err("no such file");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read config file "));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn examples_round_trip_through_redacted_toml() {
    for (name, text) in [("postgres", POSTGRES), ("clickhouse", CLICKHOUSE)] {
        let config = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shown = config.to_redacted_toml();
        assert!(!shown.contains("${"), "{name}: placeholders are expanded");
        // A redacted verifier is no verifier: give the re-parse a password instead.
        let again = parse(&shown.replace("password_hash = \"<redacted>\"", "password = \"x\""))
            .unwrap_or_else(|e| panic!("{name}: re-parse: {e}\n{shown}"));
        let (mut before, mut after) = (config.redacted(), again.redacted());
        assert_eq!(
            before["user"].as_array().map(Vec::len),
            after["user"].as_array().map(Vec::len)
        );
        for json in [&mut before, &mut after] {
            if let Some(object) = json.as_object_mut() {
                object.remove("user");
            }
        }
        assert_eq!(before, after, "{name}");
    }
}

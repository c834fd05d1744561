//! Reading the text: syntax and type errors keep their line and column and name the key;
//! defaults; `[cluster.<name>.defaults]` inheritance; nodes; redaction.

use std::time::Duration;

use super::{BASE, fails, fails_at, parse, with};
use crate::config::{
    AuthMethod, ConfigError, FailMode, LogFormat, PoolMode, REDACTED, Reason, Strategy,
};

#[test]
fn syntax_errors_keep_line_and_column() {
    let err = parse("[cluster.main]\nprotocol = \"postgres\"\nnodes = [\n").expect_err("bad TOML");
    let ConfigError::Syntax { location, message } = &err else {
        panic!("expected a syntax error, got {err}");
    };
    let location = location.as_ref().expect("located");
    assert_eq!((location.line, location.column), (3, 10));
    assert!(message.contains("unclosed array"), "{message}");
    assert!(!err.to_string().contains('\n'));
    assert!(
        err.to_string().starts_with("config syntax error: "),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path_and_line() {
    let text = BASE.replace("role = \"primary\"", "role = \"primary\"\nsizee = 10");
    let err = parse(&text).expect_err("unknown key");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("cluster.main.pool.primary.sizee")
    );
    assert!(err.to_string().contains("unknown field `sizee`"), "{err}");
    let line = text
        .lines()
        .position(|l| l.starts_with("sizee"))
        .expect("line")
        + 1;
    assert_eq!(err.location().map(|l| (l.line, l.column)), Some((line, 1)));

    fails_at(&with("[bogus]\nx = 1\n"), "bogus", |r| {
        matches!(r, Reason::Parse(_))
    });
    fails_at(
        &BASE.replace(
            "password = \"secret\"",
            "password = \"secret\"\nrole = \"x\"",
        ),
        "user[0].role",
        |r| matches!(r, Reason::Parse(m) if m.contains("unknown field")),
    );
}

#[test]
fn wrong_types_and_variants_name_the_key() {
    let text = BASE.replace(
        "role = \"replica\"",
        "role = \"replica\"\nstrategy = \"fastest\"",
    );
    fails_at(
        &text,
        "cluster.main.pool.replicas.strategy",
        |r| matches!(r, Reason::Parse(m) if m.contains("unknown variant `fastest`") && m.contains("consistent-hash")),
    );
    let text = BASE.replace("role = \"replica\"", "role = \"replica\"\nsize = \"big\"");
    fails_at(&text, "cluster.main.pool.replicas.size", |r| {
        matches!(r, Reason::Parse(_))
    });
    fails_at(
        &BASE.replace("protocol = \"postgres\"\nbind", "protocol = \"pg\"\nbind"),
        "listener[0].protocol",
        |r| matches!(r, Reason::Parse(m) if m.contains("unknown variant `pg`")),
    );
    fails_at(
        &BASE.replace("127.0.0.1:6432", "localhost:6432"),
        "listener[0].bind",
        |r| matches!(r, Reason::Parse(_)),
    );
    let (path, _) = fails(&BASE.replace("role = \"primary\"\n", ""));
    assert_eq!(
        path, "cluster.main.pool.primary",
        "missing `role` points at its table"
    );
}

#[test]
fn durations_and_sizes_are_read_where_they_are_written() {
    fails_at(
        &with("[policy]\ndeadline = \"10 parsecs\"\n"),
        "policy.deadline",
        |r| matches!(r, Reason::Parse(m) if m.contains("invalid duration `10 parsecs`: unknown unit")),
    );
    fails_at(
        &with("[policy]\ndeadline = 10\n"),
        "policy.deadline",
        |r| matches!(r, Reason::Parse(m) if m.contains("write \"10s\" or \"10ms\"")),
    );
    fails_at(
        &with("[cache]\nmax_size = \"12 bananas\"\n"),
        "cache.max_size",
        |r| matches!(r, Reason::Parse(m) if m.contains("invalid size")),
    );
    let config = parse(&with(
        "[cache]\nmax_size = 1048576\nmax_payload_size = \"1KiB\"\n",
    ))
    .expect("integer and string sizes");
    assert_eq!(config.cache.max_size, 1 << 20);
    assert_eq!(config.cache.max_payload_size, 1024);
}

#[test]
fn nodes_accept_strings_and_tables() {
    let text = BASE.replace(
        "nodes = [\"127.0.0.1:5433\", \"127.0.0.1:5434\"]",
        "nodes = [\"db-r1\", \"[::1]:6000\", \"::1\", { host = \"db-r2\", port = 6001, weight = 3 }]",
    );
    let config = parse(&text).expect("valid nodes");
    let nodes = &config.clusters["main"].pools["replicas"].nodes;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    assert_eq!(
        addrs,
        ["db-r1:5432", "[::1]:6000", "[::1]:5432", "db-r2:6001"]
    );
    assert_eq!(nodes[3].weight, 3);
    assert_eq!(nodes[0].weight, 1);
}

#[test]
fn node_ports_must_be_between_1_and_65535() {
    let text = BASE.replace(
        "nodes = [\"127.0.0.1:5433\", \"127.0.0.1:5434\"]",
        "nodes = [{ host = \"a\", port = 5433 }, { host = \"b\", port = 0 }]",
    );
    fails_at(&text, "cluster.main.pool.replicas.nodes[1].port", |r| {
        r.to_string() == "must be between 1 and 65535"
    });
    let text = BASE.replace("\"127.0.0.1:5434\"", "{ host = \"b\", port = 70000 }");
    fails_at(&text, "cluster.main.pool.replicas.nodes[1].port", |r| {
        r.to_string() == "must be between 1 and 65535"
    });
    let text = BASE.replace("\"127.0.0.1:5434\"", "\"b:0\"");
    fails_at(&text, "cluster.main.pool.replicas.nodes[1]", |r| {
        r.to_string().contains("port must be between 1 and 65535")
    });
    let text = BASE.replace("\"127.0.0.1:5434\"", "{ port = 5 }");
    fails_at(&text, "cluster.main.pool.replicas.nodes[1]", |r| {
        r.to_string().contains("missing field `host`")
    });
}

#[test]
fn defaults_when_keys_are_left_out() {
    let config = parse(BASE).expect("valid");
    let pool = &config.clusters["main"].pools["primary"];
    assert_eq!(pool.size, 20);
    assert_eq!(pool.min_size, 0);
    assert_eq!(pool.mode, PoolMode::Transaction);
    assert_eq!(pool.strategy, Strategy::RoundRobin);
    assert_eq!(pool.connect_timeout, Duration::from_secs(5));
    assert_eq!(pool.checkout_timeout, Duration::from_secs(5));
    assert_eq!(pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(pool.server_lifetime, Duration::from_secs(3600));
    assert!(pool.health.enabled);
    assert_eq!(pool.health.interval, Duration::from_secs(5));
    assert_eq!(pool.health.failures_before_ban, 3);
    assert_eq!(pool.health.ban_time, Duration::from_secs(30));
    assert_eq!(pool.auth, None);
    assert_eq!(config.listeners[0].max_connections, 10_000);
    assert!(!config.cache.enabled);
    assert_eq!(config.cache.max_size, 256 << 20);
    assert_eq!(config.cache.max_payload_size, 8 << 20);
    assert!(!config.cache.shared);
    assert_eq!(config.policy.path, None);
    assert_eq!(config.policy.fail_mode, FailMode::FailClosed);
    assert_eq!(config.policy.deadline, Duration::from_millis(10));
    assert_eq!(config.policy.memory_limit, 64 << 20);
    assert!(config.policy.watch);
    assert_eq!(
        config.policy.artifact_dir.to_str(),
        Some(".switchyard-cache")
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    assert_eq!(config.policy.instance_count(), 2 * cores);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.server.drain_timeout, Duration::from_secs(30));
    assert!(config.admin.is_none());
    let user = &config.users[0];
    assert_eq!(user.auth, AuthMethod::ScramSha256);
    assert!(user.cache);
    assert!(user.allowed_networks.is_empty());
}

#[test]
fn clickhouse_nodes_default_to_port_8123() {
    let text = r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:8124"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"

[cluster.ch.pool.all]
role = "primary"
nodes = ["ch-1", { host = "ch-2" }]

[[user]]
name = "default"
auth = "trust"
"#;
    let config = parse(text).expect("valid");
    let ports: Vec<u16> = config.clusters["ch"].pools["all"]
        .nodes
        .iter()
        .map(|n| n.port)
        .collect();
    assert_eq!(ports, [8123, 8123]);
}

#[test]
fn pools_inherit_cluster_defaults() {
    let text = with("")
        .replace(
            "[cluster.main.pool.primary]",
            "[cluster.main.defaults]\nsize = 7\nstrategy = \"random\"\nhealth = { interval = \"9s\", timeout = \"2s\" }\n\n[cluster.main.pool.primary]\nsize = 3\nhealth = { timeout = \"1s\" }",
        );
    let config = parse(&text).expect("valid");
    let pools = &config.clusters["main"].pools;
    assert_eq!(pools["primary"].size, 3, "a pool's own key wins");
    assert_eq!(pools["replicas"].size, 7);
    assert_eq!(pools["primary"].strategy, Strategy::Random);
    assert_eq!(
        pools["primary"].health.interval,
        Duration::from_secs(9),
        "tables merge"
    );
    assert_eq!(pools["primary"].health.timeout, Duration::from_secs(1));
    assert_eq!(pools["replicas"].health.timeout, Duration::from_secs(2));

    // A bad key in `defaults` is reported for the pool, at the line in `defaults`.
    let text = BASE.replace(
        "[cluster.main.pool.primary]",
        "[cluster.main.defaults]\nsiz = 7\n\n[cluster.main.pool.primary]",
    );
    let err = parse(&text).expect_err("unknown key");
    assert!(err.to_string().contains("unknown field `siz`"), "{err}");
    let line = text.lines().position(|l| l == "siz = 7").expect("line") + 1;
    assert_eq!(err.location().map(|l| l.line), Some(line));
    fails_at(
        &BASE.replace(
            "protocol = \"postgres\"\n\n",
            "protocol = \"postgres\"\ndefaults = 5\n\n",
        ),
        "cluster.main.defaults",
        |r| r.to_string() == "must be a table of pool settings",
    );
}

#[test]
fn secrets_are_redacted_in_debug_and_serialized_forms() {
    let text = with(
        r#"
[admin]
bind = "127.0.0.1:9930"
token = "admin-token-123"

[cache.redis]
url = "redis://cache:redis-pass-456@redis:6379/0"

[policy.config]
api_token = "policy-token-789"
limit = 5
"#,
    )
    .replace("password = \"secret\"", "password = \"user-pass-000\"");
    let config = parse(&text).expect("valid");
    let debug = format!("{config:?}");
    let json = config.redacted().to_string();
    let toml = config.to_redacted_toml();
    for shown in [&debug, &json, &toml] {
        for secret in [
            "admin-token-123",
            "redis-pass-456",
            "policy-token-789",
            "user-pass-000",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked into:\n{shown}");
        }
        assert!(shown.contains(REDACTED));
    }
    assert!(
        json.contains("redis://cache:<redacted>@redis:6379/0"),
        "{json}"
    );
    assert_eq!(config.redacted()["policy"]["config"]["limit"], "5");
    assert_eq!(
        config.users[0].password.as_ref().map(|p| p.expose()),
        Some("user-pass-000")
    );
}

#[test]
fn location_display_is_one_line_with_file() {
    let err = parse(&BASE.replace("cluster = \"main\"", "cluster = \"mian\"")).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "config error at listener[0].cluster: no cluster named `mian` (known: main) (line 6, column 1)"
    );
    let err = err.in_file(std::path::Path::new("/etc/switchyard.toml"));
    assert!(
        err.to_string().ends_with("(/etc/switchyard.toml:6:1)"),
        "{err}"
    );
}

#[test]
fn policy_config_accepts_dotted_keys_quoted_or_not() {
    let text = with(
        r#"
[policy.config]
limit.alice = 100
"limit.bob" = 50
deny_tables."*" = "payroll"
tenant_attribute = "user"
enabled = true
"#,
    );
    let config = parse(&text).expect("valid");
    assert_eq!(
        config.policy.config.to_pairs(),
        vec![
            ("deny_tables.*".to_owned(), "payroll".to_owned()),
            ("enabled".to_owned(), "true".to_owned()),
            ("limit.alice".to_owned(), "100".to_owned()),
            ("limit.bob".to_owned(), "50".to_owned()),
            ("tenant_attribute".to_owned(), "user".to_owned()),
        ]
    );
}

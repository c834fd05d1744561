//! Each cross-field rule of `validate()`, failing at the right key path.

use super::{BASE, fails_at, parse, with};
use crate::config::{Config, Reason};
use crate::model::{PoolRole, Protocol};

const CLICKHOUSE: &str = r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:8124"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"

[[user]]
name = "default"
auth = "trust"
"#;

#[test]
fn listener_needs_an_existing_cluster_of_its_protocol() {
    fails_at(
        &BASE.replace("cluster = \"main\"", "cluster = \"mian\""),
        "listener[0].cluster",
        |r| matches!(r, Reason::Unknown { kind: "cluster", name, known } if name == "mian" && known == &["main"]),
    );
    let text = with(&format!(
        "{}\n[cluster.ch.pool.all]\nrole = \"primary\"\nnodes = [\"ch\"]\n",
        CLICKHOUSE.replace("cluster = \"ch\"", "cluster = \"main\"")
    ));
    fails_at(&text, "listener[1].protocol", |r| {
        matches!(
            r,
            Reason::ProtocolMismatch {
                listener: Protocol::ClickhouseHttp,
                cluster_protocol: Protocol::Postgres,
                ..
            }
        )
    });
    fails_at(
        &BASE.replace(
            "name = \"pg\"\nprotocol = \"postgres\"",
            "name = \"pg\"\nprotocol = \"mysql\"",
        ),
        "listener[0].protocol",
        |r| {
            matches!(
                r,
                Reason::ProtocolMismatch {
                    listener: Protocol::Mysql,
                    cluster_protocol: Protocol::Postgres,
                    ..
                }
            )
        },
    );
}

#[test]
fn at_least_one_listener_and_one_user() {
    let text = BASE.replacen("[[listener]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:6432\"\ncluster = \"main\"\n", "", 1);
    fails_at(&text, "listener", |r| {
        matches!(r, Reason::NoneDefined { .. })
    });
    let text = BASE.replacen(
        "[[user]]\nname = \"app\"\npassword = \"secret\"\ndatabases = [\"app\"]\n",
        "",
        1,
    );
    fails_at(&text, "user", |r| matches!(r, Reason::NoneDefined { .. }));
}

#[test]
fn listener_names_and_binds_are_unique() {
    let second = "[[listener]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:6433\"\ncluster = \"main\"\n";
    fails_at(
        &with(second),
        "listener[1].name",
        |r| matches!(r, Reason::Duplicate { kind: "listener", first, .. } if first.to_string() == "listener[0].name"),
    );
    let second = second
        .replace("name = \"pg\"", "name = \"pg2\"")
        .replace("6433", "6432");
    fails_at(&with(&second), "listener[1].bind", |r| {
        matches!(
            r,
            Reason::Duplicate {
                kind: "bind address",
                ..
            }
        )
    });
    // Port 0 means "any free port": never a clash.
    let zero = BASE.replace("6432", "0");
    let zero = format!("{zero}\n{}", second.replace("6432", "0"));
    parse(&zero).expect("two listeners on port 0");
    fails_at(
        &with("[admin]\nbind = \"127.0.0.1:6432\"\n"),
        "admin.bind",
        |r| matches!(r, Reason::Duplicate { .. }),
    );
}

#[test]
fn local_infile_only_on_a_mysql_listener() {
    fails_at(
        &BASE.replace(
            "cluster = \"main\"",
            "cluster = \"main\"\nlocal_infile = true",
        ),
        "listener[0].local_infile",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
}

#[test]
fn http_only_listener_keys_on_a_postgres_listener() {
    fails_at(
        &BASE.replace(
            "cluster = \"main\"",
            "cluster = \"main\"\nmax_body_size = \"1MiB\"",
        ),
        "listener[0].max_body_size",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &BASE.replace(
            "cluster = \"main\"",
            "cluster = \"main\"\nmax_connections = 0",
        ),
        "listener[0].max_connections",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
}

#[test]
fn a_postgres_cluster_has_exactly_one_primary() {
    fails_at(
        &BASE.replace("role = \"replica\"", "role = \"primary\""),
        "cluster.main.pool",
        |r| matches!(r, Reason::PrimaryCount { found: 2 }),
    );
    fails_at(
        &BASE.replace("role = \"primary\"", "role = \"other\""),
        "cluster.main.pool",
        |r| {
            r.to_string()
                == "a postgres cluster needs exactly one pool with role = \"primary\", found 0"
        },
    );
}

#[test]
fn a_clickhouse_cluster_has_pools_and_at_most_one_per_role() {
    fails_at(CLICKHOUSE, "cluster.ch.pool", |r| {
        matches!(r, Reason::NoneDefined { .. })
    });
    let two_replicas = format!(
        "{CLICKHOUSE}\n[cluster.ch.pool.a]\nrole = \"replica\"\nnodes = [\"a\"]\n[cluster.ch.pool.b]\nrole = \"replica\"\nnodes = [\"b\"]\n"
    );
    fails_at(
        &two_replicas,
        "cluster.ch.pool",
        |r| matches!(r, Reason::RoleTaken { role: PoolRole::Replica, pools } if pools == &["a", "b"]),
    );
    // Only `other` pools are fine for ClickHouse (a policy names them).
    let config = parse(&format!(
        "{CLICKHOUSE}\n[cluster.ch.pool.t1]\nrole = \"other\"\nnodes = [\"a\"]\n"
    ))
    .expect("valid");
    assert!(config.clusters["ch"].primary().is_none());
}

#[test]
fn pool_names_and_nodes() {
    fails_at(
        &BASE.replace(
            "[cluster.main.pool.replicas]",
            "[cluster.main.pool.\"read replicas\"]",
        ),
        "cluster.main.pool.\"read replicas\"",
        |r| matches!(r, Reason::Format { .. }),
    );
    fails_at(
        &BASE.replace(
            "nodes = [\"127.0.0.1:5433\", \"127.0.0.1:5434\"]",
            "nodes = []",
        ),
        "cluster.main.pool.replicas.nodes",
        |r| matches!(r, Reason::Empty),
    );
    fails_at(
        &BASE.replace("\"127.0.0.1:5434\"", "\"127.0.0.1:5433\""),
        "cluster.main.pool.replicas.nodes[1]",
        |r| matches!(r, Reason::Duplicate { kind: "node", .. }),
    );
}

#[test]
fn fallback_pool_must_exist_and_not_loop() {
    let replicas = "role = \"replica\"";
    fails_at(
        &BASE.replace(replicas, "role = \"replica\"\nfallback_pool = \"primry\""),
        "cluster.main.pool.replicas.fallback_pool",
        |r| matches!(r, Reason::Unknown { kind: "pool", name, .. } if name == "primry"),
    );
    fails_at(
        &BASE.replace(replicas, "role = \"replica\"\nfallback_pool = \"replicas\""),
        "cluster.main.pool.replicas.fallback_pool",
        |r| matches!(r, Reason::SelfReference),
    );
    let looped = BASE
        .replace(replicas, "role = \"replica\"\nfallback_pool = \"primary\"")
        .replace(
            "role = \"primary\"",
            "role = \"primary\"\nfallback_pool = \"replicas\"",
        );
    fails_at(&looped, "cluster.main.pool.primary.fallback_pool", |r| {
        r.to_string() == "fallback pools form a cycle: primary → replicas → primary"
    });
    parse(&BASE.replace(replicas, "role = \"replica\"\nfallback_pool = \"primary\""))
        .expect("valid");
}

#[test]
fn mirror_needs_another_pool_and_a_fraction() {
    let replicas = "role = \"replica\"";
    fails_at(
        &BASE.replace(
            replicas,
            "role = \"replica\"\nmirror = { pool = \"shadow\" }",
        ),
        "cluster.main.pool.replicas.mirror.pool",
        |r| matches!(r, Reason::Unknown { kind: "pool", .. }),
    );
    fails_at(
        &BASE.replace(
            replicas,
            "role = \"replica\"\nmirror = { pool = \"primary\", fraction = 1.5 }",
        ),
        "cluster.main.pool.replicas.mirror.fraction",
        |r| r.to_string() == "must be between 0 and 1",
    );
}

#[test]
fn weighted_strategy_needs_positive_weights() {
    let nodes = "nodes = [\"127.0.0.1:5433\", \"127.0.0.1:5434\"]";
    let zero = "nodes = [{ host = \"a\", weight = 2 }, { host = \"b\", weight = 0 }]";
    fails_at(
        &BASE.replace(nodes, &format!("{zero}\nstrategy = \"weighted\"")),
        "cluster.main.pool.replicas.nodes[1].weight",
        |r| r.to_string() == "must be at least 1",
    );
    parse(&BASE.replace(nodes, zero)).expect("weights are ignored by round-robin");
}

#[test]
fn pool_sizes_timeouts_and_lag() {
    let replicas = "role = \"replica\"";
    fails_at(
        &BASE.replace(replicas, "role = \"replica\"\nsize = 5\nmin_size = 6"),
        "cluster.main.pool.replicas.min_size",
        |r| matches!(r, Reason::Exceeds { other, .. } if other == "size"),
    );
    fails_at(
        &BASE.replace(replicas, "role = \"replica\"\nconnect_timeout = \"0s\""),
        "cluster.main.pool.replicas.connect_timeout",
        |r| r.to_string() == "must be between 1ms and 1h",
    );
    fails_at(
        &BASE.replace(
            "role = \"primary\"",
            "role = \"primary\"\nmax_replica_lag = \"1s\"",
        ),
        "cluster.main.pool.primary.max_replica_lag",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &BASE.replace(
            replicas,
            "role = \"replica\"\nhealth = { interval = \"1s\", timeout = \"2s\" }",
        ),
        "cluster.main.pool.replicas.health.timeout",
        |r| matches!(r, Reason::Exceeds { other, .. } if other == "interval"),
    );
    fails_at(
        &BASE.replace(
            replicas,
            "role = \"replica\"\nhealth = { failures_before_ban = 0 }",
        ),
        "cluster.main.pool.replicas.health.failures_before_ban",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &BASE.replace(
            replicas,
            "role = \"replica\"\nmultiplex = { enabled = true, max_depth = 1 }",
        ),
        "cluster.main.pool.replicas.multiplex.max_depth",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    let config = parse(&BASE.replace(
        replicas,
        "role = \"replica\"\nmultiplex = { enabled = true }",
    ))
    .expect("multiplex with its defaults");
    let multiplex = &config.clusters["main"].pools["replicas"].multiplex;
    assert!(multiplex.enabled);
    assert_eq!(multiplex.max_depth, 8);
    assert_eq!(
        multiplex.slow_statement,
        std::time::Duration::from_millis(5)
    );
}

#[test]
fn user_names_are_unique() {
    fails_at(
        &with("[[user]]\nname = \"app\"\npassword = \"other\"\n"),
        "user[1].name",
        |r| r.to_string() == "duplicate user `app` (first defined at user[0].name)",
    );
}

#[test]
fn user_password_rules() {
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
    fails_at(
        &with(&format!(
            "[[user]]\nname = \"b\"\npassword = \"x\"\npassword_hash = \"{scram}\"\n"
        )),
        "user[1].password_hash",
        |r| matches!(r, Reason::Conflict { other } if other == "password"),
    );
    fails_at(
        &with("[[user]]\nname = \"b\"\npassword_hash = \"plain-text\"\n"),
        "user[1].password_hash",
        |r| matches!(r, Reason::Format { .. }),
    );
    let md5 = "md53e52083252dffea91cf4b0d6839aca98";
    fails_at(
        &with(&format!(
            "[[user]]\nname = \"b\"\npassword_hash = \"{md5}\"\n"
        )),
        "user[1].password_hash",
        |r| matches!(r, Reason::Incompatible(m) if m.contains("auth = \"md5\"")),
    );
    fails_at(
        &with(&format!(
            "[[user]]\nname = \"b\"\nauth = \"md5\"\npassword_hash = \"{scram}\"\n"
        )),
        "user[1].password_hash",
        |r| matches!(r, Reason::Incompatible(_)),
    );
    fails_at(&with("[[user]]\nname = \"b\"\n"), "user[1].password", |r| {
        matches!(r, Reason::Required { .. })
    });
    parse(&with(&format!(
        "[[user]]\nname = \"b\"\nauth = \"md5\"\npassword_hash = \"{md5}\"\n"
    )))
    .expect("md5");
    parse(&with(&format!(
        "[[user]]\nname = \"b\"\npassword_hash = \"{scram}\"\n"
    )))
    .expect("scram");
    parse(&with("[[user]]\nname = \"b\"\nauth = \"trust\"\n")).expect("trust needs no password");
}

#[test]
fn tag_limits_name_their_keys() {
    let config = parse(&with(
        "[[limit]]\ntag = \"tenant\"\nmax_concurrent_queries = 2\nmax_queue_time = \"5s\"\n\
         [limit.values.acme]\nmax_concurrent_queries = 8\nrequests_per_minute = 600\n",
    ))
    .expect("valid [[limit]]");
    let rule = &config.tag_limits[0];
    assert_eq!(rule.max_values, crate::config::DEFAULT_MAX_VALUES);
    let acme = rule.limits_for("acme");
    assert_eq!(acme.max_concurrent_queries, Some(8));
    assert_eq!(acme.max_queue_time, Some(std::time::Duration::from_secs(5)));
    assert_eq!(acme.requests_per_minute, Some(600));
    assert_eq!(rule.limits_for("other").max_concurrent_queries, Some(2));

    fails_at(
        &with("[[limit]]\ntag = \"\"\nrequests_per_minute = 1\n"),
        "limit[0].tag",
        |r| matches!(r, Reason::Empty),
    );
    fails_at(
        &with("[[limit]]\ntag = \"tenant\"\n"),
        "limit[0].max_concurrent_queries",
        |r| matches!(r, Reason::Required { .. }),
    );
    fails_at(
        &with("[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 10\nmax_queue_size = 3\n"),
        "limit[0].max_queue_size",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &with("[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 0\n"),
        "limit[0].requests_per_minute",
        |r| r.to_string() == "must be at least 1",
    );
    fails_at(
        &with("[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 1\nmax_values = 0\n"),
        "limit[0].max_values",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &with(
            "[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 1\n\
             [limit.values.acme]\nmax_queue_time = \"0s\"\nmax_concurrent_queries = 1\n",
        ),
        "limit[0].values.acme.max_queue_time",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &with(
            "[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 1\n\
             [[limit]]\ntag = \"tenant\"\nrequests_per_minute = 2\n",
        ),
        "limit[1].tag",
        |r| matches!(r, Reason::Duplicate { .. }),
    );
    fails_at(
        &with("[[limit]]\ntag = \"tenant\"\nrequests_per_minute = 1\nmax_concurent = 1\n"),
        "limit[0].max_concurent",
        |r| matches!(r, Reason::Parse(_)),
    );
}

#[test]
fn user_references_and_limits() {
    fails_at(
        &with("[[user]]\nname = \"b\"\npassword = \"x\"\nclusters = [\"main\", \"dw\"]\n"),
        "user[1].clusters[1]",
        |r| matches!(r, Reason::Unknown { kind: "cluster", name, .. } if name == "dw"),
    );
    fails_at(
        &with("[[user]]\nname = \"b\"\npassword = \"x\"\nmax_queue_size = 10\n"),
        "user[1].max_queue_size",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &with("[[user]]\nname = \"b\"\npassword = \"x\"\nmax_concurrent_queries = 0\n"),
        "user[1].max_concurrent_queries",
        |r| r.to_string() == "must be at least 1",
    );
    fails_at(
        &with("[[user]]\nname = \"b\"\npassword = \"x\"\nallowed_networks = [\"10.0.0.1/8\"]\n"),
        "user[1].allowed_networks[0]",
        |r| r.to_string().contains("did you mean 10.0.0.0/8?"),
    );
}

#[test]
fn policy_deadline_is_within_1ms_and_10s() {
    for bad in ["0ms", "999us", "10001ms", "1m"] {
        fails_at(
            &with(&format!("[policy]\ndeadline = \"{bad}\"\n")),
            "policy.deadline",
            |r| r.to_string() == "must be between 1ms and 10s",
        );
    }
    for good in ["1ms", "10s", "1s500ms", "500us500us"] {
        parse(&with(&format!("[policy]\ndeadline = \"{good}\"\n"))).expect(good);
    }
    fails_at(
        &with("[policy]\nmemory_limit = \"512KiB\"\n"),
        "policy.memory_limit",
        |r| r.to_string() == "must be between 1MiB and 4GiB",
    );
    fails_at(
        &with("[policy]\ninstances = 0\n"),
        "policy.instances",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &with("[policy]\nfail_mode = \"fail-maybe\"\n"),
        "policy.fail_mode",
        |r| matches!(r, Reason::Parse(_)),
    );
    fails_at(
        &with("[policy.config]\nlist = [1, 2]\n"),
        "policy.config.list",
        |r| matches!(r, Reason::Parse(m) if m.contains("policy parameters are strings")),
    );
}

#[test]
fn cache_payload_fits_in_the_cache() {
    fails_at(
        &with("[cache]\nmax_size = \"1MiB\"\nmax_payload_size = \"2MiB\"\n"),
        "cache.max_payload_size",
        |r| r.to_string() == "must not exceed `max_size` (1MiB)",
    );
    fails_at(&with("[cache]\nmax_ttl = \"0s\"\n"), "cache.max_ttl", |r| {
        matches!(r, Reason::OutOfRange { .. })
    });
    fails_at(
        &with("[cache.redis]\nurl = \"http://redis:6379\"\n"),
        "cache.redis.url",
        |r| matches!(r, Reason::Format { .. }),
    );
    fails_at(
        &with("[cache.redis]\ntimeout = \"1s\"\n"),
        "cache.redis",
        |r| matches!(r, Reason::Parse(m) if m.contains("missing field `url`")),
    );
}

/// Every `[cache.redis]` key either reaches the cache or is refused here, naming the key.
#[test]
fn redis_urls_the_cache_cannot_use_are_refused() {
    fails_at(
        &with("[cache.redis]\nurl = \"redis://redis:6379\"\ntls_ca_file = \"ca.pem\"\n"),
        "cache.redis.tls_ca_file",
        |r| r.to_string() == "is only used with a rediss:// URL",
    );
    fails_at(
        &with(
            "[cache.redis]\nurl = \"rediss://redis:6380\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
        ),
        "cache.redis.tls_ca_file",
        |r| r.to_string().contains("/nonexistent/ca.pem"),
    );
    for url in ["unix://", "unix://localhost", "unix:///"] {
        fails_at(
            &with(&format!("[cache.redis]\nurl = \"{url}\"\n")),
            "cache.redis.url",
            |r| r.to_string().contains("absolute path"),
        );
    }
    fails_at(
        &with("[cache.redis]\nurl = \"redis://redis:6379/zero\"\n"),
        "cache.redis.url",
        |r| r.to_string().starts_with("is not a usable Redis URL"),
    );
    for url in [
        "redis://redis:6379/0",
        "redis://:pw@redis",
        "unix:///run/redis/redis.sock",
        "unix://:pw@localhost/run/redis/redis.sock",
    ] {
        parse(&with(&format!("[cache.redis]\nurl = \"{url}\"\n")))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn redis_pool_size_and_key_prefix_are_checked() {
    let redis = |extra: &str| with(&format!("[cache.redis]\nurl = \"redis://r\"\n{extra}\n"));
    fails_at(&redis("pool_size = 0"), "cache.redis.pool_size", |r| {
        matches!(r, Reason::OutOfRange { .. })
    });
    fails_at(
        &redis("key_prefix = \":\""),
        "cache.redis.key_prefix",
        |r| matches!(r, Reason::Empty),
    );
    fails_at(
        &redis("key_prefix = \"my app:\""),
        "cache.redis.key_prefix",
        |r| matches!(r, Reason::Format { .. }),
    );
    fails_at(
        &redis("compression = \"gzip\""),
        "cache.redis.compression",
        |r| matches!(r, Reason::Parse(m) if m.contains("unknown variant")),
    );
    for compression in ["none", "lz4", "zstd"] {
        parse(&redis(&format!(
            "compression = \"{compression}\"\npool_size = 1"
        )))
        .unwrap_or_else(|e| panic!("{compression}: {e}"));
    }
}

#[test]
fn admin_beyond_loopback_needs_a_token() {
    fails_at(
        &with("[admin]\nbind = \"0.0.0.0:9930\"\n"),
        "admin.token",
        |r| {
            r.to_string()
                == "is required when admin.bind is not a loopback address (or set admin.read_token)"
        },
    );
    parse(&with("[admin]\nbind = \"127.0.0.1:9930\"\n")).expect("loopback without token");
    parse(&with("[admin]\nbind = \"[::]:9930\"\ntoken = \"t\"\n")).expect("token");
    fails_at(
        &with("[admin]\nbind = \"[::1]:9930\"\ntoken = \"\"\n"),
        "admin.token",
        |r| matches!(r, Reason::Empty),
    );
}

#[test]
fn validate_all_reports_every_problem_in_order() {
    let mut config: Config = parse(BASE).expect("valid");
    config.listeners[0].cluster = "nope".to_string();
    config.policy.deadline = std::time::Duration::ZERO;
    config.cache.max_payload_size = config.cache.max_size + 1;
    let paths: Vec<String> = config
        .validate_all()
        .iter()
        .filter_map(|e| e.path().map(ToString::to_string))
        .collect();
    assert_eq!(
        paths,
        [
            "listener[0].cluster",
            "cache.max_payload_size",
            "policy.deadline"
        ]
    );
    let err = config.validate().expect_err("invalid");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("listener[0].cluster")
    );
    assert!(
        err.location().is_none(),
        "built in code: no line to point at"
    );
}

const MYSQL: &str = r#"
[[listener]]
name = "my"
protocol = "mysql"
bind = "127.0.0.1:3307"
cluster = "maria"

[cluster.maria]
protocol = "mysql"
databases = ["appdb"]

[cluster.maria.pool.primary]
role = "primary"
nodes = ["127.0.0.1"]

[[user]]
name = "app"
password = "secret"
"#;

#[test]
fn a_mysql_listener_and_cluster_are_accepted() {
    let config = parse(MYSQL).expect("a valid mysql config");
    assert_eq!(config.listeners[0].protocol, Protocol::Mysql);
    assert_eq!(
        config.clusters["maria"].pools["primary"].nodes[0].port, 3306,
        "MySQL's port by default"
    );
    // TLS both ways, as for PostgreSQL.
    let tls = parse(&MYSQL.replace(
        "role = \"primary\"",
        "role = \"primary\"\ntls = \"require\"",
    ))
    .expect("TLS to MySQL servers");
    assert_eq!(
        tls.clusters["maria"].pools["primary"].tls,
        crate::config::TlsMode::Require
    );
}

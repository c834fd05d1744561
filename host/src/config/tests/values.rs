//! The value types: durations, sizes, CIDR blocks, key paths, verifiers, secrets, credentials.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::units::{format_duration, format_size, parse_duration, parse_size};
use crate::config::{
    Cidr, Credentials, HashKind, KeyPath, PoolConfig, Secret, SecretUrl, UserConfig,
};

#[test]
fn durations_parse_and_format() {
    let cases = [
        ("10ms", Duration::from_millis(10)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("1min", Duration::from_secs(60)),
        ("1h30m", Duration::from_secs(5400)),
        ("1h 30m", Duration::from_secs(5400)),
        ("1.5s", Duration::from_millis(1500)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("100ns", Duration::from_nanos(100)),
        ("2d", Duration::from_secs(172_800)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
    ];
    for (text, want) in cases {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
        assert_eq!(
            parse_duration(&format_duration(want)),
            Ok(want),
            "{text} round trip"
        );
    }
    assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
    for bad in [
        "",
        "5",
        "s",
        "5 seconds",
        "1.5.5s",
        "-1s",
        "0.0000000001s",
        "1e3ms",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn sizes_parse_and_format() {
    let cases = [
        ("0", 0),
        ("4096", 4096),
        ("64MiB", 64 << 20),
        ("64 MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("1GB", 1_000_000_000),
        ("1.5GiB", 3 << 29),
        ("8KiB", 8192),
        ("10B", 10),
        ("1_000KB", 1_000_000),
    ];
    for (text, want) in cases {
        assert_eq!(parse_size(text), Ok(want), "{text}");
        assert_eq!(
            parse_size(&format_size(want)),
            Ok(want),
            "{text} round trip"
        );
    }
    assert_eq!(format_size(64 << 20), "64MiB");
    assert_eq!(format_size(1_000_000), "1MB");
    assert_eq!(format_size(1001), "1001B");
    for bad in [
        "",
        "MiB",
        "1.5B",
        "12 bananas",
        "1MiB 2KiB",
        "99999999999TiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn cidr_blocks_match_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let net: Cidr = "10.0.0.0/8".parse().expect("cidr");
    assert!(net.contains(ip("10.1.2.3")));
    assert!(!net.contains(ip("11.0.0.1")));
    assert!(
        net.contains(ip("::ffff:10.9.9.9")),
        "IPv4-mapped IPv6 peers match"
    );
    let host: Cidr = "192.168.1.5".parse().expect("bare address");
    assert_eq!(host.to_string(), "192.168.1.5/32");
    assert!(host.contains(ip("192.168.1.5")) && !host.contains(ip("192.168.1.6")));
    let any: Cidr = "0.0.0.0/0".parse().expect("any v4");
    assert!(any.contains(ip("8.8.8.8")) && !any.contains(ip("::1")));
    let v6: Cidr = "fd00::/8".parse().expect("v6");
    assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "::1/129", "10.0.0.0/x"] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad} should be refused");
    }
}

#[test]
fn key_paths_display_like_toml() {
    let path = KeyPath::root()
        .key("cluster")
        .key("main")
        .key("pool")
        .key("replicas")
        .key("nodes")
        .index(1)
        .key("port");
    assert_eq!(path.to_string(), "cluster.main.pool.replicas.nodes[1].port");
    assert_eq!(
        KeyPath::root().key("pool").key("a.b").to_string(),
        "pool.\"a.b\""
    );
    assert_eq!(KeyPath::root().to_string(), "the top level");
}

#[test]
fn password_hash_kinds() {
    assert_eq!(
        HashKind::of("md53e52083252dffea91cf4b0d6839aca98"),
        Some(HashKind::Md5)
    );
    assert_eq!(
        HashKind::of("SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"),
        Some(HashKind::ScramSha256)
    );
    for bad in [
        "md5abc",
        "SCRAM-SHA-256$0:c2FsdA==$a:b",
        "SCRAM-SHA-256$4096:$a:b",
        "secret",
    ] {
        assert_eq!(HashKind::of(bad), None, "{bad}");
    }
}

#[test]
fn secrets_hide_in_debug_and_urls_hide_their_password() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    assert_eq!(secret.expose(), "hunter2");
    let cases = [
        (
            "redis://user:pw@host:6379/0",
            "redis://user:<redacted>@host:6379/0",
        ),
        ("redis://:pw@host", "redis://:<redacted>@host"),
        ("redis://pw@host", "redis://<redacted>@host"),
        ("redis://host:6379", "redis://host:6379"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://u:p@ss@host/0", "redis://u:<redacted>@host/0"),
    ];
    for (url, shown) in cases {
        assert_eq!(SecretUrl::new(url).redacted(), shown, "{url}");
    }
}

#[test]
fn backend_credentials_resolve_user_then_pool_then_passthrough() {
    let pool: PoolConfig = toml::from_str(
        "role = \"replica\"\nnodes = [\"r1\"]\nauth = { user = \"reader\", password = \"rpw\" }",
    )
    .expect("pool");
    let mut user = UserConfig::new("alice", Some("apw"));
    assert_eq!(user.backend_credentials(&pool).user, "reader");
    user.backend = Some(Credentials {
        user: "alice_ro".to_string(),
        password: None,
    });
    assert_eq!(user.backend_credentials(&pool).user, "alice_ro");
    let bare = PoolConfig { auth: None, ..pool };
    let user = UserConfig::new("bob", Some("bpw"));
    let creds = user.backend_credentials(&bare);
    assert_eq!(creds.user, "bob");
    assert_eq!(creds.password.as_ref().map(Secret::expose), Some("bpw"));
    assert!(user.allows_addr("203.0.113.9".parse().expect("ip")));
    assert!(user.allows_cluster("anything"));
}

//! The listener keys that bound clients before they are known: defaults, ranges, and the
//! protocol each belongs to.

use std::time::Duration;

use super::{BASE, fails_at, parse};
use crate::config::Reason;

/// BASE's PostgreSQL listener with `keys` added.
fn pg_listener(keys: &str) -> String {
    BASE.replacen(
        "cluster = \"main\"",
        &format!("cluster = \"main\"\n{keys}"),
        1,
    )
}

#[test]
fn postgres_login_keys_default_and_parse() {
    let config = parse(BASE).expect("valid");
    let l = &config.listeners[0];
    assert_eq!(l.login_timeout(), Duration::from_secs(10));
    assert_eq!(l.max_pending_logins(), 1_000);
    assert_eq!(l.max_pending_logins_per_source(), 100);
    assert_eq!(l.max_login_failures_per_source(), 20);
    assert_eq!(l.login_failure_window(), Duration::from_secs(60));
    assert_eq!(
        l.effective_idle_timeout(),
        None,
        "PostgreSQL: no idle limit by default"
    );

    let config = parse(&pg_listener(
        "login_timeout = \"3s\"\nmax_pending_logins = 50\nmax_pending_logins_per_source = 5\n\
         max_login_failures_per_source = 0\nlogin_failure_window = \"5m\"",
    ))
    .expect("valid");
    let l = &config.listeners[0];
    assert_eq!(l.login_timeout(), Duration::from_secs(3));
    assert_eq!(l.max_pending_logins(), 50);
    assert_eq!(l.max_pending_logins_per_source(), 5);
    assert_eq!(l.max_login_failures_per_source(), 0);
    assert_eq!(l.login_failure_window(), Duration::from_secs(300));
}

#[test]
fn guard_keys_are_bounded_and_belong_to_their_protocol() {
    fails_at(
        &pg_listener("login_timeout = \"2h\""),
        "listener[0].login_timeout",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &pg_listener("max_pending_logins = 0"),
        "listener[0].max_pending_logins",
        |r| matches!(r, Reason::OutOfRange { .. }),
    );
    fails_at(
        &pg_listener("header_timeout = \"5s\""),
        "listener[0].header_timeout",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &pg_listener("max_connections_per_source = 5"),
        "listener[0].max_connections_per_source",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
}

#[test]
fn clickhouse_listeners_time_heads_and_idle_connections_by_default() {
    let text = r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:8124"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"
[cluster.ch.pool.main]
role = "primary"
nodes = ["127.0.0.1:8123"]

[[user]]
name = "app"
password = "secret"
"#;
    let config = parse(text).expect("valid");
    let l = &config.listeners[0];
    assert_eq!(l.header_timeout(), Duration::from_secs(10));
    assert_eq!(l.effective_idle_timeout(), Some(Duration::from_secs(60)));
    assert_eq!(l.max_connections_per_source(), 1_000);
    let off = parse(&text.replace(
        "cluster = \"ch\"\n",
        "cluster = \"ch\"\nidle_timeout = \"0s\"\nheader_timeout = \"2s\"\n",
    ))
    .expect("valid");
    assert_eq!(off.listeners[0].effective_idle_timeout(), None);
    assert_eq!(off.listeners[0].header_timeout(), Duration::from_secs(2));
    fails_at(
        &text.replace(
            "cluster = \"ch\"\n",
            "cluster = \"ch\"\nlogin_timeout = \"5s\"\n",
        ),
        "listener[0].login_timeout",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
}

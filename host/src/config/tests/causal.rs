//! The cluster keys of causal reads: `consistency`, `causal_wait`, `wal_poll_interval`.

use std::time::Duration;

use super::{BASE, fails_at, parse};
use crate::config::{Consistency, Reason};

#[test]
fn causal_read_keys_are_read_and_bounded() {
    let config = parse(BASE).expect("valid");
    let cluster = &config.clusters["main"];
    assert_eq!(cluster.consistency, Consistency::Session);
    assert_eq!(cluster.causal_wait, Duration::ZERO);
    assert_eq!(cluster.wal_poll_interval, Duration::from_millis(100));
    let cluster_keys = |keys: &str| {
        BASE.replace(
            "[cluster.main]\nprotocol = \"postgres\"",
            &format!("[cluster.main]\nprotocol = \"postgres\"\n{keys}"),
        )
    };
    let config = parse(&cluster_keys(
        "consistency = \"global\"\ncausal_wait = \"20ms\"\nwal_poll_interval = \"5ms\"",
    ))
    .expect("valid");
    let cluster = &config.clusters["main"];
    assert_eq!(cluster.consistency, Consistency::Global);
    assert_eq!(cluster.causal_wait, Duration::from_millis(20));
    assert_eq!(cluster.wal_poll_interval, Duration::from_millis(5));
    let eventual = parse(&cluster_keys("consistency = \"eventual\"")).expect("valid");
    assert_eq!(eventual.clusters["main"].consistency, Consistency::Eventual);
    fails_at(
        &cluster_keys("consistency = \"strong\""),
        "cluster.main.consistency",
        |r| matches!(r, Reason::Parse(m) if m.contains("unknown variant `strong`") && m.contains("global")),
    );
    fails_at(
        &cluster_keys("causal_wait = \"2m\""),
        "cluster.main.causal_wait",
        |r| r.to_string() == "must be between 0s and 1m",
    );
    for bad in ["0s", "11s"] {
        fails_at(
            &cluster_keys(&format!("wal_poll_interval = \"{bad}\"")),
            "cluster.main.wal_poll_interval",
            |r| r.to_string() == "must be between 1ms and 10s",
        );
    }
}

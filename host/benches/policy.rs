//! A policy call through the engine on a reused instance, for each example policy, plus the
//! built-in default for reference.
//!
//! Needs the built policies: run `policies/build.sh` first.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::classify::classify;
use switchyard::model::{Protocol, QueryContext};
use switchyard::policy::{PolicyHandle, PolicyRuntime, PolicySettings};

fn query(sql: &str) -> QueryContext {
    QueryContext {
        protocol: Protocol::Postgres,
        sql: sql.to_owned(),
        classification: classify(Protocol::Postgres, sql),
        user: "alice".into(),
        database: "app".into(),
        client_addr: "127.0.0.1:40000".into(),
        in_transaction: false,
        attributes: vec![("startup.application_name".to_owned(), "billing".to_owned())].into(),
    }
}

fn policy(runtime: &PolicyRuntime, name: &str, config: Vec<(String, String)>) -> PolicyHandle {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} missing: run policies/build.sh",
        path.display()
    );
    let settings = PolicySettings {
        path: Some(path),
        config,
        instances: 1,
        ..PolicySettings::default()
    };
    PolicyHandle::new(runtime.clone(), settings).expect("load")
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bench(c: &mut Criterion) {
    let select = query(
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > '2026-01-01' AND c.region = 'eu' ORDER BY o.id LIMIT 50",
    );
    let mut group = c.benchmark_group("policy_call");
    // One runtime for every policy, as in the proxy: one epoch-ticker thread, not one per module
    // (each ticker wakes every millisecond, which on 2 cores preempts the measured thread).
    let runtime = PolicyRuntime::new(None).expect("runtime");
    let builtin = PolicyHandle::new(runtime.clone(), PolicySettings::default()).unwrap();
    group.bench_function("builtin", |b| {
        b.iter(|| builtin.decide(&select, None).unwrap())
    });
    let cases = [
        ("rw-split", kv(&[])),
        (
            "guard",
            kv(&[("limit.alice", "1000"), ("deny_tables.*", "payroll")]),
        ),
        (
            "tenant-router",
            kv(&[
                ("tenant_attribute", "startup.application_name"),
                ("pool.billing", "shard1"),
            ]),
        ),
        (
            "cache-rules",
            kv(&[("ttl.orders", "30000"), ("ttl.customers", "60000")]),
        ),
    ];
    for (name, config) in cases {
        // The Python and JavaScript ports of guard and tenant-router decide alike (see
        // policies/cases); same config, same statement, so the figures compare.
        let langs: &[&str] = match name {
            "guard" | "tenant-router" => &["", "-py", "-js"],
            _ => &[""],
        };
        for lang in langs {
            let id = format!("{name}{lang}");
            let handle = policy(&runtime, &id, config.clone());
            group.bench_function(&id, |b| b.iter(|| handle.decide(&select, None).unwrap()));
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

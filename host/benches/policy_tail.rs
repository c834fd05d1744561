//! The tail and the memory that `benches/policy.rs` (criterion, medians) does not show: for each
//! example policy and its Python/JS builds, per-call latency (median, p99, max) over many calls
//! on one warm instance, the linear memory of an instance, and what a fresh instance costs
//! (instantiate + `init`: paid when the pool is empty, after a trap, and per pooled instance on a
//! load or swap).
//!
//! ```sh
//! policies/build.sh
//! cargo bench -p switchyard --bench policy_tail            # 20000 calls per policy
//! cargo bench -p switchyard --bench policy_tail -- 5000 py  # fewer calls, names containing "py"
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchyard::classify::classify;
use switchyard::model::{Protocol, QueryContext};
use switchyard::policy::{
    CompiledPolicy, InstanceLimits, PolicyHandle, PolicyRuntime, PolicySettings,
};

/// The statement and configs of `benches/policy.rs`, so the medians compare.
const SQL: &str = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > '2026-01-01' AND c.region = 'eu' ORDER BY o.id LIMIT 50";

fn configs() -> Vec<(&'static str, Vec<(String, String)>)> {
    let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let guard = kv(&[("limit.alice", "1000"), ("deny_tables.*", "payroll")]);
    let tenant = kv(&[
        ("tenant_attribute", "startup.application_name"),
        ("pool.billing", "shard1"),
    ]);
    vec![
        ("rw-split", vec![]),
        ("guard", guard.clone()),
        ("guard-py", guard.clone()),
        ("guard-js", guard),
        ("tenant-router", tenant.clone()),
        ("tenant-router-py", tenant.clone()),
        ("tenant-router-js", tenant),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // cargo bench passes `--bench`; a number is the call count, anything else a name filter.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let calls: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(20_000);
    let filter = args.iter().find(|a| a.parse::<usize>().is_err());
    let query = QueryContext {
        protocol: Protocol::Postgres,
        sql: SQL.to_owned(),
        classification: classify(Protocol::Postgres, SQL),
        user: "alice".into(),
        database: "app".into(),
        client_addr: "127.0.0.1:40000".into(),
        in_transaction: false,
        attributes: vec![("startup.application_name".to_owned(), "billing".to_owned())].into(),
    };
    println!(
        "| Policy | Median | p99 | Max | Linear memory per instance | New instance + init (median of 20) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, config) in configs() {
        if filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        measure(name, config, calls, &query)?;
    }
    Ok(())
}

fn measure(
    name: &str,
    config: Vec<(String, String)>,
    calls: usize,
    query: &QueryContext,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/dist")
        .join(format!("{name}.wasm"));
    if !path.is_file() {
        return Err(format!("{} missing: run policies/build.sh", path.display()).into());
    }
    let settings = PolicySettings {
        path: Some(path.clone()),
        config,
        instances: 1,
        ..PolicySettings::default()
    };
    let runtime = PolicyRuntime::new(None)?;
    let compiled = CompiledPolicy::compile(&runtime, &path)?;
    let limits = InstanceLimits {
        deadline: settings.deadline,
        memory_limit: settings.memory_limit,
        instances: 1,
        init_deadline: Duration::from_secs(1),
    };
    let mut fresh = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        compiled.load(settings.config.clone(), limits.clone())?;
        fresh.push(start.elapsed());
    }
    fresh.sort();

    let handle = PolicyHandle::new(runtime, settings)?;
    for _ in 0..calls / 10 {
        handle.decide(query, None)?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        handle.decide(query, None)?;
        times.push(start.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let memory = handle
        .current()
        .and_then(|p| p.instance_memory_bytes())
        .unwrap_or(0);
    println!(
        "| `{name}` | {:.2} µs | {:.1} µs | {:.0} µs | {:.1} MiB | {:.0} µs |",
        us(at(0.5)),
        us(at(0.99)),
        us(at(1.0)),
        memory as f64 / (1 << 20) as f64,
        us(fresh[fresh.len() / 2]),
    );
    Ok(())
}

//! Per-call latency (median, p99, max) and linear memory per instance of a policy, through the
//! engine, on one warm instance, and what a fresh instance costs (instantiate + `init`: paid when
//! the pool is empty, after a trap, and per pooled instance on a load or swap). Criterion's
//! benches give the median; this gives the tail.
//!
//! ```sh
//! cargo run --release -p switchyard --example policy_latency -- \
//!     policies/dist/guard-py.wasm 20000 limit.alice=1000 deny_tables.*=payroll
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchyard::classify::classify;
use switchyard::model::{Protocol, QueryContext};
use switchyard::policy::{
    CompiledPolicy, InstanceLimits, PolicyHandle, PolicyRuntime, PolicySettings,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: policy_latency POLICY.wasm [CALLS] [KEY=VALUE...]";
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let calls: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| usage)?,
        None => 20_000,
    };
    let config = args
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(format!("`{kv}` is not KEY=VALUE")),
        })
        .collect::<Result<Vec<_>, _>>()?;

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
    // The statement of benches/policy.rs.
    let sql = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > '2026-01-01' AND c.region = 'eu' ORDER BY o.id LIMIT 50";
    let query = QueryContext {
        protocol: Protocol::Postgres,
        sql: sql.to_owned(),
        classification: classify(Protocol::Postgres, sql),
        user: "alice".to_owned(),
        database: "app".to_owned(),
        client_addr: "127.0.0.1:40000".to_owned(),
        in_transaction: false,
        attributes: vec![("startup.application_name".to_owned(), "billing".to_owned())],
    };
    for _ in 0..calls / 10 {
        handle.decide(&query, None)?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        handle.decide(&query, None)?;
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
        "{}: {calls} calls, median {:.2} µs, p99 {:.2} µs, max {:.1} µs, linear memory per instance {:.1} MiB, new instance + init median {:.0} µs",
        path.display(),
        us(at(0.5)),
        us(at(0.99)),
        us(at(1.0)),
        memory as f64 / (1 << 20) as f64,
        us(fresh[fresh.len() / 2]),
    );
    Ok(())
}

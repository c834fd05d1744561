//! Routing decision cost: `Router::resolve_target` (route → pool) plus `Pool::pick` (pool → node)
//! for each strategy, over a pool of 3 and of 16 nodes, single-threaded; and the mirror decision.
//! A picked node is counted in and out (`begin` + drop), as a frontend does around every query.
//!
//! Run: `cargo bench -p switchyard --bench route`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::config::Config;
use switchyard::model::{Route, StatementKind};
use switchyard::route::Router;

const STRATEGIES: [&str; 6] = [
    "round-robin",
    "least-conn",
    "random",
    "weighted",
    "consistent-hash",
    "peak-ewma",
];

fn router(strategy: &str, nodes: usize) -> Router {
    let list: Vec<String> = (0..nodes)
        .map(|i| format!("{{ host = \"10.0.0.{}\", weight = {} }}", i + 1, 1 + i % 3))
        .collect();
    let text = format!(
        r#"
[[listener]]
name = "l"
protocol = "clickhouse-http"
bind = "127.0.0.1:0"
cluster = "main"

[[user]]
name = "u"
password = "p"

[cluster.main]
protocol = "clickhouse-http"

[cluster.main.pool.primary]
role = "primary"
nodes = ["10.0.1.1"]

[cluster.main.pool.replicas]
role = "replica"
strategy = "{strategy}"
nodes = [{}]
mirror = {{ pool = "shadow", fraction = 0.1 }}

[cluster.main.pool.shadow]
role = "other"
nodes = ["10.0.2.1"]
"#,
        list.join(", ")
    );
    let config = Config::parse_with_env(&text, &|_| None).expect("bench config");
    Router::new("main", &config.clusters["main"])
}

fn bench(c: &mut Criterion) {
    let route = Route::Default;
    for nodes in [3, 16] {
        let mut group = c.benchmark_group(format!("route/{nodes}-nodes"));
        for strategy in STRATEGIES {
            let r = router(strategy, nodes);
            let affinity = (strategy == "consistent-hash").then_some("tenant-4711");
            group.bench_function(strategy, |b| {
                b.iter(|| {
                    let target = r
                        .resolve_target(black_box(&route), StatementKind::Read, false)
                        .expect("a pool");
                    let node = target.pool.pick(affinity, &[]).expect("a node");
                    drop(black_box(node.begin()));
                });
            });
        }
        group.finish();
    }
    let r = router("round-robin", 3);
    let replicas = r.pool("replicas").expect("replicas").clone();
    c.bench_function("route/mirror-decision", |b| {
        b.iter(|| {
            // 10% sampled: most calls only draw a number, one in ten takes and frees a slot.
            drop(black_box(r.mirror(
                &replicas,
                None,
                StatementKind::Read,
                false,
            )));
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

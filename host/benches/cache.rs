//! Query cache benchmarks: local hits (4 KiB, 1 MiB), a Redis hit, the cost of a miss through
//! single-flight (lookup → Leader → complete), and building a key.
//!
//! The Redis benchmark starts its own `redis-server` (Debian package) on a free loopback port.
//! Run: `cargo bench -p switchyard --bench cache`.

#[path = "../../tests/src/redis.rs"]
mod redis_server;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use switchyard::cache::{CacheConfig, CacheKey, CachedResponse, Lookup, QueryCache, RedisConfig};
use switchyard::model::Protocol;
use tokio::runtime::Runtime;

const SQL: &str = "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
                   WHERE o.created_at >= '2024-01-01' AND c.country = 'NZ' ORDER BY o.total DESC LIMIT 100";

fn key(sql: &str) -> CacheKey {
    CacheKey::builder(Protocol::ClickhouseHttp, "shop", "alice")
        .sql(sql)
        .setting("default_format", "JSONEachRow")
        .table("shop", "orders")
        .table("shop", "customers")
        .build()
}

fn response(size: usize) -> CachedResponse {
    CachedResponse::new(
        Bytes::from_static(b"Content-Type: application/x-ndjson"),
        Bytes::from(vec![b'x'; size]),
        Duration::from_secs(3600),
    )
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A hit never awaits, so poll it once, as a frontend's `.await` would, without an executor's
/// per-call overhead in the measurement.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a cache hit should not wait"),
    }
}

async fn store(cache: &QueryCache, key: &CacheKey, size: usize) {
    match cache.lookup(key).await {
        Lookup::Leader(guard) => {
            guard.complete(response(size)).await;
        }
        other => panic!("expected to lead, got {other:?}"),
    }
}

fn local_hits(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt
        .block_on(QueryCache::new(CacheConfig::default()))
        .expect("cache");
    let mut group = c.benchmark_group("local_hit");
    for (name, size) in [("4KiB", 4 * 1024), ("1MiB", 1024 * 1024)] {
        let k = key(&format!("{SQL} -- {name}"));
        rt.block_on(store(&cache, &k, size));
        group.bench_function(name, |b| {
            b.iter(|| match ready(cache.lookup(black_box(&k))) {
                Lookup::Hit(r) => black_box(r),
                other => panic!("expected a hit, got {other:?}"),
            })
        });
    }
    group.finish();
}

fn redis_hit(c: &mut Criterion) {
    let server = redis_server::RedisServer::start();
    let rt = runtime();
    let config = CacheConfig {
        redis: Some(RedisConfig {
            url: server.url(),
            ..RedisConfig::default()
        }),
        ..CacheConfig::default()
    };
    let writer = rt.block_on(QueryCache::new(config.clone())).expect("cache");
    let reader = rt.block_on(QueryCache::new(config)).expect("cache");
    let mut group = c.benchmark_group("redis_hit");
    for (name, size) in [("4KiB", 4 * 1024), ("64KiB_lz4", 64 * 1024)] {
        let k = key(&format!("{SQL} -- redis {name}"));
        rt.block_on(store(&writer, &k, size));
        group.bench_function(name, |b| {
            b.iter_batched(
                || reader.clear_local(),
                |()| match rt.block_on(reader.lookup(&k)) {
                    Lookup::Hit(r) => black_box(r),
                    other => panic!("expected a redis hit, got {other:?}"),
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
    let stats = reader.stats();
    assert_eq!(stats.redis_errors, 0, "{stats:?}");
    drop((writer, reader));
    drop(rt);
    drop(server);
}

/// A miss with nobody waiting: join the in-flight table as leader, store, resolve.
fn miss_through_single_flight(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt
        .block_on(QueryCache::new(CacheConfig::default()))
        .expect("cache");
    let mut n = 0u64;
    c.bench_function("miss_lookup_lead_complete_4KiB", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<CacheKey> = (0..iters)
                .map(|_| {
                    n += 1;
                    key(&format!("{SQL} -- {n}"))
                })
                .collect();
            let body = response(4 * 1024);
            let started = Instant::now();
            rt.block_on(async {
                for k in &keys {
                    match cache.lookup(k).await {
                        Lookup::Leader(guard) => {
                            black_box(guard.complete(body.clone()).await);
                        }
                        other => panic!("expected to lead, got {other:?}"),
                    }
                }
            });
            started.elapsed()
        })
    });
}

fn key_building(c: &mut Criterion) {
    c.bench_function("key_build_200B_sql", |b| b.iter(|| key(black_box(SQL))));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = local_hits, redis_hit, miss_through_single_flight, key_building
}
criterion_main!(benches);

//! Classification cost per dialect, the fingerprint alone, and a `Classifier` cache hit.
//!
//! Run: `cargo bench -p switchyard --bench classify`. Target: a typical 200-byte SELECT
//! classifies in at most 20 µs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::classify::{Classifier, classify, fingerprint};
use switchyard::model::Protocol;

/// A typical ~200-byte application SELECT with joins, a filter and a limit.
const PG_SELECT: &str = "SELECT u.id, u.email, o.id AS order_id, o.total FROM users u \
    JOIN orders o ON o.user_id = u.id LEFT JOIN payments p ON p.order_id = o.id \
    WHERE u.tenant_id = $1 AND o.status IN ('paid', 'shipped') ORDER BY o.created_at DESC LIMIT 50";

const PG: &[(&str, &str)] = &[
    ("select_200b", PG_SELECT),
    ("point_select", "SELECT id, name FROM users WHERE id = $1"),
    (
        "insert",
        "INSERT INTO events (user_id, kind, payload) VALUES ($1, $2, $3) RETURNING id",
    ),
    (
        "update",
        "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
    ),
    (
        "writable_cte",
        "WITH d AS (DELETE FROM queue WHERE id = $1 RETURNING *) SELECT * FROM d",
    ),
    ("begin", "BEGIN"),
    ("set", "SET application_name = 'web'"),
];

const CLICKHOUSE: &[(&str, &str)] = &[
    (
        "select_200b",
        "SELECT toStartOfHour(ts) AS h, country, uniqExact(user_id) AS users, count() AS hits \
         FROM events WHERE ts >= now() - INTERVAL 1 DAY AND site_id = 42 \
         GROUP BY h, country ORDER BY h, hits DESC LIMIT 100",
    ),
    (
        "insert_format",
        "INSERT INTO events (ts, site_id, user_id) FORMAT JSONEachRow\n{\"ts\":1}",
    ),
    (
        "unparsed_global_join",
        "SELECT * FROM a GLOBAL ANY LEFT JOIN b USING id WHERE a.x = 1",
    ),
    ("system", "SYSTEM FLUSH LOGS"),
];

const MYSQL: &[(&str, &str)] = &[
    (
        "select_200b",
        "SELECT c.id, c.name, SUM(oi.qty * oi.price) AS revenue FROM customers c \
         JOIN orders o ON o.customer_id = c.id JOIN order_items oi ON oi.order_id = o.id \
         WHERE o.created_at >= ? GROUP BY c.id, c.name ORDER BY revenue DESC LIMIT 20",
    ),
    (
        "update_join",
        "UPDATE a JOIN b ON a.id = b.id SET a.x = b.y WHERE b.z = ?",
    ),
    (
        "insert_odku",
        "INSERT INTO t (a, b) VALUES (?, ?) ON DUPLICATE KEY UPDATE b = VALUES(b)",
    ),
];

fn per_dialect(c: &mut Criterion) {
    for (dialect, protocol, statements) in [
        ("postgres", Protocol::Postgres, PG),
        ("clickhouse", Protocol::ClickhouseHttp, CLICKHOUSE),
        ("mysql", Protocol::Mysql, MYSQL),
    ] {
        let mut group = c.benchmark_group(format!("classify/{dialect}"));
        for (name, sql) in statements {
            group.throughput(Throughput::Bytes(sql.len() as u64));
            group.bench_function(*name, |b| {
                b.iter(|| classify(black_box(protocol), black_box(sql)))
            });
        }
        group.finish();
    }
}

fn large(c: &mut Criterion) {
    let rows = vec!["($1, 'some text', 42, now())"; 1_000].join(", ");
    let insert = format!("INSERT INTO events (a, b, c, d) VALUES {rows}");
    let mut group = c.benchmark_group("classify/large");
    group.throughput(Throughput::Bytes(insert.len() as u64));
    group.bench_function("insert_1000_rows", |b| {
        b.iter(|| classify(black_box(Protocol::Postgres), black_box(&insert)))
    });
    group.finish();
}

fn fingerprint_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    group.throughput(Throughput::Bytes(PG_SELECT.len() as u64));
    group.bench_function("postgres/select_200b", |b| {
        b.iter(|| fingerprint(black_box(Protocol::Postgres), black_box(PG_SELECT)))
    });
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let classifier = Classifier::new(1024);
    classifier.classify(Protocol::Postgres, PG_SELECT);
    let mut group = c.benchmark_group("classifier");
    group.bench_function("hit/select_200b", |b| {
        b.iter(|| classifier.classify(black_box(Protocol::Postgres), black_box(PG_SELECT)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the numbers are stable well before criterion's defaults on this workload.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    targets = per_dialect, large, fingerprint_only, cache_hit
}
criterion_main!(benches);

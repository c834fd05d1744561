//! Caching through the ClickHouse HTTP frontend (policy `cache-rules`, `default_ttl` on):
//! X-Cache on every response, no_cache, namespaces, per-user entries, one entry for gzip and
//! plain clients, errors never stored, writes invalidating, and coalescing of identical queries.

use std::io::Read as _;

use http::Method;
use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{enc, post, request};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::proxy::{Proxy, config};

fn cache_extra() -> String {
    format!(
        r#"
[[user]]
name = "alice"
password = "alice_pw"

[[user]]
name = "bob"
password = "bob_pw"

[[user]]
name = "nocache"
password = "nocache_pw"
cache = false

[cache]
enabled = true
grace_time = "10s"

[policy]
path = "{}"
[policy.config]
default_ttl = "60000"
"#,
        policy_wasm("cache-rules").display()
    )
}

async fn proxy(ch: &ClickHouse) -> Proxy {
    Proxy::start(&config(ch, "", "", &cache_extra())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_cache_tells_hit_miss_and_not_applicable() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch).await;
    let alice = proxy.url_as("alice", "alice_pw");
    let sql = "SELECT number FROM system.numbers LIMIT 3 FORMAT CSV";

    let miss = post(&alice, sql).await;
    assert_eq!((miss.status, miss.x_cache()), (200, "MISS"));
    let hit = post(&alice, sql).await;
    assert_eq!((hit.status, hit.x_cache()), (200, "HIT"));
    assert_eq!(hit.body, miss.body);
    assert_eq!(
        hit.header("content-type"),
        Some("text/csv; charset=UTF-8; header=absent")
    );
    assert_eq!(
        hit.node(),
        "ch0",
        "X-ClickHouse-* headers are kept in the entry"
    );

    assert_eq!(
        post(&format!("{alice}&no_cache=1"), sql).await.x_cache(),
        "N/A"
    );
    assert_eq!(
        post(&proxy.url_as("nocache", "nocache_pw"), sql)
            .await
            .x_cache(),
        "N/A"
    );
    let volatile = post(&alice, "SELECT now() FROM system.one").await;
    assert_eq!((volatile.status, volatile.x_cache()), (200, "N/A"));
    let write = post(&alice, "CREATE TABLE default.w (a UInt8) ENGINE = Memory").await;
    assert_eq!((write.status, write.x_cache()), (200, "N/A"));

    // Entries are per user unless the policy says shared.
    assert_eq!(
        post(&proxy.url_as("bob", "bob_pw"), sql).await.x_cache(),
        "MISS"
    );
    // Namespaces keep entries apart.
    let ns_a = format!("{alice}&cache_namespace=a");
    assert_eq!(post(&ns_a, sql).await.x_cache(), "MISS");
    assert_eq!(post(&ns_a, sql).await.x_cache(), "HIT");
    assert_eq!(
        post(&format!("{alice}&cache_namespace=b"), sql)
            .await
            .x_cache(),
        "MISS"
    );
    // Settings that change the result are part of the key.
    let other = post(&format!("{alice}&default_format=TSVWithNames"), sql).await;
    assert_eq!(
        (other.status, other.x_cache()),
        (200, "MISS"),
        "{}",
        other.text()
    );

    // The server ran it once per key, and for each request that bypassed the cache.
    assert_eq!(ch.node(0).finished_queries_settled(sql, 7).await, 7);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_plain_clients_share_one_entry() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch).await;
    let alice = proxy.url_as("alice", "alice_pw");
    let sql = "SELECT number, toString(number) FROM system.numbers LIMIT 1000";
    let plain = post(&alice, sql).await;
    assert_eq!((plain.status, plain.x_cache()), (200, "MISS"));
    assert_eq!(plain.header("content-encoding"), None);

    let gzip_url = format!("{alice}&enable_http_compression=1");
    let gz = request(
        Method::POST,
        &gzip_url,
        &[("Accept-Encoding", "gzip")],
        sql.to_owned(),
    )
    .await;
    assert_eq!((gz.status, gz.x_cache()), (200, "HIT"));
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut text)
        .expect("a gzip body");
    assert_eq!(text, plain.body);
    assert!(gz.body.len() < plain.body.len());

    // An uncached compressed response (the read-only backend user could not have asked
    // ClickHouse for it: the proxy compresses).
    let deflate = request(
        Method::POST,
        &format!("{gzip_url}&no_cache=1"),
        &[("Accept-Encoding", "deflate")],
        sql.to_owned(),
    )
    .await;
    assert_eq!((deflate.status, deflate.x_cache()), (200, "N/A"));
    assert_eq!(deflate.header("content-encoding"), Some("deflate"));
    let mut text = Vec::new();
    flate2::read::ZlibDecoder::new(&deflate.body[..])
        .read_to_end(&mut text)
        .expect("a zlib body");
    assert_eq!(text, plain.body);
    assert_eq!(ch.node(0).finished_queries_settled(sql, 2).await, 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_never_cached_and_writes_invalidate() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch).await;
    let alice = proxy.url_as("alice", "alice_pw");
    let read = "SELECT sum(a) FROM default.later";
    for _ in 0..2 {
        let r = post(&alice, read).await;
        assert_eq!((r.status, r.x_cache()), (404, "MISS"), "{}", r.text());
        assert!(r.text().starts_with("Code: 60"), "{}", r.text());
    }
    assert_eq!(
        post(
            &alice,
            "CREATE TABLE default.later (a UInt32) ENGINE = Memory"
        )
        .await
        .status,
        200
    );
    let insert = format!(
        "{alice}&query={}",
        enc("INSERT INTO default.later FORMAT CSV")
    );
    assert_eq!(post(&insert, "1\n").await.status, 200);
    let first = post(&alice, read).await;
    assert_eq!((first.text().as_str(), first.x_cache()), ("1\n", "MISS"));
    assert_eq!(post(&alice, read).await.x_cache(), "HIT");
    assert_eq!(post(&insert, "2\n").await.status, 200);
    let after = post(&alice, read).await;
    assert_eq!((after.text().as_str(), after.x_cache()), ("3\n", "MISS"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_queries_run_once() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch).await;
    let alice = proxy.url_as("alice", "alice_pw");
    // About a second on the server; not volatile, reads a table: cacheable.
    let slow = "SELECT sleepEachRow(0.2), number FROM system.numbers LIMIT 5";
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = alice.clone();
        tasks.push(tokio::spawn(async move { post(&url, slow).await }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let r = task.await.expect("request task");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "0\t0\n0\t1\n0\t2\n0\t3\n0\t4\n");
        statuses.push(r.x_cache().to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, ["HIT", "HIT", "HIT", "HIT", "HIT", "MISS"]);
    assert_eq!(
        ch.node(0)
            .finished_queries_settled("sleepEachRow(0.2)", 1)
            .await,
        1
    );
    proxy.stop().await;
}

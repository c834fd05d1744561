//! Who may change the proxy through the admin API. Without a token the GET endpoints stay open
//! on loopback but nothing can be changed; a read token reads; only the admin token changes the
//! policy, the config, the cache or the digest table.

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use switchyard_tests::http::{Reply, request};
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;

const ADMIN_TOKEN: &str = "adm1n-scope-t0ken";
const READ_TOKEN: &str = "r3ad-scope-t0ken";

/// Every endpoint that changes something, with a body where one is expected.
fn mutations() -> Vec<(Method, &'static str, Bytes)> {
    let module = Bytes::from(std::fs::read(policy_wasm("rw-split")).expect("rw-split.wasm"));
    vec![
        (Method::POST, "/policy", module.clone()),
        (Method::POST, "/policy?shadow=true", module),
        (Method::POST, "/policy/promote", Bytes::new()),
        (Method::DELETE, "/policy/shadow", Bytes::new()),
        (Method::POST, "/cache/purge", Bytes::new()),
        (Method::POST, "/config/reload", Bytes::new()),
        (Method::DELETE, "/digests", Bytes::new()),
    ]
}

const READS: &[&str] = &[
    "/health", "/ready", "/metrics", "/policy", "/pools", "/config", "/digests",
];

async fn call(
    proxy: &Proxy,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    request(
        method,
        &format!("{}{path}", proxy.admin_url()),
        &headers,
        body,
    )
    .await
}

async fn get_json(proxy: &Proxy, path: &str, token: Option<&str>) -> Value {
    let reply = call(proxy, Method::GET, path, token, Bytes::new()).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A proxy started from a file (so `/config/reload` has something to read) with the guard policy
/// (a copy, since an upload overwrites it), the cache on and a slow-query threshold a reload
/// could change.
async fn start(pg: &PgCluster, dir: &std::path::Path, admin: &str) -> (Proxy, std::path::PathBuf) {
    let policy_path = dir.join("guard.wasm");
    std::fs::copy(policy_wasm("guard"), &policy_path).expect("copy guard.wasm");
    let config = PgConfig::new(pg)
        .extra(&format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n{admin}\n[cache]\nenabled = true\n[policy]\npath = \"{}\"\n[log]\nslow_query_threshold = \"5s\"\n",
            policy_path.display()
        ))
        .build();
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, config).expect("write the config");
    (Proxy::start_file(&config_path).await, config_path)
}

/// What a refused change must leave as it was: the active policy and its file, no shadow, the
/// digest table, and the config in force (the file on disk was changed, see the callers).
struct Snapshot {
    sha256: Value,
    policy_file: Vec<u8>,
    digests: usize,
    threshold: Value,
}

async fn snapshot(proxy: &Proxy, token: Option<&str>, policy_file: &std::path::Path) -> Snapshot {
    let policy = get_json(proxy, "/policy", token).await;
    assert!(policy["shadow"].is_null(), "{policy}");
    let digests = get_json(proxy, "/digests", token).await;
    let config = get_json(proxy, "/config", token).await;
    Snapshot {
        sha256: policy["active"]["sha256"].clone(),
        policy_file: std::fs::read(policy_file).expect("policy file"),
        digests: digests["digests"].as_array().map_or(0, Vec::len),
        threshold: config["log"]["slow_query_threshold"].clone(),
    }
}

async fn assert_unchanged(
    proxy: &Proxy,
    token: Option<&str>,
    policy_file: &std::path::Path,
    before: &Snapshot,
) {
    let now = snapshot(proxy, token, policy_file).await;
    assert_eq!(now.sha256, before.sha256, "the active policy changed");
    assert!(
        now.policy_file == before.policy_file,
        "the policy file was overwritten"
    );
    assert_eq!(now.digests, before.digests, "the digest table was reset");
    assert_eq!(now.threshold, before.threshold, "the config was reloaded");
}

fn assert_admin_scope_required(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 403, "{what}: {}", reply.text());
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{what}: {e}"));
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("admin scope") && message.contains("admin.token"),
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_reads_but_changes_nothing() {
    let pg = PgCluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, config_path) = start(&pg, dir.path(), "").await;
    let policy_file = dir.path().join("guard.wasm");
    let client = pg::connect(proxy.addr()).await;
    client.simple_query("SELECT 1").await.expect("select");

    for path in READS.iter().filter(|p| **p != "/ready") {
        let reply = call(&proxy, Method::GET, path, None, Bytes::new()).await;
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    }
    let before = snapshot(&proxy, None, &policy_file).await;
    assert!(before.digests > 0, "the SELECT left a digest");
    // A reload would pick this up.
    let text = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(&config_path, text.replace("\"5s\"", "\"7s\"")).expect("rewrite config");

    for (method, path, body) in mutations() {
        let what = format!("{method} {path} without a token");
        let reply = call(&proxy, method, path, None, body).await;
        assert_admin_scope_required(&reply, &what);
    }
    assert_unchanged(&proxy, None, &policy_file, &before).await;
    // The guard still decides.
    let blocked = client
        .simple_query("DROP TABLE pgbench_accounts")
        .await
        .expect_err("the guard still blocks DROP");
    assert_eq!(pg::sqlstate(&blocked), "42501");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_and_only_the_admin_token_changes_things() {
    let pg = PgCluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let (proxy, config_path) = start(
        &pg,
        dir.path(),
        &format!("token = \"{ADMIN_TOKEN}\"\nread_token = \"{READ_TOKEN}\"\n"),
    )
    .await;
    let policy_file = dir.path().join("guard.wasm");
    let client = pg::connect(proxy.addr()).await;
    client.simple_query("SELECT 1").await.expect("select");

    // With tokens configured, nothing is open, reads included.
    let anonymous = call(&proxy, Method::GET, "/health", None, Bytes::new()).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let wrong = call(&proxy, Method::GET, "/health", Some("nope"), Bytes::new()).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());

    for path in READS.iter().filter(|p| **p != "/ready") {
        for token in [READ_TOKEN, ADMIN_TOKEN] {
            let reply = call(&proxy, Method::GET, path, Some(token), Bytes::new()).await;
            assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        }
    }
    let shown = call(
        &proxy,
        Method::GET,
        "/config",
        Some(READ_TOKEN),
        Bytes::new(),
    )
    .await
    .text();
    assert!(
        !shown.contains(READ_TOKEN) && !shown.contains(ADMIN_TOKEN),
        "a token leaked: {shown}"
    );

    let before = snapshot(&proxy, Some(READ_TOKEN), &policy_file).await;
    let text = std::fs::read_to_string(&config_path).expect("config");
    std::fs::write(&config_path, text.replace("\"5s\"", "\"7s\"")).expect("rewrite config");
    for (method, path, body) in mutations() {
        let what = format!("{method} {path} with the read token");
        let reply = call(&proxy, method.clone(), path, Some(READ_TOKEN), body.clone()).await;
        assert_admin_scope_required(&reply, &what);
        let anonymous = call(&proxy, method, path, None, body).await;
        assert_eq!(
            anonymous.status,
            401,
            "{path} without a token: {}",
            anonymous.text()
        );
    }
    assert_unchanged(&proxy, Some(READ_TOKEN), &policy_file, &before).await;

    // The admin token does everything.
    let reloaded = call(
        &proxy,
        Method::POST,
        "/config/reload",
        Some(ADMIN_TOKEN),
        Bytes::new(),
    )
    .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let config = get_json(&proxy, "/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(config["log"]["slow_query_threshold"], "7s", "{config}");
    let purged = call(
        &proxy,
        Method::POST,
        "/cache/purge",
        Some(ADMIN_TOKEN),
        Bytes::new(),
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    let reset = call(
        &proxy,
        Method::DELETE,
        "/digests",
        Some(ADMIN_TOKEN),
        Bytes::new(),
    )
    .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    let rw_split = std::fs::read(policy_wasm("rw-split")).expect("rw-split.wasm");
    let uploaded = call(
        &proxy,
        Method::POST,
        "/policy",
        Some(ADMIN_TOKEN),
        rw_split.clone().into(),
    )
    .await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    assert_eq!(std::fs::read(&policy_file).expect("policy file"), rw_split);
    client
        .simple_query("DROP TABLE IF EXISTS no_such_table")
        .await
        .expect("rw-split lets DROP through");
    proxy.stop().await;
}

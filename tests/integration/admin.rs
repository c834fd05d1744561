//! The admin API, metrics, shadow mode, config reload and graceful shutdown, against a real
//! PostgreSQL primary + replica behind the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{Reply, request};
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::{self, Proxy};

const TOKEN: &str = "adm1n-t0ken";

fn admin_section() -> String {
    format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

async fn call(proxy: &Proxy, method: Method, path: &str, body: impl Into<Bytes>) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    request(
        method,
        &format!("{}{path}", proxy.admin_url()),
        &[("authorization", auth.as_str())],
        body,
    )
    .await
}

async fn get_json(proxy: &Proxy, path: &str) -> Value {
    let reply = call(proxy, Method::GET, path, Bytes::new()).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the metric line that starts with `series` (name and labels, exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_answers() {
    let pg = PgCluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    // The proxy may overwrite its policy file on upload: give it a copy.
    let policy_path = dir.path().join("guard.wasm");
    std::fs::copy(policy_wasm("guard"), &policy_path).expect("copy guard.wasm");
    let config = PgConfig::new(&pg)
        .app_user("max_concurrent_queries = 8")
        .replica_pool("max_concurrent_queries = 16")
        .extra(&format!(
            "{}\n[cache]\nenabled = true\n[policy]\npath = \"{}\"\n[log]\nslow_query_threshold = \"1ms\"\n",
            admin_section(),
            policy_path.display()
        ))
        .build();
    let proxy = Proxy::start(&config).await;
    let url = proxy.admin_url();

    // Who may call.
    let anonymous = request(Method::GET, &format!("{url}/health"), &[], Bytes::new()).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert!(anonymous.header("www-authenticate").is_some());
    let wrong = request(
        Method::GET,
        &format!("{url}/health"),
        &[("authorization", "Bearer nope")],
        Bytes::new(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(get_json(&proxy, "/health").await["status"], "alive");

    // Ready once the health checks have seen the nodes.
    let mut ready = Value::Null;
    for _ in 0..50 {
        let reply = call(&proxy, Method::GET, "/ready", Bytes::new()).await;
        ready = serde_json::from_slice(&reply.body).expect("ready json");
        if reply.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready["clusters"]["pg"]["healthy_nodes"].as_u64() >= Some(2));

    // Traffic: a first statement that opens the server connection (under load that can take
    // longer than the sleep below), two statements with one fingerprint, one that sleeps, and
    // one the guard blocks.
    let client = pg::connect(proxy.addr()).await;
    for sql in [
        "SELECT current_user",
        "SELECT 1",
        "SELECT 2",
        "SELECT pg_sleep(0.3)",
    ] {
        client.simple_query(sql).await.expect(sql);
    }
    let blocked = client
        .simple_query("DROP TABLE pgbench_accounts")
        .await
        .expect_err("guard blocks DROP");
    assert_eq!(pg::sqlstate(&blocked), "42501");

    let digests = get_json(&proxy, "/digests?order=count&limit=10").await;
    let rows = digests["digests"].as_array().expect("rows");
    let select = rows
        .iter()
        .find(|r| r["digest_text"] == "SELECT ?")
        .unwrap_or_else(|| panic!("no `SELECT ?` digest in {digests}"));
    assert_eq!(select["count"], 2, "{select}");
    assert_eq!(select["errors"], 0);
    let drop = rows
        .iter()
        .find(|r| r["digest_text"] == "DROP TABLE pgbench_accounts")
        .unwrap_or_else(|| panic!("no DROP digest in {digests}"));
    assert_eq!(drop["errors"], 1);
    let by_time = get_json(&proxy, "/digests?order=time&limit=1").await;
    assert_eq!(
        by_time["digests"][0]["digest_text"], "SELECT pg_sleep(?)",
        "{by_time}"
    );
    let bad = call(&proxy, Method::GET, "/digests?order=size", Bytes::new()).await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    let metrics = call(&proxy, Method::GET, "/metrics", Bytes::new()).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    let text = metrics.text();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let forwarded = metric(
        &text,
        r#"switchyard_queries_total{frontend="postgres",user="app",route="replica",pool="replicas",decision="forward",cache="off"}"#,
    );
    assert_eq!(forwarded, Some(4.0), "{text}");
    let blocked = metric(
        &text,
        r#"switchyard_query_errors_total{frontend="postgres",user="app",route="primary",pool="",decision="block",cache="off"}"#,
    );
    assert_eq!(blocked, Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "switchyard_policy_calls_total"),
        Some(5.0),
        "{text}"
    );
    assert!(
        metric(&text, "switchyard_slow_queries_total").is_some_and(|n| n >= 1.0),
        "pg_sleep(0.3) is over the 1ms threshold: {text}"
    );
    for (series, count) in [
        (
            r#"switchyard_query_duration_seconds_count{frontend="postgres"}"#,
            5.0,
        ),
        ("switchyard_policy_call_duration_seconds_count", 5.0),
        (
            r#"switchyard_backend_duration_seconds_count{frontend="postgres",pool="replicas"}"#,
            4.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(count), "{series}\n{text}");
    }
    assert!(
        metric(
            &text,
            r#"switchyard_limit_admitted_total{kind="user",owner="app"}"#
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    let pools = get_json(&proxy, "/pools").await;
    let replicas = &pools["clusters"]["pg"]["pools"]["replicas"];
    assert_eq!(replicas["limit"]["max_concurrent_queries"], 16, "{pools}");
    assert_eq!(replicas["limit"]["admitted"], 4, "{pools}");
    assert!(
        pools["clusters"]["pg"]["pools"]["primary"]["limit"].is_null(),
        "{pools}"
    );
    // A pool's limit has its own series: the four reads above ran on the replicas.
    assert_eq!(
        metric(
            &text,
            r#"switchyard_limit_admitted_total{kind="pool",owner="pg.replicas"}"#
        ),
        Some(4.0),
        "{text}"
    );
    for name in [
        "switchyard_pool_size{",
        "switchyard_pool_checkouts_total{",
        "switchyard_node_up{cluster=\"pg\",pool=\"primary\"",
        "# TYPE switchyard_replica_lag_bytes gauge",
        "switchyard_cache_misses_total",
        "switchyard_policy_info{name=\"guard\"",
    ] {
        assert!(text.contains(name), "no {name} in\n{text}");
    }

    // Every series the example Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(
        switchyard_tests::policies::repo_root().join("examples/monitoring/grafana-dashboard.json"),
    )
    .expect("examples/monitoring/grafana-dashboard.json");
    let mut names: Vec<&str> = dashboard
        .match_indices("switchyard_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| *n != "switchyard_")
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() > 15, "{names:?}");
    for name in names {
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }

    // Pools and config.
    let pools = get_json(&proxy, "/pools").await;
    let primary = &pools["clusters"]["pg"]["pools"]["primary"];
    assert_eq!(primary["role"], "primary", "{pools}");
    assert_eq!(primary["nodes"][0]["healthy"], true, "{pools}");
    let replica_connections = &pools["clusters"]["pg"]["pools"]["replicas"]["connections"];
    assert!(
        replica_connections
            .as_array()
            .is_some_and(|c| c.iter().any(|b| b["checkouts"].as_u64() >= Some(3))),
        "three reads ran on the replica pool: {pools}"
    );
    let shown = call(&proxy, Method::GET, "/config", Bytes::new()).await;
    assert_eq!(shown.status, 200);
    let shown_text = shown.text();
    assert!(
        !shown_text.contains(pg::PASSWORD),
        "a password leaked: {shown_text}"
    );
    assert!(!shown_text.contains(TOKEN), "the admin token leaked");
    assert!(shown_text.contains("<redacted>"));

    // Cache purge, in its three forms.
    for (query, expect) in [
        ("", "\"purged\": \"all\""),
        ("?namespace=reports", "\"namespace\": \"reports\""),
        (
            "?table=appdb.pgbench_accounts",
            "\"table\": \"pgbench_accounts\"",
        ),
    ] {
        let reply = call(
            &proxy,
            Method::POST,
            &format!("/cache/purge{query}"),
            Bytes::new(),
        )
        .await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        assert!(reply.text().contains(expect), "{query}: {}", reply.text());
    }
    let unqualified = call(&proxy, Method::POST, "/cache/purge?table=t", Bytes::new()).await;
    assert_eq!(unqualified.status, 400);

    // The policy: view, a refused upload, shadow, promote, upload.
    let policy = get_json(&proxy, "/policy").await;
    assert_eq!(policy["active"]["name"], "guard", "{policy}");
    assert_eq!(policy["calls"], 5);
    assert!(policy["shadow"].is_null());
    let garbage = call(
        &proxy,
        Method::POST,
        "/policy",
        Bytes::from_static(b"not wasm"),
    )
    .await;
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    assert!(
        garbage.text().contains("not a WebAssembly component"),
        "{}",
        garbage.text()
    );
    let policy = get_json(&proxy, "/policy").await;
    assert_eq!(policy["active"]["name"], "guard");
    assert_eq!(policy["reload_failures"], 1);

    let rw_split = std::fs::read(policy_wasm("rw-split")).expect("rw-split.wasm");
    let shadow = call(
        &proxy,
        Method::POST,
        "/policy?shadow=true&name=candidate",
        rw_split.clone(),
    )
    .await;
    assert_eq!(shadow.status, 200, "{}", shadow.text());
    // The guard still decides: DROP stays blocked; the candidate would have let it through.
    let blocked = client
        .simple_query("DROP TABLE pgbench_accounts")
        .await
        .expect_err("the active guard still blocks");
    assert_eq!(pg::sqlstate(&blocked), "42501");
    client.simple_query("SELECT 1").await.expect("select");
    let policy = get_json(&proxy, "/policy").await;
    let shadow = &policy["shadow"];
    assert_eq!(shadow["name"], "candidate", "{policy}");
    assert_eq!(shadow["calls"], 2, "{policy}");
    assert_eq!(shadow["differing"], 1, "{policy}");
    assert_eq!(shadow["differences"]["action"], 1, "{policy}");
    let text = call(&proxy, Method::GET, "/metrics", Bytes::new())
        .await
        .text();
    assert_eq!(
        metric(
            &text,
            r#"switchyard_policy_shadow_differences_total{field="action"}"#
        ),
        Some(1.0),
        "{text}"
    );

    let promoted = call(&proxy, Method::POST, "/policy/promote", Bytes::new()).await;
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    client
        .simple_query("DROP TABLE IF EXISTS no_such_table")
        .await
        .expect("rw-split lets DROP through");
    let again = call(&proxy, Method::POST, "/policy/promote", Bytes::new()).await;
    assert_eq!(
        again.status,
        409,
        "nothing left to promote: {}",
        again.text()
    );

    // Uploading the guard back: active at once, and written to policy.path.
    let guard = std::fs::read(policy_wasm("guard")).expect("guard.wasm");
    std::fs::write(&policy_path, b"stale").expect("clobber the policy file");
    let uploaded = call(&proxy, Method::POST, "/policy", guard.clone()).await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    assert!(
        uploaded.text().contains(&policy_path.display().to_string()),
        "{}",
        uploaded.text()
    );
    assert_eq!(std::fs::read(&policy_path).expect("policy file"), guard);
    let blocked = client
        .simple_query("DROP TABLE pgbench_accounts")
        .await
        .expect_err("the uploaded guard blocks again");
    assert_eq!(pg::sqlstate(&blocked), "42501");

    // Unknown paths and methods.
    assert_eq!(
        call(&proxy, Method::GET, "/nope", Bytes::new())
            .await
            .status,
        404
    );
    assert_eq!(
        call(&proxy, Method::DELETE, "/health", Bytes::new())
            .await
            .status,
        405
    );
    let reset = call(&proxy, Method::DELETE, "/digests", Bytes::new()).await;
    assert_eq!(reset.status, 200);
    let digests = get_json(&proxy, "/digests").await;
    assert_eq!(
        digests["digests"].as_array().map(Vec::len),
        Some(0),
        "{digests}"
    );
    // This proxy was started from text: a reload has no file to read.
    let reload = call(&proxy, Method::POST, "/config/reload", Bytes::new()).await;
    assert_eq!(reload.status, 400, "{}", reload.text());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_and_policy_upload_under_pgbench_fail_no_transaction() {
    let pg = PgCluster::start(1);
    let init = pg::pgbench(pg.primary_port(), &["-i", "-s", "1", "-q"]).await;
    assert!(init.success, "pgbench -i failed\n{init}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("switchyard.toml");
    let base = PgConfig::new(&pg).extra(&admin_section());
    std::fs::write(&file, base.clone().defaults("size = 4").build()).expect("write config");
    let proxy = Proxy::start_file(&file).await;
    let addr = proxy.addr();

    let bench = tokio::spawn(pg::pgbench(
        addr.port(),
        &["-M", "extended", "-c", "6", "-j", "2", "-T", "8"],
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A new user, bigger pools, a slow-query threshold: applied without a restart.
    let grown = base
        .clone()
        .defaults("size = 6")
        .extra("[[user]]\nname = \"late\"\npassword = \"late_pass\"\nbackend = { user = \"app\", password = \"app_pass\" }\n[log]\nslow_query_threshold = \"5s\"\n");
    std::fs::write(&file, grown.build()).expect("rewrite config");
    let reloaded = call(&proxy, Method::POST, "/config/reload", Bytes::new()).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let report: Value = serde_json::from_slice(&reloaded.body).expect("json");
    let changed = report["changed"].to_string();
    for section in ["cluster", "user", "log"] {
        assert!(changed.contains(section), "{section} not in {report}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A policy upload in the middle of it.
    let rw_split = std::fs::read(policy_wasm("rw-split")).expect("rw-split.wasm");
    let uploaded = call(&proxy, Method::POST, "/policy", rw_split).await;
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // An invalid config is refused with the reason; the running one stays.
    std::fs::write(
        &file,
        grown.clone().extra("[cache]\nbogus_key = 1\n").build(),
    )
    .expect("write bad config");
    let refused = call(&proxy, Method::POST, "/config/reload", Bytes::new()).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("bogus_key"), "{}", refused.text());
    // So is a change that needs a restart.
    std::fs::write(&file, grown.clone().listener("max_connections = 7").build())
        .expect("write listener change");
    let refused = proxy.reload().await.expect_err("listener change refused");
    assert!(refused.contains("[[listener]]"), "{refused}");

    let run = bench.await.expect("pgbench task");
    run.assert_clean("pgbench during config reload and policy upload");

    // The reloaded config is the one in force: the new user logs in, pools grew.
    let late = pg::connect_as(addr, "late", "late_pass")
        .await
        .unwrap_or_else(|e| panic!("the reloaded user logs in: {}", pg::describe(&e)));
    assert_eq!(pg::query_one_text(&late, "SELECT 40 + 2").await, "42");
    let pools = get_json(&proxy, "/pools").await;
    let sizes: Vec<u64> = pools["clusters"]["pg"]["pools"]["primary"]["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter_map(|c| c["size"].as_u64())
        .collect();
    assert!(
        sizes.contains(&6),
        "primary pool sizes after reload: {sizes:?} ({pools})"
    );
    let shown = get_json(&proxy, "/config").await;
    assert_eq!(shown["log"]["slow_query_threshold"], "5s", "{shown}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_transactions_finish_and_tells_clients_why() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .app_user("admin = true")
        .extra(&admin_section())
        .build();
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();
    let admin = proxy.admin_url();
    let (console, console_conn) = tokio_postgres::connect(
        &pg::conn_string(addr, pg::USER, pg::PASSWORD).replace("dbname=appdb", "dbname=switchyard"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("admin console login");
    let console_conn = tokio::spawn(console_conn);
    console
        .simple_query("SHOW POOLS")
        .await
        .expect("SHOW POOLS");

    let connect = || async {
        let (client, connection) = tokio_postgres::connect(
            &pg::conn_string(addr, pg::USER, pg::PASSWORD),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        (client, tokio::spawn(connection))
    };
    let (idle, idle_conn) = connect().await;
    let (busy, busy_conn) = connect().await;
    let (stuck, stuck_conn) = connect().await;
    idle.simple_query("SELECT 1")
        .await
        .expect("idle client works");
    busy.simple_query("BEGIN").await.expect("begin");
    busy.simple_query("SELECT 1").await.expect("in transaction");
    stuck.simple_query("BEGIN").await.expect("begin");

    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The idle client is told at once, with 57P01.
    let ended = tokio::time::timeout(Duration::from_secs(2), idle_conn)
        .await
        .expect("the idle session ends promptly")
        .expect("connection task");
    let error = ended.expect_err("ended with an error");
    assert_eq!(pg::sqlstate(&error), "57P01", "{}", pg::describe(&error));
    // So is an admin console session.
    let ended = tokio::time::timeout(Duration::from_secs(2), console_conn)
        .await
        .expect("the console session ends promptly")
        .expect("connection task");
    assert_eq!(pg::sqlstate(&ended.expect_err("57P01")), "57P01");
    // Readiness turns off while draining; new clients are not accepted.
    let ready = switchyard_tests::http::try_request(
        Method::GET,
        &format!("{admin}/ready"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Bytes::new(),
    )
    .await;
    if let Ok(reply) = ready {
        assert_eq!(reply.status, 503, "{}", reply.text());
    }
    assert!(
        tokio_postgres::connect(
            &pg::conn_string(addr, pg::USER, pg::PASSWORD),
            tokio_postgres::NoTls
        )
        .await
        .is_err(),
        "a new client is refused while draining"
    );

    // The transaction in progress finishes, then its session ends with 57P01.
    assert_eq!(pg::query_one_text(&busy, "SELECT 2").await, "2");
    busy.simple_query("COMMIT")
        .await
        .expect("commit during drain");
    let ended = tokio::time::timeout(Duration::from_secs(2), busy_conn)
        .await
        .expect("ends after its transaction")
        .expect("connection task");
    assert_eq!(pg::sqlstate(&ended.expect_err("57P01")), "57P01");

    // A transaction still open at the drain timeout (2s) is closed with 57P01, not cut.
    let ended = tokio::time::timeout(Duration::from_secs(5), stuck_conn)
        .await
        .expect("closed at the drain timeout")
        .expect("connection task");
    assert_eq!(pg::sqlstate(&ended.expect_err("57P01")), "57P01");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_requests_are_counted_and_digested() {
    let ch = ClickHouse::start(1);
    let users = "[[user]]\nname = \"alice\"\npassword = \"alice_pw\"\n";
    let config = proxy::config(&ch, "", "", &format!("{users}\n{}", admin_section()));
    let proxy = Proxy::start(&config).await;
    let url = proxy.url_as("alice", "alice_pw");
    for n in [1, 2, 3] {
        let reply = switchyard_tests::http::post(&url, &format!("SELECT {n}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let refused = switchyard_tests::http::post(&url, "SELECT * FROM no_such_table").await;
    assert_eq!(refused.status, 404, "{}", refused.text());

    let text = call(&proxy, Method::GET, "/metrics", Bytes::new())
        .await
        .text();
    let ok = metric(
        &text,
        r#"switchyard_queries_total{frontend="clickhouse-http",user="alice",route="replica",pool="reader",decision="forward",cache="off"}"#,
    );
    assert_eq!(ok, Some(4.0), "{text}");
    let errors = metric(
        &text,
        r#"switchyard_query_errors_total{frontend="clickhouse-http",user="alice",route="replica",pool="reader",decision="forward",cache="off"}"#,
    );
    assert_eq!(errors, Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"switchyard_backend_duration_seconds_count{frontend="clickhouse-http",pool="reader"}"#
        ),
        Some(4.0),
        "{text}"
    );
    assert!(
        text.contains(r#"switchyard_node_up{cluster="ch",pool="writer""#),
        "{text}"
    );
    let digests = get_json(&proxy, "/digests").await;
    let rows = digests["digests"].as_array().expect("rows");
    let select = rows
        .iter()
        .find(|r| r["digest_text"] == "SELECT ?")
        .unwrap_or_else(|| panic!("{digests}"));
    assert_eq!(select["count"], 3);
    assert_eq!(select["protocol"], "clickhouse-http");
    let pools = get_json(&proxy, "/pools").await;
    assert_eq!(
        pools["clusters"]["ch"]["protocol"], "clickhouse-http",
        "{pools}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_drain_finishes_short_requests_and_answers_long_ones() {
    let ch = ClickHouse::start(1);
    let users = "[[user]]\nname = \"alice\"\npassword = \"alice_pw\"\n";
    // proxy::config sets server.drain_timeout = "2s".
    let proxy = Proxy::start(&proxy::config(&ch, "", "", users)).await;
    let url = proxy.url_as("alice", "alice_pw");
    let short = tokio::spawn({
        let url = url.clone();
        async move { switchyard_tests::http::post(&url, "SELECT sleep(1)").await }
    });
    let long = tokio::spawn({
        let url = url.clone();
        async move { switchyard_tests::http::post(&url, "SELECT sleep(3)").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let refused = switchyard_tests::http::try_request(Method::POST, &url, &[], "SELECT 1").await;
    assert!(
        refused.is_err(),
        "a new connection while draining: {refused:?}"
    );
    let short = short.await.expect("short request task");
    assert_eq!(
        short.status,
        200,
        "finished during the drain: {}",
        short.text()
    );
    let long = long.await.expect("long request task");
    assert_eq!(long.status, 503, "{}", long.text());
    assert!(long.text().contains("Code: 394"), "{}", long.text());
    assert!(long.text().contains("shutting down"), "{}", long.text());
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
}

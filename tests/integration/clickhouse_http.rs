//! The ClickHouse HTTP frontend against real clickhouse-server instances: routing, backend users,
//! authentication, failover, cancellation, INSERT streaming and the policy's block and rewrite.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use ::http::Method;
use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{self, enc, post, request};
use switchyard_tests::policies::policy_wasm;
use switchyard_tests::proxy::{Proxy, config};
use switchyard_tests::slow::SlowRelay;

pub const USERS: &str = r#"
[[user]]
name = "alice"
password = "alice_pw"

[[user]]
name = "analyst"
password = "analyst_pw"
backend = { user = "reader", password = "reader_pass" }

[[user]]
name = "office"
password = "office_pw"
allowed_networks = ["10.0.0.0/8"]
"#;

async fn proxy(ch: &ClickHouse, extra: &str) -> Proxy {
    Proxy::start(&config(ch, "", "", &format!("{USERS}\n{extra}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_round_robin_to_replicas_as_reader_and_writes_to_the_primary_as_writer() {
    let ch = ClickHouse::start(2);
    let proxy = proxy(&ch, "").await;
    let url = proxy.url_as("alice", "alice_pw");

    let mut seen = BTreeMap::new();
    for _ in 0..6 {
        let r = post(&url, "SELECT 1 AS routed").await;
        assert_eq!((r.status, r.text().as_str()), (200, "1\n"));
        *seen.entry(r.node().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([("ch0".to_owned(), 3), ("ch1".to_owned(), 3)])
    );

    let r = post(
        &url,
        "CREATE TABLE default.routed (a UInt8) ENGINE = Memory",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.node(), "ch0");
    let r = post(
        &format!(
            "{url}&query={}",
            enc("INSERT INTO default.routed FORMAT CSV")
        ),
        "1\n2\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        ch.node(0).query("SELECT count() FROM default.routed"),
        "2\n"
    );
    assert_eq!(ch.node(1).query("EXISTS TABLE default.routed"), "0\n");

    // Each query's log entry may land after its client got the answer: settle before reading.
    for (node, needle, runs) in [
        (0, "CREATE TABLE default.routed", 1),
        (0, "INSERT INTO default.routed", 1),
        (1, "SELECT 1 AS routed", 3),
    ] {
        assert_eq!(
            ch.node(node).finished_queries_settled(needle, runs).await,
            runs,
            "{needle} on node {node}"
        );
    }
    let users = |node: usize, like: &str| {
        ch.node(node).query(&format!(
            "SELECT DISTINCT user FROM system.query_log WHERE type = 2 AND query LIKE '{like}'"
        ))
    };
    assert_eq!(users(0, "CREATE TABLE default.routed%"), "writer\n");
    assert_eq!(users(0, "INSERT INTO default.routed%"), "writer\n");
    assert_eq!(users(1, "SELECT 1 AS routed"), "reader\n");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_user_cannot_write() {
    let ch = ClickHouse::start(1);
    ch.node(0)
        .query("CREATE TABLE default.guarded (a UInt8) ENGINE = Memory");
    let proxy = proxy(&ch, "").await;
    // `analyst` always runs as the read-only ClickHouse user, whatever the route.
    let url = proxy.url_as("analyst", "analyst_pw");
    let r = post(&url, "INSERT INTO default.guarded VALUES (1)").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().starts_with("Code: 164"), "{}", r.text());
    assert!(r.text().contains("readonly mode"), "{}", r.text());
    assert_eq!(
        ch.node(0).query("SELECT count() FROM default.guarded"),
        "0\n"
    );
    assert_eq!(
        post(&url, "SELECT count() FROM default.guarded")
            .await
            .text(),
        "0\n"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_methods_networks_and_refusals_look_like_clickhouse() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch, "").await;
    let base = proxy.url();

    let r = post(&proxy.url_as("alice", "wrong"), "SELECT 1").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text(),
        "Code: 516, e.displayText() = DB::Exception: alice: Authentication failed: password is incorrect \
         or there is no user with such name, e.what() = DB::Exception\n"
    );
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(
        post(&proxy.url_as("mallory", "x"), "SELECT 1").await.status,
        401
    );
    // `default` is not a proxy user here.
    assert_eq!(post(&base, "SELECT 1").await.status, 401);

    let headers = [
        ("X-ClickHouse-User", "alice"),
        ("X-ClickHouse-Key", "alice_pw"),
    ];
    let r = request(Method::POST, &base, &headers, "SELECT 2").await;
    assert_eq!((r.status, r.text().as_str()), (200, "2\n"));
    // alice:alice_pw
    let basic = [("Authorization", "Basic YWxpY2U6YWxpY2VfcHc=")];
    let r = request(Method::POST, &base, &basic, "SELECT 3").await;
    assert_eq!((r.status, r.text().as_str()), (200, "3\n"));
    let mixed = request(
        Method::POST,
        &format!("{base}/?user=alice"),
        &headers,
        "SELECT 1",
    )
    .await;
    assert_eq!(mixed.status, 401);
    assert!(mixed.text().starts_with("Code: 194"), "{}", mixed.text());

    let r = post(&proxy.url_as("office", "office_pw"), "SELECT 1").await;
    assert_eq!(r.status, 403);
    assert!(r.text().starts_with("Code: 195"), "{}", r.text());
    assert!(
        r.text()
            .contains("not allowed to connect from address 127.0.0.1")
    );

    let ping = http::get(&format!("{base}/ping")).await;
    assert_eq!((ping.status, ping.text().as_str()), (200, "Ok.\n"));
    let get = http::get(&format!(
        "{}&query={}",
        proxy.url_as("alice", "alice_pw"),
        enc("SELECT 4")
    ))
    .await;
    assert_eq!((get.status, get.text().as_str()), (200, "4\n"));
    let put = request(Method::PUT, &base, &[], "SELECT 1").await;
    assert_eq!(put.status, 501);
    let empty = post(&proxy.url_as("alice", "alice_pw"), "").await;
    assert_eq!(empty.status, 400);
    assert!(empty.text().contains("Empty query"));
    assert_eq!(empty.x_cache(), "N/A");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_node_takes_reads_again_once_it_is_back() {
    let ch = ClickHouse::start(2);
    // ch1 is reached through a relay that can go away and come back on the same address.
    let ch1: std::net::SocketAddr = ch.node(1).addr().parse().expect("ch1 address");
    let relay = SlowRelay::start(ch1, Duration::ZERO).await;
    let relay_addr = relay.addr();
    let (ch0, ch1_addr) = (ch.node(0).addr(), ch.node(1).addr());
    let config = config(&ch, "", "", USERS).replace(
        &format!("nodes = [\"{ch0}\", \"{ch1_addr}\"]"),
        &format!("nodes = [\"{ch0}\", \"{relay_addr}\"]"),
    );
    assert!(config.contains(&relay_addr.to_string()), "{config}");
    let proxy = Proxy::start(&config).await;
    let url = proxy.url_as("alice", "alice_pw");
    let nodes = |replies: &[http::Reply]| -> Vec<String> {
        replies.iter().map(|r| r.node().to_owned()).collect()
    };
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(post(&url, "SELECT 1").await);
    }
    assert!(
        nodes(&replies).iter().any(|n| n == "ch1"),
        "{:?}",
        nodes(&replies)
    );

    // ch1 goes away: every read is answered by ch0 (retried there, then ch1 is banned).
    drop(relay);
    for i in 0..8 {
        let r = post(&url, "SELECT 1").await;
        assert_eq!((r.status, r.node()), (200, "ch0"), "read {i}: {}", r.text());
    }
    let node_up = || {
        let text = switchyard::metrics::render(&proxy.deps.metrics).expect("metrics");
        let series =
            format!("switchyard_node_up{{cluster=\"ch\",pool=\"reader\",node=\"{relay_addr}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        node_up(),
        "0.0",
        "ch1 is out of rotation (banned or unhealthy)"
    );

    // ch1 is back on its address: after its ban (300 ms) and a passing health check it takes
    // reads again, with no restart of the proxy.
    let _relay = SlowRelay::start_at(relay_addr, ch1, Duration::ZERO).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = post(&url, "SELECT 1").await;
        assert_eq!(r.status, 200, "{}", r.text());
        if r.node() == "ch1" {
            assert_eq!(node_up(), "1.0");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ch1 took no read within 10 s of coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_still_answered_after_a_node_is_stopped() {
    let mut ch = ClickHouse::start(2);
    let proxy = proxy(&ch, "").await;
    let url = proxy.url_as("alice", "alice_pw");
    for _ in 0..4 {
        assert_eq!(post(&url, "SELECT 1").await.status, 200);
    }
    ch.stop(1);
    // The first read that lands on ch1 fails to connect and is retried on ch0; the node is
    // banned, and the health checker keeps it out.
    for i in 0..10 {
        let r = post(&url, "SELECT 1").await;
        assert_eq!((r.status, r.text().as_str()), (200, "1\n"), "read {i}");
        assert_eq!(r.node(), "ch0");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_gets_its_query_killed() {
    let ch = ClickHouse::start(1);
    let proxy = proxy(&ch, "").await;
    let url = proxy.url_as("alice", "alice_pw");
    let endless = "SELECT count() FROM system.numbers WHERE number != 12345";
    let cut = tokio::time::timeout(Duration::from_millis(700), post(&url, endless)).await;
    assert!(cut.is_err(), "the endless query answered");
    let running = || {
        ch.node(0).query(
            "SELECT count() FROM system.processes WHERE position(query, 'number != 12345') > 0 \
             AND position(query, 'system.processes') = 0",
        )
    };
    let started = Instant::now();
    while running() != "0\n" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the query still runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `KILL QUERY ... SYNC` returns only after the killed query is gone, so it can reach the
    // query log a moment after `system.processes` is empty: wait for it too.
    let kills = ch
        .node(0)
        .finished_queries_settled("KILL QUERY WHERE query_id = 'switchyard-", 1)
        .await;
    assert_eq!(kills, 1, "the proxy sent exactly one KILL QUERY");
    proxy.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_stream_their_data_plain_or_compressed() {
    let ch = ClickHouse::start(1);
    ch.node(0)
        .query("CREATE TABLE default.big (a UInt64, s String) ENGINE = Memory");
    let proxy = proxy(&ch, "").await;
    let url = proxy.url_as("alice", "alice_pw");
    let rows = 200_000u64;
    let csv: String = (0..rows).map(|i| format!("{i},row number {i}\n")).collect();

    // Statement in the parameter, data in the body.
    let with_param = format!("{url}&query={}", enc("INSERT INTO default.big FORMAT CSV"));
    let r = post(&with_param, &csv).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Statement at the head of a body far larger than the proxy reads to classify it.
    let r = post(&url, &format!("INSERT INTO default.big FORMAT CSV\n{csv}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The same gzip-compressed, statement inside, and statement in the parameter.
    let body = gzip(format!("INSERT INTO default.big FORMAT CSV\n{csv}").as_bytes());
    let r = request(Method::POST, &url, &[("Content-Encoding", "gzip")], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(
        Method::POST,
        &with_param,
        &[("Content-Encoding", "gzip")],
        gzip(csv.as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A small compressed statement is decoded whole.
    let r = request(
        Method::POST,
        &url,
        &[("Content-Encoding", "gzip")],
        gzip(b"SELECT 7"),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "7\n"));
    // VALUES with a small body is classified whole.
    let r = post(&url, "INSERT INTO default.big VALUES (1, 'x')").await;
    assert_eq!(r.status, 200, "{}", r.text());

    assert_eq!(
        ch.node(0).query("SELECT count(), sum(a) FROM default.big"),
        format!("{}\t{}\n", 4 * rows + 1, 4 * (rows * (rows - 1) / 2) + 1)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_blocks_and_rewrites() {
    let ch = ClickHouse::start(1);
    let guard = format!(
        "[policy]\npath = \"{}\"\n[policy.config]\n\"limit.*\" = \"3\"\n",
        policy_wasm("guard").display()
    );
    let proxy = proxy(&ch, &guard).await;
    let url = proxy.url_as("alice", "alice_pw");
    let r = post(&url, "DROP TABLE IF EXISTS default.anything").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        "Code: 497, e.displayText() = DB::Exception: guard: DROP TABLE is not allowed, e.what() = DB::Exception\n"
    );
    // An unbounded SELECT gets LIMIT 3: the backend ran the rewritten statement.
    let r = post(&url, "SELECT number FROM system.numbers").await;
    assert_eq!((r.status, r.text().as_str()), (200, "0\n1\n2\n"));
    let get = http::get(&format!(
        "{url}&query={}",
        enc("SELECT number FROM system.numbers")
    ))
    .await;
    assert_eq!(get.text(), "0\n1\n2\n");
    assert_eq!(
        ch.node(0)
            .finished_queries_settled("FROM system.numbers LIMIT 3", 2)
            .await,
        2
    );
    proxy.stop().await;

    let trap = format!(
        "[policy]\npath = \"{}\"\nfail_mode = \"fail-closed\"\n",
        policy_wasm("trap").display()
    );
    let proxy = Proxy::start(&config(&ch, "", "", &format!("{USERS}\n{trap}"))).await;
    let r = post(&proxy.url_as("alice", "alice_pw"), "SELECT 1").await;
    assert_eq!(r.status, 500);
    assert!(
        r.text()
            .starts_with("Code: 1001, e.displayText() = DB::Exception: policy"),
        "{}",
        r.text()
    );
    proxy.stop().await;
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("deflate into memory");
    e.finish().expect("deflate into memory")
}

/// A policy rewrites an INSERT whose statement is inside a compressed body: the rewritten
/// statement runs, with the data decoded by the proxy as it streams (several MB, many chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_insert_inside_a_compressed_body_streams_its_data_decoded() {
    let ch = ClickHouse::start(1);
    for table in ["incoming", "landed"] {
        ch.node(0).query(&format!(
            "CREATE TABLE default.{table} (a UInt64, s String) ENGINE = Memory"
        ));
    }
    let retarget = format!(
        "[policy]\npath = \"{}\"\n[policy.config]\nfrom = \"default.incoming\"\nto = \"default.landed\"\n",
        policy_wasm("retarget").display()
    );
    let proxy = proxy(&ch, &retarget).await;
    let url = proxy.url_as("alice", "alice_pw");
    let rows = 200_000u64;
    let csv: String = (0..rows).map(|i| format!("{i},row number {i}\n")).collect();
    let insert = format!("INSERT INTO default.incoming FORMAT CSV\n{csv}");
    assert!(insert.len() > 4 << 20, "{} bytes decoded", insert.len());

    for (encoding, body) in [
        ("gzip", gzip(insert.as_bytes())),
        ("deflate", deflate(insert.as_bytes())),
    ] {
        let r = request(Method::POST, &url, &[("Content-Encoding", encoding)], body).await;
        assert_eq!(r.status, 200, "{encoding}: {}", r.text());
    }
    assert_eq!(
        ch.node(0)
            .query("SELECT count(), sum(a), countIf(s = concat('row number ', toString(a))) FROM default.landed"),
        format!("{}\t{}\t{}\n", 2 * rows, rows * (rows - 1), 2 * rows)
    );
    assert_eq!(
        ch.node(0).query("SELECT count() FROM default.incoming"),
        "0\n"
    );
    assert_eq!(
        ch.node(0)
            .finished_queries_settled("INSERT INTO default.landed FORMAT CSV", 2)
            .await,
        2
    );

    // A stream damaged past what the proxy reads to find the statement (an invalid deflate block
    // after a sync flush, so everything before it decodes to whole rows and ClickHouse cannot
    // fail first): the client gets the proxy's error about its body, not a gateway error, and
    // the proxy never ends the body as if it were whole: ClickHouse fails the INSERT. What a
    // Memory table had already taken of its first rows stays there, as when a client's own
    // connection breaks mid-body, but never more than the rows before the damage.
    let half = insert.len() / 2;
    let half = insert[..half].rfind('\n').map_or(half, |i| i + 1);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&insert.as_bytes()[..half])
        .expect("gzip into memory");
    e.flush().expect("gzip into memory");
    let mut corrupt = e.get_ref().clone();
    corrupt.extend_from_slice(&[0xff; 64]);
    let r = request(Method::POST, &url, &[("Content-Encoding", "gzip")], corrupt).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.text(),
        "Code: 36, e.displayText() = DB::Exception: Cannot read the request body: cannot decompress \
         it: corrupt deflate stream, e.what() = DB::Exception\n"
    );
    let landed: u64 = ch
        .node(0)
        .query("SELECT count() FROM default.landed")
        .trim()
        .parse()
        .expect("a count");
    assert!(
        (2 * rows..=2 * rows + rows / 2).contains(&landed),
        "{landed} rows landed"
    );
    assert_eq!(
        ch.node(0)
            .queries_with_an_exception_settled("INSERT INTO default.landed FORMAT CSV", 1)
            .await,
        1,
        "ClickHouse took the damaged INSERT for a whole one"
    );
    // The proxy still serves the next request.
    let r = post(&url, "SELECT count() FROM default.landed").await;
    assert_eq!(r.status, 200, "{}", r.text());
    proxy.stop().await;

    // `max_body_size` counts the compressed bytes, those read to find the statement included;
    // crossing it while the data streams is the client's 413, as on every other path.
    let limited = config(&ch, "", "", &format!("{USERS}\n{retarget}")).replacen(
        "cluster = \"ch\"\n",
        "cluster = \"ch\"\nmax_body_size = \"256KiB\"\n",
        1,
    );
    let proxy = Proxy::start(&limited).await;
    let body = gzip(insert.as_bytes());
    assert!(body.len() > 512 << 10, "{} compressed bytes", body.len());
    let r = request(
        Method::POST,
        &proxy.url_as("alice", "alice_pw"),
        &[("Content-Encoding", "gzip")],
        body,
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().starts_with("Code: 307"), "{}", r.text());
    let after: u64 = ch
        .node(0)
        .query("SELECT count() FROM default.landed")
        .trim()
        .parse()
        .expect("a count");
    assert!(
        (landed..landed + rows).contains(&after),
        "{after} rows after {landed}"
    );
    assert_eq!(
        ch.node(0)
            .queries_with_an_exception_settled("INSERT INTO default.landed FORMAT CSV", 2)
            .await,
        2,
        "ClickHouse took the INSERT cut at max_body_size for a whole one"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_node_and_its_temporary_tables() {
    let ch = ClickHouse::start(2);
    let proxy = proxy(&ch, "").await;
    let url = format!("{}&session_id=s1", proxy.url_as("alice", "alice_pw"));
    let r = post(&url, "CREATE TEMPORARY TABLE scratch (a UInt8)").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let insert = format!("{url}&query={}", enc("INSERT INTO scratch FORMAT CSV"));
    assert_eq!(post(&insert, "7\n").await.status, 200);
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..4 {
        // Reads in a session are not spread over the replicas: the table lives on one node.
        let r = post(&url, "SELECT sum(a) FROM scratch").await;
        assert_eq!((r.status, r.text().as_str()), (200, "7\n"));
        nodes.insert(r.node().to_owned());
    }
    assert_eq!(nodes.len(), 1);
    proxy.stop().await;
}

/// `tls` on a ClickHouse HTTP listener serves HTTPS (rustls), HTTP/1.1 and HTTP/2 (ALPN), and
/// plain HTTP on that port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_http1_and_http2() {
    let tls = switchyard_tests::tls::SelfSigned::new();
    let (cert, key) = (&tls.cert, &tls.key);
    let ch = ClickHouse::start(1);
    let text = config(&ch, "", "", USERS).replacen(
        "cluster = \"ch\"\n",
        &format!(
            "cluster = \"ch\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    let proxy = Proxy::start(&text).await;
    let url = format!(
        "https://{}/?user=alice&password=alice_pw&query=SELECT%2040%2B2",
        proxy.addr()
    );
    for version in ["--http1.1", "--http2"] {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-k", version, "-w", "\n%{http_version}", &url])
            .output()
            .await
            .expect("run curl");
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "curl {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = if version == "--http2" {
            "42\n\n2"
        } else {
            "42\n\n1.1"
        };
        assert_eq!(body, expected, "curl {version}");
    }
    let plain = tokio::process::Command::new("curl")
        .args(["-sS", "-m", "5", &url.replacen("https://", "http://", 1)])
        .output()
        .await
        .expect("run curl");
    assert!(
        !plain.status.success(),
        "plain HTTP must not be served on an HTTPS listener"
    );
    proxy.stop().await;
}

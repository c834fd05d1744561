//! Clients that attack the proxy rather than use it: protocol garbage meant to get a node banned,
//! connections that never finish logging in, slow HTTP heads, user enumeration and password
//! guessing. Each test pins a defence described in SECURITY.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use switchyard_tests::http;
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::wire::{self, Message, V3, Wire, describe, field, message, startup_packet};

/// One failure bans a node for a minute: a ban caused by a client's garbage would show.
const LONG_BANS: &str =
    "health = { interval = \"1s\", timeout = \"1s\", failures_before_ban = 1, ban_time = \"60s\" }";

const TRUST_USER: &str = "[[user]]\nname = \"rawtrust\"\nauth = \"trust\"\n";

fn other_source() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

/// The garbage a hostile client sends inside a transaction, and what the proxy must answer.
fn garbage(i: usize) -> (&'static str, BytesMut) {
    let sync = message(b'S', b"");
    let with_sync = |mut m: BytesMut| {
        m.extend_from_slice(&sync);
        m
    };
    match i % 5 {
        0 => ("type z", with_sync(message(b'z', b"garbage"))),
        1 => ("type 0", with_sync(message(0, b""))),
        2 => ("a password message", with_sync(message(b'p', b"secret\0"))),
        3 => (
            "a backend message type",
            with_sync(message(b'R', &[0, 0, 0, 0])),
        ),
        _ => ("a Sync of 20,000 bytes", message(b'S', &[0u8; 20_000])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_transaction_never_bans_the_primary() {
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), "CREATE TABLE writes (x int)");
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .primary_pool(LONG_BANS)
            .replica_pool(LONG_BANS)
            .extra(TRUST_USER)
            .extra("[admin]\nbind = \"127.0.0.1:0\"\n")
            .build(),
    )
    .await;
    let addr = proxy.addr();

    // A writer through the same pool for as long as the flood lasts.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let client = pg::connect(addr).await;
            let mut first_error = None;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 100 {
                i += 1;
                match client
                    .batch_execute(&format!("INSERT INTO writes VALUES ({i})"))
                    .await
                {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.get_or_insert_with(|| pg::describe(&e));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            first_error
        })
    };

    // Many connections of one client: each opens a transaction, then sends garbage.
    let flood: Vec<_> = (0..6)
        .map(|worker| {
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for round in 0..8 {
                    let (what, bytes) = garbage(worker + round);
                    let mut raw = Wire::tcp(addr).await;
                    raw.login("rawtrust").await;
                    raw.send(&wire::query(b"BEGIN")).await;
                    raw.until_ready().await;
                    raw.send(&wire::query(b"INSERT INTO writes VALUES (-1)"))
                        .await;
                    raw.until_ready().await;
                    raw.send(&bytes).await;
                    answers.push((what, raw.until_closed().await));
                }
                answers
            })
        })
        .collect();
    for task in flood {
        for (what, msgs) in task.await.expect("flood task") {
            assert!(
                !msgs.is_empty() && msgs.iter().all(|(t, _)| *t == b'E'),
                "{what}: {}",
                describe(&msgs)
            );
            for (_, body) in &msgs {
                assert_eq!(field(body, b'V').as_deref(), Some("FATAL"), "{what}");
                assert_eq!(field(body, b'C').as_deref(), Some("08P01"), "{what}");
            }
            if what == "type z" {
                assert_eq!(
                    field(&msgs[0].1, b'M').as_deref(),
                    Some("invalid frontend message type 122"),
                    "PostgreSQL's words"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let first_error = writer.await.expect("writer task");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "writes failed during the flood ({} succeeded); first error: {first_error:?}",
        ok.load(Ordering::Relaxed)
    );
    let pools = http::get(&format!("{}/pools", proxy.admin_url())).await;
    assert_eq!(pools.status, 200);
    let text = pools.text();
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let bans = banned_nodes(&json);
    assert_eq!(bans, (0, 2), "(banned, nodes) after the flood: {text}");
    // The garbage never reached PostgreSQL: nothing of it in the server's log.
    let log = pg.log_of(pg.primary_port());
    assert!(
        !log.contains("invalid frontend message type"),
        "a server saw the garbage: {}",
        pg::tail(&log, 2000)
    );
    proxy.stop().await;
}

/// How many nodes `GET /pools` shows banned, of how many.
fn banned_nodes(json: &serde_json::Value) -> (usize, usize) {
    match json {
        serde_json::Value::Object(map) => {
            let here = match map.get("banned") {
                Some(serde_json::Value::Bool(b)) => (usize::from(*b), 1),
                _ => (0, 0),
            };
            map.values()
                .map(banned_nodes)
                .fold(here, |(b, n), (b2, n2)| (b + b2, n + n2))
        }
        serde_json::Value::Array(items) => items
            .iter()
            .map(banned_nodes)
            .fold((0, 0), |(b, n), (b2, n2)| (b + b2, n + n2)),
        _ => (0, 0),
    }
}

/// The SASL request, as sent to a SCRAM user (and to every name that must look like one).
async fn sasl_started(wire: &mut Wire, user: &str) -> Vec<Message> {
    wire.send(&startup_packet(
        V3,
        &[("user", user), ("database", "appdb")],
    ))
    .await;
    let mut msgs = Vec::new();
    while let Some(m) = wire.next().await {
        let done = m.0 == b'R';
        msgs.push(m);
        if done {
            break;
        }
    }
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_bounded_in_size_time_and_number() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .listener(
                "login_timeout = \"1s\"\nmax_pending_logins = 8\nmax_pending_logins_per_source = 4",
            )
            .extra(TRUST_USER)
            .build(),
    )
    .await;
    let addr = proxy.addr();

    // A SASL message announced at 60 MiB: refused at once, nothing buffered for it.
    let mut wire = Wire::tcp(addr).await;
    let msgs = sasl_started(&mut wire, pg::USER).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'R'), "{}", describe(&msgs));
    let mut huge = BytesMut::new();
    huge.put_u8(b'p');
    huge.put_i32(60 << 20);
    huge.put_slice(b"SCRAM-SHA-256\0");
    wire.send(&huge).await;
    let started = Instant::now();
    let msgs = wire.until_closed().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    assert_eq!(wire::shape(&msgs), ["E:FATAL:08P01"], "{}", describe(&msgs));

    // A startup packet over 10,000 bytes: PostgreSQL's words.
    let mut wire = Wire::tcp(addr).await;
    let big = "x".repeat(20_000);
    wire.send(&startup_packet(
        V3,
        &[("user", "rawtrust"), ("options", &big)],
    ))
    .await;
    let msgs = wire.until_closed().await;
    assert_eq!(wire::shape(&msgs), ["E:FATAL:08P01"], "{}", describe(&msgs));
    assert_eq!(
        field(&msgs[0].1, b'M').as_deref(),
        Some("invalid length of startup packet")
    );

    // Silent connections: four from one address are all it may hold; the fifth is refused at
    // once, while another address still gets in.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Wire::tcp(addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = Wire::tcp(addr).await;
    let msgs = fifth.until_closed().await;
    assert_eq!(wire::shape(&msgs), ["E:FATAL:53300"], "{}", describe(&msgs));
    let text = field(&msgs[0].1, b'M').unwrap_or_default();
    assert!(text.contains("max_pending_logins_per_source"), "{text}");
    let mut elsewhere = Wire::tcp_from(other_source(), addr).await;
    elsewhere.login("rawtrust").await;
    elsewhere.send(&wire::query(b"SELECT 1")).await;
    elsewhere.until_ready().await;

    // login_timeout: the silent ones are closed after a second, and their places freed.
    let started = Instant::now();
    for mut s in silent {
        let msgs = s.until_closed().await;
        assert!(
            msgs.is_empty(),
            "closed without a word: {}",
            describe(&msgs)
        );
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    let mut again = Wire::tcp(addr).await;
    again.login("rawtrust").await;
    proxy.stop().await;
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The proxy binary on `config` (whose listener binds `LISTEN`), with its stderr collected.
struct Binary {
    child: tokio::process::Child,
    addr: SocketAddr,
    stderr: Arc<std::sync::Mutex<String>>,
    _dir: tempfile::TempDir,
}

const LISTEN: &str = "bind = \"127.0.0.1:0\"";

impl Binary {
    async fn start(config: &str) -> Binary {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = config.replacen(LISTEN, &format!("bind = \"{addr}\""), 1);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child =
            tokio::process::Command::new(switchyard_tests::policies::switchyard_binary())
                .arg("run")
                .arg("--config")
                .arg(&path)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start switchyard");
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "switchyard did not listen: {}",
                stderr.lock().unwrap_or_else(|p| p.into_inner())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Binary {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// 1,000 connections stop half way through a SCRAM login, each holding an almost complete
/// 64 KiB authentication message; once they close, the proxy's memory comes back down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_logins_gives_its_memory_back() {
    const FLOOD: usize = 1_000;
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg)
        .listener(
            "login_timeout = \"1m\"\nmax_pending_logins = 5000\nmax_pending_logins_per_source = 5000",
        )
        .build();
    let proxy = Binary::start(&config).await;
    let addr = proxy.addr;
    // Warm up: a real login and query, so the steady state includes a session's worth.
    for _ in 0..3 {
        let client = pg::connect(addr).await;
        pg::query_one_text(&client, "SELECT 1").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(proxy.pid());

    let mut open = Vec::with_capacity(FLOOD);
    for chunk in 0..FLOOD / 50 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                tokio::spawn(async move {
                    let mut wire = Wire::tcp(addr).await;
                    let msgs = sasl_started(&mut wire, pg::USER).await;
                    assert_eq!(msgs.last().map(|m| m.0), Some(b'R'));
                    let mut partial = BytesMut::new();
                    partial.put_u8(b'p');
                    partial.put_i32(65_000);
                    partial.put_slice(&[b'x'; 60_000]);
                    wire.send(&partial).await;
                    wire
                })
            })
            .collect();
        for task in batch {
            open.push(task.await.unwrap_or_else(|e| panic!("batch {chunk}: {e}")));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_kib(proxy.pid());
    drop(open);
    // Memory freed after a runtime thread last went idle is given back when it next works: the
    // proxy sees ordinary clients now and then, as any proxy does. Up to 5 s of that.
    let mut after = rss_kib(proxy.pid());
    for _ in 0..10 {
        if after <= before + before / 10 {
            break;
        }
        let client = pg::connect(addr).await;
        pg::query_one_text(&client, "SELECT 1").await;
        drop(client);
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss_kib(proxy.pid());
    }
    eprintln!(
        "half-open login flood of {FLOOD}: RSS before {before} KiB, during {during} KiB, after {after} KiB"
    );
    // Still serving.
    let client = pg::connect(addr).await;
    assert_eq!(pg::query_one_text(&client, "SELECT 7").await, "7");
    assert!(
        during < before + 200 * 1024,
        "the flood cost more than 200 MiB: {before} → {during} KiB"
    );
    assert!(
        after <= before + before / 10,
        "RSS did not come back within 10%: before {before} KiB, during {during} KiB, after {after} KiB"
    );
}

/// Sends `head` one byte a second; returns when the proxy closes the connection (or the head
/// is sent).
async fn slow_header(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return started.elapsed();
    };
    let head = b"GET /?query=SELECT%201 HTTP/1.1\r\nHost: slow\r\nX-Slow: yes\r\n\r\n";
    let mut probe = [0u8; 256];
    for b in head {
        if stream.write_all(&[*b]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => break,
            Err(_) => {}
        }
    }
    started.elapsed()
}

/// A raw HTTP/1.1 GET from `from`; the status line and the body.
async fn get_from(from: IpAddr, addr: SocketAddr, target: &str) -> Result<String, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(from, 0))
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_do_not_keep_a_request_from_being_answered() {
    let ch = switchyard_tests::clickhouse::ClickHouse::start(1);
    let config = switchyard_tests::proxy::config(
        &ch,
        "",
        "",
        "[[user]]\nname = \"alice\"\npassword = \"alice_pw\"\n",
    )
    .replacen(
        "cluster = \"ch\"\n",
        "cluster = \"ch\"\nmax_connections = 100\nmax_connections_per_source = 50\n\
         header_timeout = \"3s\"\n",
        1,
    );
    let proxy = Proxy::start(&config).await;
    let addr = proxy.addr();

    // 100 clients trickling a head in at one byte a second.
    let slow: Vec<_> = (0..100).map(|_| tokio::spawn(slow_header(addr))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A real request from another address is answered at once.
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        get_from(
            other_source(),
            addr,
            "/?query=SELECT%2042&user=alice&password=alice_pw",
        ),
    )
    .await
    .expect("answered within 2 s while slow clients hold connections")
    .expect("the request");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The body may come chunked.
    assert!(answer.contains("\r\n42\n"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The slow ones were cut: over the address's cap at once, the rest at header_timeout.
    let mut held = Vec::new();
    for task in slow {
        held.push(task.await.expect("slow client"));
    }
    held.sort();
    assert!(
        held[49] < Duration::from_secs(1),
        "50 refused at once: {held:?}"
    );
    assert!(
        held[99] < Duration::from_secs(5),
        "all cut by the header timeout: {held:?}"
    );
    let metrics = switchyard::metrics::render(&proxy.deps.metrics).expect("metrics");
    assert!(
        metrics.contains(
            "switchyard_connections_refused_total{frontend=\"clickhouse-http\",reason=\"connections_per_source\"} 50"
        ),
        "{metrics}"
    );
    proxy.stop().await;
}

/// A SCRAM exchange up to the server's verdict on a wrong proof: the messages, with the parts
/// that differ by design (nonces, the user's name) normalised.
async fn wrong_proof_transcript(addr: SocketAddr, user: &str) -> (Vec<String>, String, String) {
    let mut wire = Wire::tcp(addr).await;
    let mut shapes = Vec::new();
    let msgs = sasl_started(&mut wire, user).await;
    shapes.extend(wire::shape(&msgs));
    let sasl = &msgs.last().expect("an answer").1;
    assert!(
        sasl.starts_with(&[0, 0, 0, 10]),
        "{user}: {}",
        describe(&msgs)
    );
    let client_first = "n,,n=,r=abcdefghijklmnopqrstuvwx";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(client_first.len() as i32).to_be_bytes());
    body.extend_from_slice(client_first.as_bytes());
    wire.send(&message(b'p', &body)).await;
    let (tag, cont) = wire.next().await.expect("SASLContinue");
    shapes.push((tag as char).to_string());
    let server_first = String::from_utf8_lossy(&cont[4..]).into_owned();
    let mut parts = server_first.split(',');
    let nonce = parts.next().unwrap_or_default().to_owned();
    let salt = parts.next().unwrap_or_default().to_owned();
    let iterations = parts.next().unwrap_or_default().to_owned();
    assert!(
        nonce.starts_with("r=abcdefghijklmnopqrstuvwx"),
        "{server_first}"
    );
    shapes.push(format!("nonce of {} chars", nonce.len()));
    shapes.push(format!("salt of {} chars", salt.len()));
    shapes.push(iterations);
    let client_final = format!("c=biws,{nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    wire.send(&message(b'p', client_final.as_bytes())).await;
    let end = wire.until_closed().await;
    shapes.extend(wire::shape(&end));
    let text = end
        .first()
        .and_then(|(_, b)| field(b, b'M'))
        .unwrap_or_default()
        .replace(&format!("\"{user}\""), "\"<user>\"");
    (shapes, text, salt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_look_like_wrong_passwords_and_guessing_is_throttled() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(
        &PgConfig::new(&pg)
            .listener("max_login_failures_per_source = 6\nlogin_failure_window = \"1m\"")
            .extra("[[user]]\nname = \"faraway\"\npassword = \"faraway_pw\"\nallowed_networks = [\"10.0.0.0/8\"]\n")
            .build(),
    )
    .await;
    let addr = proxy.addr();

    let (known, known_text, _) = wrong_proof_transcript(addr, pg::USER).await;
    let (unknown, unknown_text, salt) = wrong_proof_transcript(addr, "nosuchuser").await;
    let (_, _, salt_again) = wrong_proof_transcript(addr, "nosuchuser").await;
    let (elsewhere, elsewhere_text, _) = wrong_proof_transcript(addr, "faraway").await;
    assert_eq!(known, unknown, "the same exchange for an unknown user");
    assert_eq!(known_text, unknown_text);
    assert_eq!(known, elsewhere, "and for a user not allowed from here");
    assert_eq!(known_text, elsewhere_text);
    assert_eq!(
        known_text,
        "password authentication failed for user \"<user>\""
    );
    assert!(known.contains(&"E:FATAL:28P01".to_owned()), "{known:?}");
    assert!(known.contains(&"i=4096".to_owned()), "{known:?}");
    assert_eq!(
        salt, salt_again,
        "an unknown name keeps its salt, as a user does"
    );

    // Four failures so far from this address; two more reach the limit of six.
    for _ in 0..2 {
        let e = pg::connect_as(addr, "nosuchuser", "guess")
            .await
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(pg::sqlstate(&e), "28P01", "{}", pg::describe(&e));
    }
    // Now even the right password is turned away from this address for the window...
    let e = pg::connect_as(addr, pg::USER, pg::PASSWORD)
        .await
        .map(|_| ())
        .expect_err("throttled");
    assert_eq!(pg::sqlstate(&e), "28000", "{}", pg::describe(&e));
    assert!(
        pg::describe(&e).contains("too many failed logins"),
        "{}",
        pg::describe(&e)
    );
    // ...while another address is not affected.
    let mut other = Wire::tcp_from(other_source(), addr).await;
    let msgs = sasl_started(&mut other, pg::USER).await;
    assert_eq!(msgs.last().map(|m| m.0), Some(b'R'), "{}", describe(&msgs));

    let metrics = switchyard::metrics::render(&proxy.deps.metrics).expect("metrics");
    assert!(
        metrics.contains("switchyard_login_failures_total 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "switchyard_connections_refused_total{frontend=\"postgres\",reason=\"login_failures\"} 1"
        ),
        "{metrics}"
    );
    proxy.stop().await;
}

/// While Redis is down, every write's invalidation misses the other replicas; the proxy says
/// so a few times per interval, not once per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_logs_a_bounded_number_of_warnings() {
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), "CREATE TABLE invalidated (x int)");
    let mut redis = switchyard_tests::redis::RedisServer::start();
    let config = PgConfig::new(&pg)
        .extra(&format!(
            "[cache]\nenabled = true\n[cache.redis]\nurl = \"{}\"\ntimeout = \"100ms\"\n",
            redis.url()
        ))
        .build();
    let proxy = Binary::start(&config).await;
    let client = pg::connect(proxy.addr).await;
    client
        .batch_execute("INSERT INTO invalidated VALUES (0)")
        .await
        .expect("a write with Redis up");
    redis.kill();
    const WRITES: usize = 300;
    for i in 0..WRITES {
        client
            .batch_execute(&format!("INSERT INTO invalidated VALUES ({i})"))
            .await
            .unwrap_or_else(|e| panic!("write {i} with Redis down: {}", pg::describe(&e)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = proxy.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("cache invalidation did not reach every replica"))
        .count();
    eprintln!("{WRITES} writes with Redis down: {lines} invalidation warnings");
    assert!(lines >= 1, "the outage is logged: {log}");
    assert!(lines <= 10, "{lines} warnings for {WRITES} writes:\n{log}");
}

//! Wire-level corners where the proxy must answer as PostgreSQL 15 does, each played over raw
//! sockets through the proxy and straight against a server and compared: malformed text
//! answered with an ERROR instead of a FATAL, protocol version negotiation, repeated
//! SSLRequests; and a read that failed on every node answered with an ERROR.

use std::time::{Duration, Instant};

use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::postgres::{PgCluster, SUPERUSER};
use switchyard_tests::proxy::Proxy;
use switchyard_tests::wire::{self, GSSENC_REQUEST, SSL_REQUEST, V3, Wire, describe, shape};

/// A proxy user that logs in without a password (raw-socket clients).
const TRUST_USER: &str = "[[user]]\nname = \"rawtrust\"\nauth = \"trust\"\n";

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------------------------
// Malformed text: ERROR, not FATAL
// ---------------------------------------------------------------------------------------------

/// One step of a raw conversation: bytes to send, and how many answers to read (up to a
/// ReadyForQuery, or exactly `n` messages).
enum Read {
    Ready,
    Messages(usize),
}

fn malformed_steps() -> Vec<(&'static str, Vec<u8>, Read)> {
    use wire::message;
    let bind_execute_sync = [
        message(b'B', b"\0\0\0\0\0\0\0\0"),
        message(b'E', b"\0\0\0\0\0"),
        message(b'S', b""),
    ]
    .concat();
    vec![
        (
            "Query with an embedded NUL",
            message(b'Q', b"SELECT 1\0SELECT 2\0").to_vec(),
            Read::Ready,
        ),
        (
            "Query without its terminator",
            message(b'Q', b"SELECT 1").to_vec(),
            Read::Ready,
        ),
        (
            "Query without text",
            message(b'Q', b"").to_vec(),
            Read::Ready,
        ),
        (
            "Parse without its terminator, in a synced batch",
            [
                message(b'P', b"\0SELECT 1").to_vec(),
                bind_execute_sync.clone(),
            ]
            .concat(),
            Read::Ready,
        ),
        (
            "Parse with an embedded NUL, in a synced batch",
            [
                message(b'P', b"\0SELECT 1\0garbage\0\0\0").to_vec(),
                bind_execute_sync.clone(),
            ]
            .concat(),
            Read::Ready,
        ),
        (
            "Parse without its terminator, then Flush",
            [message(b'P', b"\0SELECT 1"), message(b'H', b"")].concat(),
            Read::Messages(1),
        ),
        (
            "a Query and a Bind while discarding, then Sync",
            [
                wire::query(b"SELECT 42").to_vec(),
                message(b'B', b"\0\0\0\0\0\0\0\0").to_vec(),
                message(b'S', b"").to_vec(),
            ]
            .concat(),
            Read::Ready,
        ),
        (
            "Parse without its terminator, a Query and Sync in one go",
            [
                message(b'P', b"\0SELECT 1").to_vec(),
                wire::query(b"SELECT 42").to_vec(),
                message(b'S', b"").to_vec(),
            ]
            .concat(),
            Read::Ready,
        ),
        ("BEGIN", wire::query(b"BEGIN").to_vec(), Read::Ready),
        (
            "Query with an embedded NUL in a transaction",
            message(b'Q', b"SELECT 1\0SELECT 2\0").to_vec(),
            Read::Ready,
        ),
        ("ROLLBACK", wire::query(b"ROLLBACK").to_vec(), Read::Ready),
        ("BEGIN again", wire::query(b"BEGIN").to_vec(), Read::Ready),
        (
            "Parse without its terminator in a transaction, then Flush",
            [message(b'P', b"\0SELECT 1"), message(b'H', b"")].concat(),
            Read::Messages(1),
        ),
        ("its Sync", message(b'S', b"").to_vec(), Read::Ready),
        ("COMMIT", wire::query(b"COMMIT").to_vec(), Read::Ready),
        (
            "a query after all that",
            wire::query(b"SELECT 1").to_vec(),
            Read::Ready,
        ),
    ]
}

/// Plays the steps on `w`; the shape of each answer.
async fn play(w: &mut Wire, steps: &[(&'static str, Vec<u8>, Read)]) -> Vec<Vec<String>> {
    let mut shapes = Vec::new();
    for (what, bytes, read) in steps {
        w.send(bytes).await;
        let msgs = match read {
            Read::Ready => {
                let (msgs, closed) = w.until_ready_or_closed().await;
                assert!(
                    !closed,
                    "{what}: the connection closed: {}",
                    describe(&msgs)
                );
                msgs
            }
            Read::Messages(n) => {
                let mut msgs = Vec::new();
                for _ in 0..*n {
                    match w.next().await {
                        Some(m) => msgs.push(m),
                        None => panic!("{what}: the connection closed: {}", describe(&msgs)),
                    }
                }
                assert!(
                    w.quiet_for(Duration::from_millis(300)).await,
                    "{what}: more than {n} answers"
                );
                msgs
            }
        };
        shapes.push(shape(&msgs));
    }
    shapes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_text_is_an_error_and_the_session_goes_on() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(TRUST_USER).build()).await;
    let steps = malformed_steps();

    let mut through = Wire::tcp(proxy.addr()).await;
    through.login("rawtrust").await;
    let proxied = play(&mut through, &steps).await;
    // Nothing of the malformed messages reached a server (PostgreSQL logs what it refuses).
    for port in [pg.primary_port(), pg.replica_ports()[0]] {
        let log = pg.log_of(port);
        for refused in [
            "invalid message format",
            "invalid string in message",
            "insufficient data left in message",
        ] {
            assert!(
                !log.contains(refused),
                "a server on port {port} saw a malformed message: {}",
                pg::tail(&log, 20)
            );
        }
    }

    let mut direct = Wire::unix(&pg, pg.primary_port()).await;
    direct.login(SUPERUSER).await;
    let expected = play(&mut direct, &steps).await;
    for ((what, _, _), (got, want)) in steps.iter().zip(proxied.iter().zip(&expected)) {
        assert_eq!(
            got, want,
            "{what}: the proxy answered {got:?}, PostgreSQL {want:?}"
        );
    }
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Startup: protocol version negotiation, repeated encryption requests
// ---------------------------------------------------------------------------------------------

/// The answers to a StartupMessage up to ReadyForQuery, then a query's shape.
async fn startup_answers(
    w: &mut Wire,
    version: i32,
    user: &str,
    extra: &[(&str, &str)],
) -> Vec<wire::Message> {
    let mut params = vec![("user", user), ("database", "appdb")];
    params.extend_from_slice(extra);
    w.send(&wire::startup_packet(version, &params)).await;
    let msgs = w.until_ready().await;
    w.send(&wire::query(b"SELECT 1")).await;
    let answer = w.until_ready().await;
    assert!(
        answer.iter().any(|(t, _)| *t == b'D'),
        "{}",
        describe(&answer)
    );
    msgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_negotiates_protocol_version_as_postgres_does() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(TRUST_USER).build()).await;
    for (what, version, extra) in [
        ("3.0", V3, &[][..]),
        ("3.2", V3 + 2, &[][..]),
        ("3.0 with an option", V3, &[("_pq_.compression", "on")][..]),
        (
            "3.5 with two options",
            V3 + 5,
            &[("_pq_.a", "1"), ("application_name", "x"), ("_pq_.b", "2")][..],
        ),
    ] {
        let mut direct = Wire::unix(&pg, pg.primary_port()).await;
        let want = startup_answers(&mut direct, version, SUPERUSER, extra).await;
        let mut through = Wire::tcp(proxy.addr()).await;
        let got = startup_answers(&mut through, version, "rawtrust", extra).await;
        let negotiation = |msgs: &[wire::Message]| msgs.iter().find(|(t, _)| *t == b'v').cloned();
        assert_eq!(negotiation(&got), negotiation(&want), "{what}");
        // Before authentication, as on PostgreSQL.
        assert_eq!(
            got.first().map(|m| m.0),
            want.first().map(|m| m.0),
            "{what}: {}",
            describe(&got)
        );
    }
    proxy.stop().await;
}

/// Sends the startup-phase `packets` (each its own write, or all in one), reading the one-byte
/// answer after each write; then what follows until the connection closes or, after
/// `login_after` is sent, until ReadyForQuery. Returns the bytes answered and the shape.
async fn negotiate(
    w: &mut Wire,
    writes: &[Vec<u8>],
    login_as: Option<&str>,
) -> (Vec<char>, Vec<String>) {
    let mut bytes = Vec::new();
    for write in writes {
        w.send(write).await;
        match w.byte().await {
            Some(b) if b == b'N' || b == b'S' || b == b'G' => bytes.push(b as char),
            Some(b'E') => {
                bytes.push('E');
                break;
            }
            other => panic!("answer {other:?}"),
        }
    }
    let rest = match login_as {
        Some(user) if !bytes.contains(&'E') => {
            w.send(&wire::startup_packet(
                V3,
                &[("user", user), ("database", "appdb")],
            ))
            .await;
            w.until_ready().await
        }
        _ => w.until_closed().await,
    };
    let mut shape = shape(&rest);
    shape.retain(|s| s.starts_with('E') || s.starts_with('Z'));
    (bytes, shape)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_encryption_requests_are_refused_as_postgres_does() {
    let pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(TRUST_USER).build()).await;
    let ssl = wire::startup_packet(SSL_REQUEST, &[]).to_vec();
    let gss = wire::startup_packet(GSSENC_REQUEST, &[]).to_vec();
    let startup =
        |user: &str| wire::startup_packet(V3, &[("user", user), ("database", "appdb")]).to_vec();
    let cases: Vec<(&str, Vec<Vec<u8>>, bool)> = vec![
        ("SSLRequest twice", vec![ssl.clone(), ssl.clone()], false),
        (
            "two SSLRequests in one packet",
            vec![[ssl.clone(), ssl.clone()].concat()],
            false,
        ),
        ("GSSENCRequest twice", vec![gss.clone(), gss.clone()], false),
        (
            "SSL, GSS, SSL",
            vec![ssl.clone(), gss.clone(), ssl.clone()],
            false,
        ),
        (
            "SSL then GSS, then a login",
            vec![ssl.clone(), gss.clone()],
            true,
        ),
        (
            "GSS then SSL, then a login",
            vec![gss.clone(), ssl.clone()],
            true,
        ),
    ];
    for (what, writes, login) in &cases {
        let mut direct = Wire::unix(&pg, pg.primary_port()).await;
        let want = negotiate(&mut direct, writes, login.then_some(SUPERUSER)).await;
        let mut through = Wire::tcp(proxy.addr()).await;
        let got = negotiate(&mut through, writes, login.then_some("rawtrust")).await;
        assert_eq!(got, want, "{what}");
    }
    // An SSLRequest with the StartupMessage right behind it, before the answer.
    for (w, user) in [
        (&mut Wire::unix(&pg, pg.primary_port()).await, SUPERUSER),
        (&mut Wire::tcp(proxy.addr()).await, "rawtrust"),
    ] {
        w.send(&[ssl.clone(), startup(user)].concat()).await;
        assert_eq!(w.byte().await, Some(b'N'), "{user}");
        let rest = w.until_closed().await;
        assert_eq!(
            shape(&rest),
            ["E:FATAL:08P01"],
            "{user}: {}",
            describe(&rest)
        );
    }
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A read that failed everywhere
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_failing_on_every_node_is_an_error_not_fatal() {
    let mut pg = PgCluster::start(1);
    let proxy = Proxy::start(&PgConfig::new(&pg).extra(TRUST_USER).build()).await;
    let mut w = Wire::tcp(proxy.addr()).await;
    w.login("rawtrust").await;
    w.send(&wire::query(b"SELECT pg_is_in_recovery()")).await;
    let msgs = w.until_ready().await;
    assert!(
        msgs.iter().any(|(t, b)| *t == b'D' && b.ends_with(b"t")),
        "reads go to the replica: {}",
        describe(&msgs)
    );

    // The primary (the replicas' fallback) is down; the replica dies under a read.
    block(|| pg.stop_primary());
    w.send(&wire::query(b"SELECT pg_sleep(5)")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    block(|| pg.stop_replica(0));
    let (msgs, closed) = w.until_ready_or_closed().await;
    assert!(!closed, "the session ended: {}", describe(&msgs));
    // A RowDescription (the same from any node) and the dying server's notice may come first.
    let mut answer = shape(&msgs);
    answer.retain(|s| s.starts_with('E') || s.starts_with('Z') || s == "D");
    assert_eq!(answer, ["E:ERROR:08006", "Z:I"], "{}", describe(&msgs));
    let error = msgs.iter().find(|(t, _)| *t == b'E').map(|m| &m.1[..]);
    let message = error.and_then(|e| wire::field(e, b'M')).unwrap_or_default();
    assert!(
        message.starts_with("server connection lost in pool \"replicas\""),
        "{message}"
    );

    // The session goes on: errors while nothing is up, answers once the replica is back.
    block(|| pg.start_replica(0));
    let started = Instant::now();
    loop {
        w.send(&wire::query(b"SELECT 1")).await;
        let (msgs, closed) = w.until_ready_or_closed().await;
        assert!(!closed, "the session ended: {}", describe(&msgs));
        if msgs.iter().any(|(t, _)| *t == b'D') {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no answer once the replica was back: {}",
            describe(&msgs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.stop().await;
}

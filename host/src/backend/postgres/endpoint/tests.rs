//! The SSLRequest exchange against a scripted server on loopback: what each mode does with the
//! server's answer, and that a cancel asks for TLS too. The handshakes themselves are tested
//! against real servers (tests/integration/backend_tls.rs).

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{CancelTarget, Endpoint, send_cancel};
use crate::backend::postgres::PgBackendError;
use crate::backend::tls::BackendTls;
use crate::config::PoolConfig;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const CANCEL_CODE: [u8; 4] = [0x04, 0xd2, 0x16, 0x2e];

fn tls(mode: &str) -> Arc<BackendTls> {
    let pool: PoolConfig = toml::from_str(&format!(
        "role = \"primary\"\nnodes = [\"127.0.0.1\"]\ntls = \"{mode}\""
    ))
    .expect("pool config");
    Arc::new(BackendTls::for_pool(&pool, &[super::ALPN]).expect("TLS settings"))
}

/// A server on loopback that reads the first 8 bytes, answers `answer`, and returns what it
/// read first and what came next (up to 64 bytes, until the client closes or half a second
/// passes: a cancel waits for the server to close).
async fn scripted(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut first = vec![0u8; 8];
        socket.read_exact(&mut first).await.expect("first packet");
        socket.write_all(answer).await.expect("answer");
        let mut next = Vec::new();
        let mut rest = (&mut socket).take(64);
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            rest.read_to_end(&mut next),
        )
        .await;
        (first, next)
    });
    (addr, server)
}

fn endpoint(addr: &str, mode: &str) -> Endpoint {
    Endpoint::new(addr, "127.0.0.1", tls(mode))
}

#[tokio::test]
async fn disable_sends_no_ssl_request() {
    let (addr, server) = scripted(b"").await;
    let mut stream = endpoint(&addr, "disable").open().await.expect("open");
    assert!(!stream.is_tls());
    stream.write_all(b"startup!").await.expect("write");
    drop(stream);
    let (first, _) = server.await.expect("server");
    assert_eq!(first, b"startup!");
}

#[tokio::test]
async fn prefer_goes_on_in_plain_when_the_server_declines() {
    let (addr, server) = scripted(b"N").await;
    let mut stream = endpoint(&addr, "prefer").open().await.expect("open");
    assert!(!stream.is_tls());
    stream.write_all(b"startup").await.expect("write");
    drop(stream);
    let (first, next) = server.await.expect("server");
    assert_eq!(first, SSL_REQUEST);
    assert_eq!(next, b"startup");
}

#[tokio::test]
async fn the_strict_modes_fail_naming_the_node_when_the_server_declines() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let (addr, server) = scripted(b"N").await;
        // The verifying modes need roots: any will do, nothing gets verified here.
        let endpoint = if mode == "require" {
            endpoint(&addr, mode)
        } else {
            let mut pool: PoolConfig =
                toml::from_str("role = \"primary\"\nnodes = [\"127.0.0.1\"]").expect("pool");
            pool.tls = if mode == "verify-ca" {
                crate::config::TlsMode::VerifyCa
            } else {
                crate::config::TlsMode::VerifyFull
            };
            match BackendTls::for_pool(&pool, &[]) {
                Ok(tls) => Endpoint::new(&addr, "127.0.0.1", Arc::new(tls)),
                // A system without a root store: the mode is covered by `require`'s path.
                Err(_) => continue,
            }
        };
        let err = endpoint.open().await.expect_err("no TLS, no connection");
        assert!(matches!(err, PgBackendError::Tls { .. }), "{mode}: {err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&addr) && text.contains("does not accept TLS"),
            "{mode}: {text}"
        );
        assert!(err.is_node_failure());
        let (first, next) = server.await.expect("server");
        assert_eq!(first, SSL_REQUEST);
        assert!(next.is_empty(), "{mode}: sent {next:?} in plain");
    }
}

#[tokio::test]
async fn bytes_sent_after_the_answer_are_not_taken_as_the_servers() {
    // A man in the middle answering `S` and a forged message in one packet: the forged bytes
    // reach the TLS layer, which refuses them as a handshake.
    let (addr, server) = scripted(b"SR\0\0\0\x08\0\0\0\0").await;
    let err = endpoint(&addr, "require")
        .open()
        .await
        .expect_err("no handshake");
    assert!(matches!(err, PgBackendError::Tls { .. }), "{err:?}");
    let _ = server.await;
}

#[tokio::test]
async fn a_cancel_asks_for_tls_first_and_gives_up_without_it() {
    let (addr, server) = scripted(b"N").await;
    let target = CancelTarget {
        endpoint: Arc::new(endpoint(&addr, "require")),
        pid: 7,
        key: 9,
    };
    let err = send_cancel(&target).await.expect_err("no TLS");
    assert!(matches!(err, PgBackendError::Tls { .. }), "{err:?}");
    let (first, next) = server.await.expect("server");
    assert_eq!(first, SSL_REQUEST);
    assert!(
        next.is_empty(),
        "the cancel key went out in plain: {next:?}"
    );

    // Without TLS, the cancel request is the first packet.
    let (addr, server) = scripted(b"").await;
    let target = CancelTarget {
        endpoint: Arc::new(endpoint(&addr, "disable")),
        pid: 7,
        key: 9,
    };
    send_cancel(&target).await.expect("cancel sent");
    let (first, next) = server.await.expect("server");
    assert_eq!(first[..4], [0, 0, 0, 16]);
    assert_eq!(first[4..], CANCEL_CODE);
    assert_eq!(next, [0, 0, 0, 7, 0, 0, 0, 9]);
}

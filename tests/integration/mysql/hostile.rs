//! Bad input from MySQL clients, before and after login: each gets MySQL's error (or a clean
//! close) for that client only, and everyone else is served.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{RUN_TIMEOUT, cli, config, program};
use crate::postgres::pyenv_python;

/// Reads the server greeting of a fresh connection to the proxy.
async fn greeted(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.expect("greeting header");
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("greeting");
    assert_eq!(body[0], 10, "HandshakeV10");
    s
}

/// The first packet the proxy answers with, or `None` when it closed without one.
async fn answer(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut header))
        .await
        .expect("an answer or a close within 10 s")
        .ok()?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_before_login_gets_an_error_for_that_client_only() {
    let db = MariaCluster::start(1);
    let proxy = Proxy::start(&config(&db, 2, "")).await;
    let addr = proxy.addr();

    // A login packet over the 64 KiB limit: refused before it is buffered.
    let mut big = greeted(addr).await;
    big.write_all(&[0xFF, 0xFF, 0x0F, 1]).await.expect("header");
    let err = answer(&mut big).await.expect("an ERR");
    assert_eq!(
        &err[..3],
        &[0xFF, 0x81, 0x04],
        "ER_NET_PACKET_TOO_LARGE (1153)"
    );

    // Garbage instead of a handshake response.
    let mut garbage = greeted(addr).await;
    garbage
        .write_all(&[5, 0, 0, 1, 1, 2, 3, 4, 5])
        .await
        .expect("garbage");
    let err = answer(&mut garbage).await.expect("an ERR");
    assert_eq!(&err[..3], &[0xFF, 0x13, 0x04], "ER_HANDSHAKE_ERROR (1043)");

    // A client that says nothing is closed at login_timeout, silently.
    let mut silent = greeted(addr).await;
    assert_eq!(answer(&mut silent).await, None);

    // A wrong password gets MySQL's access-denied error.
    let err = db
        .try_sql_as(addr.port(), APP_USER, "wrong", "SELECT 1")
        .expect_err("wrong password");
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");

    // Meanwhile, and after, everyone else is served.
    assert_eq!(cli(&db, &proxy, "SELECT 1 + 1").expect("served"), "2");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_after_login_gets_mysqls_error_for_that_client_only() {
    let db = MariaCluster::start(1);
    let proxy = Proxy::start(&config(&db, 2, "")).await;
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(pyenv_python())
            .arg(program("mysql_bad_input.py"))
            .args([
                "127.0.0.1",
                &proxy.addr().port().to_string(),
                APP_USER,
                APP_PASSWORD,
                DATABASE,
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the bad-input script finishes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "wrong sequence id: ('ERR', 1156) then closed\n\
         oversized command: ('ERR', 1153) then closed\n\
         unknown command: ('ERR', 1047) then usable\n\
         binlog dump: ('ERR', 1047) then usable\n\
         shutdown: ('ERR', 1047) then usable\n\
         statement of an unknown id: ('ERR', 1243) then usable\n\
         kill: ('ERR', 1235) then usable\n\
         another client: 42\n"
    );
    proxy.stop().await;
}

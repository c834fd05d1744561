use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Empty, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::PoolConns;
use crate::backend::clickhouse_http::Body;
use crate::config::Config;
use crate::route::{NodeState, Router};

/// A pool of one node at `addr`, and that node.
fn pool(addr: &str, idle_timeout: &str) -> (Arc<PoolConns>, Arc<NodeState>) {
    let text = format!(
        r#"
[[listener]]
name = "l"
protocol = "clickhouse-http"
bind = "127.0.0.1:0"
cluster = "main"

[[user]]
name = "u"
password = "p"

[cluster.main]
protocol = "clickhouse-http"
[cluster.main.pool.p]
role = "primary"
nodes = ["{addr}"]
idle_timeout = "{idle_timeout}"
"#
    );
    let config = Config::parse_with_env(&text, &|_| None).expect("valid config");
    let router = Router::new("main", &config.clusters["main"]);
    let pool = router.pools().next().expect("one pool").clone();
    let node = pool.nodes()[0].clone();
    (Arc::new(PoolConns::new(pool.config(), pool.nodes())), node)
}

fn get(path: &str) -> Request<Body> {
    let body: Body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    Request::get(path).body(body).expect("request")
}

/// A keep-alive HTTP server that answers `<path> <n>` (n counts requests) with a body of
/// `filler` extra bytes, and counts the connections it accepted.
async fn server(filler: usize, keep_alive: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    let text = format!("{} {n}{}", request.uri().path(), " ".repeat(filler));
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service),
            );
        }
    });
    (addr, accepted)
}

async fn text(conns: &Arc<PoolConns>, node: &NodeState, path: &str) -> String {
    let response = conns.send(node, get(path)).await.expect("response");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body).trim_end().to_owned()
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (addr, accepted) = server(0, true).await;
    let (conns, node) = pool(&addr, "60s");
    for i in 0..20 {
        assert_eq!(
            text(&conns, &node, &format!("/q{i}")).await,
            format!("/q{i} {i}")
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(conns.idle_count(), 1);
}

#[tokio::test]
async fn concurrent_requests_get_their_own_answers_and_connections() {
    let (addr, accepted) = server(100_000, true).await;
    let (conns, node) = pool(&addr, "60s");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (conns, node) = (conns.clone(), node.clone());
        tasks.push(tokio::spawn(async move {
            let answer = text(&conns, &node, &format!("/c{i}")).await;
            assert!(answer.starts_with(&format!("/c{i} ")), "{answer}");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!((1..=8).contains(&opened), "{opened}");
    assert_eq!(conns.idle_count(), opened);
    // A second wave reuses them.
    text(&conns, &node, "/again").await;
    assert_eq!(accepted.load(Ordering::SeqCst), opened);
}

#[tokio::test]
async fn a_response_dropped_before_its_end_closes_the_connection() {
    let (addr, accepted) = server(1 << 20, true).await;
    let (conns, node) = pool(&addr, "60s");
    let response = conns.send(&node, get("/big")).await.expect("response");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.is_data());
    drop(body);
    assert_eq!(conns.idle_count(), 0);
    assert!(text(&conns, &node, "/next").await.starts_with("/next 1"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connection_close_from_the_server_is_honoured() {
    let (addr, accepted) = server(0, false).await;
    let (conns, node) = pool(&addr, "60s");
    for i in 0..3 {
        assert_eq!(text(&conns, &node, "/x").await, format!("/x {i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// A server that answers one request per connection and then closes it without saying so
/// (as a node does whose keep-alive timeout passed).
#[tokio::test]
async fn an_idle_connection_the_server_closed_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let (conns, node) = pool(&addr, "60s");
    for _ in 0..3 {
        assert_eq!(text(&conns, &node, "/").await, "ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn prune_closes_connections_past_the_idle_timeout() {
    let (addr, _) = server(0, true).await;
    let (conns, node) = pool(&addr, "100ms");
    text(&conns, &node, "/").await;
    conns.prune();
    assert_eq!(conns.idle_count(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    conns.prune();
    assert_eq!(conns.idle_count(), 0);
}

#[tokio::test]
async fn an_unreachable_node_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let (conns, node) = pool(&addr, "60s");
    let err = conns.send(&node, get("/")).await.err().expect("an error");
    assert!(matches!(err, super::ConnError::Connect(_)), "{err}");
}

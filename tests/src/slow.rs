//! Slow servers for mirroring tests: a TCP relay that delays every chunk a real server sends
//! back, and a minimal HTTP server that answers every request late. Both stop on drop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Relays connections to `target`, holding each chunk the server sends for `delay` first.
pub struct SlowRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

impl SlowRelay {
    pub async fn start(target: SocketAddr, delay: Duration) -> SlowRelay {
        let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
        SlowRelay::start_at(bind, target, delay).await
    }

    /// A relay listening on `bind` (e.g. the address of one that was dropped: a node that comes
    /// back on its old address).
    pub async fn start_at(bind: SocketAddr, target: SocketAddr, delay: Duration) -> SlowRelay {
        let listener = TcpListener::bind(bind).await.expect("bind a relay");
        let addr = listener.local_addr().expect("relay address");
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                relays.spawn(relay(client, target, delay));
            }
        });
        SlowRelay {
            addr,
            task,
            connections,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, target: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tokio::time::sleep(delay).await;
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// An HTTP/1.1 server answering every request `200 OK` with body `1\n` after `delay`, one request
/// per connection. It records request lines and the most requests it had in progress at once.
pub struct SlowHttp {
    addr: SocketAddr,
    task: JoinHandle<()>,
    state: Arc<HttpState>,
}

#[derive(Default)]
struct HttpState {
    lines: Mutex<Vec<String>>,
    in_progress: AtomicU64,
    most_in_progress: AtomicU64,
}

impl SlowHttp {
    pub async fn start(delay: Duration) -> SlowHttp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(HttpState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut answers = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                answers.spawn(answer(stream, shared.clone(), delay));
            }
        });
        SlowHttp { addr, task, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Request lines (`POST /?query=... HTTP/1.1`) of the requests received so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.state
            .lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The most requests that were in progress at once.
    pub fn most_in_progress(&self) -> u64 {
        self.state.most_in_progress.load(Ordering::Relaxed)
    }
}

impl Drop for SlowHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, state: Arc<HttpState>, delay: Duration) {
    let now = state.in_progress.fetch_add(1, Ordering::Relaxed) + 1;
    state.most_in_progress.fetch_max(now, Ordering::Relaxed);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(at + 4);
        }
    };
    if let Some(end) = end {
        let text = String::from_utf8_lossy(&head[..end]).into_owned();
        let length: usize = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = head.len() - end;
        while body < length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body += n,
            }
        }
        if let (Ok(mut lines), Some(first)) = (state.lines.lock(), text.lines().next()) {
            lines.push(first.to_owned());
        }
        tokio::time::sleep(delay).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n1\n")
            .await;
    }
    state.in_progress.fetch_sub(1, Ordering::Relaxed);
}

//! A raw PostgreSQL protocol client, for tests that send exactly the bytes they mean (malformed
//! messages, startup variants) to the proxy over TCP or straight to a server over its unix
//! socket (where the test cluster trusts everybody), and compare what each answers.
//!
//! ```ignore
//! let mut proxy = Wire::tcp(proxy.addr()).await;
//! proxy.login("rawtrust").await;
//! let mut direct = Wire::unix(&pg, pg.primary_port()).await;
//! direct.login(postgres::SUPERUSER).await;
//! for w in [&mut proxy, &mut direct] {
//!     w.send(&wire::query(b"SELECT 1")).await;
//!     let answer = w.until_ready().await;
//! }
//! ```

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::postgres::{DATABASE, PgCluster};

/// The protocol version every modern client speaks (3.0).
pub const V3: i32 = 196_608;
/// `SSLRequest`'s magic version number.
pub const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest`'s magic version number.
pub const GSSENC_REQUEST: i32 = 80_877_104;

/// How long a read waits before the test gives up on an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One message: its tag and body.
pub type Message = (u8, Vec<u8>);

pub struct Wire {
    stream: Pin<Box<dyn Stream>>,
    buf: BytesMut,
}

/// A startup-phase packet: `version` (or a request code) and parameters.
pub fn startup_packet(version: i32, params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(version);
    if !params.is_empty() {
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
    }
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

/// A tagged message with `body` as it is.
pub fn message(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
    out
}

/// A well-formed Query.
pub fn query(sql: &[u8]) -> BytesMut {
    let mut body = sql.to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A field of an ErrorResponse or NoticeResponse body (`b'C'`: SQLSTATE, `b'S'`: severity,
/// `b'M'`: message).
pub fn field(body: &[u8], code: u8) -> Option<String> {
    body.split(|b| *b == 0).find_map(|f| match f.split_first() {
        Some((&c, value)) if c == code => Some(String::from_utf8_lossy(value).into_owned()),
        _ => None,
    })
}

/// What a message sequence looks like without its details: tags, with `E:<severity>:<SQLSTATE>`
/// for errors and `Z:<status>` for ReadyForQuery (what a raw comparison with PostgreSQL checks;
/// message texts may differ).
pub fn shape(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|(tag, body)| match tag {
            b'E' => format!(
                "E:{}:{}",
                field(body, b'V')
                    .or_else(|| field(body, b'S'))
                    .unwrap_or_default(),
                field(body, b'C').unwrap_or_default()
            ),
            b'Z' => format!("Z:{}", body.first().map_or('?', |b| *b as char)),
            other => (*other as char).to_string(),
        })
        .collect()
}

impl Wire {
    pub async fn tcp(addr: SocketAddr) -> Wire {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Wire::new(Box::pin(stream))
    }

    /// Over TCP from the local address `from` (another loopback address, as another client
    /// machine would be).
    pub async fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> Wire {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        let stream = socket
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr} from {from}: {e}"));
        Wire::new(Box::pin(stream))
    }

    /// A server of the cluster over its unix socket (trust).
    pub async fn unix(pg: &PgCluster, port: u16) -> Wire {
        let path = pg.socket_dir().join(format!(".s.PGSQL.{port}"));
        let stream = tokio::net::UnixStream::connect(&path)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        Wire::new(Box::pin(stream))
    }

    fn new(stream: Pin<Box<dyn Stream>>) -> Wire {
        Wire {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Logs in as `user` (trust) to `appdb` with protocol 3.0 and waits for ReadyForQuery.
    pub async fn login(&mut self, user: &str) {
        self.send(&startup_packet(
            V3,
            &[("user", user), ("database", DATABASE)],
        ))
        .await;
        let msgs = self.until_ready().await;
        assert!(
            msgs.iter()
                .any(|(t, b)| *t == b'R' && b[..4] == [0, 0, 0, 0]),
            "no AuthenticationOk: {msgs:?}"
        );
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The one-byte answer to SSLRequest / GSSENCRequest (`S`, `N`, `G`); `None` at end of
    /// stream. An ErrorResponse's `E` is left for [`next`](Self::next).
    pub async fn byte(&mut self) -> Option<u8> {
        if self.buf.is_empty() {
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("an answer within 10 s");
            if !matches!(read, Ok(n) if n > 0) {
                return None;
            }
        }
        let b = self.buf[0];
        if b != b'E' {
            let _ = self.buf.split_to(1);
        }
        Some(b)
    }

    /// The next message; `None` at end of stream (or a reset).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let msg = self.buf.split_to(total);
                    return Some((msg[0], msg[5..].to_vec()));
                }
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("an answer within 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Messages up to and including ReadyForQuery; panics if the connection closes first.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
        panic!("connection closed before ReadyForQuery: {}", describe(&out))
    }

    /// Everything until the other side closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m);
            assert!(
                out.len() < 1000,
                "the peer keeps talking: {}",
                describe(&out)
            );
        }
        out
    }

    /// Messages until ReadyForQuery or the end of the stream, and whether it ended.
    pub async fn until_ready_or_closed(&mut self) -> (Vec<Message>, bool) {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                return (out, false);
            }
        }
        (out, true)
    }

    /// Whether nothing arrives within `wait` (the connection stays open and quiet).
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf))
            .await
            .is_err()
    }
}

/// Messages for an assertion: tags with the text of errors and notices.
pub fn describe(msgs: &[Message]) -> String {
    msgs.iter()
        .map(|(tag, body)| match tag {
            b'E' | b'N' => format!(
                "{}({} {}: {})",
                *tag as char,
                field(body, b'S').unwrap_or_default(),
                field(body, b'C').unwrap_or_default(),
                field(body, b'M').unwrap_or_default()
            ),
            b'Z' => format!("Z({})", body.first().map_or('?', |b| *b as char)),
            other => (*other as char).to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

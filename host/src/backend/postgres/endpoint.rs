//! Where server connections go and how their byte stream is opened: TCP, then, unless the pool's
//! `tls` is `disable`, an SSLRequest and the TLS handshake. Logins, the health checker, the WAL
//! position poller and cancel requests all open their streams here, so they share one setting.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PgBackendError;
use crate::backend::tls::{BackendTls, MaybeTls};
use crate::config::TlsMode;
use crate::postgres::protocol::Startup;

/// ALPN protocol PostgreSQL 17 servers expect when a client offers ALPN (older servers ignore
/// it).
pub(crate) const ALPN: &[u8] = b"postgresql";

/// A server node as its connections are opened.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub addr: String,
    /// The host alone: the TLS server name unless the pool sets `tls_server_name`.
    host: String,
    tls: Arc<BackendTls>,
}

impl Endpoint {
    pub fn new(addr: &str, host: &str, tls: Arc<BackendTls>) -> Endpoint {
        Endpoint {
            addr: addr.to_owned(),
            host: host.to_owned(),
            tls,
        }
    }

    /// TCP, then TLS as the pool's mode asks. Under `prefer` a server that declines TLS gets
    /// a plain connection; under the stricter modes that is an error naming the node.
    pub async fn open(&self) -> Result<MaybeTls, PgBackendError> {
        let mut tcp =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| PgBackendError::Io {
                    addr: self.addr.clone(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        let mode = self.tls.mode();
        if mode == TlsMode::Disable {
            return Ok(MaybeTls::Plain(tcp));
        }
        match self.ssl_request(&mut tcp).await? {
            b'S' => {}
            b'N' if mode == TlsMode::Prefer => return Ok(MaybeTls::Plain(tcp)),
            b'N' => {
                return Err(self.tls_error(format!(
                    "the server does not accept TLS connections (tls = \"{}\")",
                    mode.as_str()
                )));
            }
            // 'E': a server too old to know SSLRequest (before 7.0); anything else is not
            // PostgreSQL.
            other => {
                return Err(PgBackendError::Protocol {
                    addr: self.addr.clone(),
                    reason: format!("unexpected answer {:?} to SSLRequest", char::from(other)),
                });
            }
        }
        let tls = self
            .tls
            .handshake(&self.host, tcp)
            .await
            .map_err(|e| self.tls_error(format!("handshake failed: {e}")))?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }

    /// Sends SSLRequest and reads the one-byte answer. Exactly one byte is read from the
    /// socket: bytes a server (or a man in the middle) sends after it stay unread and make
    /// the handshake fail, rather than being taken as the server's (CVE-2021-23222).
    async fn ssl_request(&self, tcp: &mut TcpStream) -> Result<u8, PgBackendError> {
        let io = |source| PgBackendError::Io {
            addr: self.addr.clone(),
            source,
        };
        let mut out = BytesMut::with_capacity(8);
        Startup::Ssl.encode(&mut out);
        tcp.write_all(&out).await.map_err(io)?;
        let mut answer = [0u8; 1];
        match tcp.read(&mut answer).await.map_err(io)? {
            0 => Err(PgBackendError::Closed {
                addr: self.addr.clone(),
            }),
            _ => Ok(answer[0]),
        }
    }

    fn tls_error(&self, reason: String) -> PgBackendError {
        PgBackendError::Tls {
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// What a CancelRequest for a server process needs: where it runs, how to reach it, its key.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub endpoint: Arc<Endpoint>,
    pub pid: i32,
    pub key: i32,
}

/// Sends a CancelRequest for the query running on the server process `target.pid`, over TLS
/// when the pool uses it (the server accepts a CancelRequest after SSLRequest).
pub async fn send_cancel(target: &CancelTarget) -> Result<(), PgBackendError> {
    tokio::time::timeout(CANCEL_TIMEOUT, cancel(target))
        .await
        .map_err(|_| PgBackendError::Timeout {
            addr: target.endpoint.addr.clone(),
            after: CANCEL_TIMEOUT,
        })?
}

/// A cancel is sent on a connection of its own, which a dead or stalling server must not keep
/// open for ever.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

async fn cancel(target: &CancelTarget) -> Result<(), PgBackendError> {
    let mut stream = target.endpoint.open().await?;
    let mut out = BytesMut::with_capacity(16);
    Startup::Cancel {
        pid: target.pid,
        key: target.key,
    }
    .encode(&mut out);
    let io = |source| PgBackendError::Io {
        addr: target.endpoint.addr.clone(),
        source,
    };
    stream.write_all(&out).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    // The server closes the connection without answering.
    let mut sink = [0u8; 1];
    let _ = stream.read(&mut sink).await;
    Ok(())
}

#[cfg(test)]
mod tests;

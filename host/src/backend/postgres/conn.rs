//! One server connection: its stream (TCP, or TLS as the pool asks; see `endpoint.rs`), the
//! startup exchange and authentication (SCRAM-SHA-256, md5, cleartext or trust, whichever the
//! server asks for), then raw message I/O for the pool's user.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PgBackendError;
use super::endpoint::{CancelTarget, Endpoint};
use crate::backend::tls::MaybeTls;
use crate::postgres::auth::{ScramClient, choose_mechanism, md5_password};
use crate::postgres::protocol::backend::Authentication;
use crate::postgres::protocol::frontend::PasswordMessage;
use crate::postgres::protocol::{
    BackendMessage, RawMessage, Startup, TransactionStatus, split_message,
};

/// Largest message accepted from a server (a DataRow can be up to 1 GB in PostgreSQL; rows that
/// large are not proxied).
pub const MAX_SERVER_MESSAGE: usize = 256 << 20;

/// Who the proxy logs in as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Login {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// An authenticated server connection.
#[derive(Debug)]
pub struct ServerConn {
    stream: MaybeTls,
    endpoint: Arc<Endpoint>,
    read_buf: BytesMut,
    /// The server's process id and cancel key (for CancelRequest).
    pub pid: i32,
    pub key: i32,
    /// ParameterStatus values reported at startup.
    pub params: Vec<(String, String)>,
    pub created: Instant,
    pub last_used: Instant,
    /// Hashes of the statements prepared on it under the proxy's names (`sy_<hash>`).
    pub prepared: HashSet<u64>,
    /// Hash of the session settings (`SET`s) applied on it; 0 = as after login.
    pub settings: u64,
    /// Hash of the statement last parsed as the unnamed statement (0: none).
    pub unnamed: u64,
    /// Where other sessions leave statements to ride on this connection while it is held
    /// (multiplexed pools; made at its first checkout there).
    pub board: Option<Arc<super::multiplex::Board>>,
    pub addr: String,
}

impl ServerConn {
    /// Connects and logs in, within `timeout`.
    pub async fn connect(
        endpoint: &Arc<Endpoint>,
        login: &Login,
        timeout: Duration,
    ) -> Result<ServerConn, PgBackendError> {
        tokio::time::timeout(timeout, Self::connect_inner(endpoint, login))
            .await
            .map_err(|_| PgBackendError::Timeout {
                addr: endpoint.addr.clone(),
                after: timeout,
            })?
    }

    async fn connect_inner(
        endpoint: &Arc<Endpoint>,
        login: &Login,
    ) -> Result<ServerConn, PgBackendError> {
        let stream = endpoint.open().await?;
        let addr = &endpoint.addr;
        let mut conn = ServerConn {
            stream,
            endpoint: endpoint.clone(),
            read_buf: BytesMut::with_capacity(8192),
            pid: 0,
            key: 0,
            params: Vec::new(),
            created: Instant::now(),
            last_used: Instant::now(),
            prepared: HashSet::new(),
            settings: 0,
            unnamed: 0,
            board: None,
            addr: addr.to_owned(),
        };
        let mut out = BytesMut::new();
        Startup::v3(vec![
            ("user".to_owned(), login.user.clone()),
            ("database".to_owned(), login.database.clone()),
        ])
        .encode(&mut out);
        conn.write_all(&out).await?;
        conn.authenticate(login).await?;
        // Parameters and the cancel key, until ReadyForQuery.
        loop {
            let msg = conn.read_message().await?;
            match BackendMessage::decode(&msg).map_err(|e| conn.protocol(e))? {
                BackendMessage::ParameterStatus { name, value } => conn.params.push((name, value)),
                BackendMessage::BackendKeyData { pid, key } => {
                    conn.pid = pid;
                    conn.key = key;
                }
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::ErrorResponse(e) => return Err(conn.refused(e)),
                BackendMessage::NoticeResponse(_) => {}
                _ => return Err(conn.unexpected(msg.tag())),
            }
        }
        Ok(conn)
    }

    async fn authenticate(&mut self, login: &Login) -> Result<(), PgBackendError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            let msg = self.read_message().await?;
            let auth = match BackendMessage::decode(&msg).map_err(|e| self.protocol(e))? {
                BackendMessage::Authentication(auth) => auth,
                BackendMessage::ErrorResponse(e) => return Err(self.refused(e)),
                BackendMessage::NegotiateProtocolVersion { .. } => continue,
                _ => return Err(self.unexpected(msg.tag())),
            };
            let mut out = BytesMut::new();
            match auth {
                Authentication::Ok => return Ok(()),
                Authentication::CleartextPassword => {
                    PasswordMessage::encode_password(&mut out, self.password(login)?.as_bytes());
                }
                Authentication::Md5Password { salt } => {
                    let hashed = md5_password(&login.user, self.password(login)?, salt);
                    PasswordMessage::encode_password(&mut out, &hashed);
                }
                Authentication::Sasl { mechanisms } => {
                    let offered: Vec<&str> = mechanisms.iter().map(String::as_str).collect();
                    let Some(mechanism) = choose_mechanism(&offered) else {
                        return Err(PgBackendError::Auth {
                            addr: self.addr.clone(),
                            reason: format!(
                                "the server offers only {} (SCRAM-SHA-256 is supported)",
                                offered.join(", ")
                            ),
                        });
                    };
                    let client = ScramClient::new(self.password(login)?.as_bytes());
                    PasswordMessage::encode_sasl_initial(
                        &mut out,
                        mechanism,
                        client.client_first(),
                    );
                    scram = Some(client);
                }
                Authentication::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or_else(|| self.unexpected(b'R'))?;
                    let reply = client
                        .server_first(&data)
                        .map_err(|e| PgBackendError::Auth {
                            addr: self.addr.clone(),
                            reason: e.to_string(),
                        })?;
                    PasswordMessage::encode_sasl_response(&mut out, &reply);
                }
                Authentication::SaslFinal(data) => {
                    let client = scram.as_mut().ok_or_else(|| self.unexpected(b'R'))?;
                    client
                        .server_final(&data)
                        .map_err(|e| PgBackendError::Auth {
                            addr: self.addr.clone(),
                            reason: e.to_string(),
                        })?;
                    continue;
                }
            }
            self.write_all(&out).await?;
        }
    }

    fn password<'a>(&self, login: &'a Login) -> Result<&'a str, PgBackendError> {
        login
            .password
            .as_deref()
            .ok_or_else(|| PgBackendError::Auth {
                addr: self.addr.clone(),
                reason: format!(
                    "the server asks a password for user \"{}\" and none is configured",
                    login.user
                ),
            })
    }

    fn protocol(&self, e: crate::postgres::protocol::ProtocolError) -> PgBackendError {
        PgBackendError::Protocol {
            addr: self.addr.clone(),
            reason: e.to_string(),
        }
    }

    fn unexpected(&self, tag: u8) -> PgBackendError {
        PgBackendError::Protocol {
            addr: self.addr.clone(),
            reason: format!("unexpected message '{}' during login", char::from(tag)),
        }
    }

    fn refused(&self, e: crate::postgres::protocol::ErrorFields) -> PgBackendError {
        PgBackendError::Refused {
            addr: self.addr.clone(),
            error: e,
        }
    }

    /// Reads one whole message.
    pub async fn read_message(&mut self) -> Result<RawMessage, PgBackendError> {
        loop {
            if let Some(msg) = split_message(&mut self.read_buf, MAX_SERVER_MESSAGE)
                .map_err(|e| self.protocol(e))?
            {
                return Ok(msg);
            }
            self.fill().await?;
        }
    }

    /// Reads at least one more chunk from the socket into the read buffer.
    pub async fn fill(&mut self) -> Result<(), PgBackendError> {
        if self.read_buf.capacity() - self.read_buf.len() < 4096 {
            self.read_buf.reserve(16 * 1024);
        }
        let n = self
            .stream
            .read_buf(&mut self.read_buf)
            .await
            .map_err(|source| PgBackendError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        if n == 0 {
            return Err(PgBackendError::Closed {
                addr: self.addr.clone(),
            });
        }
        Ok(())
    }

    /// Whether an idle connection may be handed out: the server sends nothing to an idle
    /// session unprompted, so buffered bytes, readable data or end of stream mean it is
    /// shutting down (PostgreSQL's notice before an immediate shutdown, a FATAL) or gone.
    pub fn still_open(&mut self) -> bool {
        self.read_buf.is_empty() && self.stream.is_quiet()
    }

    /// The next complete message already buffered, without reading the socket.
    pub fn next_buffered(&mut self) -> Result<Option<RawMessage>, PgBackendError> {
        split_message(&mut self.read_buf, MAX_SERVER_MESSAGE).map_err(|e| self.protocol(e))
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), PgBackendError> {
        let io = |source| PgBackendError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(bytes).await.map_err(io)?;
        // TLS may hold the last record back until flushed; on TCP this does nothing.
        if self.stream.is_tls() {
            self.stream.flush().await.map_err(io)?;
        }
        Ok(())
    }

    /// Runs `sql` as a simple query and collects the rows as text, for the proxy's own needs
    /// (health checks, lag, resets). An ErrorResponse becomes `Refused`.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Vec<Option<String>>>, TransactionStatus), PgBackendError> {
        let mut out = BytesMut::new();
        crate::postgres::protocol::FrontendMessage::Query { sql: sql.into() }.encode(&mut out);
        self.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let msg = self.read_message().await?;
            match BackendMessage::decode(&msg).map_err(|e| self.protocol(e))? {
                BackendMessage::DataRow(values) => rows.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect(),
                ),
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery(status) => {
                    return match error {
                        Some(e) => Err(self.refused(e)),
                        None => Ok((rows, status)),
                    };
                }
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes, best effort.
    pub async fn terminate(mut self) {
        if self.stream.write_all(&[b'X', 0, 0, 0, 4]).await.is_ok() && self.stream.is_tls() {
            // Flushes the Terminate and sends close_notify, so the server logs no
            // unexpected EOF.
            let _ = self.stream.shutdown().await;
        }
    }

    /// What a CancelRequest for this connection's query needs.
    pub fn cancel_target(&self) -> CancelTarget {
        CancelTarget {
            endpoint: self.endpoint.clone(),
            pid: self.pid,
            key: self.key,
        }
    }

    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    pub fn has_buffered(&self) -> bool {
        !self.read_buf.is_empty()
    }
}

/// Appends a simple Query message.
pub fn put_query(out: &mut BytesMut, sql: &str) {
    out.put_u8(b'Q');
    out.put_i32(i32::try_from(sql.len() + 5).unwrap_or(i32::MAX));
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

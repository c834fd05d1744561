//! The client side of a session: buffered reads split into messages, and one write buffer that
//! is flushed once per batch of answers (a whole result set goes out in few syscalls).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::postgres::protocol::{
    ErrorFields, ProtocolError, RawMessage, check_client_message, split_message,
};

/// Largest message accepted from a logged-in client (a Bind with large parameters, a long
/// query text).
pub const MAX_CLIENT_MESSAGE: usize = 64 << 20;

/// Largest message accepted before login: PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`. Nothing a
/// client sends while authenticating needs more, and a client nobody knows yet must not make
/// the proxy hold more.
pub const MAX_LOGIN_MESSAGE: usize = 65_535;

/// Flush the write buffer when it grows past this, even in the middle of a result.
pub const WRITE_HIGH_WATER: usize = 64 << 10;

pub struct ClientIo<S> {
    pub stream: S,
    pub rbuf: BytesMut,
    pub wbuf: BytesMut,
    /// Set once the client has logged in: larger messages, and only the types a session may
    /// send.
    logged_in: bool,
}

/// Why the client connection ends.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client closed the connection")]
    Closed,
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    pub fn new(stream: S, rbuf: BytesMut) -> Self {
        ClientIo {
            stream,
            rbuf,
            // Small until used: idle clients must stay cheap (RSS per idle client is a target).
            wbuf: BytesMut::with_capacity(1024),
            logged_in: false,
        }
    }

    /// From now on the client speaks as a logged-in session (see [`ClientIo::next_buffered`]).
    pub fn logged_in(&mut self) {
        self.logged_in = true;
    }

    /// Reads more bytes; `Closed` at end of stream.
    pub async fn read_more(&mut self) -> Result<(), ClientError> {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * WRITE_HIGH_WATER {
            self.rbuf = BytesMut::with_capacity(1024);
        }
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(4 * 1024);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(ClientError::Closed),
            _ => Ok(()),
        }
    }

    /// The next buffered message, if complete. Before login a message may be at most
    /// [`MAX_LOGIN_MESSAGE`] long; after it, at most [`MAX_CLIENT_MESSAGE`], and its type and
    /// length are checked from its header, before the proxy waits for (or buffers) its body.
    pub fn next_buffered(&mut self) -> Result<Option<RawMessage>, ClientError> {
        if !self.logged_in {
            return Ok(split_message(&mut self.rbuf, MAX_LOGIN_MESSAGE)?);
        }
        if let [tag, a, b, c, d, ..] = self.rbuf[..] {
            let declared = i32::from_be_bytes([a, b, c, d]);
            check_client_message(tag, usize::try_from(declared).unwrap_or(0))?;
        }
        Ok(split_message(&mut self.rbuf, MAX_CLIENT_MESSAGE)?)
    }

    /// Reads until one whole message is there.
    pub async fn read_message(&mut self) -> Result<RawMessage, ClientError> {
        loop {
            if let Some(m) = self.next_buffered()? {
                return Ok(m);
            }
            self.read_more().await?;
        }
    }

    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            // A large result grew the buffer; do not keep that memory for an idle session.
            if self.wbuf.capacity() > 4 * WRITE_HIGH_WATER {
                self.wbuf = BytesMut::with_capacity(1024);
            }
        }
        Ok(())
    }

    pub fn error(&mut self, e: &ErrorFields) {
        e.encode_error(&mut self.wbuf);
    }

    /// Sends a FATAL error and closes, best effort: the client may already be gone.
    pub async fn fatal(&mut self, e: ErrorFields) {
        e.encode_error(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

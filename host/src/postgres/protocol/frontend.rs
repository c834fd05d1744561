//! Messages a client (or the proxy, as a client of a server) sends.

use bytes::{Bytes, BytesMut};

use super::cursor::{Cursor, begin_message, finish_message, put_cstr};
use super::text::SqlText;
use super::{CANCEL_REQUEST, GSSENC_REQUEST, PROTOCOL_V3, ProtocolError, RawMessage, SSL_REQUEST};

/// The untagged first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Asks for TLS; answered with one byte, `S` or `N`.
    Ssl,
    /// Asks for GSSAPI encryption; the proxy always answers `N`.
    GssEnc,
    /// Cancels the query running on the connection with this key.
    Cancel { pid: i32, key: i32 },
    /// Opens a session: `user`, `database`, and run-time parameters.
    Message {
        version: i32,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    /// Decodes the packet body after its length (see `split_startup`).
    pub fn decode(body: &[u8]) -> Result<Startup, ProtocolError> {
        let mut c = Cursor::new(body, "startup");
        let version = c.i32()?;
        let out = match version {
            SSL_REQUEST => Startup::Ssl,
            GSSENC_REQUEST => Startup::GssEnc,
            CANCEL_REQUEST => Startup::Cancel {
                pid: c.i32()?,
                key: c.i32()?,
            },
            v if v >> 16 == 3 => {
                let mut params = Vec::new();
                loop {
                    let name = c.cstr()?;
                    if name.is_empty() {
                        break;
                    }
                    let value = c.cstr()?;
                    params.push((name.to_owned(), value.to_owned()));
                }
                Startup::Message { version: v, params }
            }
            v => return Err(ProtocolError::UnsupportedVersion(v)),
        };
        c.finish()?;
        Ok(out)
    }

    /// Encodes with the leading length.
    pub fn encode(&self, out: &mut BytesMut) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            Startup::Ssl => out.extend_from_slice(&SSL_REQUEST.to_be_bytes()),
            Startup::GssEnc => out.extend_from_slice(&GSSENC_REQUEST.to_be_bytes()),
            Startup::Cancel { pid, key } => {
                out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&key.to_be_bytes());
            }
            Startup::Message { version, params } => {
                out.extend_from_slice(&version.to_be_bytes());
                for (k, v) in params {
                    put_cstr(out, k);
                    put_cstr(out, v);
                }
                out.extend_from_slice(&[0]);
            }
        }
        let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// A v3 StartupMessage with these parameters.
    pub fn v3(params: Vec<(String, String)>) -> Startup {
        Startup::Message {
            version: PROTOCOL_V3,
            params,
        }
    }
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn decode(b: u8) -> Result<Target, ProtocolError> {
        match b {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(ProtocolError::Invalid("Describe/Close target")),
        }
    }
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// A tagged message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// The text stays in the client's encoding (see [`SqlText`]).
    Query {
        sql: SqlText,
    },
    Parse {
        name: String,
        sql: SqlText,
        param_types: Vec<u32>,
    },
    /// Parameter formats, values and result formats stay encoded: the proxy only renames the
    /// statement, and a cache key hashes them as they are.
    Bind {
        portal: String,
        statement: String,
        rest: Bytes,
    },
    Describe {
        target: Target,
        name: String,
    },
    Execute {
        portal: String,
        max_rows: i32,
    },
    Close {
        target: Target,
        name: String,
    },
    Sync,
    Flush,
    Terminate,
    CopyData(Bytes),
    CopyDone,
    CopyFail {
        message: String,
    },
    /// `p`: PasswordMessage, SASLInitialResponse or SASLResponse — which one depends on the
    /// authentication exchange, so the body is decoded by [`PasswordMessage`] helpers.
    Password(Bytes),
    /// The legacy fast-path function call (libpq's `PQfn`, used by its large-object functions):
    /// checked for shape, then forwarded as it is.
    FunctionCall(Bytes),
}

impl FrontendMessage {
    pub fn decode(raw: &RawMessage) -> Result<FrontendMessage, ProtocolError> {
        let whole = raw.body();
        let body = raw.body_slice();
        let msg = match raw.tag() {
            b'Q' => {
                let mut c = Cursor::new(body, "Query");
                let sql = SqlText::from_bytes(c.cstr_bytes()?);
                c.finish()?;
                FrontendMessage::Query { sql }
            }
            b'P' => {
                let mut c = Cursor::new(body, "Parse");
                let name = c.cstr()?.to_owned();
                let sql = SqlText::from_bytes(c.cstr_bytes()?);
                let n = c.count16()?;
                let mut param_types = Vec::with_capacity(n.min(c.remaining() / 4));
                for _ in 0..n {
                    param_types.push(c.u32()?);
                }
                c.finish()?;
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => {
                let mut c = Cursor::new(body, "Bind");
                let portal = c.cstr()?.to_owned();
                let statement = c.cstr()?.to_owned();
                let rest = c.rest_of(&whole);
                validate_bind_rest(&rest)?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    rest,
                }
            }
            b'D' | b'C' => {
                let what = if raw.tag() == b'D' {
                    "Describe"
                } else {
                    "Close"
                };
                let mut c = Cursor::new(body, what);
                let target = Target::decode(c.u8()?)?;
                let name = c.cstr()?.to_owned();
                c.finish()?;
                if raw.tag() == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                }
            }
            b'E' => {
                let mut c = Cursor::new(body, "Execute");
                let portal = c.cstr()?.to_owned();
                let max_rows = c.i32()?;
                c.finish()?;
                FrontendMessage::Execute { portal, max_rows }
            }
            b'S' => empty(body, "Sync", FrontendMessage::Sync)?,
            b'H' => empty(body, "Flush", FrontendMessage::Flush)?,
            b'X' => empty(body, "Terminate", FrontendMessage::Terminate)?,
            b'c' => empty(body, "CopyDone", FrontendMessage::CopyDone)?,
            b'd' => FrontendMessage::CopyData(whole),
            b'f' => {
                let mut c = Cursor::new(body, "CopyFail");
                let message = c.cstr()?.to_owned();
                c.finish()?;
                FrontendMessage::CopyFail { message }
            }
            b'p' => FrontendMessage::Password(whole),
            b'F' => {
                validate_function_call(body)?;
                FrontendMessage::FunctionCall(whole)
            }
            other => return Err(ProtocolError::UnexpectedTag(other)),
        };
        Ok(msg)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self {
            FrontendMessage::Query { .. } => b'Q',
            FrontendMessage::Parse { .. } => b'P',
            FrontendMessage::Bind { .. } => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail { .. } => b'f',
            FrontendMessage::Password(_) => b'p',
            FrontendMessage::FunctionCall(_) => b'F',
        };
        let at = begin_message(out, tag);
        match self {
            FrontendMessage::Query { sql } => put_text(out, sql),
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                put_cstr(out, name);
                put_text(out, sql);
                let n = i16::try_from(param_types.len()).unwrap_or(i16::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                for t in param_types.iter().take(n as usize) {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                rest,
            } => {
                put_cstr(out, portal);
                put_cstr(out, statement);
                out.extend_from_slice(rest);
            }
            FrontendMessage::Describe { target, name }
            | FrontendMessage::Close { target, name } => {
                out.extend_from_slice(&[target.byte()]);
                put_cstr(out, name);
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cstr(out, portal);
                out.extend_from_slice(&max_rows.to_be_bytes());
            }
            FrontendMessage::CopyFail { message } => put_cstr(out, message),
            FrontendMessage::CopyData(b)
            | FrontendMessage::Password(b)
            | FrontendMessage::FunctionCall(b) => out.extend_from_slice(b),
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::Terminate
            | FrontendMessage::CopyDone => {}
        }
        finish_message(out, at);
    }
}

fn empty(
    body: &[u8],
    what: &'static str,
    msg: FrontendMessage,
) -> Result<FrontendMessage, ProtocolError> {
    Cursor::new(body, what).finish()?;
    Ok(msg)
}

fn put_text(out: &mut BytesMut, sql: &SqlText) {
    out.extend_from_slice(sql.as_bytes());
    out.extend_from_slice(&[0]);
}

/// Checks that a FunctionCall is well formed (function OID, argument formats, arguments,
/// result format), so that a malformed one is refused by the proxy rather than a server.
fn validate_function_call(body: &[u8]) -> Result<(), ProtocolError> {
    let mut c = Cursor::new(body, "FunctionCall");
    c.u32()?;
    let formats = c.count16()?;
    c.bytes(formats * 2)?;
    let args = c.count16()?;
    for _ in 0..args {
        let len = c.i32()?;
        if len >= 0 {
            c.bytes(len as usize)?;
        } else if len != -1 {
            return Err(ProtocolError::Invalid("FunctionCall argument length"));
        }
    }
    c.i16()?;
    c.finish()
}

/// Checks that a Bind's formats and parameters are well formed, so that a malformed Bind is
/// refused by the proxy (with the client's connection) instead of being forwarded to a shared
/// server connection.
fn validate_bind_rest(rest: &[u8]) -> Result<(), ProtocolError> {
    let mut c = Cursor::new(rest, "Bind");
    let formats = c.count16()?;
    c.bytes(formats * 2)?;
    let params = c.count16()?;
    for _ in 0..params {
        let len = c.i32()?;
        if len >= 0 {
            c.bytes(len as usize)?;
        } else if len != -1 {
            return Err(ProtocolError::Invalid("Bind parameter length"));
        }
    }
    let results = c.count16()?;
    c.bytes(results * 2)?;
    c.finish()
}

/// Decoders for the body of a `p` message, whose meaning depends on what the server asked.
pub struct PasswordMessage;

impl PasswordMessage {
    /// A cleartext or md5 PasswordMessage: the NUL-terminated password.
    pub fn password(body: &[u8]) -> Result<&[u8], ProtocolError> {
        match body.split_last() {
            Some((0, pw)) if !pw.contains(&0) => Ok(pw),
            _ => Err(ProtocolError::Unterminated("PasswordMessage")),
        }
    }

    /// SASLInitialResponse: the chosen mechanism and the client-first message.
    pub fn sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
        let mut c = Cursor::new(body, "SASLInitialResponse");
        let mechanism = c.cstr()?;
        let len = c.i32()?;
        let data = if len < 0 {
            &[][..]
        } else {
            c.bytes(len as usize)?
        };
        c.finish()?;
        Ok((mechanism, data))
    }

    pub fn encode_password(out: &mut BytesMut, password: &[u8]) {
        let at = begin_message(out, b'p');
        out.extend_from_slice(password);
        out.extend_from_slice(&[0]);
        finish_message(out, at);
    }

    pub fn encode_sasl_initial(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
        let at = begin_message(out, b'p');
        put_cstr(out, mechanism);
        out.extend_from_slice(&i32::try_from(data.len()).unwrap_or(i32::MAX).to_be_bytes());
        out.extend_from_slice(data);
        finish_message(out, at);
    }

    pub fn encode_sasl_response(out: &mut BytesMut, data: &[u8]) {
        let at = begin_message(out, b'p');
        out.extend_from_slice(data);
        finish_message(out, at);
    }
}

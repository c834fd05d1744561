//! Messages a server (or the proxy, as a server to its clients) sends.

use bytes::{Bytes, BytesMut};

use super::cursor::{Cursor, begin_message, finish_message, put_cstr};
use super::{ProtocolError, RawMessage};

/// The transaction status in ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries are refused until it ends).
    Failed,
}

impl TransactionStatus {
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            b'I' => Ok(TransactionStatus::Idle),
            b'T' => Ok(TransactionStatus::InTransaction),
            b'E' => Ok(TransactionStatus::Failed),
            _ => Err(ProtocolError::Invalid("ReadyForQuery status")),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse, in order, as (field type, value). Fields the
/// proxy does not know are kept, so a server's error reaches the client intact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// A new error with severity `ERROR` (or `FATAL`: pass it), a SQLSTATE and a message.
    pub fn new(severity: &str, code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            fields: vec![
                (b'S', severity.to_owned()),
                (b'V', severity.to_owned()),
                (b'C', code.to_owned()),
                (b'M', message.into()),
            ],
        }
    }

    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new("ERROR", code, message)
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::new("FATAL", code, message)
    }

    pub fn with(mut self, field: u8, value: impl Into<String>) -> Self {
        self.fields.push((field, value.into()));
        self
    }

    pub fn detail(self, detail: impl Into<String>) -> Self {
        self.with(b'D', detail)
    }

    pub fn hint(self, hint: impl Into<String>) -> Self {
        self.with(b'H', hint)
    }

    pub fn get(&self, field: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> Option<&str> {
        self.get(b'C')
    }

    pub fn message(&self) -> Option<&str> {
        self.get(b'M')
    }

    fn decode(body: &[u8], what: &'static str) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(body, what);
        let mut fields = Vec::new();
        loop {
            let field = c.u8()?;
            if field == 0 {
                break;
            }
            fields.push((field, c.cstr()?.to_owned()));
        }
        c.finish()?;
        Ok(ErrorFields { fields })
    }

    fn encode_body(&self, out: &mut BytesMut) {
        for (field, value) in &self.fields {
            out.extend_from_slice(&[*field]);
            put_cstr(out, value);
        }
        out.extend_from_slice(&[0]);
    }

    /// Appends this as an ErrorResponse.
    pub fn encode_error(&self, out: &mut BytesMut) {
        let at = begin_message(out, b'E');
        self.encode_body(out);
        finish_message(out, at);
    }

    /// Appends this as a NoticeResponse.
    pub fn encode_notice(&self, out: &mut BytesMut) {
        let at = begin_message(out, b'N');
        self.encode_body(out);
        finish_message(out, at);
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.get(b'S').unwrap_or("ERROR"),
            self.message().unwrap_or(""),
            self.code().unwrap_or("?")
        )
    }
}

/// An authentication request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password { salt: [u8; 4] },
    Sasl { mechanisms: Vec<String> },
    SaslContinue(Bytes),
    SaslFinal(Bytes),
}

/// A column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

impl Field {
    /// A text column of type `text`, as the proxy's own result sets use.
    pub fn text(name: impl Into<String>) -> Field {
        Field {
            name: name.into(),
            table_oid: 0,
            column: 0,
            type_oid: 25,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        }
    }
}

/// A tagged message from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    Authentication(Authentication),
    BackendKeyData {
        pid: i32,
        key: i32,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorFields),
    NoticeResponse(ErrorFields),
    CommandComplete {
        tag: String,
    },
    EmptyQueryResponse,
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    PortalSuspended,
    RowDescription(Vec<Field>),
    DataRow(Vec<Option<Bytes>>),
    ParameterDescription(Vec<u32>),
    /// CopyIn/CopyOut/CopyBoth response: overall format and per-column formats.
    CopyResponse {
        tag: u8,
        format: u8,
        columns: Vec<i16>,
    },
    CopyData(Bytes),
    CopyDone,
    NotificationResponse {
        pid: i32,
        channel: String,
        payload: String,
    },
    /// The answer to a StartupMessage asking for a newer minor version or for protocol options
    /// (`_pq_.*`) the server does not know; the login goes on in the version it names.
    NegotiateProtocolVersion {
        /// The newest version the server speaks for the major version asked for. The protocol
        /// documentation calls it the newest minor; PostgreSQL sends the whole version number
        /// (3.0 = 196608), so this field holds that.
        newest: i32,
        /// The `_pq_.*` options not recognised.
        unsupported: Vec<String>,
    },
}

impl BackendMessage {
    pub fn decode(raw: &RawMessage) -> Result<BackendMessage, ProtocolError> {
        let whole = raw.body();
        let body = raw.body_slice();
        let tag = raw.tag();
        let msg = match tag {
            b'R' => {
                let mut c = Cursor::new(body, "Authentication");
                let auth = match c.i32()? {
                    0 => Authentication::Ok,
                    3 => Authentication::CleartextPassword,
                    5 => {
                        let s = c.bytes(4)?;
                        Authentication::Md5Password {
                            salt: [s[0], s[1], s[2], s[3]],
                        }
                    }
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = c.cstr()?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(m.to_owned());
                        }
                        Authentication::Sasl { mechanisms }
                    }
                    11 => Authentication::SaslContinue(c.rest_of(&whole)),
                    12 => Authentication::SaslFinal(c.rest_of(&whole)),
                    _ => return Err(ProtocolError::Invalid("authentication request")),
                };
                c.finish()?;
                BackendMessage::Authentication(auth)
            }
            b'K' => {
                let mut c = Cursor::new(body, "BackendKeyData");
                let out = BackendMessage::BackendKeyData {
                    pid: c.i32()?,
                    key: c.i32()?,
                };
                c.finish()?;
                out
            }
            b'S' => {
                let mut c = Cursor::new(body, "ParameterStatus");
                let name = c.cstr()?.to_owned();
                let value = c.cstr()?.to_owned();
                c.finish()?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'Z' => {
                let mut c = Cursor::new(body, "ReadyForQuery");
                let status = TransactionStatus::from_byte(c.u8()?)?;
                c.finish()?;
                BackendMessage::ReadyForQuery(status)
            }
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(body, "ErrorResponse")?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(body, "NoticeResponse")?),
            b'C' => {
                let mut c = Cursor::new(body, "CommandComplete");
                let tag = c.cstr()?.to_owned();
                c.finish()?;
                BackendMessage::CommandComplete { tag }
            }
            b'I' => empty(
                body,
                "EmptyQueryResponse",
                BackendMessage::EmptyQueryResponse,
            )?,
            b'1' => empty(body, "ParseComplete", BackendMessage::ParseComplete)?,
            b'2' => empty(body, "BindComplete", BackendMessage::BindComplete)?,
            b'3' => empty(body, "CloseComplete", BackendMessage::CloseComplete)?,
            b'n' => empty(body, "NoData", BackendMessage::NoData)?,
            b's' => empty(body, "PortalSuspended", BackendMessage::PortalSuspended)?,
            b'c' => empty(body, "CopyDone", BackendMessage::CopyDone)?,
            b'd' => BackendMessage::CopyData(whole),
            b'T' => {
                let mut c = Cursor::new(body, "RowDescription");
                let n = c.count16()?;
                let mut fields = Vec::with_capacity(n.min(c.remaining() / 19));
                for _ in 0..n {
                    fields.push(Field {
                        name: c.cstr()?.to_owned(),
                        table_oid: c.u32()?,
                        column: c.i16()?,
                        type_oid: c.u32()?,
                        type_size: c.i16()?,
                        type_modifier: c.i32()?,
                        format: c.i16()?,
                    });
                }
                c.finish()?;
                BackendMessage::RowDescription(fields)
            }
            b'D' => {
                let mut c = Cursor::new(body, "DataRow");
                let n = c.count16()?;
                let mut values = Vec::with_capacity(n.min(c.remaining() / 4));
                for _ in 0..n {
                    let len = c.i32()?;
                    values.push(if len < 0 {
                        None
                    } else {
                        let start = body.len() - c.remaining();
                        c.bytes(len as usize)?;
                        Some(whole.slice(start..start + len as usize))
                    });
                }
                c.finish()?;
                BackendMessage::DataRow(values)
            }
            b't' => {
                let mut c = Cursor::new(body, "ParameterDescription");
                let n = c.count16()?;
                let mut types = Vec::with_capacity(n.min(c.remaining() / 4));
                for _ in 0..n {
                    types.push(c.u32()?);
                }
                c.finish()?;
                BackendMessage::ParameterDescription(types)
            }
            b'G' | b'H' | b'W' => {
                let mut c = Cursor::new(body, "CopyResponse");
                let format = c.u8()?;
                let n = c.count16()?;
                let mut columns = Vec::with_capacity(n.min(c.remaining() / 2));
                for _ in 0..n {
                    columns.push(c.i16()?);
                }
                c.finish()?;
                BackendMessage::CopyResponse {
                    tag,
                    format,
                    columns,
                }
            }
            b'A' => {
                let mut c = Cursor::new(body, "NotificationResponse");
                let out = BackendMessage::NotificationResponse {
                    pid: c.i32()?,
                    channel: c.cstr()?.to_owned(),
                    payload: c.cstr()?.to_owned(),
                };
                c.finish()?;
                out
            }
            b'v' => {
                let mut c = Cursor::new(body, "NegotiateProtocolVersion");
                let newest = c.i32()?;
                let n = usize::try_from(c.i32()?)
                    .map_err(|_| ProtocolError::Invalid("NegotiateProtocolVersion"))?;
                let mut unsupported = Vec::with_capacity(n.min(c.remaining()));
                for _ in 0..n {
                    unsupported.push(c.cstr()?.to_owned());
                }
                c.finish()?;
                BackendMessage::NegotiateProtocolVersion {
                    newest,
                    unsupported,
                }
            }
            other => return Err(ProtocolError::UnexpectedTag(other)),
        };
        Ok(msg)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            BackendMessage::ErrorResponse(e) => return e.encode_error(out),
            BackendMessage::NoticeResponse(e) => return e.encode_notice(out),
            _ => {}
        }
        let tag = match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::CommandComplete { .. } => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::NoData => b'n',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::ParameterDescription(_) => b't',
            BackendMessage::CopyResponse { tag, .. } => *tag,
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
        };
        let at = begin_message(out, tag);
        match self {
            BackendMessage::Authentication(auth) => match auth {
                Authentication::Ok => out.extend_from_slice(&0i32.to_be_bytes()),
                Authentication::CleartextPassword => out.extend_from_slice(&3i32.to_be_bytes()),
                Authentication::Md5Password { salt } => {
                    out.extend_from_slice(&5i32.to_be_bytes());
                    out.extend_from_slice(salt);
                }
                Authentication::Sasl { mechanisms } => {
                    out.extend_from_slice(&10i32.to_be_bytes());
                    for m in mechanisms {
                        put_cstr(out, m);
                    }
                    out.extend_from_slice(&[0]);
                }
                Authentication::SaslContinue(data) => {
                    out.extend_from_slice(&11i32.to_be_bytes());
                    out.extend_from_slice(data);
                }
                Authentication::SaslFinal(data) => {
                    out.extend_from_slice(&12i32.to_be_bytes());
                    out.extend_from_slice(data);
                }
            },
            BackendMessage::BackendKeyData { pid, key } => {
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&key.to_be_bytes());
            }
            BackendMessage::ParameterStatus { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            BackendMessage::ReadyForQuery(status) => out.extend_from_slice(&[status.byte()]),
            BackendMessage::CommandComplete { tag } => put_cstr(out, tag),
            BackendMessage::RowDescription(fields) => {
                out.extend_from_slice(&len16(fields.len()).to_be_bytes());
                for f in fields {
                    put_cstr(out, &f.name);
                    out.extend_from_slice(&f.table_oid.to_be_bytes());
                    out.extend_from_slice(&f.column.to_be_bytes());
                    out.extend_from_slice(&f.type_oid.to_be_bytes());
                    out.extend_from_slice(&f.type_size.to_be_bytes());
                    out.extend_from_slice(&f.type_modifier.to_be_bytes());
                    out.extend_from_slice(&f.format.to_be_bytes());
                }
            }
            BackendMessage::DataRow(values) => {
                out.extend_from_slice(&len16(values.len()).to_be_bytes());
                for v in values {
                    match v {
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(b) => {
                            let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
                            out.extend_from_slice(&len.to_be_bytes());
                            out.extend_from_slice(b);
                        }
                    }
                }
            }
            BackendMessage::ParameterDescription(types) => {
                out.extend_from_slice(&len16(types.len()).to_be_bytes());
                for t in types {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            BackendMessage::CopyResponse {
                format, columns, ..
            } => {
                out.extend_from_slice(&[*format]);
                out.extend_from_slice(&len16(columns.len()).to_be_bytes());
                for c in columns {
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
            BackendMessage::CopyData(data) => out.extend_from_slice(data),
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                out.extend_from_slice(&pid.to_be_bytes());
                put_cstr(out, channel);
                put_cstr(out, payload);
            }
            BackendMessage::NegotiateProtocolVersion {
                newest,
                unsupported,
            } => {
                out.extend_from_slice(&newest.to_be_bytes());
                let n = i32::try_from(unsupported.len()).unwrap_or(i32::MAX);
                out.extend_from_slice(&n.to_be_bytes());
                for u in unsupported {
                    put_cstr(out, u);
                }
            }
            BackendMessage::ErrorResponse(_)
            | BackendMessage::NoticeResponse(_)
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::ParseComplete
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::NoData
            | BackendMessage::PortalSuspended
            | BackendMessage::CopyDone => {}
        }
        finish_message(out, at);
    }
}

fn len16(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

fn empty(
    body: &[u8],
    what: &'static str,
    msg: BackendMessage,
) -> Result<BackendMessage, ProtocolError> {
    Cursor::new(body, what).finish()?;
    Ok(msg)
}

/// Appends ReadyForQuery.
pub fn ready_for_query(out: &mut BytesMut, status: TransactionStatus) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status.byte()]);
}

/// The transaction status of a ReadyForQuery message, without allocating.
pub fn ready_status(raw: &RawMessage) -> Result<TransactionStatus, ProtocolError> {
    match raw.body_slice() {
        [b] => TransactionStatus::from_byte(*b),
        _ => Err(ProtocolError::Invalid("ReadyForQuery")),
    }
}

/// The SQLSTATE of an ErrorResponse or NoticeResponse, read in place (no allocation: the
/// session checks it for every error a replica sends).
pub fn error_code(raw: &RawMessage) -> Option<&[u8]> {
    let mut fields = raw.bytes().get(5..)?;
    while let Some((&field, rest)) = fields.split_first() {
        if field == 0 {
            return None;
        }
        let end = rest.iter().position(|&b| b == 0)?;
        if field == b'C' {
            return Some(&rest[..end]);
        }
        fields = &rest[end + 1..];
    }
    None
}

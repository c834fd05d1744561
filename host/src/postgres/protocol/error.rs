use thiserror::Error;

/// A message that cannot be read. Every variant ends the connection it came from (the stream
/// can no longer be framed), after an ErrorResponse with SQLSTATE 08P01 where possible.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("message too long: {len} bytes (limit {max})")]
    TooLong { len: usize, max: usize },
    #[error("invalid message length {0}")]
    BadLength(i32),
    #[error("truncated {0} message")]
    Truncated(&'static str),
    #[error("{0} message has {1} trailing bytes")]
    Trailing(&'static str, usize),
    #[error("invalid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("missing NUL terminator in {0}")]
    Unterminated(&'static str),
    #[error("unexpected message type '{}' ({:#04x})", char::from(*.0), .0)]
    UnexpectedTag(u8),
    /// A message type no client may send after login (PostgreSQL's wording).
    #[error("invalid frontend message type {0}")]
    InvalidFrontendType(u8),
    #[error("unsupported protocol version {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedVersion(i32),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

//! Splitting a byte stream into messages without decoding them.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;

/// Largest startup packet accepted (PostgreSQL's own limit is 10,000 bytes).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Most room reserved ahead for a message whose body has not arrived yet. Beyond it the buffer
/// grows with the bytes that really come, so announcing a large message costs the sender as
/// much as it costs the proxy.
const MAX_RESERVE_AHEAD: usize = 64 << 10;

/// One tagged message, whole (tag, length and body) so it can be forwarded as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    bytes: Bytes,
}

impl RawMessage {
    /// Wraps a complete encoded message. The caller guarantees `bytes` is one framed message.
    pub fn from_encoded(bytes: Bytes) -> Self {
        debug_assert!(bytes.len() >= 5);
        RawMessage { bytes }
    }

    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The body after tag and length.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(5..)
    }

    /// The body as a slice, without reference counting.
    pub fn body_slice(&self) -> &[u8] {
        &self.bytes[5..]
    }

    /// The whole message as received.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Takes one complete tagged message off the front of `buf`, or `None` when more bytes are
/// needed. A declared length above `max_len` fails before anything is buffered for it, so a
/// client cannot make the proxy allocate by announcing a huge message.
pub fn split_message(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<RawMessage>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(ProtocolError::BadLength(declared));
    }
    let total = declared as usize + 1;
    if total > max_len {
        return Err(ProtocolError::TooLong {
            len: total,
            max: max_len,
        });
    }
    if buf.len() < total {
        buf.reserve((total - buf.len()).min(MAX_RESERVE_AHEAD));
        return Ok(None);
    }
    Ok(Some(RawMessage {
        bytes: buf.split_to(total).freeze(),
    }))
}

/// Takes the untagged startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest,
/// CancelRequest) off `buf`: its body after the length, or `None` when more bytes are needed.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&declared) {
        return Err(if declared > MAX_STARTUP_LEN as i32 {
            ProtocolError::TooLong {
                len: declared as usize,
                max: MAX_STARTUP_LEN,
            }
        } else {
            ProtocolError::BadLength(declared)
        });
    }
    let total = declared as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut packet = buf.split_to(total);
    packet.advance(4);
    Ok(Some(packet.freeze()))
}

//! Framing: every packet is a 3-byte little-endian payload length, a sequence id and the
//! payload. A payload of 16 MiB - 1 or more continues in the next frame. Framing is written
//! here rather than taken from `mysql_common`'s codec because a relay forwards frames as they
//! arrive, renumbering their sequence ids in place, and must not join a large result into one
//! buffer.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes before the payload.
pub const HEADER: usize = 4;
/// The most a read buffer grows ahead of the bytes that have arrived.
const RESERVE_AHEAD: usize = 64 << 10;
/// The largest payload of one frame; a frame this long is followed by more of the same payload.
pub const MAX_FRAME_PAYLOAD: usize = 0xFF_FFFF;

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("packet of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("packet out of order: sequence id {got}, expected {expected}")]
    Sequence { got: u8, expected: u8 },
}

/// One frame: header and payload.
#[derive(Debug, Clone)]
pub struct Frame(pub BytesMut);

impl Frame {
    pub fn seq(&self) -> u8 {
        self.0[3]
    }

    pub fn set_seq(&mut self, seq: u8) {
        self.0[3] = seq;
    }

    pub fn payload(&self) -> &[u8] {
        &self.0[HEADER..]
    }

    /// The first payload byte (0 for an empty payload).
    pub fn kind(&self) -> u8 {
        self.0.get(HEADER).copied().unwrap_or(0)
    }

    /// Whether the payload continues in the next frame.
    pub fn continues(&self) -> bool {
        self.0.len() - HEADER == MAX_FRAME_PAYLOAD
    }
}

/// Appends one frame of `payload` (shorter than [`MAX_FRAME_PAYLOAD`]) with `seq` to `out`.
pub fn put_frame(out: &mut BytesMut, seq: u8, payload: &[u8]) {
    put_payload(out, seq, payload);
}

/// Appends `payload` as frames starting at `seq`; returns the next sequence id.
pub fn put_payload(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME_PAYLOAD);
        // n < 2^24: the length always fits the three header bytes.
        let len = (n as u32).to_le_bytes();
        out.extend_from_slice(&[len[0], len[1], len[2], seq]);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_FRAME_PAYLOAD {
            return seq;
        }
    }
}

/// Splits one whole frame off the front of `buf`, if it holds one.
pub fn split_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < HEADER {
        return None;
    }
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    if buf.len() < HEADER + len {
        return None;
    }
    Some(Frame(buf.split_to(HEADER + len)))
}

/// A buffered reader of frames over any stream.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(8192),
        }
    }
}

impl FrameReader {
    /// Whether bytes of a next frame are already buffered.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads the next frame.
    pub async fn frame<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Frame, PacketError> {
        loop {
            if let Some(frame) = split_frame(&mut self.buf) {
                return Ok(frame);
            }
            self.fill(stream).await?;
        }
    }

    /// Takes every byte buffered and not yet framed (a protocol switch: what follows is not
    /// framed as packets).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Takes a whole frame already buffered, without reading.
    pub fn buffered_frame(&mut self) -> Option<Frame> {
        split_frame(&mut self.buf)
    }

    /// Reads a whole packet (joining continuation frames) of at most `max` payload bytes,
    /// returning its first sequence id and payload. Over `max`, the rest is not buffered: the
    /// caller answers with an error and closes.
    pub async fn packet<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> Result<(u8, BytesMut), PacketError> {
        let first = self.frame_within(stream, max).await?;
        let seq = first.seq();
        let continues = first.continues();
        let mut payload = first.0;
        payload.advance(HEADER);
        if continues {
            let mut expected = seq.wrapping_add(1);
            loop {
                let next = self
                    .frame_within(stream, max.saturating_sub(payload.len()))
                    .await?;
                if next.seq() != expected {
                    return Err(PacketError::Sequence {
                        got: next.seq(),
                        expected,
                    });
                }
                expected = expected.wrapping_add(1);
                let more = next.continues();
                payload.extend_from_slice(next.payload());
                if !more {
                    break;
                }
            }
        }
        Ok((seq, payload))
    }

    async fn frame_within<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> Result<Frame, PacketError> {
        loop {
            if self.buf.len() >= HEADER {
                let len = usize::from(self.buf[0])
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]) << 16;
                if len > max {
                    return Err(PacketError::TooLarge { len, max });
                }
                if let Some(frame) = split_frame(&mut self.buf) {
                    return Ok(frame);
                }
                // At most 64 KiB ahead of what has arrived: announcing a large packet costs
                // the sender as much memory as it costs the proxy.
                self.buf
                    .reserve((HEADER + len - self.buf.len()).min(RESERVE_AHEAD));
            }
            self.fill(stream).await?;
        }
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<(), PacketError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        let n = stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(PacketError::Closed);
        }
        Ok(())
    }
}

/// Writes one packet of `payload` with `seq` and flushes.
pub async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(HEADER + payload.len());
    put_payload(&mut out, seq, payload);
    stream.write_all(&out).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_their_length() {
        let mut out = BytesMut::new();
        put_frame(&mut out, 0, b"\x03SELECT 1");
        put_frame(&mut out, 1, b"");
        out.extend_from_slice(&[5, 0]);
        let first = split_frame(&mut out).expect("a whole frame");
        assert_eq!(first.seq(), 0);
        assert_eq!(first.payload(), b"\x03SELECT 1");
        assert_eq!(first.kind(), 3);
        let empty = split_frame(&mut out).expect("an empty frame");
        assert_eq!(empty.payload(), b"");
        assert!(
            split_frame(&mut out).is_none(),
            "a partial header is not a frame"
        );
    }

    #[tokio::test]
    async fn a_long_payload_spans_frames_and_joins_back() {
        let payload = vec![7u8; MAX_FRAME_PAYLOAD + 10];
        let mut out = BytesMut::new();
        let next = put_payload(&mut out, 3, &payload);
        assert_eq!(next, 5);
        let mut reader = FrameReader::default();
        let mut stream = &out[..];
        let (seq, joined) = reader
            .packet(&mut stream, 32 << 20)
            .await
            .expect("the packet");
        assert_eq!(seq, 3);
        assert_eq!(joined.len(), payload.len());
    }

    #[tokio::test]
    async fn a_packet_over_the_limit_is_refused_before_it_is_buffered() {
        let mut out = BytesMut::new();
        put_frame(&mut out, 0, &[1u8; 100]);
        let mut reader = FrameReader::default();
        let mut stream = &out[..];
        let err = reader.packet(&mut stream, 50).await.expect_err("too large");
        assert!(matches!(err, PacketError::TooLarge { len: 100, max: 50 }));
    }

    #[tokio::test]
    async fn a_truncated_packet_is_a_closed_peer() {
        let mut stream = &[9u8, 0, 0, 0, 1, 2][..];
        let err = FrameReader::default()
            .packet(&mut stream, 1 << 20)
            .await
            .expect_err("truncated");
        assert!(matches!(err, PacketError::Closed));
    }
}

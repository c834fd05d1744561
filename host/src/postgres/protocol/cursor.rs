//! A bounds-checked reader over one message body: every read that would run past the end is a
//! [`ProtocolError::Truncated`], never a panic.

use bytes::Bytes;

use super::ProtocolError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(ProtocolError::Truncated(self.what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }

    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.i32().map(|v| v as u32)
    }

    /// A count that must not be negative.
    pub fn count16(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.i16()?).map_err(|_| ProtocolError::Invalid(self.what))
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let bytes = self.cstr_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| ProtocolError::Utf8(self.what))
    }

    /// A NUL-terminated string in whatever encoding the client uses, without its NUL.
    pub fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Unterminated(self.what))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        self.take(n)
    }

    /// The rest as a zero-copy slice of `whole`, which must be the buffer this cursor reads.
    pub fn rest_of(&mut self, whole: &Bytes) -> Bytes {
        let start = self.pos;
        self.pos = self.buf.len();
        whole.slice(start..)
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails when bytes are left over: a length that disagrees with the content is an attack or
    /// a bug, and reading on would desynchronise the stream.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::Trailing(self.what, n)),
        }
    }
}

/// Writes a NUL-terminated string.
pub(crate) fn put_cstr(out: &mut bytes::BytesMut, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(&[0]);
}

/// Starts a tagged message; returns the offset of its length field for [`finish_message`].
pub(crate) fn begin_message(out: &mut bytes::BytesMut, tag: u8) -> usize {
    out.extend_from_slice(&[tag]);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Fills in the length of a message begun at `at` (the length counts itself, not the tag).
pub(crate) fn finish_message(out: &mut bytes::BytesMut, at: usize) {
    let len = i32::try_from(out.len() - at).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

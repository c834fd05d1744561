//! Decompressing a request body (`Content-Encoding: gzip` or `deflate`) a bounded step at a time:
//! the statement of an INSERT is looked for in decoded text (`head`), and the data of a rewritten
//! INSERT is sent decoded (`inflate`).

use std::io::Write;

use flate2::write::{GzDecoder, ZlibDecoder};

/// Raw bytes fed to a decompressor at a time: deflate expands up to ~1000×, so one small
/// compressed chunk must not be decoded in one go before the caller can look at the size.
const STEP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decompress it: {0}")]
    Corrupt(#[from] std::io::Error),
    #[error("cannot decompress it: data after the end of the compressed stream")]
    Trailing,
}

pub enum Decoder {
    Identity(Vec<u8>),
    Gzip(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
}

impl Decoder {
    /// `None` for an encoding the proxy cannot decode.
    pub fn new(encoding: Option<&str>) -> Option<Decoder> {
        match encoding {
            None => Some(Decoder::Identity(Vec::new())),
            Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
                Some(Decoder::Gzip(GzDecoder::new(Vec::new())))
            }
            Some(e) if e.eq_ignore_ascii_case("deflate") => {
                Some(Decoder::Zlib(ZlibDecoder::new(Vec::new())))
            }
            Some(_) => None,
        }
    }

    /// What was decoded and not taken yet.
    pub fn decoded(&self) -> &[u8] {
        match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Zlib(d) => d.get_ref(),
        }
    }

    /// Takes what was decoded so far; the decoder goes on from where it is.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zlib(d) => d.get_mut(),
        })
    }

    /// Feeds raw bytes, stopping early once `limit` decoded bytes are waiting to be taken.
    /// Returns how many raw bytes it consumed: the caller keeps the rest for later.
    ///
    /// Identity keeps every byte (the chunk is in memory anyway, and the decoded text must equal
    /// the raw bytes so that data can be cut from it).
    pub fn feed(&mut self, raw: &[u8], limit: usize) -> Result<usize, DecodeError> {
        if let Decoder::Identity(v) = self {
            v.extend_from_slice(raw);
            return Ok(raw.len());
        }
        let mut consumed = 0;
        while consumed < raw.len() && self.decoded().len() < limit {
            let end = raw.len().min(consumed + STEP);
            self.write_step(&raw[consumed..end])?;
            consumed = end;
        }
        Ok(consumed)
    }

    fn write_step(&mut self, mut step: &[u8]) -> Result<(), DecodeError> {
        let writer: &mut dyn Write = match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d,
            Decoder::Zlib(d) => d,
        };
        while !step.is_empty() {
            // A decompressor whose stream has ended takes nothing more.
            match writer.write(step)? {
                0 => return Err(DecodeError::Trailing),
                n => step = &step[n..],
            }
        }
        // Flushing moves what was decoded so far into the output buffer.
        writer.flush()?;
        Ok(())
    }

    /// The body ended: decode what the decompressor still holds, and check that the compressed
    /// stream was complete (a truncated upload is an error, not shorter data).
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        match self {
            Decoder::Identity(_) => Ok(()),
            Decoder::Gzip(d) => Ok(d.try_finish()?),
            Decoder::Zlib(d) => Ok(d.try_finish()?),
        }
    }
}

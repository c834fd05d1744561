//! Response compression, done by the proxy: `enable_http_compression=1` plus an
//! `Accept-Encoding` of gzip or deflate gives a compressed response, as ClickHouse does.
//!
//! Why not pass the setting to the backend: a `readonly=1` backend user (the read-only user reads
//! run as) may not change settings and gets `Code: 164 Cannot override setting
//! (enable_http_compression) in readonly mode`; and cached entries are stored uncompressed so that a
//! gzip client and a plain client share one entry. One compressor here serves both paths.

use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::{GzEncoder, ZlibEncoder};
use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use super::params::Params;
use crate::backend::clickhouse_http::{Body, BoxError};

/// ClickHouse's default `http_zlib_compression_level`.
const DEFAULT_LEVEL: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    /// HTTP `deflate` is the zlib format.
    Deflate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compress {
    pub encoding: Encoding,
    pub level: u32,
}

impl Compress {
    /// What the client asked for, if anything the proxy supports (`br` is not, as in
    /// ClickHouse 18.16: such clients get an uncompressed response).
    pub fn negotiate(params: &Params, headers: &HeaderMap) -> Option<Compress> {
        if !params.flag("enable_http_compression") {
            return None;
        }
        let accept = headers
            .get(ACCEPT_ENCODING)?
            .to_str()
            .ok()?
            .to_ascii_lowercase();
        let offers = |name: &str| {
            accept.split(',').any(|part| {
                let mut it = part.split(';');
                let token = it.next().unwrap_or_default().trim();
                let refused =
                    it.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                token == name && !refused
            })
        };
        let encoding = if offers("gzip") {
            Encoding::Gzip
        } else if offers("deflate") {
            Encoding::Deflate
        } else {
            return None;
        };
        let level = params
            .get("http_zlib_compression_level")
            .and_then(|l| l.parse().ok())
            .filter(|l| (1..=9).contains(l))
            .unwrap_or(DEFAULT_LEVEL);
        Some(Compress { encoding, level })
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_static(match self.encoding {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        })
    }

    /// Compresses a whole body at once (cached responses).
    pub fn all(&self, data: &[u8]) -> Bytes {
        let mut encoder = Encoder::new(*self);
        let mut out = encoder.write(data, false);
        out.extend_from_slice(&encoder.finish());
        Bytes::from(out)
    }

    /// Compresses a stream chunk by chunk, flushing after each so that a slow result still
    /// reaches the client as it is produced.
    pub fn stream(&self, body: Body) -> Body {
        Compressed {
            inner: body,
            encoder: Some(Encoder::new(*self)),
        }
        .boxed_unsync()
    }
}

enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Zlib(ZlibEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(c: Compress) -> Encoder {
        let level = Compression::new(c.level);
        match c.encoding {
            Encoding::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), level)),
            Encoding::Deflate => Encoder::Zlib(ZlibEncoder::new(Vec::new(), level)),
        }
    }

    /// Writing into a Vec cannot fail, so errors are impossible here.
    fn write(&mut self, data: &[u8], flush: bool) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => {
                let _ = e.write_all(data);
                if flush {
                    let _ = e.flush();
                }
                std::mem::take(e.get_mut())
            }
            Encoder::Zlib(e) => {
                let _ = e.write_all(data);
                if flush {
                    let _ = e.flush();
                }
                std::mem::take(e.get_mut())
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.finish().unwrap_or_default(),
            Encoder::Zlib(e) => e.finish().unwrap_or_default(),
        }
    }
}

struct Compressed {
    inner: Body,
    encoder: Option<Encoder>,
}

impl HttpBody for Compressed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.encoder.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.encoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let Some(encoder) = self.encoder.as_mut() else {
                        continue;
                    };
                    let out = encoder.write(&data, true);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    let tail = self.encoder.take().map(Encoder::finish).unwrap_or_default();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        h
    }

    #[test]
    fn compression_needs_the_setting_and_a_supported_encoding() {
        let on = Params::parse(Some("enable_http_compression=1"));
        let off = Params::parse(None);
        assert_eq!(Compress::negotiate(&off, &headers("gzip")), None);
        assert_eq!(
            Compress::negotiate(&on, &headers("br, deflate")).map(|c| c.encoding),
            Some(Encoding::Deflate)
        );
        assert_eq!(Compress::negotiate(&on, &headers("br")), None);
        assert_eq!(
            Compress::negotiate(&on, &headers("gzip;q=0, deflate")).map(|c| c.encoding),
            Some(Encoding::Deflate)
        );
    }

    #[tokio::test]
    async fn streamed_and_whole_compression_round_trip() {
        let c = Compress {
            encoding: Encoding::Gzip,
            level: 3,
        };
        let whole = c.all(b"hello world\n");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&whole[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world\n");

        let streamed = c.stream(super::super::body::full(Bytes::from_static(b"abc\n")));
        let bytes = streamed.collect().await.unwrap().to_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "abc\n");
    }
}

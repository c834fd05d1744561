//! The data of a rewritten INSERT whose statement came inside a compressed body.
//!
//! The rewritten statement travels in the `query` parameter, so the body sent cannot be the
//! client's compressed bytes (they begin with the original statement). It is sent as identity:
//! the data decoded while the statement was looked for, then the rest of the client's body
//! decoded as it arrives. Nothing is buffered beyond one raw chunk and one frame of decoded data,
//! whatever the size of the upload.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use super::body::Chain;
use super::decode::{DecodeError, Decoder};
use super::head::{RawBody, body_error};
use crate::backend::clickhouse_http::{Body, BoxError};

/// Decoded bytes gathered before they are passed on (a frame ends earlier when the raw chunk at
/// hand is used up, so that data never waits for the client's next chunk).
const FRAME: usize = 64 * 1024;

/// A compressed body's decompressor where the statement search left it.
pub struct Resume {
    decoder: Decoder,
    /// Raw bytes received but not fed to the decoder yet (the search stops mid-chunk).
    unfed: Bytes,
}

impl Resume {
    pub fn new(decoder: Decoder, unfed: Bytes) -> Resume {
        Resume { decoder, unfed }
    }
}

/// The decoded data: `prefix`, then the rest of `raw` through the decoder. Every raw byte counts
/// towards `max_body`, those read during the search included, as when the body passes through.
pub fn body(prefix: Bytes, resume: Box<Resume>, raw: RawBody, max_body: Option<u64>) -> Body {
    let received = raw.chunks.iter().map(|c| c.len() as u64).sum();
    Inflate {
        prefix: (!prefix.is_empty()).then_some(prefix),
        input: resume.unfed,
        decoder: Some(resume.decoder),
        source: Chain::after(received, raw.rest, max_body),
    }
    .boxed_unsync()
}

struct Inflate {
    prefix: Option<Bytes>,
    input: Bytes,
    /// `None` once the stream ended or failed.
    decoder: Option<Decoder>,
    source: Chain,
}

fn failed(e: DecodeError) -> BoxError {
    Box::new(body_error(e))
}

impl HttpBody for Inflate {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        loop {
            let Some(decoder) = this.decoder.as_mut() else {
                return Poll::Ready(None);
            };
            if !this.input.is_empty() {
                match decoder.feed(&this.input, FRAME) {
                    Ok(used) => this.input.advance(used),
                    Err(e) => {
                        this.decoder = None;
                        return Poll::Ready(Some(Err(failed(e))));
                    }
                }
                let out = decoder.take();
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                continue;
            }
            match Pin::new(&mut this.source).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.input = data;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.decoder = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let finished = decoder.finish();
                    let out = decoder.take();
                    this.decoder = None;
                    return match finished {
                        Err(e) => Poll::Ready(Some(Err(failed(e)))),
                        Ok(()) if out.is_empty() => Poll::Ready(None),
                        Ok(()) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(out))))),
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.decoder.is_none()
    }
}

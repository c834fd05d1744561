//! Body helpers: fixed bodies, and request bodies made of the chunks already read plus the rest
//! of the client's stream (bounded by `max_body_size`).
//!
//! Errors these bodies yield are [`ChError`]s: when one makes the backend request fail, the client
//! is answered with it (see `forward::send`), not with a gateway error.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::error::ChError;
use super::head::{body_error, too_large};
use crate::backend::clickhouse_http::{Body, BoxError};

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A client's request body, boxed so that the code reading it does not depend on hyper's
/// connection type (and unit tests can feed it chunks of their choosing).
pub fn client(incoming: Incoming) -> Body {
    incoming
        .map_err(|e| -> BoxError { Box::new(e) })
        .boxed_unsync()
}

/// Chunks already read, then the rest of a client's body.
pub struct Chain {
    chunks: VecDeque<Bytes>,
    rest: Option<Body>,
    /// Bytes still allowed from `rest` (`None`: no limit).
    remaining: Option<u64>,
    max: u64,
}

impl Chain {
    /// `chunks` were already read and are sent first; `max_body` bounds them and the rest together.
    pub fn new(chunks: VecDeque<Bytes>, rest: Option<Body>, max_body: Option<u64>) -> Chain {
        let received: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let mut chain = Chain::after(received, rest, max_body);
        chain.chunks = chunks;
        chain
    }

    /// The rest of a body of which `received` raw bytes were already read and are used elsewhere
    /// (a decompressor has them): they count towards `max_body` but are not sent again.
    pub fn after(received: u64, rest: Option<Body>, max_body: Option<u64>) -> Chain {
        Chain {
            chunks: VecDeque::new(),
            rest,
            remaining: max_body.map(|m| m.saturating_sub(received)),
            max: max_body.unwrap_or(u64::MAX),
        }
    }

    pub fn boxed(self) -> Body {
        BodyExt::boxed_unsync(self)
    }
}

impl HttpBody for Chain {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(remaining)) = (frame.data_ref(), self.remaining) {
                    let len = data.len() as u64;
                    if len > remaining {
                        self.rest = None;
                        let err: ChError = too_large(self.max);
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    self.remaining = Some(remaining - len);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.rest = None;
                Poll::Ready(Some(Err(Box::new(body_error(e)))))
            }
            Poll::Ready(None) => {
                self.rest = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + inner.lower());
                if let Some(upper) = inner.upper() {
                    hint.set_upper(buffered + upper);
                }
                hint
            }
        }
    }
}

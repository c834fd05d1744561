//! Body helpers: fixed bodies, and request bodies made of the chunks already read plus the rest
//! of the client's stream (bounded by `max_body_size`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::head::too_large;
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

/// Chunks already read, then the rest of a client's body.
pub struct Chain {
    chunks: VecDeque<Bytes>,
    rest: Option<Incoming>,
    /// Bytes still allowed from `rest` (`None`: no limit).
    remaining: Option<u64>,
    max: u64,
}

impl Chain {
    /// `received` raw bytes were already read (they are in `chunks`); `max_body` bounds the total.
    pub fn new(chunks: VecDeque<Bytes>, rest: Option<Incoming>, max_body: Option<u64>) -> Chain {
        let received: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        Chain {
            chunks,
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
                        let err = too_large(self.max);
                        return Poll::Ready(Some(Err(err.message.into())));
                    }
                    self.remaining = Some(remaining - len);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.rest = None;
                Poll::Ready(Some(Err(Box::new(e))))
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

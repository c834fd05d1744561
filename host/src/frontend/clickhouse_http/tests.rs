//! Tests of the frontend's parts that need no server. The integration tests
//! (`tests/integration/clickhouse_http*.rs`) cover the rest against real ClickHouse nodes.

mod inflate;

use std::collections::VecDeque;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt as _;

use crate::backend::clickhouse_http::{Body, BoxError};

/// A client body arriving in the given chunks.
struct Chunks(VecDeque<Bytes>);

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// `data` cut into chunks whose sizes cycle through `sizes`.
fn chunked(data: &[u8], sizes: &[usize]) -> Body {
    let mut chunks = VecDeque::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = data.len().min(at + size);
        chunks.push_back(Bytes::copy_from_slice(&data[at..end]));
        at = end;
    }
    Chunks(chunks).boxed_unsync()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("zlib into memory");
    e.finish().expect("zlib into memory")
}

/// What a body yields: its data frames, and the error that ended it, if one did.
async fn drain(mut body: Body) -> (Vec<Bytes>, Option<BoxError>) {
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

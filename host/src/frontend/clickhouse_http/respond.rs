//! Client responses: the backend's headers that matter (Content-Type and every X-ClickHouse-*,
//! whatever the server version sends), `X-Cache`, and the proxy's own compression; plus the
//! encoding of those headers as a cache entry's metadata.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;

use super::body;
use super::compress::Compress;
use super::forward::Answer;
use super::relay::{Deadline, Relay};
use crate::backend::clickhouse_http::Body;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What the cache did for a response (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Not cacheable: a write, no directive, `no_cache=1`, a user with `cache = false`, ...
    NotApplicable,
}

impl CacheStatus {
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::NotApplicable => "N/A",
        })
    }
}

/// Whether a backend response header is passed to the client (and kept in cache entries).
fn passed(name: &HeaderName) -> bool {
    *name == CONTENT_TYPE || name.as_str().starts_with("x-clickhouse-")
}

/// The headers of a backend response that reach the client.
pub fn passed_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        if passed(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A streamed backend answer as the client's response.
pub fn streamed(
    mut answer: Answer,
    deadline: Option<Deadline>,
    compress: Option<Compress>,
    cache: CacheStatus,
) -> Response<Body> {
    let headers = passed_headers(&answer.headers);
    if answer.rest.is_none() {
        // Complete already: one write with a Content-Length (the Relay would do the same with
        // chunked encoding in two).
        let mut held = answer.held;
        held.kill.disarm();
        drop(held);
        let data = match answer.first.len() {
            0 => Bytes::new(),
            1 => answer.first.pop_front().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::new();
                for chunk in &answer.first {
                    out.extend_from_slice(chunk);
                }
                out.freeze()
            }
        };
        return whole(answer.status, headers, data, compress, cache);
    }
    let relay = Relay::new(answer.first, answer.rest, deadline, answer.held);
    let body = relay.boxed_unsync();
    build(answer.status, headers, body, compress, cache)
}

/// A response whose body is in memory (cache hits, cache fills, the proxy's own answers).
pub fn whole(
    status: StatusCode,
    headers: HeaderMap,
    data: Bytes,
    compress: Option<Compress>,
    cache: CacheStatus,
) -> Response<Body> {
    match compress {
        Some(c) => {
            let mut response = build(status, headers, body::full(c.all(&data)), None, cache);
            response
                .headers_mut()
                .insert(CONTENT_ENCODING, c.header_value());
            response
        }
        None => build(status, headers, body::full(data), None, cache),
    }
}

fn build(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Body,
    compress: Option<Compress>,
    cache: CacheStatus,
) -> Response<Body> {
    let body = match compress {
        Some(c) => {
            headers.insert(CONTENT_ENCODING, c.header_value());
            c.stream(body)
        }
        None => body,
    };
    headers.insert(X_CACHE, cache.header());
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Cache metadata: the passed headers as `name: value\n` lines.
pub fn encode_meta(headers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.freeze()
}

/// The headers of a cache entry; lines that do not parse are skipped (an entry written by another
/// version of the proxy must not fail a hit).
pub fn decode_meta(meta: &[u8]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for line in meta.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            out.append(name, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_headers_round_trip_through_cache_meta() {
        let mut backend = HeaderMap::new();
        backend.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=UTF-8; header=absent"),
        );
        backend.insert(
            "x-clickhouse-server-display-name",
            HeaderValue::from_static("ch0"),
        );
        backend.insert(
            "x-clickhouse-summary",
            HeaderValue::from_static("{\"read_rows\":\"1\"}"),
        );
        backend.insert("keep-alive", HeaderValue::from_static("timeout=10"));
        let passed = passed_headers(&backend);
        assert_eq!(passed.len(), 3);
        assert_eq!(decode_meta(&encode_meta(&passed)), passed);
        assert!(decode_meta(b"garbage\n\xff: x\n").is_empty());
    }
}

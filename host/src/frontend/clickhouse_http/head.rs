//! The query text of a request, without holding INSERT data in memory.
//!
//! ClickHouse runs `query` parameter + `\n` + body. For `INSERT ... FORMAT X` (and `VALUES`) the
//! body is mostly data: the proxy reads only as much of it as it needs to see the statement head,
//! classifies that head, and forwards the bytes it read plus the rest of the stream untouched
//! (compressed bodies stay compressed; the head is found in a decoded copy). When the policy
//! rewrites such an INSERT, the data must go without its statement: a compressed body's
//! decompressor is kept ([`Tail::Compressed`]) so that the rest can be decoded on the way out.

mod scan;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

use super::decode::Decoder;
use super::error::{ChError, code};
use super::inflate::Resume;
use crate::backend::clickhouse_http::Body;
pub use scan::{HeadKind, insert_head};

/// Most query text read before the statement must have shown its head (ClickHouse's own
/// `max_query_size` default is the same).
pub const MAX_QUERY_TEXT: usize = 256 * 1024;

/// The statement of one request and where its bytes are.
pub struct QueryText {
    /// What is classified and shown to the policy: the whole text, or only the head of an
    /// INSERT whose data follows.
    pub sql: String,
    /// Set when `sql` is only the head and data follows it.
    pub data: Option<Data>,
    /// The request body as received (raw, possibly compressed).
    pub body: RawBody,
}

/// Where the data of an INSERT is.
pub enum Data {
    /// The statement was all in the `query` parameter: the whole body is data.
    Body,
    /// The data starts inside the decoded text (`param \n body`): the part of it read while
    /// looking for the head, and what follows that part.
    Decoded { prefix: Bytes, tail: Tail },
}

/// What follows the decoded part of an INSERT's data.
pub enum Tail {
    /// Nothing: the body ended.
    Ended,
    /// The rest of an identity body (its decoded bytes are its raw bytes).
    Identity,
    /// The rest of a compressed body, decoded from where the search for the head stopped
    /// (boxed: a decompressor's state is large, and most requests have none).
    Compressed(Box<Resume>),
}

/// The body's raw bytes: what was read, and the stream of the rest.
pub struct RawBody {
    pub chunks: VecDeque<Bytes>,
    /// `None` once the body ended.
    pub rest: Option<Body>,
    /// The request's `Content-Encoding`, when not identity.
    pub encoding: Option<String>,
}

impl RawBody {
    pub fn empty() -> RawBody {
        RawBody {
            chunks: VecDeque::new(),
            rest: None,
            encoding: None,
        }
    }

    /// The whole raw body when it was read to its end (replayable, e.g. for a retry).
    pub fn complete(&self) -> Option<Bytes> {
        if self.rest.is_some() {
            return None;
        }
        let mut out = BytesMut::with_capacity(self.chunks.iter().map(Bytes::len).sum());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        Some(out.freeze())
    }
}

fn encoding(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"))
}

pub fn body_error(e: impl std::fmt::Display) -> ChError {
    ChError::bad_request(
        code::BAD_ARGUMENTS,
        format!("Cannot read the request body: {e}"),
    )
}

/// Reads the statement from the `query` parameter and, for POST, the body.
pub async fn read(
    method: &Method,
    param: Option<&str>,
    body: Body,
    headers: &HeaderMap,
    max_body: Option<u64>,
) -> Result<QueryText, ChError> {
    let param = param.unwrap_or_default();
    let mut raw = RawBody {
        chunks: VecDeque::new(),
        rest: Some(body),
        encoding: encoding(headers),
    };
    if *method != Method::POST {
        // ClickHouse ignores the body of a GET; so does the proxy.
        raw.rest = None;
        return whole(param.to_owned(), raw);
    }
    // The head is all in the parameter: the body is data, never looked at.
    if let Some(head) = insert_head(param).filter(|h| h.kind == HeadKind::Format) {
        return Ok(QueryText {
            sql: param[..head.end].to_owned(),
            data: Some(Data::Body),
            body: raw,
        });
    }
    let Some(mut decoder) = Decoder::new(raw.encoding.as_deref()) else {
        return Err(ChError::new(
            http::StatusCode::NOT_IMPLEMENTED,
            code::NOT_IMPLEMENTED,
            format!(
                "Content-Encoding {} is not supported by the proxy for a statement in the request body \
                 (use gzip or deflate, or put the statement in the `query` parameter)",
                raw.encoding.as_deref().unwrap_or_default()
            ),
        ));
    };
    let prefix_len = if param.is_empty() { 0 } else { param.len() + 1 };
    let mut received: u64 = 0;
    // The part of the last chunk the decoder did not take (it stops at `MAX_QUERY_TEXT`).
    let mut unfed = Bytes::new();
    loop {
        if decoder.decoded().len() + prefix_len >= MAX_QUERY_TEXT || !unfed.is_empty() {
            break;
        }
        let Some(rest) = raw.rest.as_mut() else { break };
        match rest.frame().await {
            None => {
                raw.rest = None;
                decoder.finish().map_err(body_error)?;
            }
            Some(Err(e)) => return Err(body_error(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if max_body.is_some_and(|max| received > max) {
                    return Err(too_large(max_body.unwrap_or_default()));
                }
                let used = decoder.feed(&data, MAX_QUERY_TEXT).map_err(body_error)?;
                unfed = data.slice(used..);
                raw.chunks.push_back(data);
            }
        }
    }
    let decoded = decoder.take();
    let text = if param.is_empty() {
        decoded
    } else {
        let mut text = Vec::with_capacity(prefix_len + decoded.len());
        text.extend_from_slice(param.as_bytes());
        text.push(b'\n');
        text.extend_from_slice(&decoded);
        text
    };
    let tail = if raw.rest.is_none() {
        Tail::Ended
    } else if raw.encoding.is_none() {
        Tail::Identity
    } else {
        Tail::Compressed(Box::new(Resume::new(decoder, unfed)))
    };
    split(text, raw, tail)
}

pub fn too_large(max: u64) -> ChError {
    ChError::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        code::TOO_LARGE_REQUEST,
        format!("Request body is larger than the listener's max_body_size ({max} bytes)"),
    )
}

/// Cuts the decoded text into statement and data.
fn split(text: Vec<u8>, raw: RawBody, tail: Tail) -> Result<QueryText, ChError> {
    let complete = matches!(tail, Tail::Ended);
    // The head is ASCII-safe to find in a lossy view; the cut is at a char boundary.
    let lossy = String::from_utf8_lossy(&text);
    let head = insert_head(&lossy).filter(|h| h.end <= text.len() && lossy.is_char_boundary(h.end));
    match head {
        Some(head) if head.kind == HeadKind::Format || !complete => {
            let data = Bytes::copy_from_slice(skip_separator(&text[head.end..]));
            Ok(QueryText {
                sql: lossy[..head.end].to_owned(),
                data: Some(Data::Decoded { prefix: data, tail }),
                body: raw,
            })
        }
        _ if complete => whole(
            String::from_utf8(text).map_err(|_| {
                ChError::bad_request(code::SYNTAX_ERROR, "The query is not valid UTF-8")
            })?,
            raw,
        ),
        _ => Err(ChError::bad_request(
            code::SYNTAX_ERROR,
            format!(
                "Syntax error: Max query size exceeded: the statement is longer than {MAX_QUERY_TEXT} bytes \
                 and is not an INSERT whose data follows FORMAT or VALUES"
            ),
        )),
    }
}

fn whole(sql: String, body: RawBody) -> Result<QueryText, ChError> {
    if sql.trim().is_empty() {
        return Err(ChError::bad_request(code::SYNTAX_ERROR, "Empty query"));
    }
    Ok(QueryText {
        sql,
        data: None,
        body,
    })
}

/// The whitespace up to and including the first newline after a FORMAT name is a separator,
/// not data (ClickHouse skips it; the proxy re-adds one `\n` between parameter and body).
fn skip_separator(data: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < data.len() && matches!(data[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    if data.get(i) == Some(&b'\n') {
        &data[i + 1..]
    } else {
        data
    }
}

//! The query text of a request, without holding INSERT data in memory.
//!
//! ClickHouse runs `query` parameter + `\n` + body. For `INSERT ... FORMAT X` (and `VALUES`) the
//! body is mostly data: the proxy reads only as much of it as it needs to see the statement head,
//! classifies that head, and forwards the bytes it read plus the rest of the stream untouched
//! (compressed bodies stay compressed; the head is found in a decoded copy).

mod scan;

use std::collections::VecDeque;
use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use flate2::write::{GzDecoder, ZlibDecoder};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::{ChError, code};
pub use scan::{HeadKind, insert_head};

/// Most query text read before the statement must have shown its head (ClickHouse's own
/// `max_query_size` default is the same).
pub const MAX_QUERY_TEXT: usize = 256 * 1024;

/// Decoded bytes fed to a decompressor at a time, so one small compressed chunk cannot expand
/// into a huge buffer before the size check.
const DECODE_STEP: usize = 4096;

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
    /// looking for the head, and whether that is all of it.
    Decoded { prefix: Bytes, complete: bool },
}

/// The body's raw bytes: what was read, and the stream of the rest.
pub struct RawBody {
    pub chunks: VecDeque<Bytes>,
    /// `None` once the body ended.
    pub rest: Option<Incoming>,
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

enum Decoder {
    Identity(Vec<u8>),
    Gzip(GzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
}

impl Decoder {
    fn new(encoding: Option<&str>) -> Option<Decoder> {
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

    fn decoded(&self) -> &[u8] {
        match self {
            Decoder::Identity(v) => v,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Zlib(d) => d.get_ref(),
        }
    }

    /// Feeds raw bytes, stopping early once `limit` decoded bytes are there.
    /// The body ended: decode what the decompressor still holds.
    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Identity(_) => Ok(()),
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Zlib(d) => d.try_finish(),
        }
    }

    /// Identity keeps every byte (the chunk is in memory anyway, and the decoded text must equal
    /// the raw bytes so that data can be cut from it).
    fn feed(&mut self, mut raw: &[u8], limit: usize) -> std::io::Result<()> {
        if let Decoder::Identity(v) = self {
            v.extend_from_slice(raw);
            return Ok(());
        }
        while !raw.is_empty() && self.decoded().len() < limit {
            let step = raw.len().min(DECODE_STEP);
            // Flushing pushes what was decoded so far into the buffer.
            match self {
                Decoder::Identity(_) => {}
                Decoder::Gzip(d) => {
                    d.write_all(&raw[..step])?;
                    d.flush()?;
                }
                Decoder::Zlib(d) => {
                    d.write_all(&raw[..step])?;
                    d.flush()?;
                }
            }
            raw = &raw[step..];
        }
        Ok(())
    }
}

fn encoding(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity"))
}

fn body_error(e: impl std::fmt::Display) -> ChError {
    ChError::bad_request(
        code::BAD_ARGUMENTS,
        format!("Cannot read the request body: {e}"),
    )
}

/// Reads the statement from the `query` parameter and, for POST, the body.
pub async fn read(
    method: &Method,
    param: Option<&str>,
    body: Incoming,
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
    loop {
        if decoder.decoded().len() + prefix_len >= MAX_QUERY_TEXT {
            break;
        }
        let Some(rest) = raw.rest.as_mut() else { break };
        match rest.frame().await {
            None => {
                raw.rest = None;
                decoder
                    .finish()
                    .map_err(|e| body_error(format!("cannot decompress it: {e}")))?;
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
                decoder
                    .feed(&data, MAX_QUERY_TEXT)
                    .map_err(|e| body_error(format!("cannot decompress it: {e}")))?;
                raw.chunks.push_back(data);
            }
        }
    }
    let decoded = decoder.decoded();
    let mut text = Vec::with_capacity(prefix_len + decoded.len());
    if !param.is_empty() {
        text.extend_from_slice(param.as_bytes());
        text.push(b'\n');
    }
    text.extend_from_slice(decoded);
    split(text, raw)
}

pub fn too_large(max: u64) -> ChError {
    ChError::new(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        code::TOO_LARGE_REQUEST,
        format!("Request body is larger than the listener's max_body_size ({max} bytes)"),
    )
}

/// Cuts the decoded text into statement and data.
fn split(text: Vec<u8>, raw: RawBody) -> Result<QueryText, ChError> {
    let complete = raw.rest.is_none();
    // The head is ASCII-safe to find in a lossy view; the cut is at a char boundary.
    let lossy = String::from_utf8_lossy(&text);
    let head = insert_head(&lossy).filter(|h| h.end <= text.len() && lossy.is_char_boundary(h.end));
    match head {
        Some(head) if head.kind == HeadKind::Format || !complete => {
            let data = Bytes::copy_from_slice(skip_separator(&text[head.end..]));
            Ok(QueryText {
                sql: lossy[..head.end].to_owned(),
                data: Some(Data::Decoded {
                    prefix: data,
                    complete,
                }),
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::Decoder;

    #[test]
    fn a_small_gzip_body_decodes_completely() {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"SELECT 7").unwrap();
        let gz = e.finish().unwrap();
        let mut d = Decoder::new(Some("gzip")).unwrap();
        d.feed(&gz, 1 << 20).unwrap();
        d.finish().unwrap();
        assert_eq!(d.decoded(), b"SELECT 7");
        assert!(Decoder::new(Some("br")).is_none());
    }
}

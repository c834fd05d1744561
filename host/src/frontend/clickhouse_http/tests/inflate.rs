//! Reading the statement of a compressed INSERT (`head::read`), then streaming the rest of its
//! data decoded (`inflate::body`), as a rewritten INSERT sends it.

use std::io::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::{chunked, drain, gzip, zlib};
use crate::frontend::clickhouse_http::body::Chain;
use crate::frontend::clickhouse_http::decode::Decoder;
use crate::frontend::clickhouse_http::error::{ChError, code};
use crate::frontend::clickhouse_http::head::{self, Data, MAX_QUERY_TEXT, QueryText, Tail};
use crate::frontend::clickhouse_http::inflate;

const STATEMENT: &str = "INSERT INTO t FORMAT CSV";

fn csv(rows: u64) -> String {
    (0..rows).map(|i| format!("{i},row number {i}\n")).collect()
}

fn encoded(encoding: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_ENCODING,
        HeaderValue::from_str(encoding).expect("header value"),
    );
    h
}

async fn read(
    body: crate::backend::clickhouse_http::Body,
    encoding: &str,
    max: Option<u64>,
) -> QueryText {
    head::read(&Method::POST, None, body, &encoded(encoding), max)
        .await
        .expect("the statement is read")
}

/// The data stream a rewritten INSERT sends, and the error it ended with.
async fn data_of(text: QueryText, max: Option<u64>) -> (Vec<Bytes>, Option<ChError>) {
    let Some(Data::Decoded {
        prefix,
        tail: Tail::Compressed(resume),
    }) = text.data
    else {
        panic!("expected data following the statement in a compressed body, still streaming");
    };
    let (frames, error) = drain(inflate::body(prefix, resume, text.body, max)).await;
    let error = error.map(|e| {
        e.downcast_ref::<ChError>()
            .cloned()
            .unwrap_or_else(|| panic!("the body failed with a ChError, not {e}"))
    });
    (frames, error)
}

fn joined(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

/// Chunk sizes that cut the compressed header, the statement and the data anywhere.
const SIZES: &[usize] = &[1, 3, 17, 2, 1500, 5, 65536, 4097, 9];

#[tokio::test]
async fn gzip_and_deflate_inserts_stream_decoded_across_chunk_boundaries() {
    let data = csv(60_000);
    let plain = format!("{STATEMENT}\n{data}");
    assert!(
        plain.len() > 4 * MAX_QUERY_TEXT,
        "more data than the search reads"
    );
    for (encoding, raw) in [
        ("gzip", gzip(plain.as_bytes())),
        ("deflate", zlib(plain.as_bytes())),
    ] {
        let text = read(chunked(&raw, SIZES), encoding, None).await;
        assert_eq!(text.sql, STATEMENT, "{encoding}");
        let (frames, error) = data_of(text, None).await;
        assert!(error.is_none(), "{encoding}: {error:?}");
        assert!(
            joined(&frames) == data.as_bytes(),
            "{encoding}: the data arrives whole, once"
        );
        // Memory stays bounded: the prefix is what the search decoded (its limit plus at most one
        // decoding step), later frames are one frame's worth plus at most one step.
        let first = frames.first().map_or(0, Bytes::len);
        assert!(
            first <= MAX_QUERY_TEXT + 64 * 1024,
            "{encoding}: a prefix of {first} bytes"
        );
        let largest = frames
            .iter()
            .skip(1)
            .map(Bytes::len)
            .max()
            .unwrap_or_default();
        assert!(
            largest <= 128 * 1024,
            "{encoding}: a frame of {largest} bytes"
        );
        assert!(
            frames.len() > 10,
            "{encoding}: streamed in {} frames",
            frames.len()
        );
    }
}

#[tokio::test]
async fn a_chunk_the_search_stops_in_is_decoded_from_where_it_stopped() {
    // Repetitive rows compress so well that one chunk decodes to far more than the search reads.
    let data = "1,the same row again and again\n".repeat(100_000);
    let raw = gzip(format!("{STATEMENT}\n{data}").as_bytes());
    let text = read(chunked(&raw, &[raw.len()]), "gzip", None).await;
    let searched = match &text.data {
        Some(Data::Decoded { prefix, .. }) => prefix.len(),
        _ => 0,
    };
    assert!(
        text.body.chunks.len() == 1 && searched < data.len() / 4,
        "the one chunk was read, only part of it decoded"
    );
    let (frames, error) = data_of(text, None).await;
    assert!(error.is_none(), "{error:?}");
    assert!(joined(&frames) == data.as_bytes());
}

#[tokio::test]
async fn the_original_body_still_passes_through_untouched() {
    let raw = gzip(format!("{STATEMENT}\n{}", csv(60_000)).as_bytes());
    let text = read(chunked(&raw, SIZES), "gzip", None).await;
    let (frames, error) =
        super::drain(Chain::new(text.body.chunks, text.body.rest, None).boxed()).await;
    assert!(error.is_none());
    assert!(joined(&frames) == raw);
}

fn assert_bad_body(error: Option<ChError>, needle: &str) {
    let error = error.expect("the stream ends with an error");
    assert_eq!(
        (error.status, error.code),
        (StatusCode::BAD_REQUEST, code::BAD_ARGUMENTS),
        "{error}"
    );
    assert!(
        error
            .message
            .starts_with("Cannot read the request body: cannot decompress it")
            && error.message.contains(needle),
        "{error}"
    );
}

#[tokio::test]
async fn a_stream_corrupt_mid_body_ends_in_an_error() {
    let data = csv(60_000);
    let half = data[..data.len() / 2].rfind('\n').map_or(0, |i| i + 1);
    for encoding in ["gzip", "deflate"] {
        // Everything up to a sync flush decodes; an invalid block follows it.
        let mut raw = synced(encoding, &data[..half]);
        raw.extend_from_slice(&[0xff; 64]);
        let text = read(chunked(&raw, SIZES), encoding, None).await;
        let (frames, error) = data_of(text, None).await;
        let sent = joined(&frames);
        assert!(
            sent.len() > MAX_QUERY_TEXT && data.as_bytes()[..half].starts_with(&sent),
            "{encoding}: data before the damage went out, nothing from after it"
        );
        assert_bad_body(error, "corrupt deflate stream");
    }
    // Damage the decompressor may only see at the checksum.
    let plain = format!("{STATEMENT}\n{data}");
    for (encoding, mut raw) in [
        ("gzip", gzip(plain.as_bytes())),
        ("deflate", zlib(plain.as_bytes())),
    ] {
        let at = raw.len() * 3 / 4;
        for b in &mut raw[at..at + 64] {
            *b ^= 0xa5;
        }
        let text = read(chunked(&raw, SIZES), encoding, None).await;
        let (frames, error) = data_of(text, None).await;
        assert!(!frames.is_empty(), "{encoding}");
        assert_bad_body(error, "");
    }
}

/// `STATEMENT` and `data` compressed and flushed to a byte boundary, the stream not ended.
fn synced(encoding: &str, data: &str) -> Vec<u8> {
    let plain = format!("{STATEMENT}\n{data}");
    let level = flate2::Compression::fast();
    if encoding == "gzip" {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        e.write_all(plain.as_bytes()).expect("gzip into memory");
        e.flush().expect("gzip into memory");
        e.get_ref().clone()
    } else {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
        e.write_all(plain.as_bytes()).expect("zlib into memory");
        e.flush().expect("zlib into memory");
        e.get_ref().clone()
    }
}

#[tokio::test]
async fn a_truncated_stream_or_bytes_after_its_end_are_errors() {
    let plain = format!("{STATEMENT}\n{}", csv(60_000));
    let raw = gzip(plain.as_bytes());
    let cut = &raw[..raw.len() - 100];
    let (_, error) = data_of(read(chunked(cut, SIZES), "gzip", None).await, None).await;
    assert_bad_body(error, "");

    let mut extra = zlib(plain.as_bytes());
    extra.extend_from_slice(b"garbage");
    let (_, error) = data_of(read(chunked(&extra, SIZES), "deflate", None).await, None).await;
    assert_bad_body(error, "data after the end of the compressed stream");
}

#[tokio::test]
async fn max_body_counts_every_raw_byte() {
    let raw = gzip(format!("{STATEMENT}\n{}", csv(60_000)).as_bytes());
    let len = raw.len() as u64;
    // The search reads less than the limit; the stream crosses it.
    let max = Some(len - 1);
    let text = read(chunked(&raw, SIZES), "gzip", max).await;
    let (_, error) = data_of(text, max).await;
    let error = error.expect("the stream ends with an error");
    assert_eq!(
        (error.status, error.code),
        (StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE_REQUEST),
        "{error}"
    );
    // Exactly at the limit is allowed.
    let max = Some(len);
    let text = read(chunked(&raw, SIZES), "gzip", max).await;
    let (_, error) = data_of(text, max).await;
    assert!(error.is_none(), "{error:?}");
}

#[test]
fn a_small_gzip_body_decodes_completely() {
    let gz = gzip(b"SELECT 7");
    let mut d = Decoder::new(Some("gzip")).expect("gzip is supported");
    assert_eq!(d.feed(&gz, 1 << 20).expect("valid gzip"), gz.len());
    d.finish().expect("complete gzip");
    assert_eq!(d.decoded(), b"SELECT 7");
    assert!(Decoder::new(Some("br")).is_none());
}

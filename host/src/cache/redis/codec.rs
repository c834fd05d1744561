//! The bytes of a cache entry in Redis.
//!
//! ```text
//! value   = flags:u8 payload              flags bit 0: payload is lz4 (block, size-prepended)
//! payload = version:u8 (=1) created_at_ms:u64 ttl_ms:u64
//!           n:u16 generation:u64 × n      the Redis generations the entry was built with
//!           meta_len:u32 meta body        body runs to the end
//! ```
//! Integers are little-endian. Payloads above the configured threshold are compressed unless
//! compression does not make them smaller. Decoding an uncompressed value slices the `Bytes` it
//! was given, without copying.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::cache::{CacheError, CachedResponse};

const FLAG_LZ4: u8 = 1;
const VERSION: u8 = 1;
/// Version, two timestamps, generation count, meta length.
const FIXED_HEADER: usize = 1 + 8 + 8 + 2 + 4;

/// Encodes `response` with the generations it was built with.
pub(crate) fn encode(
    response: &CachedResponse,
    generations: &[u64],
    compress_threshold: usize,
) -> Bytes {
    let len = FIXED_HEADER + generations.len() * 8 + response.size();
    let mut payload = BytesMut::with_capacity(1 + len);
    payload.put_u8(0);
    payload.put_u8(VERSION);
    payload.put_u64_le(unix_ms(response.created_at));
    payload.put_u64_le(u64::try_from(response.ttl.as_millis()).unwrap_or(u64::MAX));
    // More than u16::MAX tables cannot come from one statement; keep the value decodable anyway.
    let generations = &generations[..generations.len().min(usize::from(u16::MAX))];
    payload.put_u16_le(generations.len() as u16);
    for g in generations {
        payload.put_u64_le(*g);
    }
    payload.put_u32_le(response.meta.len() as u32);
    payload.put_slice(&response.meta);
    payload.put_slice(&response.body);

    if len > compress_threshold {
        let compressed = lz4_flex::block::compress_prepend_size(&payload[1..]);
        if compressed.len() < len {
            let mut out = BytesMut::with_capacity(1 + compressed.len());
            out.put_u8(FLAG_LZ4);
            out.put_slice(&compressed);
            return out.freeze();
        }
    }
    payload.freeze()
}

/// Decodes a value; `max_len` bounds the decompressed size (a corrupt length must not make us
/// allocate gigabytes).
pub(crate) fn decode(
    mut value: Bytes,
    max_len: usize,
) -> Result<(CachedResponse, Vec<u64>), CacheError> {
    if value.is_empty() {
        return Err(CacheError::Corrupt("empty value"));
    }
    let flags = value.get_u8();
    let mut payload = if flags & FLAG_LZ4 != 0 {
        if value.len() < 4 {
            return Err(CacheError::Corrupt("truncated lz4 header"));
        }
        let size = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
        if size > max_len {
            return Err(CacheError::Corrupt(
                "decompressed size above max_payload_size",
            ));
        }
        let plain = lz4_flex::block::decompress_size_prepended(&value)
            .map_err(|_| CacheError::Corrupt("bad lz4 data"))?;
        Bytes::from(plain)
    } else {
        value
    };

    if payload.len() < FIXED_HEADER {
        return Err(CacheError::Corrupt("truncated header"));
    }
    if payload.get_u8() != VERSION {
        return Err(CacheError::Corrupt("unknown version"));
    }
    let created_at = UNIX_EPOCH + Duration::from_millis(payload.get_u64_le());
    let ttl = Duration::from_millis(payload.get_u64_le());
    let n = usize::from(payload.get_u16_le());
    if payload.len() < n * 8 + 4 {
        return Err(CacheError::Corrupt("truncated generations"));
    }
    let generations = (0..n).map(|_| payload.get_u64_le()).collect();
    let meta_len = payload.get_u32_le() as usize;
    if payload.len() < meta_len {
        return Err(CacheError::Corrupt("truncated meta"));
    }
    let meta = payload.split_to(meta_len);
    let response = CachedResponse {
        meta,
        body: payload,
        created_at,
        ttl,
    };
    Ok((response, generations))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: Vec<u8>) -> CachedResponse {
        CachedResponse::new(
            Bytes::from_static(b"Content-Type: text/plain"),
            Bytes::from(body),
            Duration::from_secs(60),
        )
    }

    fn round_trip(response: &CachedResponse, threshold: usize) -> Bytes {
        let encoded = encode(response, &[1, 0, 7], threshold);
        let (decoded, generations) = decode(encoded.clone(), 1 << 20).unwrap();
        assert_eq!(generations, [1, 0, 7]);
        assert_eq!(decoded.meta, response.meta);
        assert_eq!(decoded.body, response.body);
        assert_eq!(decoded.ttl, response.ttl);
        assert_eq!(unix_ms(decoded.created_at), unix_ms(response.created_at));
        encoded
    }

    #[test]
    fn small_values_are_stored_raw() {
        let encoded = round_trip(&sample(b"hello".to_vec()), 4096);
        assert_eq!(encoded[0], 0);
    }

    #[test]
    fn large_values_are_compressed_and_round_trip() {
        let body = b"SELECT 1 | 2 | 3\n".repeat(10_000);
        let encoded = round_trip(&sample(body.clone()), 4096);
        assert_eq!(encoded[0], FLAG_LZ4);
        assert!(encoded.len() * 10 < body.len(), "{} bytes", encoded.len());
    }

    #[test]
    fn incompressible_values_stay_raw() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let encoded = round_trip(&sample(body), 1024);
        assert_eq!(encoded[0], 0);
    }

    #[test]
    fn corrupt_values_are_errors() {
        let encoded = encode(&sample(b"body".to_vec()), &[3], 4096);
        for cut in 0..encoded.len() - 4 {
            assert!(
                decode(encoded.slice(..cut), 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        let big = encode(&sample(vec![b'a'; 100_000]), &[], 1024);
        assert!(matches!(decode(big, 1000), Err(CacheError::Corrupt(_))));
        assert!(decode(Bytes::from_static(&[1, 0xff, 0xff]), 1 << 20).is_err());
    }
}

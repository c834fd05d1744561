//! The bytes of a cache entry in Redis.
//!
//! ```text
//! value   = flags:u8 payload              flags bit 0: payload is lz4 (block, size-prepended)
//!                                         flags bit 1: payload is one zstd frame (with its size)
//! payload = version:u8 (=2) created_at_ms:u64 ttl_ms:u64
//!           position:u64                  `CachedResponse::position` (u64::MAX: complete)
//!           n:u16 generation:u64 × n      the Redis generations the entry was built with
//!           meta_len:u32 meta body        body runs to the end
//! ```
//! Integers are little-endian. A payload of another version (version 1 had no position; a proxy
//! of an older or newer release wrote it) decodes as no entry, a miss that the next fill
//! overwrites: it is neither an error nor served, since what a version-1 entry reflects is not
//! known. Payloads above the configured threshold are compressed with the
//! configured codec unless compression does not make them smaller. Decoding does not depend on
//! the setting: the flags say how each value was stored, so replicas with different settings, or
//! a changed setting, read each other's entries. Unknown flags (a newer writer) decode as
//! corrupt, which the tier counts and treats as a miss. Decoding an uncompressed value slices the
//! `Bytes` it was given, without copying.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::cache::{CacheError, CachedResponse, Compression};

const FLAG_LZ4: u8 = 1;
const FLAG_ZSTD: u8 = 2;
/// zstd's own default: most of the ratio of higher levels at a fill-path cost close to lz4's.
const ZSTD_LEVEL: i32 = 3;
const VERSION: u8 = 2;
/// Version, two timestamps, position, generation count, meta length.
const FIXED_HEADER: usize = 1 + 8 + 8 + 8 + 2 + 4;

/// Encodes `response` with the generations it was built with.
pub(crate) fn encode(
    response: &CachedResponse,
    generations: &[u64],
    compression: Compression,
    compress_threshold: usize,
) -> Bytes {
    let len = FIXED_HEADER + generations.len() * 8 + response.size();
    let mut payload = BytesMut::with_capacity(1 + len);
    payload.put_u8(0);
    payload.put_u8(VERSION);
    payload.put_u64_le(unix_ms(response.created_at));
    payload.put_u64_le(u64::try_from(response.ttl.as_millis()).unwrap_or(u64::MAX));
    payload.put_u64_le(response.position);
    // More than u16::MAX tables cannot come from one statement; keep the value decodable anyway.
    let generations = &generations[..generations.len().min(usize::from(u16::MAX))];
    payload.put_u16_le(generations.len() as u16);
    for g in generations {
        payload.put_u64_le(*g);
    }
    payload.put_u32_le(response.meta.len() as u32);
    payload.put_slice(&response.meta);
    payload.put_slice(&response.body);

    if len > compress_threshold
        && let Some((flag, compressed)) = compress(compression, &payload[1..])
        && compressed.len() < len
    {
        let mut out = BytesMut::with_capacity(1 + compressed.len());
        out.put_u8(flag);
        out.put_slice(&compressed);
        return out.freeze();
    }
    payload.freeze()
}

/// The flag and compressed bytes, or `None` when not compressing (or zstd failed, which it only
/// does on allocation failure: the value is then stored raw).
fn compress(compression: Compression, plain: &[u8]) -> Option<(u8, Vec<u8>)> {
    match compression {
        Compression::None => None,
        Compression::Lz4 => Some((FLAG_LZ4, lz4_flex::block::compress_prepend_size(plain))),
        Compression::Zstd => zstd::bulk::compress(plain, ZSTD_LEVEL)
            .ok()
            .map(|c| (FLAG_ZSTD, c)),
    }
}

/// Decodes a value into the response and the generations it was stored with; `None` for a
/// payload of another version. `max_len` bounds the decompressed size (a corrupt length must
/// not make us allocate gigabytes).
pub(crate) fn decode(
    mut value: Bytes,
    max_len: usize,
) -> Result<Option<(CachedResponse, Vec<u64>)>, CacheError> {
    if value.is_empty() {
        return Err(CacheError::Corrupt("empty value"));
    }
    let mut payload = match value.get_u8() {
        0 => value,
        FLAG_LZ4 => decompress_lz4(&value, max_len)?,
        FLAG_ZSTD => decompress_zstd(&value, max_len)?,
        _ => return Err(CacheError::Corrupt("unknown flags")),
    };

    // Checked before the length: another version's header may be shorter.
    if payload.first().is_some_and(|&v| v != VERSION) {
        return Ok(None);
    }
    if payload.len() < FIXED_HEADER {
        return Err(CacheError::Corrupt("truncated header"));
    }
    payload.advance(1);
    let created_at = UNIX_EPOCH + Duration::from_millis(payload.get_u64_le());
    let ttl = Duration::from_millis(payload.get_u64_le());
    let position = payload.get_u64_le();
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
        position,
    };
    Ok(Some((response, generations)))
}

fn decompress_lz4(value: &[u8], max_len: usize) -> Result<Bytes, CacheError> {
    if value.len() < 4 {
        return Err(CacheError::Corrupt("truncated lz4 header"));
    }
    let size = u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize;
    if size > max_len {
        return Err(CacheError::Corrupt(
            "decompressed size above max_payload_size",
        ));
    }
    let plain = lz4_flex::block::decompress_size_prepended(value)
        .map_err(|_| CacheError::Corrupt("bad lz4 data"))?;
    Ok(Bytes::from(plain))
}

/// The frame header carries the decompressed size (`bulk::compress` always writes it): it is
/// checked against `max_len` before allocating, and the output must have exactly that size.
fn decompress_zstd(value: &[u8], max_len: usize) -> Result<Bytes, CacheError> {
    let size = match zstd::zstd_safe::get_frame_content_size(value) {
        Ok(Some(size)) => size,
        Ok(None) | Err(_) => return Err(CacheError::Corrupt("bad zstd frame header")),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|&size| size <= max_len)
        .ok_or(CacheError::Corrupt(
            "decompressed size above max_payload_size",
        ))?;
    let plain =
        zstd::bulk::decompress(value, size).map_err(|_| CacheError::Corrupt("bad zstd data"))?;
    if plain.len() != size {
        return Err(CacheError::Corrupt(
            "zstd data shorter than its header says",
        ));
    }
    Ok(Bytes::from(plain))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

    fn sample(body: Vec<u8>) -> CachedResponse {
        CachedResponse::new(
            Bytes::from_static(b"Content-Type: text/plain"),
            Bytes::from(body),
            Duration::from_secs(60),
        )
    }

    fn compressible() -> Vec<u8> {
        b"SELECT 1 | 2 | 3\n".repeat(10_000)
    }

    fn assert_decodes_to(encoded: Bytes, response: &CachedResponse) {
        let (decoded, generations) = decode(encoded, 1 << 20)
            .expect("decodes")
            .expect("of the current version");
        assert_eq!(generations, [1, 0, 7]);
        assert_eq!(decoded.meta, response.meta);
        assert_eq!(decoded.body, response.body);
        assert_eq!(decoded.ttl, response.ttl);
        assert_eq!(decoded.position, response.position);
        assert_eq!(unix_ms(decoded.created_at), unix_ms(response.created_at));
    }

    fn round_trip(response: &CachedResponse, compression: Compression, threshold: usize) -> Bytes {
        let encoded = encode(response, &[1, 0, 7], compression, threshold);
        assert_decodes_to(encoded.clone(), response);
        encoded
    }

    #[test]
    fn small_values_are_stored_raw() {
        for compression in ALL {
            let encoded = round_trip(&sample(b"hello".to_vec()), compression, 4096);
            assert_eq!(encoded[0], 0, "{compression:?}");
        }
    }

    #[test]
    fn positions_round_trip() {
        for position in [0, 1, 0x16_B374_D848, CachedResponse::COMPLETE] {
            for (body, threshold) in [(b"hello".to_vec(), 4096), (compressible(), 1024)] {
                for compression in ALL {
                    let response = sample(body.clone()).with_position(position);
                    round_trip(&response, compression, threshold);
                }
            }
        }
        assert_eq!(sample(vec![]).position, CachedResponse::COMPLETE);
    }

    /// A payload as version 1 wrote it: no position after the TTL.
    fn version_1(response: &CachedResponse, generations: &[u64]) -> Vec<u8> {
        let mut payload = vec![1];
        payload.extend_from_slice(&unix_ms(response.created_at).to_le_bytes());
        payload.extend_from_slice(&(response.ttl.as_millis() as u64).to_le_bytes());
        payload.extend_from_slice(&(generations.len() as u16).to_le_bytes());
        for g in generations {
            payload.extend_from_slice(&g.to_le_bytes());
        }
        payload.extend_from_slice(&(response.meta.len() as u32).to_le_bytes());
        payload.extend_from_slice(&response.meta);
        payload.extend_from_slice(&response.body);
        payload
    }

    /// What a proxy of another release wrote is a miss, not an error (which would count against
    /// Redis's health) and not a hit (it does not say what it reflects).
    #[test]
    fn other_versions_are_no_entry() {
        for body in [b"hello".to_vec(), compressible(), vec![]] {
            let response = sample(body);
            let old = version_1(&response, &[1, 0, 7]);
            let mut values = vec![[&[0u8][..], &old].concat()];
            values.push(
                [
                    &[FLAG_LZ4][..],
                    &lz4_flex::block::compress_prepend_size(&old),
                ]
                .concat(),
            );
            values.push(
                [
                    &[FLAG_ZSTD][..],
                    &zstd::bulk::compress(&old, ZSTD_LEVEL).unwrap(),
                ]
                .concat(),
            );
            // A newer release's, however it continues.
            let mut newer = encode(&response, &[1], Compression::None, 4096).to_vec();
            newer[1] = VERSION + 1;
            values.push(newer);
            values.push(vec![0, VERSION + 1]);
            for value in values {
                assert!(
                    matches!(decode(Bytes::from(value.clone()), 1 << 20), Ok(None)),
                    "{:?}",
                    &value[..value.len().min(40)]
                );
            }
        }
    }

    #[test]
    fn large_values_round_trip_with_each_codec() {
        let body = compressible();
        for (compression, flag) in [
            (Compression::None, 0),
            (Compression::Lz4, FLAG_LZ4),
            (Compression::Zstd, FLAG_ZSTD),
        ] {
            let encoded = round_trip(&sample(body.clone()), compression, 4096);
            assert_eq!(encoded[0], flag, "{compression:?}");
            if compression != Compression::None {
                assert!(
                    encoded.len() * 10 < body.len(),
                    "{compression:?}: {} bytes",
                    encoded.len()
                );
            }
        }
    }

    /// Decoding needs no setting: whatever one replica wrote, any other reads.
    #[test]
    fn every_codec_reads_what_any_other_wrote() {
        let response = sample(compressible());
        let written: Vec<Bytes> = ALL
            .iter()
            .map(|&c| encode(&response, &[1, 0, 7], c, 1024))
            .collect();
        assert_eq!(
            written.iter().map(|v| v[0]).collect::<Vec<_>>(),
            [0, FLAG_LZ4, FLAG_ZSTD]
        );
        for value in written {
            assert_decodes_to(value, &response);
        }
    }

    #[test]
    fn zstd_is_smaller_than_lz4_on_repetitive_data() {
        let body: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{i}\tname {}\t{}\n", i % 97, i % 13).into_bytes())
            .collect();
        let response = sample(body);
        let lz4 = encode(&response, &[], Compression::Lz4, 0);
        let zstd = encode(&response, &[], Compression::Zstd, 0);
        assert!(
            zstd.len() < lz4.len(),
            "zstd {} lz4 {}",
            zstd.len(),
            lz4.len()
        );
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
        for compression in ALL {
            let encoded = round_trip(&sample(body.clone()), compression, 1024);
            assert_eq!(encoded[0], 0, "{compression:?}");
        }
    }

    #[test]
    fn corrupt_values_are_errors() {
        for compression in ALL {
            for body in [b"body".to_vec(), compressible()] {
                let encoded = encode(&sample(body), &[3], compression, 1024);
                if encoded[0] == 0 && encoded.len() > 100 {
                    // A raw body runs to the end: a cut inside it is not detectable.
                    continue;
                }
                for cut in (0..encoded.len() - 4)
                    .step_by(97)
                    .chain([encoded.len() - 5])
                {
                    assert!(
                        decode(encoded.slice(..cut), 1 << 20).is_err(),
                        "{compression:?} cut at {cut}"
                    );
                }
            }
            // Above the reader's bound: refused before decompressing (a raw value is already in
            // memory, so it has no bound to check).
            if compression == Compression::None {
                continue;
            }
            let big = encode(&sample(vec![b'a'; 100_000]), &[], compression, 1024);
            assert!(
                matches!(decode(big, 1000), Err(CacheError::Corrupt(_))),
                "{compression:?}"
            );
        }
        assert!(decode(Bytes::from_static(&[1, 0xff, 0xff]), 1 << 20).is_err());
        assert!(decode(Bytes::from_static(&[2, 0x28, 0xb5, 0x2f, 0xfd]), 1 << 20).is_err());
        // Flags of a future writer.
        let mut unknown = encode(&sample(b"body".to_vec()), &[], Compression::None, 4096).to_vec();
        unknown[0] = 4;
        assert!(matches!(
            decode(Bytes::from(unknown), 1 << 20),
            Err(CacheError::Corrupt("unknown flags"))
        ));
    }
}

//! SCRAM-SHA-256 primitives (RFC 5802 section 3) and comparisons that do not
//! leak secrets through timing.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::AuthError;

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &[u8]) -> Result<HmacSha256, AuthError> {
    HmacSha256::new_from_slice(key).map_err(|_| AuthError::Crypto("HMAC rejected its key"))
}

pub(super) fn hmac(key: &[u8], data: &[u8]) -> Result<[u8; 32], AuthError> {
    let mut mac = keyed(key)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output, which is SCRAM's `Hi()`.
///
/// The keyed HMAC state is cloned per round instead of re-keyed, which halves
/// the work; this runs 4096 times per verifier.
pub(super) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Result<[u8; 32], AuthError> {
    let base = keyed(password)?;
    let mut mac = base.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    let mut out: [u8; 32] = u.into();
    for _ in 1..iterations {
        let mut mac = base.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        xor_into(&mut out, &u);
    }
    Ok(out)
}

/// `(StoredKey, ServerKey)` for a password, as stored in `pg_authid`.
pub(super) fn scram_keys(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<([u8; 32], [u8; 32]), AuthError> {
    let salted = hi(password, salt, iterations)?;
    let client_key = hmac(&salted, b"Client Key")?;
    let server_key = hmac(&salted, b"Server Key")?;
    Ok((sha256(&client_key), server_key))
}

pub(super) fn xor_into(dst: &mut [u8; 32], src: &[u8]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d ^= s);
}

/// Compares without an early exit so a client cannot find a secret byte by
/// byte from response times. Lengths are not secret here: callers compare
/// fixed-size digests or hash variable-length secrets first.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lowercase hex MD5, reusing `postgres-protocol`'s MD5 so the module needs
/// no MD5 crate of its own (`password::md5` hashes `password || username`).
pub(super) fn md5_hex(data: &[u8]) -> String {
    let tagged = postgres_protocol::password::md5(data, "");
    tagged.strip_prefix("md5").unwrap_or(&tagged).to_owned()
}

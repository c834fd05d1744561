//! Authentication material: `mysql_native_password` verification for clients (what Switchyard
//! checks), and the scrambles Switchyard sends to servers (`mysql_common::scramble`).

use sha1::{Digest, Sha1};

/// `mysql_native_password`.
pub const NATIVE_PASSWORD: &str = "mysql_native_password";
/// `caching_sha2_password` (MySQL 8's default).
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";

/// A 20-byte nonce of printable bytes without NUL (some clients stop at a NUL).
pub fn nonce() -> [u8; 20] {
    let mut out = [0u8; 20];
    for b in &mut out {
        // 0x21..=0x7E: printable, never NUL or '$'-free concerns for any client.
        *b = 0x21 + rand::random_range(0..94u8);
    }
    out
}

/// What a client's `mysql_native_password` answer is checked against: SHA1(SHA1(password)),
/// MySQL's stored form (`*` + hex in `mysql.user`).
#[derive(Clone, PartialEq, Eq)]
pub struct NativeVerifier([u8; 20]);

impl std::fmt::Debug for NativeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeVerifier(..)")
    }
}

impl NativeVerifier {
    pub fn from_password(password: &str) -> Self {
        let stage1 = Sha1::digest(password.as_bytes());
        NativeVerifier(Sha1::digest(stage1).into())
    }

    /// From MySQL's stored form: `*` and 40 hex digits.
    pub fn from_stored(text: &str) -> Option<Self> {
        let hex_part = text.strip_prefix('*')?;
        let bytes = hex::decode(hex_part).ok()?;
        Some(NativeVerifier(bytes.try_into().ok()?))
    }

    /// Whether `answer` (the client's scramble for `nonce`) proves the password:
    /// answer = SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))), so XOR-ing the second half back
    /// gives SHA1(pw), whose SHA1 must be the stored value.
    pub fn verify(&self, nonce: &[u8], answer: &[u8]) -> bool {
        if answer.len() != 20 {
            return false;
        }
        let mut h = Sha1::new();
        h.update(nonce);
        h.update(self.0);
        let mask = h.finalize();
        let mut stage1 = [0u8; 20];
        for (i, b) in stage1.iter_mut().enumerate() {
            *b = answer[i] ^ mask[i];
        }
        let candidate: [u8; 20] = Sha1::digest(stage1).into();
        // Constant-time comparison: no early exit on the first differing byte.
        candidate
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The answer to a server's `plugin` challenge with `nonce`, or `None` for a plugin Switchyard
/// cannot answer.
pub fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> Option<Vec<u8>> {
    if password.is_empty() {
        return Some(Vec::new());
    }
    match plugin {
        NATIVE_PASSWORD => {
            mysql_common::scramble::scramble_native(nonce, password.as_bytes()).map(|s| s.to_vec())
        }
        CACHING_SHA2_PASSWORD => {
            mysql_common::scramble::scramble_sha256(nonce, password.as_bytes()).map(|s| s.to_vec())
        }
        // Plain text: only ever asked for over a connection the server trusts.
        "mysql_clear_password" => {
            let mut v = password.as_bytes().to_vec();
            v.push(0);
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_native_scramble_verifies_against_the_stored_hash() {
        let nonce = nonce();
        let answer = scramble(NATIVE_PASSWORD, "app_pass", &nonce).expect("native");
        let v = NativeVerifier::from_password("app_pass");
        assert!(v.verify(&nonce, &answer));
        assert!(!NativeVerifier::from_password("other").verify(&nonce, &answer));
        assert!(!v.verify(&nonce, &answer[..19]));
        // MySQL's stored form of "app_pass" is the same verifier.
        let stored = format!("*{}", hex::encode_upper(v.0));
        assert_eq!(NativeVerifier::from_stored(&stored), Some(v));
        assert_eq!(NativeVerifier::from_stored("nope"), None);
    }

    #[test]
    fn nonces_have_no_nul() {
        assert!(nonce().iter().all(|b| *b != 0));
    }
}

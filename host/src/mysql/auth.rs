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

/// MariaDB's `ed25519` plugin, as the client side names it.
pub const CLIENT_ED25519: &str = "client_ed25519";

/// The answer to a server's `plugin` challenge with `nonce` (the challenge as sent, a trailing
/// NUL included), or `None` for a plugin Switchyard cannot answer.
pub fn scramble(plugin: &str, password: &str, nonce: &[u8]) -> Option<Vec<u8>> {
    // The SHA-1 and SHA-256 scrambles use a 20-byte nonce, which servers send NUL-terminated.
    let nonce20 = nonce.get(..20).unwrap_or(nonce);
    match plugin {
        // An empty password is answered with nothing, as the reference clients do.
        NATIVE_PASSWORD | CACHING_SHA2_PASSWORD if password.is_empty() => Some(Vec::new()),
        NATIVE_PASSWORD => mysql_common::scramble::scramble_native(nonce20, password.as_bytes())
            .map(|s| s.to_vec()),
        CACHING_SHA2_PASSWORD => {
            mysql_common::scramble::scramble_sha256(nonce20, password.as_bytes())
                .map(|s| s.to_vec())
        }
        CLIENT_ED25519 => Some(sign_ed25519(password, nonce.get(..32)?).to_vec()),
        // Plain text: only ever asked for over a connection the server trusts.
        "mysql_clear_password" => {
            let mut v = password.as_bytes().to_vec();
            v.push(0);
            Some(v)
        }
        _ => None,
    }
}

/// MariaDB's `client_ed25519`: an Ed25519 signature of the server's 32-byte nonce whose
/// expanded secret key is SHA-512(password) (where standard Ed25519 hashes a 32-byte seed).
/// The server keeps only the public key, `PASSWORD()` of the `ed25519` plugin.
fn sign_ed25519(password: &str, nonce: &[u8]) -> [u8; 64] {
    use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
    use sha2::{Digest as _, Sha512};
    let expanded: [u8; 64] = Sha512::digest(password.as_bytes()).into();
    // `from_bytes` clamps the scalar half as the signing algorithm requires.
    let key = ExpandedSecretKey::from_bytes(&expanded);
    let public = ed25519_dalek::VerifyingKey::from(&key);
    raw_sign::<Sha512>(&key, nonce, &public).to_bytes()
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
    fn an_ed25519_answer_verifies_with_the_key_mariadb_stores() {
        use ed25519_dalek::Verifier as _;
        let nonce = [7u8; 32];
        let answer = scramble(CLIENT_ED25519, "ed secret", &nonce).expect("ed25519");
        let signature = ed25519_dalek::Signature::from_slice(&answer).expect("64 bytes");
        // What MariaDB 10.11 stores for `IDENTIFIED VIA ed25519 USING PASSWORD('ed secret')`
        // (base64 without padding; tests/integration/mysql/server_auth.rs reads it back).
        let stored = "fabCJogPfzEH6IzZjMacv0NEeF7kSOv5J7FlpxDtPFk";
        let bytes: [u8; 32] =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD_NO_PAD, stored)
                .expect("base64")
                .try_into()
                .expect("32 bytes");
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).expect("a curve point");
        assert!(key.verify(&nonce, &signature).is_ok());
        assert!(key.verify(&[8u8; 32], &signature).is_err());
        // A short challenge cannot be signed.
        assert_eq!(scramble(CLIENT_ED25519, "secret", &nonce[..31]), None);
    }

    #[test]
    fn nonces_have_no_nul() {
        assert!(nonce().iter().all(|b| *b != 0));
    }
}

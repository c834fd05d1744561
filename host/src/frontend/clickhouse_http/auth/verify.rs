//! Password checks against `password` or a stored `password_hash` (a SCRAM-SHA-256 verifier or
//! an md5 hash, PostgreSQL's formats, so one `[[user]]` serves both protocols).
//!
//! A SCRAM check costs a PBKDF2 run (thousands of HMACs), far too much per HTTP request: the
//! SHA-256 of the last password that passed is remembered, so a client that keeps sending the same
//! password pays once.

use std::sync::Mutex;

use base64::Engine as _;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::config::{HashKind, UserConfig};

#[derive(Debug)]
pub enum Verifier {
    /// Only the empty password (a user without password, as ClickHouse's `default`).
    Empty,
    Plain(String),
    /// `md5` + hex(md5(password + user)).
    Md5(String),
    Scram {
        iterations: u32,
        salt: Vec<u8>,
        stored_key: Vec<u8>,
        /// SHA-256 of the last password that passed.
        passed: Mutex<Option<[u8; 32]>>,
    },
    /// A hash this build cannot read (the config check refuses them; kept for safety).
    Unusable,
}

impl Verifier {
    pub fn for_user(user: &UserConfig) -> Verifier {
        if let Some(password) = &user.password {
            return Verifier::Plain(password.expose().to_owned());
        }
        let Some(hash) = &user.password_hash else {
            return Verifier::Empty;
        };
        let hash = hash.expose();
        match HashKind::of(hash) {
            Some(HashKind::Md5) => Verifier::Md5(hash.to_ascii_lowercase()),
            Some(HashKind::ScramSha256) => parse_scram(hash).unwrap_or(Verifier::Unusable),
            None => Verifier::Unusable,
        }
    }

    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self {
            Verifier::Empty => password.is_empty(),
            Verifier::Plain(expected) => same(expected.as_bytes(), password.as_bytes()),
            Verifier::Md5(expected) => {
                let digest = Md5::digest(format!("{password}{user}").as_bytes());
                same(
                    expected.as_bytes(),
                    format!("md5{}", hex::encode(digest)).as_bytes(),
                )
            }
            Verifier::Scram {
                iterations,
                salt,
                stored_key,
                passed,
            } => {
                let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
                let remembered = *passed.lock().unwrap_or_else(|p| p.into_inner());
                if remembered.is_some_and(|r| same(&r, &fingerprint)) {
                    return true;
                }
                let salted = pbkdf2(password.as_bytes(), salt, *iterations);
                let client_key = hmac(&salted, b"Client Key");
                let ok = same(&Sha256::digest(client_key), stored_key);
                if ok {
                    *passed.lock().unwrap_or_else(|p| p.into_inner()) = Some(fingerprint);
                }
                ok
            }
            Verifier::Unusable => false,
        }
    }
}

fn parse_scram(hash: &str) -> Option<Verifier> {
    let rest = hash.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored, _server) = keys.split_once(':')?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Some(Verifier::Scram {
        iterations: iterations.parse().ok()?,
        salt: b64.decode(salt).ok()?,
        stored_key: b64.decode(stored).ok()?,
        passed: Mutex::new(None),
    })
}

/// Constant-time equality (for equal lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub(crate) fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_pbkdf2_match_published_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // PBKDF2-HMAC-SHA256("password", "salt").
        assert_eq!(
            hex::encode(pbkdf2(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex::encode(pbkdf2(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn stored_hashes_check_passwords() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salted = pbkdf2(b"secret", b"0123456789abcdef", 64);
        let stored = Sha256::digest(hmac(&salted, b"Client Key"));
        let server = hmac(&salted, b"Server Key");
        let hash = format!(
            "SCRAM-SHA-256$64:{}${}:{}",
            b64.encode(b"0123456789abcdef"),
            b64.encode(stored),
            b64.encode(server)
        );
        let mut user = UserConfig::new("alice", None);
        user.password_hash = Some(crate::config::Secret::new(hash));
        let v = Verifier::for_user(&user);
        assert!(v.verify("alice", "secret"));
        assert!(v.verify("alice", "secret"));
        assert!(!v.verify("alice", "Secret"));

        let md5 = format!("md5{}", hex::encode(Md5::digest(b"secretalice")));
        user.password_hash = Some(crate::config::Secret::new(md5));
        let v = Verifier::for_user(&user);
        assert!(v.verify("alice", "secret"));
        assert!(!v.verify("alice", "secre"));

        assert!(Verifier::for_user(&UserConfig::new("d", None)).verify("d", ""));
        assert!(!Verifier::for_user(&UserConfig::new("d", None)).verify("d", "x"));
    }
}

//! Client authentication by MD5 challenge and by cleartext password.

use rand::RngExt;

use super::Verifier;
use super::crypto::{ct_eq, md5_hex, sha256};

/// The salt for `AuthenticationMD5Password`; fresh per connection so a
/// captured response cannot be replayed.
pub fn md5_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    rand::rng().fill(&mut salt);
    salt
}

/// Checks a `PasswordMessage` answering an MD5 challenge: `response` is
/// `"md5" + hex(md5(hex(md5(password || user)) || salt))` without the NUL.
///
/// Always false for a SCRAM verifier: it does not contain
/// `md5(password || user)`, so the frontend must ask such users for SCRAM
/// (PostgreSQL does the same when `pg_hba.conf` says `md5`).
pub fn md5_verify(verifier: &Verifier, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let inner = match verifier {
        Verifier::Plain(password) => md5_hex(&[password.as_bytes(), user.as_bytes()].concat()),
        Verifier::Md5(hex) => String::from_utf8_lossy(hex).into_owned(),
        Verifier::Scram(_) => return false,
    };
    let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), &salt].concat()));
    ct_eq(expected.as_bytes(), response)
}

/// Checks a cleartext password (`AuthenticationCleartextPassword`, or a
/// ClickHouse client) against any kind of verifier.
///
/// `user` is needed only for MD5 verifiers, which are salted with the user
/// name. For SCRAM verifiers this re-runs the key derivation, which costs as
/// much as deriving the verifier.
pub fn plain_verify(verifier: &Verifier, user: &str, password: &[u8]) -> bool {
    match verifier {
        // Hashing first makes the comparison independent of the length.
        Verifier::Plain(expected) => ct_eq(&sha256(expected.as_bytes()), &sha256(password)),
        Verifier::Md5(hex) => ct_eq(
            md5_hex(&[password, user.as_bytes()].concat()).as_bytes(),
            hex,
        ),
        Verifier::Scram(secret) => secret.matches_password(password),
    }
}

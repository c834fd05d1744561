//! What the proxy stores per user to check a password without keeping more
//! of it than necessary.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngExt;

use super::AuthError;
use super::crypto::{ct_eq, scram_keys};

/// PostgreSQL's default, and what its clients expect to spend.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
pub(super) const DEFAULT_SALT_LEN: usize = 16;

/// A SCRAM-SHA-256 secret, shared behind an `Arc`.
///
/// Deriving it costs thousands of HMAC rounds, so the proxy derives it once per
/// user at configuration load and clones it into every connection's
/// [`ScramServer`](super::ScramServer).
#[derive(Clone)]
pub struct ScramSecret(Arc<ScramKeys>);

struct ScramKeys {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl ScramSecret {
    pub fn new(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; 32],
        server_key: [u8; 32],
    ) -> Result<Self, AuthError> {
        if iterations == 0 {
            return Err(AuthError::InvalidVerifier(
                "iteration count must be positive".into(),
            ));
        }
        if salt.is_empty() {
            return Err(AuthError::InvalidVerifier("salt must not be empty".into()));
        }
        Ok(Self(Arc::new(ScramKeys {
            iterations,
            salt,
            stored_key,
            server_key,
        })))
    }

    /// Derives the secret the way `CREATE ROLE ... PASSWORD` does, minus
    /// SASLprep (see the module documentation).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Result<Self, AuthError> {
        if iterations == 0 {
            return Err(AuthError::InvalidVerifier(
                "iteration count must be positive".into(),
            ));
        }
        let (stored_key, server_key) = scram_keys(password, salt, iterations)?;
        Self::new(iterations, salt.to_vec(), stored_key, server_key)
    }

    /// For users configured with a plaintext password: a fresh random salt
    /// and PostgreSQL's default iteration count.
    pub fn generate(password: &[u8]) -> Result<Self, AuthError> {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::rng().fill(&mut salt);
        Self::from_password(password, &salt, DEFAULT_SCRAM_ITERATIONS)
    }

    pub fn iterations(&self) -> u32 {
        self.0.iterations
    }

    pub fn salt(&self) -> &[u8] {
        &self.0.salt
    }

    pub fn stored_key(&self) -> &[u8; 32] {
        &self.0.stored_key
    }

    pub fn server_key(&self) -> &[u8; 32] {
        &self.0.server_key
    }

    /// The `pg_authid.rolpassword` form, so a derived secret can be written
    /// into configuration instead of the password.
    pub fn to_hash_string(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations(),
            STANDARD.encode(self.salt()),
            STANDARD.encode(self.stored_key()),
            STANDARD.encode(self.server_key())
        )
    }

    /// Checks a cleartext password by re-deriving with this secret's salt and
    /// iteration count, which is as slow as deriving it in the first place.
    pub(super) fn matches_password(&self, password: &[u8]) -> bool {
        match scram_keys(password, self.salt(), self.iterations()) {
            Ok((stored_key, _)) => ct_eq(&stored_key, self.stored_key()),
            Err(_) => false,
        }
    }
}

/// Keys stay out of logs; the iteration count is the only useful part.
impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations())
            .finish_non_exhaustive()
    }
}

/// A user's password as the proxy knows it.
///
/// Which client authentication methods are possible depends on the variant:
/// `Plain` allows all of them; `Scram` allows SCRAM and cleartext but not MD5;
/// `Md5` allows MD5 and cleartext but not SCRAM (as in PostgreSQL).
#[derive(Clone)]
pub enum Verifier {
    Plain(String),
    Scram(ScramSecret),
    /// Lowercase ASCII hex of `md5(password || username)`, the part of
    /// `rolpassword` after the `md5` prefix.
    Md5([u8; 32]),
}

impl Verifier {
    /// Parses a `pg_authid.rolpassword` hash: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
    /// (base64 fields) or `md5` followed by 32 hex digits.
    ///
    /// Anything else is an error rather than a plaintext password (PostgreSQL
    /// would silently fall back to plaintext), so that a mistyped hash in the
    /// configuration is reported instead of becoming the password.
    pub fn parse_hash(s: &str) -> Result<Verifier, AuthError> {
        if let Some(rest) = s.strip_prefix("SCRAM-SHA-256$") {
            return parse_scram(rest).map(Verifier::Scram);
        }
        if let Some(hex) = s.strip_prefix("md5") {
            let hex: [u8; 32] = hex
                .as_bytes()
                .try_into()
                .map_err(|_| invalid("md5 hash must have exactly 32 hex digits"))?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(invalid("md5 hash contains a non-hex character"));
            }
            return Ok(Verifier::Md5(hex.map(|b| b.to_ascii_lowercase())));
        }
        Err(invalid(
            "expected \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\" or \"md5<32 hex digits>\"",
        ))
    }

    pub fn scram_from_password(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Verifier, AuthError> {
        ScramSecret::from_password(password, salt, iterations).map(Verifier::Scram)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verifier::Plain(_) => f.write_str("Plain(<redacted>)"),
            Verifier::Scram(secret) => f.debug_tuple("Scram").field(secret).finish(),
            Verifier::Md5(_) => f.write_str("Md5(<redacted>)"),
        }
    }
}

fn parse_scram(rest: &str) -> Result<ScramSecret, AuthError> {
    let (params, keys) = rest
        .split_once('$')
        .ok_or_else(|| invalid("SCRAM hash lacks the '$' before the keys"))?;
    let (iterations, salt) = params
        .split_once(':')
        .ok_or_else(|| invalid("SCRAM hash lacks \"<iterations>:<salt>\""))?;
    let (stored_key, server_key) = keys
        .split_once(':')
        .ok_or_else(|| invalid("SCRAM hash lacks \"<StoredKey>:<ServerKey>\""))?;
    let iterations = iterations
        .parse::<u32>()
        .map_err(|_| invalid("SCRAM iteration count is not a number"))?;
    let salt = decode(salt, "salt")?;
    let stored_key = decode_key(stored_key, "StoredKey")?;
    let server_key = decode_key(server_key, "ServerKey")?;
    ScramSecret::new(iterations, salt, stored_key, server_key)
}

fn decode(b64: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(b64)
        .map_err(|e| invalid(format!("SCRAM {what} is not valid base64: {e}")))
}

fn decode_key(b64: &str, what: &str) -> Result<[u8; 32], AuthError> {
    decode(b64, what)?
        .try_into()
        .map_err(|_| invalid(format!("SCRAM {what} is not 32 bytes")))
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::InvalidVerifier(reason.into())
}

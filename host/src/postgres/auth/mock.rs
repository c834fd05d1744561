//! What an unknown user is authenticated against, so that the exchange looks like a known
//! user's: PostgreSQL's mock authentication. The salt is derived from the user name and a
//! secret of the process, so the same unknown name gets the same salt on every attempt, as a
//! real user does; the iteration count is the one real users get. No password matches it: the
//! caller fails the exchange at its end whatever the client proves.

use rand::RngExt;

use super::crypto::hmac;
use super::verifier::{DEFAULT_SALT_LEN, DEFAULT_SCRAM_ITERATIONS};
use super::{AuthError, ScramSecret};

/// The process's secret for mock verifiers.
#[derive(Clone)]
pub struct MockSecrets {
    key: [u8; 32],
}

impl MockSecrets {
    pub fn random() -> MockSecrets {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        MockSecrets { key }
    }

    /// The mock SCRAM secret of `user`: deterministic for this process, unrelated to any
    /// password.
    pub fn scram(&self, user: &str) -> Result<ScramSecret, AuthError> {
        let derive = |label: &[u8]| hmac(&self.key, &[label, user.as_bytes()].concat());
        let salt = derive(b"salt\0")?[..DEFAULT_SALT_LEN].to_vec();
        ScramSecret::new(
            DEFAULT_SCRAM_ITERATIONS,
            salt,
            derive(b"stored\0")?,
            derive(b"server\0")?,
        )
    }
}

impl std::fmt::Debug for MockSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockSecrets(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_always_gets_the_same_salt_and_names_differ() {
        let secrets = MockSecrets::random();
        let a = secrets.scram("alice").unwrap();
        let again = secrets.scram("alice").unwrap();
        let b = secrets.scram("bob").unwrap();
        assert_eq!(a.salt(), again.salt());
        assert_ne!(a.salt(), b.salt());
        assert_eq!(a.salt().len(), DEFAULT_SALT_LEN);
        assert_eq!(a.iterations(), DEFAULT_SCRAM_ITERATIONS);
        let other_process = MockSecrets::random().scram("alice").unwrap();
        assert_ne!(a.salt(), other_process.salt());
    }
}

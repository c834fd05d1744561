//! The proxy as client of a PostgreSQL server, on top of `postgres-protocol`.

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::{AuthError, SCRAM_SHA_256};

/// Picks the SASL mechanism to answer `AuthenticationSASL` with.
///
/// `None` means nothing usable was offered, e.g. only `SCRAM-SHA-256-PLUS`,
/// which needs channel binding to the TLS connection the proxy does not
/// implement; the caller should fail the connection naming the offered list.
pub fn choose_mechanism(list: &[&str]) -> Option<&'static str> {
    list.contains(&SCRAM_SHA_256).then_some(SCRAM_SHA_256)
}

/// The `PasswordMessage` payload (without the trailing NUL) answering
/// `AuthenticationMD5Password`.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> Vec<u8> {
    md5_hash(user.as_bytes(), password.as_bytes(), salt).into_bytes()
}

/// One SCRAM-SHA-256 exchange with a PostgreSQL server, without channel
/// binding.
///
/// Wraps `ScramSha256` to track the step itself, because the wrapped type
/// panics if its message is read after the exchange ended.
pub struct ScramClient {
    scram: ScramSha256,
    client_first: Vec<u8>,
    step: Step,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    AwaitServerFirst,
    AwaitServerFinal,
    Done,
}

impl ScramClient {
    /// The password is SASLprep-normalised by `postgres-protocol` when it is
    /// valid UTF-8 and allowed by SASLprep, as libpq does.
    pub fn new(password: &[u8]) -> Self {
        let scram = ScramSha256::new(password, ChannelBinding::unsupported());
        let client_first = scram.message().to_vec();
        Self {
            scram,
            client_first,
            step: Step::AwaitServerFirst,
        }
    }

    /// The mechanism name for `SASLInitialResponse`.
    pub fn mechanism() -> &'static str {
        SCRAM_SHA_256
    }

    /// The data for `SASLInitialResponse`.
    pub fn client_first(&self) -> &[u8] {
        &self.client_first
    }

    /// Takes `AuthenticationSASLContinue` data and returns the
    /// client-final-message for `SASLResponse`.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if std::mem::replace(&mut self.step, Step::Done) != Step::AwaitServerFirst {
            return Err(AuthError::OutOfOrder(
                "server-first-message already received",
            ));
        }
        self.scram
            .update(data)
            .map_err(|e| AuthError::Server(format!("bad server-first-message: {e}")))?;
        self.step = Step::AwaitServerFinal;
        Ok(self.scram.message().to_vec())
    }

    /// Takes `AuthenticationSASLFinal` data. Only `Ok` proves the server
    /// knows the password; otherwise the connection must be dropped even if
    /// the server goes on to send `AuthenticationOk`.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        if std::mem::replace(&mut self.step, Step::Done) != Step::AwaitServerFinal {
            return Err(AuthError::OutOfOrder(
                "server-final-message without a preceding server-first-message",
            ));
        }
        self.scram
            .finish(data)
            .map_err(|e| AuthError::Server(format!("bad server-final-message: {e}")))
    }
}

//! The proxy as SCRAM-SHA-256 server, authenticating a client connection.

use std::mem;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngExt;

use super::crypto::{ct_eq, hmac, sha256, xor_into};
use super::message::{Gs2Flag, parse_client_final, parse_client_first};
use super::{AuthError, SCRAM_SHA_256, ScramSecret};

/// PostgreSQL's SCRAM_RAW_NONCE_LEN; base64 makes it 24 characters.
const SERVER_NONCE_LEN: usize = 18;

/// One client's SCRAM exchange: `AuthenticationSASL` → [`Self::client_first`]
/// → `AuthenticationSASLContinue` → [`Self::client_final`] →
/// `AuthenticationSASLFinal`.
///
/// Any error ends the exchange: later calls return
/// [`AuthError::OutOfOrder`], so a client cannot retry within one connection.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    step: Step,
}

enum Step {
    AwaitClientFirst,
    AwaitClientFinal(Exchange),
    Done,
}

/// What the final message is checked against and signed over.
struct Exchange {
    flag: Gs2Flag,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Mechanisms to list in `AuthenticationSASL`.
    pub const MECHANISMS: &'static [&'static str] = &[SCRAM_SHA_256];

    pub fn new(secret: ScramSecret) -> Self {
        let mut raw = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill(&mut raw);
        Self::with_nonce(secret, STANDARD.encode(raw))
    }

    /// A fixed nonce makes the exchange reproducible for test vectors.
    pub(super) fn with_nonce(secret: ScramSecret, server_nonce: String) -> Self {
        Self {
            secret,
            server_nonce,
            step: Step::AwaitClientFirst,
        }
    }

    /// Takes the mechanism and data of `SASLInitialResponse` and returns the
    /// server-first-message for `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let Step::AwaitClientFirst = mem::replace(&mut self.step, Step::Done) else {
            return Err(AuthError::OutOfOrder(
                "client-first-message already received",
            ));
        };
        match mechanism {
            SCRAM_SHA_256 => {}
            "SCRAM-SHA-256-PLUS" => return Err(AuthError::ChannelBindingNotSupported),
            other => return Err(AuthError::UnsupportedMechanism(other.to_owned())),
        }
        let first = parse_client_first(data)?;
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(self.secret.salt()),
            self.secret.iterations()
        );
        self.step = Step::AwaitClientFinal(Exchange {
            flag: first.flag,
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        });
        Ok(server_first.into_bytes())
    }

    /// Takes the `SASLResponse` data and, if the proof is right, returns the
    /// server-final-message for `AuthenticationSASLFinal`; the caller then
    /// sends `AuthenticationOk`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let Step::AwaitClientFinal(exchange) = mem::replace(&mut self.step, Step::Done) else {
            return Err(AuthError::OutOfOrder(
                "client-final-message without a preceding client-first-message",
            ));
        };
        let last = parse_client_final(data)?;
        if last.channel_binding != exchange.flag.echo() {
            return Err(AuthError::Malformed(
                "SCRAM channel binding check failed".into(),
            ));
        }
        if last.nonce != exchange.nonce {
            return Err(AuthError::Malformed("unexpected SCRAM nonce".into()));
        }
        let auth_message = format!(
            "{},{},{}",
            exchange.client_first_bare, exchange.server_first, last.without_proof
        );
        let client_signature = hmac(self.secret.stored_key(), auth_message.as_bytes())?;
        let mut client_key = last.proof;
        xor_into(&mut client_key, &client_signature);
        if !ct_eq(&sha256(&client_key), self.secret.stored_key()) {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(self.secret.server_key(), auth_message.as_bytes())?;
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

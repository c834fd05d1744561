//! The one error type of the authentication module.

/// Why an authentication step failed.
///
/// Only [`AuthError::WrongPassword`] means the peer knew the protocol but not
/// the secret; the frontend turns it into SQLSTATE 28P01 `password
/// authentication failed for user "..."`. Everything else is a protocol or
/// configuration problem and is worth logging with its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("password authentication failed")]
    WrongPassword,
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("unsupported SASL authentication mechanism \"{0}\"")]
    UnsupportedMechanism(String),
    /// The client asked for SCRAM-SHA-256-PLUS; the proxy terminates TLS
    /// itself and never advertises it, so the exchange cannot continue.
    #[error(
        "channel binding is not supported: the proxy offers SCRAM-SHA-256 only, not SCRAM-SHA-256-PLUS"
    )]
    ChannelBindingNotSupported,
    #[error("invalid password verifier: {0}")]
    InvalidVerifier(String),
    /// A state machine method was called twice or in the wrong order; this is
    /// a bug in the caller, or a client replaying messages.
    #[error("SCRAM exchange step out of order: {0}")]
    OutOfOrder(&'static str),
    /// The PostgreSQL server sent something the client side rejects,
    /// including a server signature that does not prove knowledge of the
    /// password.
    #[error("PostgreSQL server failed SCRAM authentication: {0}")]
    Server(String),
    /// Unreachable in practice (HMAC accepts keys of any length); it exists
    /// so that no input can drive the module into a panic.
    #[error("internal cryptographic error: {0}")]
    Crypto(&'static str),
}

pub(super) fn malformed(reason: impl Into<String>) -> AuthError {
    AuthError::Malformed(reason.into())
}

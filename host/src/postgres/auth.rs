//! PostgreSQL authentication for both sides of the proxy, kept free of I/O.
//!
//! The frontend authenticates clients with [`ScramServer`], [`md5_verify`] or
//! [`plain_verify`]; the backend authenticates the proxy to PostgreSQL with
//! [`ScramClient`] or [`md5_password`]. Every function takes the payload bytes
//! of one protocol message and returns the payload to send back, so the
//! callers own framing, sockets and SQLSTATE mapping.
//!
//! SASLprep (RFC 4013) is applied on the client side only, by
//! `postgres-protocol`, which does not expose it. The server side and
//! [`Verifier::scram_from_password`] use password bytes as given. That is
//! exactly what PostgreSQL computes for ASCII passwords (SASLprep either leaves
//! them unchanged or fails, and PostgreSQL then uses the raw bytes), and for
//! non-ASCII passwords already in NFKC form without mapped characters.

mod client;
mod crypto;
mod error;
mod message;
mod mock;
mod password;
mod server;
mod verifier;

#[cfg(test)]
mod tests;

pub use client::{ScramClient, choose_mechanism, md5_password};
pub use error::AuthError;
pub use mock::MockSecrets;
pub use password::{md5_salt, md5_verify, plain_verify};
pub use server::ScramServer;
pub use verifier::{DEFAULT_SCRAM_ITERATIONS, ScramSecret, Verifier};

/// The only SASL mechanism the proxy speaks, on either side.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

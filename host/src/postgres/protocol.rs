//! PostgreSQL wire protocol v3, both directions, as the proxy needs it.
//!
//! The hot path never decodes rows: [`frame`] splits a byte stream into [`RawMessage`]s (tag +
//! the whole message as shared `Bytes`), and the proxy looks only at tags and the few fields it
//! acts on (statement names, transaction status). The typed messages in [`frontend`] and
//! [`backend`] are for everything else — startup, authentication, the proxy's own answers and
//! tests — and each has `decode` and `encode` with round-trip tests.

pub mod backend;
pub mod client_message;
mod cursor;
pub mod error;
pub mod frame;
pub mod frontend;
#[cfg(test)]
mod tests;
mod text;

pub use backend::{BackendMessage, ErrorFields, TransactionStatus};
pub use client_message::check_client_message;
pub use error::ProtocolError;
pub use frame::{MAX_STARTUP_LEN, RawMessage, split_message, split_startup};
pub use frontend::{FrontendMessage, Startup};
pub use text::SqlText;

/// The protocol version every modern client speaks (3.0).
pub const PROTOCOL_V3: i32 = 196_608;
/// `SSLRequest`'s magic version number.
pub const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest`'s magic version number.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// `CancelRequest`'s magic version number.
pub const CANCEL_REQUEST: i32 = 80_877_102;

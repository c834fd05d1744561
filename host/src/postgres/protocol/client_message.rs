//! Which messages a logged-in client may send, and how long each may be: the checks
//! PostgreSQL's `SocketBackend` makes before it reads a message. The proxy makes them itself so
//! that a client's garbage is refused by the proxy (FATAL 08P01 for that client only) instead of
//! reaching a server, whose FATAL and close would look like a failing node.

use super::ProtocolError;

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`: the most a message without variable-length payload
/// (Close, Describe, Execute, Flush, Sync, Terminate) may take. A larger one is not a message
/// any client builds; PostgreSQL drops the connection on it.
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// Checks one framed message (`tag` and its length after the tag, as declared) from a client
/// that has logged in.
pub fn check_client_message(tag: u8, declared_len: usize) -> Result<(), ProtocolError> {
    match tag {
        // Query, FunctionCall, Parse, Bind, CopyData, CopyDone, CopyFail: any length up to the
        // connection's own limit.
        b'Q' | b'F' | b'P' | b'B' | b'd' | b'c' | b'f' => Ok(()),
        b'C' | b'D' | b'E' | b'H' | b'S' | b'X' => {
            if declared_len > SMALL_MESSAGE_LIMIT {
                Err(ProtocolError::TooLong {
                    len: declared_len,
                    max: SMALL_MESSAGE_LIMIT,
                })
            } else {
                Ok(())
            }
        }
        // Everything else, the authentication messages ('p') included once logged in.
        other => Err(ProtocolError::InvalidFrontendType(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_a_client_sends_after_login_passes() {
        for tag in *b"QFPBdcfCDEHSX" {
            assert_eq!(check_client_message(tag, 4), Ok(()), "{}", tag as char);
        }
    }

    #[test]
    fn unknown_and_authentication_types_are_refused_with_postgres_wording() {
        for tag in [b'z', 0, b'p', b'R', b'Z', 0xff] {
            let e = check_client_message(tag, 4).expect_err("refused");
            assert_eq!(e, ProtocolError::InvalidFrontendType(tag));
            assert_eq!(
                e.to_string(),
                format!("invalid frontend message type {tag}")
            );
        }
    }

    #[test]
    fn fixed_size_messages_may_not_be_huge() {
        assert!(check_client_message(b'S', SMALL_MESSAGE_LIMIT).is_ok());
        assert!(check_client_message(b'S', SMALL_MESSAGE_LIMIT + 1).is_err());
        assert!(check_client_message(b'E', 1 << 20).is_err());
        // Payload-carrying messages are bounded by the connection's limit, not this one.
        assert!(check_client_message(b'Q', 1 << 20).is_ok());
        assert!(check_client_message(b'd', 1 << 20).is_ok());
    }
}

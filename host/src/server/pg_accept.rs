//! How PostgreSQL clients are refused before login: a FATAL they can read, as PostgreSQL and
//! PgBouncer refuse connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::login_accept::{LoginFrontend, Turned};
use crate::frontend::postgres::PgFrontend;
use crate::guard::{PendingLogin, Refusal};
use crate::postgres::protocol::ErrorFields;

impl LoginFrontend for PgFrontend {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, pending: PendingLogin) {
        PgFrontend::serve(self, stream, peer, pending).await;
    }

    /// Full caps are 53300, what clients retry on; an address that failed too often gets
    /// 28000, which they do not.
    fn refusal(turned: Turned, peer: SocketAddr) -> Vec<u8> {
        let error = match turned {
            Turned::Full => ErrorFields::fatal(
                "53300",
                "too many client connections (listener max_connections)",
            ),
            Turned::Gate(refusal) => {
                let code = match refusal {
                    Refusal::Pending | Refusal::PendingFromSource => "53300",
                    Refusal::TooManyFailures => "28000",
                };
                ErrorFields::fatal(code, format!("{refusal} ({})", peer.ip()))
            }
        };
        let mut out = bytes::BytesMut::new();
        error.encode_error(&mut out);
        out.to_vec()
    }
}

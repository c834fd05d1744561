//! How MySQL clients are refused before login: an ERR packet in place of the server greeting,
//! as MySQL sends "Too many connections".

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::login_accept::{LoginFrontend, Turned};
use crate::frontend::mysql::MyFrontend;
use crate::guard::{PendingLogin, Refusal};
use crate::mysql::response::{ER_CON_COUNT_ERROR, MyError};

impl LoginFrontend for MyFrontend {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, pending: PendingLogin) {
        MyFrontend::serve(self, stream, peer, pending).await;
    }

    fn refusal(turned: Turned, peer: SocketAddr) -> Vec<u8> {
        let error = match turned {
            Turned::Full => MyError::new(ER_CON_COUNT_ERROR, "08004", "Too many connections"),
            Turned::Gate(refusal @ (Refusal::Pending | Refusal::PendingFromSource)) => {
                MyError::new(
                    ER_CON_COUNT_ERROR,
                    "08004",
                    format!("Too many connections: {refusal}"),
                )
            }
            // MySQL's ER_HOST_IS_BLOCKED.
            Turned::Gate(refusal) => MyError::new(
                1129,
                "HY000",
                format!("Host '{}' is blocked: {refusal}", peer.ip()),
            ),
        };
        let mut out = bytes::BytesMut::new();
        error.put(&mut out, 0);
        out.to_vec()
    }
}

//! COM_CHANGE_USER: the client logs in again as another user (or the same one) on the same
//! connection. Checked as a login is (password against the nonce of the connection's greeting,
//! or a fresh one after an auth switch; addresses, cluster, database, `max_connections`); then
//! the session starts over as the new user: settings, pins, prepared statements,
//! LAST_INSERT_ID() and causal position are dropped, and a server connection that held any of
//! them is closed rather than pooled.

use bytes::BytesMut;

use super::{Closed, Session};
use crate::guard::canonical_ip;
use crate::mysql::auth::{self, NATIVE_PASSWORD};
use crate::mysql::packet::put_frame;
use crate::mysql::response::{self, MyError};

/// What a COM_CHANGE_USER packet carries.
struct ChangeUser {
    user: String,
    answer: Vec<u8>,
    database: Option<String>,
    plugin: Option<String>,
}

/// Parses the packet (after the command byte): user NUL, a length-prefixed auth response,
/// database NUL, then (protocol 4.1) a character set and the auth plugin's name NUL; connect
/// attributes after that are not needed.
fn parse(payload: &[u8]) -> Option<ChangeUser> {
    let rest = payload.get(1..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let rest = &rest[nul + 1..];
    let len = usize::from(*rest.first()?);
    let answer = rest.get(1..1 + len)?.to_vec();
    let rest = &rest[1 + len..];
    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let database = (nul > 0).then(|| String::from_utf8_lossy(&rest[..nul]).into_owned());
    let rest = rest.get(nul + 1..).unwrap_or(&[]);
    let plugin = rest.get(2..).and_then(|p| {
        let nul = p.iter().position(|b| *b == 0)?;
        (nul > 0).then(|| String::from_utf8_lossy(&p[..nul]).into_owned())
    });
    Some(ChangeUser {
        user,
        answer,
        database,
        plugin,
    })
}

impl Session {
    pub(super) async fn change_user(&mut self, payload: BytesMut) -> Result<(), Closed> {
        let Some(change) = parse(&payload) else {
            let error = MyError::new(
                response::ER_UNKNOWN_COM_ERROR,
                "08S01",
                "Malformed COM_CHANGE_USER",
            );
            self.close_with(error).await;
            return Err(Closed);
        };
        let mut seq = 1u8;
        let (nonce, answer) = match change.plugin.as_deref() {
            None | Some(NATIVE_PASSWORD) => (self.nonce, change.answer),
            Some(_) => {
                // Another plugin: ask for a native scramble of a fresh nonce.
                let nonce = auth::nonce();
                let mut data = vec![0xFE];
                data.extend_from_slice(NATIVE_PASSWORD.as_bytes());
                data.push(0);
                data.extend_from_slice(&nonce);
                data.push(0);
                put_frame(&mut self.out, seq, &data);
                self.flush().await?;
                let (got, answer) = self
                    .reader
                    .packet(&mut self.stream, 64 << 10)
                    .await
                    .map_err(|_| Closed)?;
                seq = got.wrapping_add(1);
                (nonce, answer.to_vec())
            }
        };
        let ip = canonical_ip(self.peer.ip());
        let user = self.fe.users.get(&change.user).cloned();
        let proven = user.as_ref().is_some_and(|u| {
            u.config.allows_addr(ip)
                && u.config.allows_cluster(&self.fe.cluster)
                && u.verifier
                    .as_ref()
                    .is_some_and(|v| v.verify(&nonce, &answer))
        });
        let denied = MyError::new(
            response::ER_ACCESS_DENIED_ERROR,
            "28000",
            format!(
                "Access denied for user '{}'@'{ip}' (using password: {})",
                change.user,
                if answer.is_empty() { "NO" } else { "YES" }
            ),
        );
        // MySQL closes the connection after a failed change of user.
        let Some(user) = user.filter(|_| proven) else {
            self.fe
                .stats
                .login_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            denied.put(&mut self.out, seq);
            let _ = self.flush().await;
            return Err(Closed);
        };
        if let Some(db) = &change.database
            && !self.fe.databases.allows(&user.config, db)
        {
            super::super::login::database_denied(&change.user, ip, db).put(&mut self.out, seq);
            let _ = self.flush().await;
            return Err(Closed);
        }
        let Some(slot) = user.open_session() else {
            let error = MyError::new(
                response::ER_TOO_MANY_USER_CONNECTIONS,
                "42000",
                format!(
                    "User {} already has more than 'max_user_connections' active connections",
                    change.user
                ),
            );
            error.put(&mut self.out, seq);
            let _ = self.flush().await;
            return Err(Closed);
        };
        self.start_over_as(user, slot, change.database);
        let status = self.status();
        response::put_ok(&mut self.out, seq, status);
        self.flush().await
    }
}

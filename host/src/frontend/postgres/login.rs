//! From a new TCP connection to a logged-in session: the startup packet (with SSLRequest,
//! GSSENCRequest and CancelRequest), TLS when configured, client authentication, and the
//! ParameterStatus / BackendKeyData / ReadyForQuery greeting.
//!
//! Until it has logged in a client is nobody, so what it may hold is bounded: one deadline
//! (`login_timeout`) for the whole phase, a startup packet of at most 10,000 bytes and
//! authentication messages of at most 65,535 (PostgreSQL's limits), and a place counted by the
//! listener's login gate ([`PendingLogin`]) until it is in.

mod auth;
mod greeting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::client::{ClientError, ClientIo};
use super::session::Session;
use super::settings::Settings;
use super::users::User;
use super::{ADMIN_DATABASE, PgFrontend};
use crate::guard::{PendingLogin, canonical_ip};
use crate::postgres::protocol::backend::{Authentication, ready_for_query};
use crate::postgres::protocol::{
    BackendMessage, ErrorFields, GSSENC_REQUEST, PROTOCOL_V3, ProtocolError, SSL_REQUEST, Startup,
    TransactionStatus, split_startup,
};
use auth::Claim;

pub(super) async fn serve(
    fe: Arc<PgFrontend>,
    mut stream: TcpStream,
    peer: SocketAddr,
    pending: PendingLogin,
) {
    let deadline = Instant::now() + fe.listener.login_timeout();
    let mut rbuf = BytesMut::with_capacity(1024);
    let first = match timeout_at(deadline, read_startup(&mut stream, &mut rbuf)).await {
        Ok(Ok(s)) => s,
        Ok(Err(ClientError::Protocol(e))) => {
            tracing::debug!(client = %peer, error = %e, "bad startup packet");
            ClientIo::new(stream, rbuf).fatal(startup_error(e)).await;
            return;
        }
        Ok(Err(_)) => return,
        // PostgreSQL closes without a word when no startup packet comes in time.
        Err(_) => return pending.timed_out(),
    };
    let login = Login {
        fe,
        peer,
        pending,
        deadline,
    };
    match first {
        Startup::Cancel { pid, key } => login.fe.cancels.cancel(pid, key).await,
        Startup::Ssl if login.fe.tls.is_some() => {
            // Bytes after SSLRequest and before the handshake would be read as if they had
            // come over TLS (CVE-2021-23214): PostgreSQL finishes the handshake, then refuses
            // them.
            let injected = !rbuf.is_empty();
            if stream.write_all(b"S").await.is_err() {
                return;
            }
            let Some(acceptor) = login.fe.tls.clone() else {
                return;
            };
            match timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) if injected => {
                    ClientIo::new(tls, BytesMut::new())
                        .fatal(unencrypted_after("SSL"))
                        .await;
                }
                Ok(Ok(tls)) => login.run(ClientIo::new(tls, rbuf), None, true).await,
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => login.pending.timed_out(),
            }
        }
        other => {
            login
                .run(ClientIo::new(stream, rbuf), Some(other), false)
                .await
        }
    }
}

/// What PostgreSQL answers a startup packet it cannot take.
fn startup_error(e: ProtocolError) -> ErrorFields {
    match e {
        ProtocolError::TooLong { .. } | ProtocolError::BadLength(_) => {
            ErrorFields::fatal("08P01", "invalid length of startup packet")
        }
        ProtocolError::UnsupportedVersion(v) => unsupported_version(v),
        other => ErrorFields::fatal("08P01", format!("invalid startup packet: {other}")),
    }
}

/// Reads one startup-phase packet straight from the socket.
async fn read_startup(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Startup, ClientError> {
    loop {
        if let Some(body) = split_startup(buf)? {
            return Ok(Startup::decode(&body)?);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

async fn next_startup<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
) -> Result<Startup, ClientError> {
    loop {
        if let Some(body) = split_startup(&mut io.rbuf)? {
            return Ok(Startup::decode(&body)?);
        }
        io.read_more().await?;
    }
}

/// How the startup phase ends, short of a broken connection.
enum Greeting {
    /// A StartupMessage: its version and parameters.
    Startup(i32, Vec<(String, String)>),
    /// Refused as PostgreSQL refuses it (a FATAL to send).
    Refused(ErrorFields),
}

/// One connection on its way in.
struct Login {
    fe: Arc<PgFrontend>,
    peer: SocketAddr,
    pending: PendingLogin,
    deadline: Instant,
}

impl Login {
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
        self,
        mut io: ClientIo<S>,
        first: Option<Startup>,
        tls: bool,
    ) {
        let Login {
            fe,
            peer,
            pending,
            deadline,
        } = self;
        let greeted = timeout_at(deadline, startup(&fe, &mut io, first, tls)).await;
        let (version, mut params) = match greeted {
            Ok(Ok(Greeting::Startup(version, params))) => (version, params),
            Ok(Ok(Greeting::Refused(e))) => return io.fatal(e).await,
            Ok(Err(ClientError::Protocol(e))) => return io.fatal(startup_error(e)).await,
            Ok(Err(_)) => return,
            Err(_) => return pending.timed_out(),
        };
        negotiate_version(&mut io, version, &mut params);
        if !tls && fe.listener.tls.as_ref().is_some_and(|t| t.required) {
            io.fatal(ErrorFields::fatal("28000", "SSL required")).await;
            return;
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(user_name) = param("user").filter(|u| !u.is_empty()) else {
            io.fatal(ErrorFields::fatal(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ))
            .await;
            return;
        };
        let database = param("database")
            .filter(|d| !d.is_empty())
            .or_else(|| fe.default_database.clone())
            .unwrap_or_else(|| user_name.clone());
        let user = fe.users.get(&user_name).cloned();
        let ip = canonical_ip(peer.ip());
        let claim = match &user {
            Some(u) if u.config.allows_addr(ip) => Claim::User(u),
            Some(_) => {
                // Said in the log only: the client gets what a wrong password gets, or the
                // answer would tell anyone outside the network which names exist.
                tracing::info!(client = %peer, user = user_name, "login refused: address not in the user's allowed_networks");
                Claim::Refused
            }
            None => Claim::Refused,
        };
        let authenticated = matches!(claim, Claim::User(_));
        match timeout_at(
            deadline,
            auth::authenticate(&mut io, &fe, &user_name, claim),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Only a refused password counts against the address: a client that leaves
                // mid-exchange (psql does, to ask for the password) or garbles it guessed
                // nothing.
                if e.code() == Some(auth::WRONG_PASSWORD) {
                    fe.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    pending.failed();
                }
                tracing::info!(client = %peer, user = user_name, reason = ?e.message(), "login failed");
                io.fatal(e).await;
                return;
            }
            Err(_) => {
                pending.timed_out();
                io.fatal(ErrorFields::fatal(
                    "57014",
                    "canceling authentication due to timeout",
                ))
                .await;
                return;
            }
        }
        // `authenticate` succeeds only for a claim of a real user; this is belt and braces.
        let Some(user) = user.filter(|_| authenticated) else {
            io.fatal(auth::wrong_password(&user_name)).await;
            return;
        };
        if let Err(e) = check_access(&fe, &user, &database) {
            io.fatal(e).await;
            return;
        }
        // Logged in: no longer counted as pending, and a session's limits apply from now on.
        drop(pending);
        io.logged_in();
        welcome(fe, io, user, database, peer, params, tls).await;
    }
}

/// The startup phase after the first packet: SSLRequest / GSSENCRequest answered `N`, a
/// CancelRequest forwarded, up to the StartupMessage.
async fn startup<S: AsyncRead + AsyncWrite + Unpin>(
    fe: &PgFrontend,
    io: &mut ClientIo<S>,
    mut first: Option<Startup>,
    tls: bool,
) -> Result<Greeting, ClientError> {
    // As in PostgreSQL: at most one SSLRequest and one GSSENCRequest, in either order, and
    // none of them once TLS is up.
    let (mut ssl_done, mut gss_done) = (tls, tls);
    loop {
        let packet = match first.take() {
            Some(p) => p,
            None => next_startup(io).await?,
        };
        let (done, code, what) = match packet {
            Startup::Ssl => (&mut ssl_done, SSL_REQUEST, "SSL"),
            Startup::GssEnc => (&mut gss_done, GSSENC_REQUEST, "GSSAPI encryption"),
            Startup::Cancel { pid, key } => {
                fe.cancels.cancel(pid, key).await;
                return Err(ClientError::Closed);
            }
            Startup::Message { version, params } => {
                return Ok(Greeting::Startup(version, params));
            }
        };
        if *done {
            // PostgreSQL reads a repeated request as a StartupMessage of that "version".
            return Ok(Greeting::Refused(unsupported_version(code)));
        }
        *done = true;
        // TLS not configured, or GSSAPI never offered: plain text.
        io.wbuf.extend_from_slice(b"N");
        io.flush().await?;
        if !io.rbuf.is_empty() {
            return Ok(Greeting::Refused(unencrypted_after(what)));
        }
    }
}

/// The greeting after a successful login, then the session (or the admin console).
async fn welcome<S: AsyncRead + AsyncWrite + Unpin + Send>(
    fe: Arc<PgFrontend>,
    mut io: ClientIo<S>,
    user: Arc<User>,
    database: String,
    peer: SocketAddr,
    params: Vec<(String, String)>,
    tls: bool,
) {
    let user_name = user.config.name.clone();
    let Some(_slot) = user.open_session() else {
        io.fatal(ErrorFields::fatal(
            "53300",
            format!("too many connections for user \"{user_name}\" (max_connections)"),
        ))
        .await;
        return;
    };
    fe.stats.logins.fetch_add(1, Ordering::Relaxed);
    let settings = Settings::from_startup(&params);
    // As the policy contract says: startup parameters prefixed `startup.`.
    let attributes: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "user" && k != "database")
        .map(|(k, v)| (format!("startup.{k}"), v.clone()))
        .collect();
    let cancel = fe.cancels.register(super::cancel::ClientInfo {
        user: user_name.clone(),
        database: database.clone(),
        addr: peer.to_string(),
        since: std::time::SystemTime::now(),
    });
    BackendMessage::Authentication(Authentication::Ok).encode(&mut io.wbuf);
    for (name, value) in fe.parameter_statuses(&user, &database, &params).await {
        BackendMessage::ParameterStatus { name, value }.encode(&mut io.wbuf);
    }
    BackendMessage::BackendKeyData {
        pid: cancel.pid,
        key: cancel.key,
    }
    .encode(&mut io.wbuf);
    ready_for_query(&mut io.wbuf, TransactionStatus::Idle);
    if io.flush().await.is_err() {
        return;
    }
    tracing::debug!(client = %peer, user = user_name, database, tls, "client logged in");
    if database == ADMIN_DATABASE {
        super::admin::serve(fe, io, user, cancel).await;
        return;
    }
    Session::new(fe, io, user, database, peer, attributes, settings, cancel)
        .run()
        .await;
}

/// PostgreSQL 15 speaks protocol 3.0 and knows no protocol options: a StartupMessage asking for
/// 3.x (x > 0) or carrying `_pq_.` options gets NegotiateProtocolVersion (3.0 and the options
/// not recognised, all of them) before authentication, and the login goes on in 3.0. The options
/// are no settings: they are dropped here.
fn negotiate_version<S>(io: &mut ClientIo<S>, version: i32, params: &mut Vec<(String, String)>) {
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(name, _)| name.starts_with("_pq_."))
        .map(|(name, _)| name.clone())
        .collect();
    params.retain(|(name, _)| !name.starts_with("_pq_."));
    if version != PROTOCOL_V3 || !unsupported.is_empty() {
        BackendMessage::NegotiateProtocolVersion {
            newest: PROTOCOL_V3,
            unsupported,
        }
        .encode(&mut io.wbuf);
    }
}

/// What PostgreSQL answers a startup packet of a version it does not speak (also a repeated
/// SSLRequest or GSSENCRequest, whose magic numbers read as versions 1234.5679 and 1234.5680).
fn unsupported_version(version: i32) -> ErrorFields {
    ErrorFields::fatal(
        "0A000",
        format!(
            "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
            version >> 16,
            version & 0xffff
        ),
    )
}

/// Bytes that came with an SSLRequest or GSSENCRequest, before its answer.
fn unencrypted_after(what: &str) -> ErrorFields {
    ErrorFields::fatal(
        "08P01",
        format!("received unencrypted data after {what} request"),
    )
    .detail(
        "This could be either a client-software bug or evidence of an attempted \
         man-in-the-middle attack.",
    )
}

/// What an authenticated user may reach: the admin console, or this listener's cluster and one
/// of the databases the config opens to the user there. Checked after authentication, as
/// PostgreSQL checks a database's existence and CONNECT privilege, so the refusal (which names
/// the user) reaches only a client that knows the password. A database the config does not open
/// is refused in PostgreSQL's own words for one that does not exist, so the answer does not tell
/// which databases the backend has.
fn check_access(fe: &PgFrontend, user: &User, database: &str) -> Result<(), ErrorFields> {
    let name = &user.config.name;
    if database == ADMIN_DATABASE {
        if !user.config.admin {
            return Err(ErrorFields::fatal(
                "28000",
                format!("user \"{name}\" may not use the admin console (set admin = true)"),
            ));
        }
    } else if !user.config.allows_cluster(&fe.cluster) {
        return Err(ErrorFields::fatal(
            "28000",
            format!("user \"{name}\" may not use cluster \"{}\"", fe.cluster),
        ));
    } else if !fe.databases.allows(&user.config, database) {
        tracing::info!(
            user = name.as_str(),
            database,
            cluster = fe.cluster.as_str(),
            "login refused: database not in the cluster's or the user's databases"
        );
        fe.shared
            .metrics
            .database_refused(crate::model::Protocol::Postgres, name);
        return Err(ErrorFields::fatal(
            "3D000",
            format!("database \"{database}\" does not exist"),
        ));
    }
    Ok(())
}

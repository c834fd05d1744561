//! From a new TCP connection to a logged-in session: the startup packet (with SSLRequest,
//! GSSENCRequest and CancelRequest), TLS when configured, client authentication, and the
//! ParameterStatus / BackendKeyData / ReadyForQuery greeting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{ClientError, ClientIo};
use super::session::Session;
use super::settings::Settings;
use super::users::User;
use super::{ADMIN_DATABASE, PgFrontend};
use crate::config::AuthMethod;
use crate::postgres::auth::{ScramServer, Verifier, md5_salt, md5_verify};
use crate::postgres::protocol::backend::{Authentication, ready_for_query};
use crate::postgres::protocol::frontend::PasswordMessage;
use crate::postgres::protocol::{
    BackendMessage, ErrorFields, GSSENC_REQUEST, PROTOCOL_V3, SSL_REQUEST, Startup,
    TransactionStatus, split_startup,
};

/// PostgreSQL's `authentication_timeout` default.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) async fn serve(fe: Arc<PgFrontend>, mut stream: TcpStream, peer: SocketAddr) {
    let mut rbuf = BytesMut::with_capacity(1024);
    let first =
        match tokio::time::timeout(LOGIN_TIMEOUT, read_startup(&mut stream, &mut rbuf)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer, error = %e, "bad startup packet");
                let mut io = ClientIo::new(stream, rbuf);
                io.fatal(ErrorFields::fatal(
                    "08P01",
                    format!("invalid startup packet: {e}"),
                ))
                .await;
                return;
            }
            Err(_) => return,
        };
    match first {
        Startup::Cancel { pid, key } => fe.cancels.cancel(pid, key).await,
        Startup::Ssl if fe.tls.is_some() => {
            // Bytes after SSLRequest and before the handshake would be read as if they had
            // come over TLS (CVE-2021-23214): PostgreSQL finishes the handshake, then refuses
            // them.
            let injected = !rbuf.is_empty();
            if stream.write_all(b"S").await.is_err() {
                return;
            }
            let Some(acceptor) = fe.tls.clone() else {
                return;
            };
            match tokio::time::timeout(LOGIN_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) if injected => {
                    ClientIo::new(tls, BytesMut::new())
                        .fatal(unencrypted_after("SSL"))
                        .await;
                }
                Ok(Ok(tls)) => login(fe, ClientIo::new(tls, rbuf), peer, None, true).await,
                Ok(Err(e)) => tracing::debug!(client = %peer, error = %e, "TLS handshake failed"),
                Err(_) => {}
            }
        }
        other => login(fe, ClientIo::new(stream, rbuf), peer, Some(other), false).await,
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

async fn login<S: AsyncRead + AsyncWrite + Unpin + Send>(
    fe: Arc<PgFrontend>,
    mut io: ClientIo<S>,
    peer: SocketAddr,
    mut first: Option<Startup>,
    tls: bool,
) {
    let greeted = tokio::time::timeout(LOGIN_TIMEOUT, async {
        // As in PostgreSQL: at most one SSLRequest and one GSSENCRequest, in either order, and
        // none of them once TLS is up.
        let (mut ssl_done, mut gss_done) = (tls, tls);
        loop {
            let packet = match first.take() {
                Some(p) => p,
                None => next_startup(&mut io).await?,
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
    })
    .await;
    let (version, mut params) = match greeted {
        Ok(Ok(Greeting::Startup(version, params))) => (version, params),
        Ok(Ok(Greeting::Refused(e))) => {
            io.fatal(e).await;
            return;
        }
        Ok(Err(ClientError::Protocol(e))) => {
            io.fatal(ErrorFields::fatal(
                "08P01",
                format!("invalid startup packet: {e}"),
            ))
            .await;
            return;
        }
        _ => return,
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
    let user = match check_user(&fe, &user_name, &database, peer) {
        Ok(user) => user,
        Err(e) => {
            fe.stats.login_failures.fetch_add(1, Ordering::Relaxed);
            io.fatal(e).await;
            return;
        }
    };
    match tokio::time::timeout(LOGIN_TIMEOUT, authenticate(&mut io, &user)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            fe.stats.login_failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %peer, user = user_name, reason = ?e.message(), "login failed");
            io.fatal(e).await;
            return;
        }
        Err(_) => {
            io.fatal(ErrorFields::fatal("08006", "authentication timed out"))
                .await;
            return;
        }
    }
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

/// What PostgreSQL answers a startup packet of a version it does not speak (here: a repeated
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

/// Who may log in where. Unknown users get the same answer as a wrong password.
fn check_user(
    fe: &PgFrontend,
    name: &str,
    database: &str,
    peer: SocketAddr,
) -> Result<Arc<User>, ErrorFields> {
    let failed = || {
        ErrorFields::fatal(
            "28P01",
            format!("password authentication failed for user \"{name}\""),
        )
    };
    let user = fe.users.get(name).cloned().ok_or_else(failed)?;
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer.ip(), std::net::IpAddr::V4),
        ip => ip,
    };
    if !user.config.allows_addr(ip) {
        return Err(ErrorFields::fatal(
            "28000",
            format!("user \"{name}\" is not allowed to connect from {ip}"),
        ));
    }
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
    }
    Ok(user)
}

/// Runs the user's authentication method over the connection.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    user: &User,
) -> Result<(), ErrorFields> {
    let name = &user.config.name;
    let failed = || {
        ErrorFields::fatal(
            "28P01",
            format!("password authentication failed for user \"{name}\""),
        )
    };
    let protocol = |e: ClientError| ErrorFields::fatal("08P01", format!("authentication: {e}"));
    match user.config.auth {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Md5 => {
            let verifier = match &user.verifier {
                Some(v @ (Verifier::Plain(_) | Verifier::Md5(_))) => v,
                _ => {
                    tracing::error!(
                        user = name.as_str(),
                        "md5 authentication needs a password or an md5 password_hash"
                    );
                    return Err(failed());
                }
            };
            let salt = md5_salt();
            send(io, Authentication::Md5Password { salt })
                .await
                .map_err(protocol)?;
            let msg = io.read_message().await.map_err(protocol)?;
            if msg.tag() != b'p' {
                return Err(ErrorFields::fatal("08P01", "expected a password message"));
            }
            let response = PasswordMessage::password(msg.body_slice())
                .map_err(|e| ErrorFields::fatal("08P01", e.to_string()))?;
            if md5_verify(verifier, name, salt, response) {
                Ok(())
            } else {
                Err(failed())
            }
        }
        AuthMethod::ScramSha256 => {
            let Some(secret) = user.scram.clone() else {
                tracing::error!(
                    user = name.as_str(),
                    "SCRAM authentication needs a password or a SCRAM password_hash"
                );
                return Err(failed());
            };
            let mut server = ScramServer::new(secret);
            send(
                io,
                Authentication::Sasl {
                    mechanisms: ScramServer::MECHANISMS
                        .iter()
                        .map(|m| m.to_string())
                        .collect(),
                },
            )
            .await
            .map_err(protocol)?;
            let msg = io.read_message().await.map_err(protocol)?;
            if msg.tag() != b'p' {
                return Err(ErrorFields::fatal(
                    "08P01",
                    "expected a SASLInitialResponse message",
                ));
            }
            let (mechanism, data) = PasswordMessage::sasl_initial(msg.body_slice())
                .map_err(|e| ErrorFields::fatal("08P01", e.to_string()))?;
            let first = server
                .client_first(mechanism, data)
                .map_err(|e| scram_error(e, &failed))?;
            send(io, Authentication::SaslContinue(first.into()))
                .await
                .map_err(protocol)?;
            let msg = io.read_message().await.map_err(protocol)?;
            if msg.tag() != b'p' {
                return Err(ErrorFields::fatal(
                    "08P01",
                    "expected a SASLResponse message",
                ));
            }
            let last = server
                .client_final(msg.body_slice())
                .map_err(|e| scram_error(e, &failed))?;
            BackendMessage::Authentication(Authentication::SaslFinal(last.into()))
                .encode(&mut io.wbuf);
            Ok(())
        }
    }
}

fn scram_error(
    e: crate::postgres::auth::AuthError,
    failed: &dyn Fn() -> ErrorFields,
) -> ErrorFields {
    match e {
        crate::postgres::auth::AuthError::WrongPassword => failed(),
        other => ErrorFields::fatal("08P01", other.to_string()),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    auth: Authentication,
) -> Result<(), ClientError> {
    BackendMessage::Authentication(auth).encode(&mut io.wbuf);
    io.flush().await
}

impl PgFrontend {
    /// What the client is told about the server: the real server's startup parameters (learnt
    /// from the first server connection), with the client's own settings on top.
    async fn parameter_statuses(
        &self,
        user: &User,
        database: &str,
        client: &[(String, String)],
    ) -> Vec<(String, String)> {
        let server = self
            .server_params
            .get_or_init(|| async {
                match self.learn_server_params(user, database).await {
                    Some(p) => p,
                    None => default_params(),
                }
            })
            .await;
        let mut out: Vec<(String, String)> = server.clone();
        for (name, value) in client {
            let known = out.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name));
            match known {
                Some((_, v)) => *v = value.clone(),
                None if name == "application_name" => out.push((name.clone(), value.clone())),
                None => {}
            }
        }
        if let Some((_, v)) = out.iter_mut().find(|(k, _)| k == "session_authorization") {
            *v = user.config.name.clone();
        }
        out
    }

    async fn learn_server_params(
        &self,
        user: &User,
        database: &str,
    ) -> Option<Vec<(String, String)>> {
        let router = self.backend.router();
        let pool = router
            .resolve(
                &crate::model::Route::Primary,
                crate::model::StatementKind::Read,
                false,
            )
            .ok()?;
        let credentials = user.config.backend_credentials(pool.config());
        let login = crate::backend::postgres::Login {
            user: credentials.user,
            password: credentials.password.map(|p| p.expose().to_owned()),
            database: database.to_owned(),
        };
        let mut conn = self
            .backend
            .checkout(
                &pool,
                None,
                &login,
                &[],
                &crate::limits::Tenant::internal(),
                &mut crate::backend::postgres::BucketMemo::default(),
            )
            .await
            .ok()?;
        let params = conn
            .conn()
            .params
            .iter()
            .filter(|(k, _)| k != "application_name")
            .cloned()
            .collect();
        conn.release();
        Some(params)
    }
}

fn default_params() -> Vec<(String, String)> {
    [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

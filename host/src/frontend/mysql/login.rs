//! From a new TCP connection to a logged-in session: the server greeting (HandshakeV10 with the
//! servers' own version string, so clients enable the same dialect features), the client's
//! handshake response, `mysql_native_password` (asking clients that start with another plugin
//! to switch), and the access checks.
//!
//! Until it has logged in a client is nobody: one deadline (`login_timeout`) for the whole phase,
//! login packets of at most 64 KiB, and a place counted by the listener's login gate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::MyFrontend;
use super::rewind::Rewind;
use super::session::Session;
use super::users::User;
use crate::backend::tls::MaybeTls;
use crate::guard::{PendingLogin, canonical_ip};
use crate::limits::Tenant;
use crate::mysql::auth::{self, NATIVE_PASSWORD};
use crate::mysql::packet::{FrameReader, PacketError, put_frame};
use crate::mysql::response::{self, MyError, proxy_capabilities, put_ok};
use crate::mysql::{CapabilityFlags, StatusFlags};

/// The largest packet accepted before login.
const MAX_LOGIN_PACKET: usize = 64 << 10;
/// The payload of an SSLRequest: the first 32 bytes of a handshake response, no user.
const SSL_REQUEST_LEN: usize = 32;

fn handshake_error(what: &str) -> MyError {
    MyError::new(
        response::ER_HANDSHAKE_ERROR,
        "08S01",
        format!("Bad handshake: {what}"),
    )
}

/// What clients are told before any server connection has reported its version.
const FALLBACK_VERSION: &str = "5.5.5-10.11.0-MariaDB-Switchyard";

/// What the client said in its handshake response.
pub(super) struct Hello {
    pub user: String,
    pub database: Option<String>,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub attributes: Vec<(String, String)>,
    /// The nonce the greeting carried.
    pub nonce: [u8; 20],
}

/// A client's stream: TCP, or TLS once the client asked for it with an SSLRequest.
pub(super) type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<Rewind>>;

pub(super) async fn serve(
    fe: Arc<MyFrontend>,
    tcp: TcpStream,
    peer: SocketAddr,
    pending: PendingLogin,
) {
    let deadline = Instant::now() + fe.listener.login_timeout();
    let connection_id = fe.connection_id();
    let mut reader = FrameReader::default();
    let mut stream = Some(MaybeTls::Plain(tcp));
    let result = timeout_at(
        deadline,
        login(&fe, &mut stream, &mut reader, peer, connection_id, &pending),
    )
    .await;
    let Some(mut stream) = stream else {
        return;
    };
    let (user, hello, seq) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(Some((seq, error)))) => {
            let mut out = BytesMut::new();
            error.put(&mut out, seq);
            let _ = stream.write_all(&out).await;
            return;
        }
        Ok(Err(None)) => return,
        Err(_) => {
            pending.timed_out();
            return;
        }
    };
    let Some(slot) = user.open_session() else {
        let error = MyError::new(
            response::ER_TOO_MANY_USER_CONNECTIONS,
            "42000",
            format!(
                "User {} already has more than 'max_user_connections' active connections",
                user.config.name
            ),
        );
        let mut out = BytesMut::new();
        error.put(&mut out, seq);
        let _ = stream.write_all(&out).await;
        return;
    };
    drop(pending);
    fe.stats.logins.fetch_add(1, Ordering::Relaxed);
    let mut out = BytesMut::new();
    put_ok(&mut out, seq, StatusFlags::SERVER_STATUS_AUTOCOMMIT);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    tracing::debug!(client = %peer, user = user.config.name, "client logged in");
    Session::new(fe, stream, reader, user, slot, hello, peer, connection_id)
        .run()
        .await;
}

/// The error to send (with its sequence id), or `None` to close without a word.
type LoginError = Option<(u8, MyError)>;

/// The handshake, TLS when the client asks for it (`stream` is then replaced by its TLS
/// stream), and authentication.
async fn login(
    fe: &Arc<MyFrontend>,
    stream: &mut Option<ClientStream>,
    reader: &mut FrameReader,
    peer: SocketAddr,
    connection_id: u32,
    pending: &PendingLogin,
) -> Result<(Arc<User>, Hello, u8), LoginError> {
    let version = server_version(fe).await;
    let nonce = auth::nonce();
    let mut scramble_2 = nonce[8..].to_vec();
    scramble_2.push(0);
    let mut capabilities = proxy_capabilities();
    if fe.tls.is_some() {
        capabilities |= CapabilityFlags::CLIENT_SSL;
    }
    if fe.listener.local_infile {
        capabilities |= CapabilityFlags::CLIENT_LOCAL_FILES;
    }
    let greeting = HandshakePacket::new(
        10,
        version.as_bytes(),
        connection_id,
        nonce[..8].try_into().unwrap_or([0u8; 8]),
        Some(scramble_2),
        capabilities,
        crate::backend::mysql::DEFAULT_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE_PASSWORD.as_bytes()),
    );
    let mut payload = Vec::with_capacity(128);
    greeting.serialize(&mut payload);
    let mut out = BytesMut::new();
    put_frame(&mut out, 0, &payload);
    let plain = stream.as_mut().ok_or(None)?;
    plain.write_all(&out).await.map_err(|_| None)?;

    let (mut seq, mut packet) = read(reader, plain).await?;
    if packet.len() == SSL_REQUEST_LEN {
        let Some(acceptor) = fe.tls.clone() else {
            return Err(Some((
                seq.wrapping_add(1),
                handshake_error("TLS was not offered"),
            )));
        };
        let Some(MaybeTls::Plain(tcp)) = stream.take() else {
            return Err(None);
        };
        // What came after the SSLRequest is the start of the TLS handshake.
        let early = reader.take_buffered();
        let tls = acceptor
            .accept(Rewind::new(early, tcp))
            .await
            .map_err(|e| {
                tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                None
            })?;
        let secured = stream.insert(MaybeTls::Tls(Box::new(tls)));
        (seq, packet) = read(reader, secured).await?;
    } else if fe.listener.tls.as_ref().is_some_and(|t| t.required) {
        return Err(Some((
            seq.wrapping_add(1),
            MyError::new(
                3159,
                "08004",
                "Connections using insecure transport are prohibited (the listener requires TLS)",
            ),
        )));
    }
    let stream = stream.as_mut().ok_or(None)?;
    let next = seq.wrapping_add(1);
    let bad = |what: &str| {
        Some((
            next,
            MyError::new(
                response::ER_HANDSHAKE_ERROR,
                "08S01",
                format!("Bad handshake: {what}"),
            ),
        ))
    };
    let response = HandshakeResponse::deserialize((), &mut ParseBuf(&packet))
        .map_err(|e| bad(&e.to_string()))?;
    let capabilities = response.capabilities();
    if !capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(bad("clients must speak protocol 4.1"));
    }
    let hello = Hello {
        user: String::from_utf8_lossy(response.user()).into_owned(),
        database: response
            .db_name()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        capabilities,
        collation: response.collation(),
        attributes: response
            .connect_attributes()
            .map(|a| {
                a.into_iter()
                    .map(|(k, v)| (format!("connect.{k}"), v))
                    .collect()
            })
            .unwrap_or_default(),
        nonce,
    };
    let plugin = response
        .auth_plugin()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .unwrap_or_else(|| NATIVE_PASSWORD.to_owned());
    let (answer, mut seq) = if plugin == NATIVE_PASSWORD {
        (response.scramble_buf().to_vec(), next)
    } else {
        // The client began with another plugin (MySQL 8 clients start with
        // caching_sha2_password): ask it for a native scramble of the same nonce.
        let switch = AuthSwitchRequest::new(NATIVE_PASSWORD.as_bytes(), {
            let mut data = nonce.to_vec();
            data.push(0);
            data
        });
        let mut payload = Vec::new();
        switch.serialize(&mut payload);
        let mut out = BytesMut::new();
        put_frame(&mut out, next, &payload);
        stream.write_all(&out).await.map_err(|_| None)?;
        let (got, answer) = read(reader, stream).await?;
        (answer.to_vec(), got.wrapping_add(1))
    };
    let user = fe.users.get(&hello.user).cloned();
    let ip = canonical_ip(peer.ip());
    let denied = |seq: u8| {
        Some((
            seq,
            MyError::new(
                response::ER_ACCESS_DENIED_ERROR,
                "28000",
                format!(
                    "Access denied for user '{}'@'{}' (using password: {})",
                    hello.user,
                    ip,
                    if answer.is_empty() { "NO" } else { "YES" }
                ),
            ),
        ))
    };
    let proven = user.as_ref().is_some_and(|u| {
        u.config.allows_addr(ip)
            && u.verifier
                .as_ref()
                .is_some_and(|v| v.verify(&nonce, &answer))
    });
    let Some(user) = user.filter(|_| proven) else {
        fe.stats.login_failures.fetch_add(1, Ordering::Relaxed);
        pending.failed();
        tracing::info!(client = %peer, user = hello.user, "login failed");
        return Err(denied(seq));
    };
    if !user.config.allows_cluster(&fe.cluster) {
        return Err(denied(seq));
    }
    if let Some(db) = &hello.database
        && !fe.databases.allows(&user.config, db)
    {
        fe.shared
            .metrics
            .database_refused(crate::model::Protocol::Mysql, &user.config.name);
        return Err(Some((seq, database_denied(&hello.user, ip, db))));
    }
    // The OK (or a later refusal) follows the last packet the client sent.
    seq = seq.max(next);
    Ok((user, hello, seq))
}

/// MySQL's answer for a database the user may not open; the same whether or not it exists.
pub(super) fn database_denied(user: &str, ip: std::net::IpAddr, database: &str) -> MyError {
    MyError::new(
        response::ER_DBACCESS_DENIED_ERROR,
        "42000",
        format!("Access denied for user '{user}'@'{ip}' to database '{database}'"),
    )
}

async fn read(
    reader: &mut FrameReader,
    stream: &mut ClientStream,
) -> Result<(u8, BytesMut), LoginError> {
    match reader.packet(stream, MAX_LOGIN_PACKET).await {
        Ok(p) => Ok(p),
        Err(PacketError::TooLarge { .. }) => Err(Some((
            2,
            MyError::new(
                response::ER_NET_PACKET_TOO_LARGE,
                "08S01",
                "Got a packet bigger than the login limit (64 KiB)",
            ),
        ))),
        Err(_) => Err(None),
    }
}

/// The version string servers of the cluster report, learnt by opening one connection when
/// no client has caused one yet.
async fn server_version(fe: &MyFrontend) -> String {
    if let Some(v) = fe.backend.server_version() {
        return v.to_owned();
    }
    let router = fe.backend.router();
    if let Ok(target) = router.resolve_target(
        &crate::model::Route::Primary,
        crate::model::StatementKind::Write,
        false,
    ) {
        let login = super::session::backend_login(fe, None, &target.pool, false);
        if let Ok(conn) = fe
            .backend
            .checkout(
                &target.pool,
                || login.clone(),
                &[],
                &Tenant::internal(),
                &mut Default::default(),
            )
            .await
        {
            conn.release();
        }
    }
    fe.backend
        .server_version()
        .unwrap_or(FALLBACK_VERSION)
        .to_owned()
}

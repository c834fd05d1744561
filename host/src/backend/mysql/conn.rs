//! One MySQL/MariaDB server connection: the handshake, TLS when the pool's `tls` asks (an
//! SSLRequest, then the handshake response over TLS), the login (`mysql_native_password`,
//! MariaDB's `client_ed25519`, `caching_sha2_password` — its full authentication only over TLS —
//! and auth switch), then frame I/O for the session that holds it and small text queries for the proxy's own probes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthSwitchRequest, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::tls::{BackendTls, MaybeTls};
use crate::config::TlsMode;

use super::MyBackendError;
use crate::mysql::auth::{self, NATIVE_PASSWORD};
use crate::mysql::command::{COM_INIT_DB, COM_QUERY};
use crate::mysql::packet::{FrameReader, PacketError, put_payload};
use crate::mysql::response::{MyError, lenenc_int, parse_ok, proxy_capabilities};
use crate::mysql::{CapabilityFlags, StatusFlags};

/// The largest packet accepted during the login.
const MAX_LOGIN_PACKET: usize = 64 << 10;
/// The largest whole packet a probe reads (its rows are small).
const MAX_PROBE_PACKET: usize = 1 << 20;
/// utf8mb4_general_ci: what server connections are opened with.
pub const DEFAULT_COLLATION: u8 = 45;

/// Who the proxy logs in as, and the one client capability that changes answers: with
/// `CLIENT_FOUND_ROWS` an UPDATE reports the rows it matched, without it the rows it changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MyLogin {
    pub user: String,
    pub password: Option<String>,
    pub found_rows: bool,
}

/// Where a node is and how to reach it: its address, the host name its certificate must name,
/// and the pool's TLS settings.
#[derive(Debug, Clone)]
pub struct MyEndpoint {
    pub addr: String,
    pub host: String,
    pub tls: Arc<BackendTls>,
}

/// An authenticated server connection.
#[derive(Debug)]
pub struct MyServerConn {
    pub stream: MaybeTls,
    pub reader: FrameReader,
    pub addr: String,
    /// The server's id for this connection (`CONNECTION_ID()`, what `KILL` takes).
    pub connection_id: u32,
    pub version: String,
    /// The default database now (`None`: none chosen).
    pub database: Option<String>,
    /// Hash of the session settings replayed on it; 0 = as after login.
    pub settings: u64,
    /// The LAST_INSERT_ID() the connection holds, as (session that made it, value); (0, 0):
    /// none of a session's.
    pub insert_id: (u64, u64),
    /// Whose statement ran last on it, as (session, that session's statement number), for
    /// ROW_COUNT() and FOUND_ROWS(); (0, 0) after one of the proxy's own.
    pub last_statement: (u64, u64),
    /// Statements prepared on it by the proxy, by the hash of their text, shared by every
    /// client that prepares the same text.
    pub prepared: HashMap<u64, ServerStatement>,
    pub created: Instant,
    pub last_used: Instant,
}

/// A statement prepared on one server connection.
#[derive(Debug, Clone)]
pub struct ServerStatement {
    /// The server's statement id.
    pub id: u32,
    /// The whole COM_STMT_PREPARE answer (frames as the server sent them), replayed to clients
    /// that prepare the same text with their own statement id patched in.
    pub answer: bytes::Bytes,
    /// Hash of the parameter types last bound on it (0: none yet).
    pub types: u64,
}

impl MyServerConn {
    /// Connects and logs in within `timeout`.
    pub async fn connect(
        endpoint: &MyEndpoint,
        login: &MyLogin,
        timeout: Duration,
    ) -> Result<MyServerConn, MyBackendError> {
        tokio::time::timeout(timeout, Self::connect_inner(endpoint, login))
            .await
            .map_err(|_| MyBackendError::Timeout {
                addr: endpoint.addr.clone(),
                after: timeout,
            })?
    }

    async fn connect_inner(
        endpoint: &MyEndpoint,
        login: &MyLogin,
    ) -> Result<MyServerConn, MyBackendError> {
        let addr = endpoint.addr.as_str();
        let io = |source| MyBackendError::Io {
            addr: addr.to_owned(),
            source,
        };
        let mut tcp = TcpStream::connect(addr).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let mut reader = FrameReader::default();
        let greeting = match reader.packet(&mut tcp, MAX_LOGIN_PACKET).await {
            Ok((_, greeting)) => greeting,
            Err(e) => return Err(packet_error(addr, e)),
        };
        let refused = |packet: &[u8]| MyBackendError::Refused {
            addr: addr.to_owned(),
            error: MyError::parse(packet)
                .unwrap_or_else(|| MyError::new(0, "HY000", "malformed error")),
        };
        let protocol = |reason: String| MyBackendError::Protocol {
            addr: addr.to_owned(),
            reason,
        };
        if greeting.first() == Some(&0xFF) {
            return Err(refused(&greeting));
        }
        let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting))
            .map_err(|e| protocol(format!("bad handshake: {e}")))?;
        let server_caps = handshake.capabilities();
        if !server_caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(protocol(
                "the server does not speak protocol 4.1".to_owned(),
            ));
        }
        // LOAD DATA LOCAL INFILE is refused before the server sees it unless the client and
        // its listener allow it, so every connection may carry it.
        let mut caps = (proxy_capabilities() | CapabilityFlags::CLIENT_LOCAL_FILES) & server_caps;
        caps.remove(
            CapabilityFlags::CLIENT_CONNECT_WITH_DB | CapabilityFlags::CLIENT_CONNECT_ATTRS,
        );
        if !login.found_rows {
            caps.remove(CapabilityFlags::CLIENT_FOUND_ROWS);
        }
        let (stream, seq) = match secure(endpoint, tcp, server_caps, caps).await? {
            MaybeTls::Plain(tcp) => (MaybeTls::Plain(tcp), 1),
            tls => {
                caps |= CapabilityFlags::CLIENT_SSL;
                (tls, 2)
            }
        };
        let now = Instant::now();
        let mut conn = MyServerConn {
            stream,
            reader,
            addr: addr.to_owned(),
            connection_id: handshake.connection_id(),
            version: handshake.server_version_str().into_owned(),
            database: None,
            settings: 0,
            insert_id: (0, 0),
            last_statement: (0, 0),
            prepared: HashMap::new(),
            created: now,
            last_used: now,
        };
        let mut nonce = handshake.nonce();
        // The server's nonce ends with a NUL that is not part of it.
        nonce.truncate(20);
        let plugin = handshake
            .auth_plugin_name_str()
            .map(|p| p.into_owned())
            .unwrap_or_else(|| NATIVE_PASSWORD.to_owned());
        let password = login.password.as_deref().unwrap_or("");
        let answer = auth::scramble(&plugin, password, &nonce).unwrap_or_default();

        let mut payload = Vec::with_capacity(128);
        payload.extend_from_slice(&caps.bits().to_le_bytes());
        payload.extend_from_slice(&(16u32 << 20).to_le_bytes());
        payload.push(DEFAULT_COLLATION);
        payload.extend_from_slice(&[0u8; 23]);
        payload.extend_from_slice(login.user.as_bytes());
        payload.push(0);
        // Scrambles are at most 32 bytes: one length byte, whether length-encoded or not.
        payload.push(answer.len() as u8);
        payload.extend_from_slice(&answer);
        payload.extend_from_slice(plugin.as_bytes());
        payload.push(0);
        conn.write_packet(seq, &payload).await?;
        conn.auth_exchange(login, plugin).await?;
        Ok(conn)
    }

    /// Answers auth switches and extra auth data until the server says OK or ERR.
    async fn auth_exchange(
        &mut self,
        login: &MyLogin,
        mut plugin: String,
    ) -> Result<(), MyBackendError> {
        let password = login.password.as_deref().unwrap_or("");
        for _ in 0..4 {
            let (got, packet) = self.read_packet(MAX_LOGIN_PACKET).await?;
            let seq = got.wrapping_add(1);
            match packet.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(self.refused(&packet)),
                Some(0xFE) => {
                    let switch = AuthSwitchRequest::deserialize((), &mut ParseBuf(&packet))
                        .map_err(|e| self.protocol(format!("bad auth switch: {e}")))?;
                    plugin = String::from_utf8_lossy(switch.auth_plugin().as_bytes()).into_owned();
                    let Some(answer) = auth::scramble(&plugin, password, switch.plugin_data())
                    else {
                        return Err(MyBackendError::Auth {
                            addr: self.addr.clone(),
                            reason: format!(
                                "the server asks for auth plugin `{plugin}`, which Switchyard does not support"
                            ),
                        });
                    };
                    self.write_packet(seq, &answer).await?;
                }
                // caching_sha2_password: 3 = the fast path worked (an OK follows); 4 = full
                // authentication, which needs TLS or the server's RSA key.
                Some(0x01) if packet.get(1) == Some(&3) => {}
                // Full authentication: over TLS the password itself may be sent.
                Some(0x01) if packet.get(1) == Some(&4) && self.stream.is_tls() => {
                    let mut clear = password.as_bytes().to_vec();
                    clear.push(0);
                    self.write_packet(seq, &clear).await?;
                }
                Some(0x01) => {
                    return Err(MyBackendError::Auth {
                        addr: self.addr.clone(),
                        reason: format!(
                            "`{plugin}` asks for full authentication (the password is not in the server's cache), \
                             which needs TLS (a pool `tls` other than \"disable\"); or log in once with the mysql \
                             client to fill the cache, or use mysql_native_password"
                        ),
                    });
                }
                _ => return Err(self.protocol("unexpected packet during login".to_owned())),
            }
        }
        Err(self.protocol("too many authentication rounds".to_owned()))
    }

    pub async fn read_packet(&mut self, max: usize) -> Result<(u8, BytesMut), MyBackendError> {
        self.reader
            .packet(&mut self.stream, max)
            .await
            .map_err(|e| packet_error(&self.addr, e))
    }

    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<(), MyBackendError> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        put_payload(&mut out, seq, payload);
        self.write_all(&out).await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), MyBackendError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| MyBackendError::Io {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Runs one command that answers with a single OK or ERR (COM_INIT_DB, COM_RESET_CONNECTION,
    /// a SET): `Ok(Err(..))` is the server's refusal, the connection stays usable.
    pub async fn simple_command(
        &mut self,
        payload: &[u8],
    ) -> Result<Result<StatusFlags, MyError>, MyBackendError> {
        self.last_statement = (0, 0);
        self.write_packet(0, payload).await?;
        loop {
            let (_, answer) = self.read_packet(MAX_PROBE_PACKET).await?;
            match answer.first() {
                Some(0x00) => {
                    let status = parse_ok(&answer)
                        .map(|ok| StatusFlags::from_bits_truncate(ok.status))
                        .unwrap_or(StatusFlags::empty());
                    // A text of several SETs answers one OK per statement.
                    if !status.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS) {
                        return Ok(Ok(status));
                    }
                }
                Some(0xFF) => {
                    return Ok(Err(MyError::parse(&answer)
                        .unwrap_or_else(|| MyError::new(0, "HY000", "malformed error"))));
                }
                _ => return Err(self.protocol("expected OK or ERR".to_owned())),
            }
        }
    }

    /// Chooses the default database.
    pub async fn init_db(&mut self, db: &str) -> Result<Result<(), MyError>, MyBackendError> {
        let mut payload = Vec::with_capacity(db.len() + 1);
        payload.push(COM_INIT_DB);
        payload.extend_from_slice(db.as_bytes());
        let answer = self.simple_command(&payload).await?;
        if answer.is_ok() {
            self.database = Some(db.to_owned());
        }
        Ok(answer.map(|_| ()))
    }

    /// Runs a text query and returns its rows as text (NULL = `None`); for the proxy's probes.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<String>>>, MyError>, MyBackendError> {
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.last_statement = (0, 0);
        self.write_packet(0, &payload).await?;
        let (_, first) = self.read_packet(MAX_PROBE_PACKET).await?;
        match first.first() {
            Some(0x00) => return Ok(Ok(Vec::new())),
            Some(0xFF) => {
                return Ok(Err(MyError::parse(&first)
                    .unwrap_or_else(|| MyError::new(0, "HY000", "malformed error"))));
            }
            _ => {}
        }
        let (columns, _) =
            lenenc_int(&first).ok_or_else(|| self.protocol("bad column count".to_owned()))?;
        // Column definitions, then their EOF.
        for _ in 0..=columns {
            self.read_packet(MAX_PROBE_PACKET).await?;
        }
        let mut rows = Vec::new();
        loop {
            let (_, row) = self.read_packet(MAX_PROBE_PACKET).await?;
            if crate::mysql::response::is_eof(&row) {
                return Ok(Ok(rows));
            }
            if row.first() == Some(&0xFF) {
                return Ok(Err(MyError::parse(&row)
                    .unwrap_or_else(|| MyError::new(0, "HY000", "malformed error"))));
            }
            let mut values = Vec::new();
            let mut at = 0;
            while at < row.len() {
                if row[at] == 0xFB {
                    values.push(None);
                    at += 1;
                    continue;
                }
                let (len, used) =
                    lenenc_int(&row[at..]).ok_or_else(|| self.protocol("bad row".to_owned()))?;
                let start = at + used;
                let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                let value = row
                    .get(start..end)
                    .ok_or_else(|| self.protocol("bad row".to_owned()))?;
                values.push(Some(String::from_utf8_lossy(value).into_owned()));
                at = end;
            }
            rows.push(values);
        }
    }

    /// Whether the server has not closed it (nor sent anything unasked, such as a timeout ERR).
    pub fn still_open(&mut self) -> bool {
        !self.reader.has_buffered() && self.stream.is_quiet()
    }

    fn refused(&self, packet: &[u8]) -> MyBackendError {
        MyBackendError::Refused {
            addr: self.addr.clone(),
            error: MyError::parse(packet)
                .unwrap_or_else(|| MyError::new(0, "HY000", "malformed error")),
        }
    }

    fn protocol(&self, reason: String) -> MyBackendError {
        MyBackendError::Protocol {
            addr: self.addr.clone(),
            reason,
        }
    }
}

/// TLS as the pool's `tls` asks: an SSLRequest (the handshake response's first 32 bytes, with
/// `CLIENT_SSL`), then the TLS handshake; the stream as it is when the pool does not ask or
/// only prefers TLS from a server that offers none.
async fn secure(
    endpoint: &MyEndpoint,
    mut tcp: TcpStream,
    server_caps: CapabilityFlags,
    caps: CapabilityFlags,
) -> Result<MaybeTls, MyBackendError> {
    let mode = endpoint.tls.mode();
    if mode == TlsMode::Disable {
        return Ok(MaybeTls::Plain(tcp));
    }
    let tls_error = |reason: String| MyBackendError::Tls {
        addr: endpoint.addr.clone(),
        reason,
    };
    if !server_caps.contains(CapabilityFlags::CLIENT_SSL) {
        if mode == TlsMode::Prefer {
            return Ok(MaybeTls::Plain(tcp));
        }
        return Err(tls_error(format!(
            "the server does not accept TLS connections (tls = \"{}\")",
            mode.as_str()
        )));
    }
    let mut request = Vec::with_capacity(32);
    request.extend_from_slice(&(caps | CapabilityFlags::CLIENT_SSL).bits().to_le_bytes());
    request.extend_from_slice(&(16u32 << 20).to_le_bytes());
    request.push(DEFAULT_COLLATION);
    request.extend_from_slice(&[0u8; 23]);
    let mut out = BytesMut::with_capacity(36);
    put_payload(&mut out, 1, &request);
    tcp.write_all(&out)
        .await
        .map_err(|source| MyBackendError::Io {
            addr: endpoint.addr.clone(),
            source,
        })?;
    let tls = endpoint
        .tls
        .handshake(&endpoint.host, tcp)
        .await
        .map_err(|e| tls_error(format!("handshake failed: {e}")))?;
    Ok(MaybeTls::Tls(Box::new(tls)))
}

fn packet_error(addr: &str, e: PacketError) -> MyBackendError {
    match e {
        PacketError::Io(source) => MyBackendError::Io {
            addr: addr.to_owned(),
            source,
        },
        PacketError::Closed => MyBackendError::Closed {
            addr: addr.to_owned(),
        },
        other => MyBackendError::Protocol {
            addr: addr.to_owned(),
            reason: other.to_string(),
        },
    }
}

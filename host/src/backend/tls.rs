//! TLS from the proxy to its backend servers: one client configuration per pool, built from the
//! pool's `tls`, `tls_ca_file` and `tls_server_name`, and the stream type server connections
//! use whether or not they are encrypted. The protocol decides when the handshake happens
//! (PostgreSQL after an SSLRequest, HTTPS at once); this module only performs it.

mod stream;
mod verify;

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::config::{PoolConfig, TlsMode};

pub use stream::MaybeTls;

/// Why a pool's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no trusted certificate authorities: {reason} (set tls_ca_file)")]
    NoRoots { reason: String },
    #[error("`{name}` is not a DNS name or an IP address")]
    ServerName { name: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS setup: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// A pool whose TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("pool \"{pool}\": {source}")]
pub struct PoolTlsError {
    pub pool: String,
    #[source]
    pub source: TlsError,
}

/// How one pool's server connections are encrypted.
#[derive(Clone)]
pub struct BackendTls {
    mode: TlsMode,
    /// `None` exactly when `mode` is `disable`.
    connector: Option<TlsConnector>,
    /// `tls_server_name`, overriding each node's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// No encryption.
    pub fn disabled() -> BackendTls {
        BackendTls {
            mode: TlsMode::Disable,
            connector: None,
            server_name: None,
        }
    }

    /// The settings of `pool`, offering `alpn` protocols in the handshake. Reads `tls_ca_file`
    /// (or the system's roots) now, so that a bad file fails the config load rather than
    /// every connection.
    pub fn for_pool(pool: &PoolConfig, alpn: &[&[u8]]) -> Result<BackendTls, TlsError> {
        if pool.tls == TlsMode::Disable {
            return Ok(BackendTls::disabled());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if pool.tls.verifies() {
            let roots = match &pool.tls_ca_file {
                Some(path) => load_ca_file(path)?,
                None => system_roots()?,
            };
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()?;
            if pool.tls == TlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(verify::ChainOnly::new(webpki))
            }
        } else {
            Arc::new(verify::AnyCertificate::new(provider.clone()))
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server_name = pool
            .tls_server_name
            .as_deref()
            .map(server_name)
            .transpose()?;
        Ok(BackendTls {
            mode: pool.tls,
            connector: Some(TlsConnector::from(Arc::new(config))),
            server_name,
        })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// Runs the TLS handshake on `tcp` with the node at `host`. The error is the handshake's
    /// (an unknown issuer, a name mismatch, a server that hung up...).
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let Some(connector) = &self.connector else {
            return Err(std::io::Error::other("TLS is disabled for this pool"));
        };
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(host).map_err(std::io::Error::other)?,
        };
        connector.connect(name, tcp).await
    }
}

/// `name` as a TLS server name: a DNS name, or an IP address (checked against IP SANs).
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    // Hosts written as `[v6]` in node strings are kept without brackets; accept both.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName {
        name: name.to_owned(),
    })
}

/// A root store of the certificates in the PEM file at `path` (at least one).
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| TlsError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".to_owned()));
    }
    Ok(roots)
}

/// The operating system's trusted authorities.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let reason = match found.errors.first() {
            Some(e) => format!("the system's store could not be read: {e}"),
            None if ignored > 0 => "the system's store holds no usable certificate".to_owned(),
            None => "the system's store is empty".to_owned(),
        };
        return Err(TlsError::NoRoots { reason });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests;

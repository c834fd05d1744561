//! The TLS keys of a pool (`tls`, `tls_ca_file`, `tls_server_name`): how the proxy encrypts its
//! connections to the pool's nodes, and the rules that tie the keys to the mode and protocol.

use serde::{Deserialize, Serialize};

use super::cluster::PoolConfig;
use super::error::{KeyPath, Reason};
use super::validate::Problems;
use crate::model::Protocol;

/// How connections to a pool's nodes are encrypted, after libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not verified
    /// (PostgreSQL only: HTTP has no way to ask).
    Prefer,
    /// TLS or no connection; the certificate is not verified (only the handshake's own
    /// signatures are), which stops passive eavesdropping but not an active attacker.
    Require,
    /// TLS, the certificate chaining to a trusted authority; its names are not checked.
    VerifyCa,
    /// TLS, the certificate chaining to a trusted authority and naming the node's host
    /// (or `tls_server_name`).
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against trusted authorities.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }
}

// === impl PoolConfig ===

impl PoolConfig {
    pub(crate) fn check_tls(&self, protocol: Protocol, path: &KeyPath, problems: &mut Problems) {
        if self.tls == TlsMode::Prefer && protocol != Protocol::Postgres {
            // HTTP has no in-band way to ask for TLS: a client either speaks HTTPS or not.
            problems.add(
                path.key("tls"),
                Reason::Incompatible(
                    "\"prefer\" needs a protocol that negotiates TLS (PostgreSQL); use \
                     \"require\", \"verify-ca\" or \"verify-full\""
                        .to_string(),
                ),
            );
        }
        if let Some(ca) = &self.tls_ca_file {
            if !self.tls.verifies() {
                problems.add(
                    path.key("tls_ca_file"),
                    Reason::OnlyFor {
                        condition: "tls = \"verify-ca\" or \"verify-full\"".to_string(),
                    },
                );
            } else if let Err(e) = crate::backend::tls::load_ca_file(ca) {
                problems.add(path.key("tls_ca_file"), Reason::Incompatible(e.to_string()));
            }
        }
        match &self.tls_server_name {
            Some(_) if self.tls == TlsMode::Disable => problems.add(
                path.key("tls_server_name"),
                Reason::OnlyFor {
                    condition: "tls is not \"disable\"".to_string(),
                },
            ),
            Some(name) if name.is_empty() => {
                problems.add(path.key("tls_server_name"), Reason::Empty)
            }
            Some(name) if crate::backend::tls::server_name(name).is_err() => {
                problems.add(path.key("tls_server_name"), not_a_name());
            }
            Some(_) => {}
            // Each node's host is its name (SNI, and what `verify-full` checks).
            None if self.tls != TlsMode::Disable => {
                for (i, node) in self.nodes.iter().enumerate() {
                    if !node.host.is_empty()
                        && crate::backend::tls::server_name(&node.host).is_err()
                    {
                        problems.add(path.key("nodes").index(i).key("host"), not_a_name());
                    }
                }
            }
            None => {}
        }
    }
}

fn not_a_name() -> Reason {
    Reason::Format {
        expected: "a DNS name or an IP address (TLS needs it as the server's name)".to_string(),
    }
}

//! `[admin]`: the admin HTTP API (health, metrics, policy upload, cache purge, config view).
//! Absent: no admin listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::net::Cidr;
use super::secret::Secret;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// Bearer token every request must carry (`Authorization: Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Client addresses allowed to call the API (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<Cidr>,
}

impl AdminConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        match &self.token {
            Some(token) if token.is_empty() => problems.add(path.key("token"), Reason::Empty),
            None if !self.bind.ip().is_loopback() => problems.add(
                path.key("token"),
                Reason::Required {
                    when: "admin.bind is not a loopback address".to_string(),
                },
            ),
            _ => {}
        }
    }
}

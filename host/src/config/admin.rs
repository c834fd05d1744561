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
    /// The admin-scope bearer token (`Authorization: Bearer <token>`): every endpoint. Without
    /// it nothing can be changed through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A read-scope bearer token: the GET endpoints only (monitoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token: Option<Secret>,
    /// Client addresses allowed to call the API (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<Cidr>,
}

impl AdminConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.token.as_ref().is_some_and(Secret::is_empty) {
            problems.add(path.key("token"), Reason::Empty);
        }
        match &self.read_token {
            Some(read) if read.is_empty() => problems.add(path.key("read_token"), Reason::Empty),
            Some(read)
                if self
                    .token
                    .as_ref()
                    .is_some_and(|t| t.expose() == read.expose()) =>
            {
                problems.add(
                    path.key("read_token"),
                    Reason::Incompatible("must differ from admin.token".to_string()),
                );
            }
            _ => {}
        }
        if self.token.is_none() && self.read_token.is_none() && !self.bind.ip().is_loopback() {
            problems.add(
                path.key("token"),
                Reason::Required {
                    when: "admin.bind is not a loopback address (or set admin.read_token)"
                        .to_string(),
                },
            );
        }
    }
}

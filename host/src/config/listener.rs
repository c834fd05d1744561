//! `[[listener]]`: a socket clients connect to, the protocol they speak there, and the cluster
//! their queries go to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::units;
use super::validate::Problems;
use crate::model::Protocol;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Names the listener in logs, metrics and the admin API.
    pub name: String,
    pub protocol: Protocol,
    /// `127.0.0.1:6432`, `[::]:8124`; port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// The `[cluster.<name>]` this listener's queries go to.
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Client connections open at once; more are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Clients idle (no query, no open transaction) this long are disconnected.
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    /// ClickHouse HTTP: largest request body accepted (`None`: no limit; bodies stream).
    #[serde(
        default,
        with = "units::size_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_body_size: Option<u64>,
    /// ClickHouse HTTP: a request not answered within this gets 504 and its query is killed.
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_timeout: Option<Duration>,
}

/// TLS for client connections (PostgreSQL: after SSLRequest; ClickHouse HTTP: HTTPS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Refuse clients that do not use TLS (PostgreSQL; HTTPS listeners take only TLS anyway).
    #[serde(default)]
    pub required: bool,
}

fn default_max_connections() -> u32 {
    10_000
}

impl ListenerConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        problems.name(path.key("name"), &self.name);
        if self.protocol == Protocol::Mysql {
            problems.add(
                path.key("protocol"),
                Reason::Unsupported {
                    what: "a mysql listener".to_string(),
                },
            );
        }
        if self.cluster.is_empty() {
            problems.add(path.key("cluster"), Reason::Empty);
        }
        if let Some(tls) = &self.tls {
            for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
                if file.as_os_str().is_empty() {
                    problems.add(path.key("tls").key(key), Reason::Empty);
                }
            }
        }
        problems.range(
            path.key("max_connections"),
            self.max_connections,
            1,
            1_000_000,
        );
        if self.protocol != Protocol::ClickhouseHttp {
            let http_only = [
                ("max_body_size", self.max_body_size.is_some()),
                ("request_timeout", self.request_timeout.is_some()),
            ];
            for (key, set) in http_only {
                if set {
                    problems.add(
                        path.key(key),
                        Reason::OnlyFor {
                            condition: "protocol = \"clickhouse-http\"".to_string(),
                        },
                    );
                }
            }
        }
        if let Some(timeout) = self.request_timeout {
            problems.duration(
                path.key("request_timeout"),
                timeout,
                Duration::from_millis(1),
                Duration::from_secs(86_400),
            );
        }
        if let Some(size) = self.max_body_size {
            problems.at_least(path.key("max_body_size"), size, 1);
        }
    }
}

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
    /// MySQL: offer clients `LOAD DATA LOCAL INFILE` (the server then reads a file from the
    /// client through the proxy). Off: such a statement gets MariaDB's `ERROR 4166`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_infile: bool,
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
    /// PostgreSQL: from connecting to logged in (startup, TLS, authentication); default
    /// [`DEFAULT_LOGIN_TIMEOUT`].
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub login_timeout: Option<Duration>,
    /// PostgreSQL: connections not logged in yet, at once on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_logins: Option<u32>,
    /// PostgreSQL: the same from one client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_logins_per_source: Option<u32>,
    /// PostgreSQL: failed logins from one address within `login_failure_window` before its
    /// next connections are refused for the rest of that window; 0 turns this off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_login_failures_per_source: Option<u32>,
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub login_failure_window: Option<Duration>,
    /// ClickHouse HTTP: a request's head must arrive whole within this after its first byte
    /// (after the connection opens, for its first request).
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_timeout: Option<Duration>,
    /// ClickHouse HTTP: connections open at once from one client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<u32>,
}

/// Defaults of the keys that bound what a client may hold before it is known.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_PENDING_LOGINS: u32 = 1_000;
pub const DEFAULT_MAX_PENDING_LOGINS_PER_SOURCE: u32 = 100;
pub const DEFAULT_MAX_LOGIN_FAILURES_PER_SOURCE: u32 = 20;
pub const DEFAULT_LOGIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 1_000;

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
    pub fn login_timeout(&self) -> Duration {
        self.login_timeout.unwrap_or(DEFAULT_LOGIN_TIMEOUT)
    }

    pub fn max_pending_logins(&self) -> u32 {
        self.max_pending_logins
            .unwrap_or(DEFAULT_MAX_PENDING_LOGINS)
    }

    pub fn max_pending_logins_per_source(&self) -> u32 {
        self.max_pending_logins_per_source
            .unwrap_or(DEFAULT_MAX_PENDING_LOGINS_PER_SOURCE)
    }

    pub fn max_login_failures_per_source(&self) -> u32 {
        self.max_login_failures_per_source
            .unwrap_or(DEFAULT_MAX_LOGIN_FAILURES_PER_SOURCE)
    }

    pub fn login_failure_window(&self) -> Duration {
        self.login_failure_window
            .unwrap_or(DEFAULT_LOGIN_FAILURE_WINDOW)
    }

    pub fn header_timeout(&self) -> Duration {
        self.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT)
    }

    /// How long a connection may sit between requests (ClickHouse HTTP) or idle (PostgreSQL);
    /// `None`: no limit. ClickHouse HTTP listeners have one by default; `"0s"` turns it off.
    pub fn effective_idle_timeout(&self) -> Option<Duration> {
        let default = match self.protocol {
            Protocol::ClickhouseHttp => Some(DEFAULT_HTTP_IDLE_TIMEOUT),
            _ => None,
        };
        self.idle_timeout.or(default).filter(|t| !t.is_zero())
    }

    pub fn max_connections_per_source(&self) -> u32 {
        self.max_connections_per_source
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SOURCE)
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        problems.name(path.key("name"), &self.name);
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
        let (others, condition) = match self.protocol {
            Protocol::ClickhouseHttp => (self.postgres_only(), "protocol = \"postgres\""),
            _ => (self.http_only(), "protocol = \"clickhouse-http\""),
        };
        for (key, set) in others {
            if set {
                problems.add(
                    path.key(key),
                    Reason::OnlyFor {
                        condition: condition.to_string(),
                    },
                );
            }
        }
        if self.local_infile && self.protocol != Protocol::Mysql {
            problems.add(
                path.key("local_infile"),
                Reason::OnlyFor {
                    condition: "protocol = \"mysql\"".to_string(),
                },
            );
        }
        self.check_guards(path, problems);
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

impl ListenerConfig {
    fn http_only(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("max_body_size", self.max_body_size.is_some()),
            ("request_timeout", self.request_timeout.is_some()),
            ("header_timeout", self.header_timeout.is_some()),
            (
                "max_connections_per_source",
                self.max_connections_per_source.is_some(),
            ),
        ]
    }

    fn postgres_only(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("login_timeout", self.login_timeout.is_some()),
            ("max_pending_logins", self.max_pending_logins.is_some()),
            (
                "max_pending_logins_per_source",
                self.max_pending_logins_per_source.is_some(),
            ),
            (
                "max_login_failures_per_source",
                self.max_login_failures_per_source.is_some(),
            ),
            ("login_failure_window", self.login_failure_window.is_some()),
        ]
    }

    /// Ranges of the keys that bound clients before they are known.
    fn check_guards(&self, path: &KeyPath, problems: &mut Problems) {
        let (ms, hour) = (Duration::from_millis(1), Duration::from_secs(3600));
        for (key, value) in [
            ("login_timeout", self.login_timeout),
            ("header_timeout", self.header_timeout),
            ("login_failure_window", self.login_failure_window),
        ] {
            if let Some(value) = value {
                problems.duration(path.key(key), value, ms, hour);
            }
        }
        for (key, value) in [
            ("max_pending_logins", self.max_pending_logins),
            (
                "max_pending_logins_per_source",
                self.max_pending_logins_per_source,
            ),
            (
                "max_connections_per_source",
                self.max_connections_per_source,
            ),
        ] {
            if let Some(value) = value {
                problems.range(path.key(key), value, 1, 1_000_000);
            }
        }
        if let Some(failures) = self.max_login_failures_per_source {
            problems.range(
                path.key("max_login_failures_per_source"),
                failures,
                0,
                1_000_000,
            );
        }
    }
}

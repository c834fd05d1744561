//! `[[user]]`: who may connect to Switchyard, how they prove it, from where, to which clusters,
//! as which backend user their queries run, and their limits.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster::{Credentials, PoolConfig};
use super::error::{KeyPath, Reason};
use super::net::Cidr;
use super::secret::Secret;
use super::units;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password. Also the backend password when nothing else supplies one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A stored verifier instead of the password: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
    /// (PostgreSQL's `pg_authid.rolpassword`) or `md5` + md5(password + user name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    /// How PostgreSQL clients authenticate (ClickHouse HTTP clients always send the password,
    /// which is checked against `password` or `password_hash`).
    #[serde(default)]
    pub auth: AuthMethod,
    /// Client addresses allowed to log in as this user (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<Cidr>,
    /// Clusters this user may use (empty: all). chproxy's `to_cluster`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Databases this user may open, within each cluster's own list (`"*"`: whatever the
    /// cluster allows). `None`: the cluster's list alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// Backend credentials for all of this user's queries, over any pool's `auth`.
    /// chproxy's `to_user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Credentials>,
    /// Client connections open at once for this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Queries running at once for this user; more wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    /// Queries waiting for a slot at once; beyond it they fail fast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
    /// How long a query waits in the queue before it fails.
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_queue_time: Option<Duration>,
    /// Queries running longer are cancelled (PostgreSQL) or killed (ClickHouse).
    #[serde(
        default,
        with = "units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_execution_time: Option<Duration>,
    /// Queries accepted per minute (token bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Whether the policy's cache directives apply to this user's queries.
    #[serde(default = "yes")]
    pub cache: bool,
    /// May use the PostgreSQL admin console (database `switchyard`).
    #[serde(default)]
    pub admin: bool,
}

fn yes() -> bool {
    true
}

/// How a PostgreSQL client proves who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    /// No password asked (for loopback or tightly `allowed_networks` users).
    Trust,
}

/// What kind of stored verifier a `password_hash` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    ScramSha256,
    Md5,
}

impl HashKind {
    /// Recognises the two verifier formats; `None` for anything else.
    pub fn of(hash: &str) -> Option<HashKind> {
        if let Some(hex) = hash.strip_prefix("md5") {
            return (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
                .then_some(HashKind::Md5);
        }
        let rest = hash.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let base64 = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        };
        let iterations_ok = iterations.parse::<u32>().is_ok_and(|n| n > 0);
        (iterations_ok && base64(salt) && base64(stored) && base64(server))
            .then_some(HashKind::ScramSha256)
    }
}

impl UserConfig {
    /// A user with a password and every default.
    pub fn new(name: impl Into<String>, password: Option<&str>) -> Self {
        UserConfig {
            name: name.into(),
            password: password.map(Secret::new),
            password_hash: None,
            auth: AuthMethod::default(),
            allowed_networks: Vec::new(),
            clusters: Vec::new(),
            databases: None,
            backend: None,
            max_connections: None,
            max_concurrent_queries: None,
            max_queue_size: None,
            max_queue_time: None,
            max_execution_time: None,
            requests_per_minute: None,
            cache: true,
            admin: false,
        }
    }

    /// Whether a client at `ip` may log in as this user.
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        self.allowed_networks.is_empty() || self.allowed_networks.iter().any(|n| n.contains(ip))
    }

    /// Whether this user may use `cluster`.
    pub fn allows_cluster(&self, cluster: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster)
    }

    /// The credentials this user's queries use on `pool`: the user's `backend`, else the pool's
    /// `auth`, else the user's own name and (plain) password.
    pub fn backend_credentials(&self, pool: &PoolConfig) -> Credentials {
        self.backend
            .clone()
            .or_else(|| pool.auth.clone())
            .unwrap_or_else(|| Credentials {
                user: self.name.clone(),
                password: self.password.clone(),
            })
    }

    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        if self.name.is_empty() {
            problems.add(path.key("name"), Reason::Empty);
        }
        let hash_path = path.key("password_hash");
        let hash = self.password_hash.as_ref().map(Secret::expose);
        if self.password.is_some() && hash.is_some() {
            problems.add(
                hash_path.clone(),
                Reason::Conflict {
                    other: "password".to_string(),
                },
            );
        }
        let kind = hash.and_then(HashKind::of);
        if hash.is_some() && kind.is_none() {
            problems.add(
                hash_path.clone(),
                Reason::Format {
                    expected: "a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>) \
                               or an md5 hash (md5 followed by 32 hex digits)"
                        .to_string(),
                },
            );
        }
        match (self.auth, kind) {
            (AuthMethod::ScramSha256, Some(HashKind::Md5)) => problems.add(
                hash_path,
                Reason::Incompatible(
                    "an md5 hash cannot check SCRAM-SHA-256 logins: give `password` or a SCRAM \
                     verifier, or set auth = \"md5\""
                        .to_string(),
                ),
            ),
            (AuthMethod::Md5, Some(HashKind::ScramSha256)) => problems.add(
                hash_path,
                Reason::Incompatible(
                    "a SCRAM-SHA-256 verifier cannot check md5 logins: give `password` or an md5 \
                     hash, or set auth = \"scram-sha-256\""
                        .to_string(),
                ),
            ),
            (AuthMethod::ScramSha256 | AuthMethod::Md5, _)
                if self.password.is_none() && hash.is_none() =>
            {
                problems.add(
                    path.key("password"),
                    Reason::Required {
                        when: "auth is not \"trust\" (give `password` or `password_hash`)"
                            .to_string(),
                    },
                );
            }
            _ => {}
        }
        super::databases::check_list(self.databases.as_deref(), &path.key("databases"), problems);
        if let Some(backend) = &self.backend
            && backend.user.is_empty()
        {
            problems.add(path.key("backend").key("user"), Reason::Empty);
        }
        problems.positive(path.key("max_connections"), self.max_connections);
        super::limit::check_query_limits(
            super::limit::QueryLimitKeys {
                max_concurrent_queries: self.max_concurrent_queries,
                limited: self.max_concurrent_queries.is_some(),
                max_queue_size: self.max_queue_size,
                max_queue_time: self.max_queue_time,
                requests_per_minute: self.requests_per_minute,
            },
            path,
            problems,
        );
        let (ms, day) = (Duration::from_millis(1), Duration::from_secs(86_400));
        if let Some(time) = self.max_execution_time {
            problems.duration(path.key("max_execution_time"), time, ms, day);
        }
    }
}

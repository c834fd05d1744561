//! The proxy's configuration: one TOML file, read into typed sections and checked as a whole.
//!
//! Reading goes: TOML text → a span-keeping document (syntax errors keep toml's line/column) →
//! `${ENV}` expansion of string values → `[cluster.<name>.defaults]` merged into each pool →
//! typed deserialization (`deny_unknown_fields` everywhere) → protocol defaults filled in →
//! [`Config::validate`]. Every error names the key by its full path and says why, in one line.
//! CONFIG.md at the repository root is the reference for every key.
//!
//! Components get the parts they need (an `Arc` of a section), never a process-global.

mod admin;
mod backend_tls;
mod cache;
mod cluster;
mod databases;
mod env;
mod error;
mod health;
mod limit;
mod listener;
mod logging;
mod net;
mod policy;
mod secret;
mod server;
mod source;
pub mod units;
mod user;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use cache::{CacheConfig, Compression, RedisConfig};
pub use cluster::{
    ClusterConfig, Consistency, Credentials, MirrorConfig, PoolConfig, PoolMode, Strategy, TlsMode,
    default_port,
};
pub use databases::{ANY_DATABASE, DatabaseAccess};
pub use env::{EnvLookup, process_env};
pub use error::{ConfigError, KeyPath, Location, Reason, Segment};
pub use health::HealthConfig;
pub use limit::{DEFAULT_MAX_VALUES, TagLimitConfig, TagLimitValues};
pub use listener::{ListenerConfig, TlsConfig};
pub use logging::{LogConfig, LogFormat};
pub use net::{Cidr, CidrError, Node};
pub use policy::{FailMode, PolicyConfig, PolicyParams};
pub use secret::{REDACTED, Secret, SecretUrl};
pub use server::ServerConfig;
pub use units::UnitError;
pub use user::{AuthMethod, HashKind, UserConfig};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "listener", skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "cluster")]
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default, rename = "user", skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    /// Limits per value of a policy tag.
    #[serde(default, rename = "limit", skip_serializing_if = "Vec::is_empty")]
    pub tag_limits: Vec<TagLimitConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub server: ServerConfig,
}

impl Config {
    /// Reads, expands (from the process environment) and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_with_env(&text, &process_env).map_err(|err| err.in_file(path))
    }

    /// Parses and validates config text, taking `${NAME}` values from `env`.
    pub fn parse_with_env(text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut doc = source::parse(text)?;
        source::expand_env(&mut doc, env, text)?;
        source::inherit_pool_defaults(&mut doc, text)?;
        let index = doc.clone();
        let mut config = Config::deserialize(toml::de::Deserializer::from(doc))
            .map_err(|err| source::deserialize_error(&index, text, err))?;
        config.finalize();
        config
            .validate()
            .map_err(|err| source::locate(&index, text, err))?;
        Ok(config)
    }

    /// Fills what depends on other keys (node ports from the cluster's protocol).
    fn finalize(&mut self) {
        for cluster in self.clusters.values_mut() {
            cluster.finalize();
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.get(name)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The configuration as JSON with every password, hash, token and URL password replaced by
    /// `<redacted>` (what the admin API shows).
    pub fn redacted(&self) -> serde_json::Value {
        // Serialization of these types cannot fail: no non-string map keys, no custom errors.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The configuration as TOML, secrets redacted (what `config check --print` can show).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

impl FromStr for Config {
    type Err = ConfigError;

    /// Parses and validates config text, taking `${NAME}` values from the process environment.
    fn from_str(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, &process_env)
    }
}

//! `[cache]`: the query result cache (a local, byte-bounded tier) and `[cache.redis]`, the
//! optional shared tier for several proxy replicas.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{KeyPath, Reason};
use super::secret::SecretUrl;
use super::units;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off: no query is cached, whatever the policy says.
    pub enabled: bool,
    /// Bytes the local tier may hold (entries are weighed by their size).
    #[serde(with = "units::size")]
    pub max_size: u64,
    /// Upper bound for the TTL the policy asks for.
    #[serde(with = "units::duration")]
    pub max_ttl: Duration,
    /// Larger responses are streamed to the client and not stored.
    #[serde(with = "units::size")]
    pub max_payload_size: u64,
    /// How long identical concurrent queries wait for the first one's result before running
    /// themselves (single-flight).
    #[serde(with = "units::duration")]
    pub grace_time: Duration,
    /// Share entries across users by default (else per user unless the policy says shared).
    pub shared: bool,
    /// A write through the proxy drops the entries that read the tables it wrote.
    pub invalidate_on_write: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_size: 256 << 20,
            max_ttl: Duration::from_secs(300),
            max_payload_size: 8 << 20,
            grace_time: Duration::from_secs(5),
            shared: false,
            invalidate_on_write: true,
            redis: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS, the server's certificate
    /// verified against `tls_ca_file` or the system's roots) or `unix:///path/to/redis.sock`.
    pub url: SecretUrl,
    /// PEM file of the certificate authorities a `rediss://` server's certificate must chain
    /// to (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A Redis call slower than this counts as a miss (queries never fail because of Redis).
    #[serde(default = "defaults::timeout", with = "units::duration")]
    pub timeout: Duration,
    /// Connections to Redis for commands (pub/sub takes one more).
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// Values larger than this are compressed.
    #[serde(default = "defaults::compress_threshold", with = "units::size")]
    pub compress_threshold: u64,
    /// The codec for those values; readers decode any of them whatever their own setting.
    #[serde(default)]
    pub compression: Compression,
    /// Prefix of every key and of the invalidation channel.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Coalesce identical misses across proxy replicas through an in-flight registry.
    #[serde(default = "defaults::yes")]
    pub coalesce: bool,
}

/// How values are compressed in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Zstd,
}

mod defaults {
    use std::time::Duration;

    pub fn timeout() -> Duration {
        Duration::from_millis(100)
    }
    pub fn pool_size() -> u32 {
        8
    }
    pub fn compress_threshold() -> u64 {
        4 << 10
    }
    pub fn key_prefix() -> String {
        "switchyard:".to_string()
    }
    pub fn yes() -> bool {
        true
    }
}

impl CacheConfig {
    pub(crate) fn check(&self, path: &KeyPath, problems: &mut Problems) {
        problems.at_least(path.key("max_size"), self.max_size, 1);
        if self.max_payload_size > self.max_size {
            problems.add(
                path.key("max_payload_size"),
                Reason::Exceeds {
                    other: "max_size".to_string(),
                    limit: units::format_size(self.max_size),
                },
            );
        }
        problems.duration(
            path.key("max_ttl"),
            self.max_ttl,
            Duration::from_secs(1),
            Duration::from_secs(30 * 86_400),
        );
        problems.duration(
            path.key("grace_time"),
            self.grace_time,
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        if let Some(redis) = &self.redis {
            redis.check(&path.key("redis"), problems);
        }
    }
}

impl RedisConfig {
    fn check(&self, path: &KeyPath, problems: &mut Problems) {
        let url = self.url.expose();
        let tls = url.starts_with("rediss://");
        if !tls && !url.starts_with("redis://") && !url.starts_with("unix://") {
            problems.add(
                path.key("url"),
                Reason::Format {
                    expected: "a redis://, rediss:// or unix:// URL".to_string(),
                },
            );
        } else if let Err(e) = crate::cache::parse_redis_url(url) {
            // The cache's own parser, so that what passes here also connects.
            problems.add(
                path.key("url"),
                Reason::Incompatible(format!("is not a usable Redis URL: {e}")),
            );
        }
        if let Some(ca) = &self.tls_ca_file {
            if !tls {
                problems.add(
                    path.key("tls_ca_file"),
                    Reason::Incompatible("is only used with a rediss:// URL".to_string()),
                );
            } else if let Err(e) = crate::backend::tls::load_ca_file(ca) {
                problems.add(path.key("tls_ca_file"), Reason::Incompatible(e.to_string()));
            }
        }
        problems.duration(
            path.key("timeout"),
            self.timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        );
        problems.range(path.key("pool_size"), self.pool_size, 1, 1024);
        // The cache ignores a trailing `:` (it adds its own) and puts the prefix in keys and a
        // channel name, where whitespace would be a trap.
        if self.key_prefix.trim_end_matches(':').is_empty() {
            problems.add(path.key("key_prefix"), Reason::Empty);
        } else if self.key_prefix.contains(char::is_whitespace) {
            problems.add(
                path.key("key_prefix"),
                Reason::Format {
                    expected: "without whitespace".to_string(),
                },
            );
        }
    }
}

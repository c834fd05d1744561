//! The cache's own settings: a plain struct that the TOML config module maps into.

use std::time::Duration;

use super::CacheError;

/// Settings of the query cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// When false every lookup answers `Lookup::Bypass` and nothing is stored.
    pub enabled: bool,
    /// Bound of the local tier in bytes (payload plus a fixed per-entry overhead).
    pub max_size: u64,
    /// Upper bound of any entry's TTL, whatever the policy asks.
    pub max_ttl: Duration,
    /// A response larger than this (meta + body) is not stored.
    pub max_payload_size: u64,
    /// How long a concurrent identical query waits for the first one before running itself.
    pub grace_time: Duration,
    /// Make every entry shared between users (as if every directive said `shared`).
    pub shared: bool,
    /// The optional shared tier.
    pub redis: Option<RedisConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_size: 256 * 1024 * 1024,
            max_ttl: Duration::from_secs(300),
            max_payload_size: 8 * 1024 * 1024,
            grace_time: Duration::from_secs(5),
            shared: false,
            redis: None,
        }
    }
}

/// Settings of the Redis tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host[:port][/db]` or `unix:///path/to/redis.sock` (database 0;
    /// credentials as `unix://[user]:password@localhost/path`, the host being ignored).
    pub url: String,
    /// Bound of every Redis operation; past it the cache degrades to a miss.
    pub timeout: Duration,
    /// How long construction waits for the first connection before going on degraded.
    pub connect_timeout: Duration,
    /// Connections for commands, used round robin (fred's `Pool`); pub/sub has one more of its
    /// own. Commands are pipelined on each connection, so a few go a long way.
    pub pool_size: usize,
    /// Values whose encoded payload is larger than this are compressed with `compression`.
    pub compress_threshold: usize,
    /// How values above `compress_threshold` are compressed. Reading does not depend on it: each
    /// value says how it was stored, so changing it leaves existing entries readable.
    pub compression: Compression,
    /// Prefix of every key and of the invalidation channel (`<prefix>:invalidate`); a trailing
    /// `:` is ignored.
    pub key_prefix: String,
    /// Coalesce identical misses across replicas through a fill lock in Redis (else only within
    /// this process).
    pub coalesce: bool,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips Redis before trying again.
    pub breaker_cooldown: Duration,
    /// At most one warning about Redis failures per this interval.
    pub warn_interval: Duration,
    /// CA certificates (PEM) for a `rediss://` server; `None`: the system's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            pool_size: 8,
            compress_threshold: 4096,
            compression: Compression::Lz4,
            key_prefix: "switchyard:cache".to_owned(),
            coalesce: true,
            tls_ca_file: None,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
        }
    }
}

/// The codec of values above the compression threshold in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as they are.
    None,
    /// Fastest to compress and decompress; the default.
    #[default]
    Lz4,
    /// Smaller values (less Redis memory and network) for more CPU on the fill.
    Zstd,
}

impl CacheConfig {
    /// Checks ranges and cross-field rules; the error names the offending key.
    pub fn validate(&self) -> Result<(), CacheError> {
        let bad = |key, reason: String| Err(CacheError::Config { key, reason });
        if self.max_size == 0 {
            return bad("max_size", "must be greater than 0".into());
        }
        if self.max_payload_size > self.max_size {
            return bad(
                "max_payload_size",
                format!(
                    "{} is larger than max_size ({})",
                    self.max_payload_size, self.max_size
                ),
            );
        }
        // moka weighs entries with a u32.
        if self.max_payload_size > u64::from(u32::MAX) / 2 {
            return bad("max_payload_size", "must be below 2 GiB".into());
        }
        if self.max_ttl.is_zero() {
            return bad("max_ttl", "must be greater than 0".into());
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<(), CacheError> {
        let bad = |key, reason: String| Err(CacheError::Config { key, reason });
        if !["redis://", "rediss://", "unix://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
        {
            return bad(
                "redis.url",
                format!(
                    "`{}` must start with redis://, rediss:// or unix://",
                    redact(&self.url)
                ),
            );
        }
        if let Err(e) = fred_config(&self.url) {
            return bad("redis.url", e.to_string());
        }
        if self.timeout.is_zero() {
            return bad("redis.timeout", "must be greater than 0".into());
        }
        if self.pool_size == 0 {
            return bad("redis.pool_size", "must be at least 1".into());
        }
        let prefix = self.key_prefix.trim_end_matches(':');
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            return bad(
                "redis.key_prefix",
                "must be non-empty and without whitespace".into(),
            );
        }
        if self.breaker_failures == 0 {
            return bad("redis.breaker_failures", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Whether `url` is one the Redis tier can connect to (the config check uses it too, so that a
/// URL that passes there also connects). The error does not repeat the URL, which may hold a
/// password.
pub fn parse_redis_url(url: &str) -> Result<(), fred::error::Error> {
    fred_config(url).map(|_| ())
}

/// Parses our URL into fred's config. fred spells Unix sockets `redis+unix://`; ours is the
/// shorter `unix://` that the config file documents.
pub(crate) fn fred_config(url: &str) -> Result<fred::types::config::Config, fred::error::Error> {
    use fred::error::{Error, ErrorKind};
    use fred::types::config::{Config, ServerConfig};
    let Some(rest) = url.strip_prefix("unix://") else {
        return Config::from_url(url);
    };
    let config = Config::from_url(&format!("redis+unix://{rest}"))?;
    match &config.server {
        ServerConfig::Unix { path } if path.is_absolute() && path.file_name().is_some() => {
            Ok(config)
        }
        _ => Err(Error::new(
            ErrorKind::Config,
            "a unix:// URL needs the socket's absolute path, as in unix:///run/redis.sock",
        )),
    }
}

/// The fred configuration of `config`: its URL, and for `rediss://` the certificate authorities
/// to verify the server against.
pub(crate) fn fred_config_tls(
    config: &RedisConfig,
) -> Result<fred::types::config::Config, fred::error::Error> {
    let mut settings = fred_config(&config.url)?;
    if let Some(ca) = &config.tls_ca_file {
        use tokio_rustls::rustls;
        let tls_error = |e: String| fred::error::Error::new(fred::error::ErrorKind::Tls, e);
        let roots = crate::backend::tls::load_ca_file(ca).map_err(|e| tls_error(e.to_string()))?;
        // The same provider as every other TLS connection of the proxy, named rather than left
        // to the process default.
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        settings.tls = Some(fred::types::config::TlsConnector::from(client).into());
    }
    Ok(settings)
}

/// The URL without its password, for errors and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

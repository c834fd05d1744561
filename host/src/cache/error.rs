//! The cache's one error type.
//!
//! Only configuration errors ever reach a query: every Redis failure is a degradation (the
//! query proceeds against the local tier and the backend) and is reported through stats and a
//! rate-limited log line, so these variants are mostly seen by the admin API and tests.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A configuration value is out of range; `key` names it as in the config file.
    #[error("invalid cache setting `{key}`: {reason}")]
    Config { key: &'static str, reason: String },

    /// Redis answered with an error or the connection failed.
    #[error("redis {op} failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: fred::error::Error,
    },

    /// Redis did not answer within the configured timeout.
    #[error("redis {op} timed out after {timeout:?}")]
    RedisTimeout { op: &'static str, timeout: Duration },

    /// The circuit breaker is open after consecutive failures: Redis is skipped for a moment.
    #[error("redis skipped: circuit open after repeated failures")]
    RedisCircuitOpen,

    /// A value read from Redis could not be decoded (another version, or corruption).
    #[error("corrupt cache value in redis: {0}")]
    Corrupt(&'static str),
}

impl CacheError {
    /// Whether the error came from the Redis tier (and the cache degraded rather than failed).
    pub fn is_redis(&self) -> bool {
        !matches!(self, CacheError::Config { .. })
    }
}

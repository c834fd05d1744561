//! Support for the integration tests: locating the built example policies and starting and
//! stopping real servers on loopback.

pub mod clickhouse;
pub mod http;
pub mod latency;
pub mod mariadb;
pub mod pg;
pub mod policies;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod slow;
pub mod tls;
pub mod wire;

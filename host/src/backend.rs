//! Server-side protocol clients: how queries reach the backend nodes a route picked.

pub mod clickhouse_http;
pub(crate) mod health;
pub mod mysql;
pub mod pool;
pub mod postgres;
pub mod tls;

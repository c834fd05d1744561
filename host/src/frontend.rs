//! Client-side protocols: each frontend turns its wire protocol into protocol-neutral queries,
//! runs them through classify → policy → cache → route → backend, and maps every outcome back to
//! its protocol's native answers and errors.

pub mod clickhouse_http;
pub mod mysql;
pub mod postgres;

/// Where a shutdown is: frontends watch it to finish their clients politely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drain {
    #[default]
    Running,
    /// No new clients; sessions end at their next idle moment (outside a transaction).
    Draining,
    /// The drain timeout passed: every session ends now, with a protocol-correct error.
    Closing,
}

//! Client-side protocols: each frontend turns its wire protocol into protocol-neutral queries,
//! runs them through classify → policy → cache → route → backend, and maps every outcome back to
//! its protocol's native answers and errors.

pub mod clickhouse_http;
pub mod postgres;

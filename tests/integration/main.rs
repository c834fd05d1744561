//! Integration tests: one binary, one module per area. Tests start the real servers they need on
//! loopback ports of their own and stop them.

mod admin;
mod admin_scopes;
mod backend_tls;
mod balance;
mod cache_consistency;
mod clickhouse_http;
mod clickhouse_http_cache;
mod clickhouse_http_limits;
mod clickhouse_http_qos;
mod databases;
mod guard_bypass;
mod hostile_clients;
mod mariadb_harness;
mod mysql;
mod policy_engine;
mod policy_languages;
mod policy_swap;
mod positions;
mod postgres;
mod postgres_causal;
mod postgres_drivers;
mod postgres_multiplex;
mod postgres_policy;
mod postgres_qos;
mod postgres_transparency;
mod postgres_wire;

//! Switchyard: a database proxy whose routing, caching and security decisions are made by a
//! WebAssembly policy.
//!
//! The data flow reads from the module tree: a frontend turns wire messages into a
//! [`model::QueryContext`], [`classify`] says what the statement is, [`policy`] decides what to do
//! with it ([`pipeline`] ties those two together), [`cache`] answers repeated reads, and the
//! routing and pools send the rest to a backend.

pub mod admin;
pub mod backend;
pub mod cache;
pub mod classify;
pub mod config;
pub mod frontend;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod guard;
pub mod limits;
pub mod log_limit;
pub mod metrics;
pub mod model;
pub mod mysql;
pub mod pipeline;
pub mod policy;
pub mod postgres;
pub mod route;
pub mod server;

//! Integration tests: one binary, one module per area. Tests start the real servers they need on
//! loopback ports of their own and stop them.

mod policy_engine;
mod policy_swap;

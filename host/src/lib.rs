//! Switchyard: a database proxy whose routing, caching and security decisions are made by a
//! WebAssembly policy called on every query.

pub mod model;

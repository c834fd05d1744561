//! Support for the integration tests: locating the built example policies and starting and
//! stopping real servers on loopback.

pub mod policies;
pub mod redis;

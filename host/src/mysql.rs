//! MySQL and MariaDB: the wire protocol pieces shared by the frontend (Switchyard as a server to
//! clients) and the backend (Switchyard as a client of servers). Packet layouts, capability and
//! status flags and auth scrambles come from `mysql_common`; what is written here is the framing
//! a relay needs (frames are forwarded as they arrive, never reassembled into rows) and the small
//! packets the proxy answers itself.

pub mod auth;
pub mod command;
pub mod packet;
pub mod response;

pub use mysql_common::constants::{CapabilityFlags, StatusFlags};

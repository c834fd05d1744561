//! PostgreSQL: the wire protocol and authentication, shared by the frontend (Switchyard as a
//! server to clients) and the backend (Switchyard as a client of servers).

pub mod auth;
pub mod protocol;

//! Defences against clients that misbehave before or around the protocol rather than inside
//! it: how many connections one address may hold ([`per_source`]), what a PostgreSQL client may
//! hold before it has logged in and how often an address may fail to log in ([`login_gate`]),
//! and how long an HTTP connection may take to send a request's head or sit idle
//! ([`watchdog`]). Each is per listener and counted in the metrics ([`GuardStats`]).

pub mod login_gate;
pub mod per_source;
mod stats;
pub mod watchdog;

pub use login_gate::{LoginGate, PendingLogin, Refusal};
pub use per_source::{PerSource, SourceSlot};
pub use stats::GuardStats;

use std::net::IpAddr;

/// The address limits are kept for: an IPv4 client reaching a dual-stack socket
/// (`::ffff:10.1.2.3`) counts as the IPv4 address it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        ip => ip,
    }
}

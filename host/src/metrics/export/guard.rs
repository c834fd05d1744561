//! The connection guards' counters (see `crate::guard`).

use prometheus_client::encoding::DescriptorEncoder;

use super::{Fmt, counter, counters};
use crate::guard::GuardStats;

pub(super) fn guard(stats: &GuardStats, enc: &mut DescriptorEncoder<'_>) -> Fmt {
    let get = GuardStats::get;
    let refused = |frontend: &str, reason: &str| {
        [
            ("frontend", frontend.to_owned()),
            ("reason", reason.to_owned()),
        ]
    };
    counters(
        enc,
        "switchyard_connections_refused",
        "Client connections turned away before they were served, by frontend and reason \
         (pending_logins, pending_logins_per_source, login_failures, connections_per_source).",
        [
            (
                refused("postgres", "pending_logins"),
                get(&stats.refused_pending_logins),
            ),
            (
                refused("postgres", "pending_logins_per_source"),
                get(&stats.refused_pending_logins_per_source),
            ),
            (
                refused("postgres", "login_failures"),
                get(&stats.refused_login_failures),
            ),
            (
                refused("clickhouse-http", "connections_per_source"),
                get(&stats.refused_connections_per_source),
            ),
        ],
    )?;
    counter(
        enc,
        "switchyard_login_failures",
        "Failed PostgreSQL logins (wrong password, unknown user, address not allowed).",
        get(&stats.login_failures),
    )?;
    counter(
        enc,
        "switchyard_login_timeouts",
        "PostgreSQL connections closed for not logging in within login_timeout.",
        get(&stats.login_timeouts),
    )?;
    counters(
        enc,
        "switchyard_http_connection_timeouts",
        "ClickHouse HTTP connections closed by header_timeout (kind=header) or idle_timeout \
         (kind=idle).",
        [
            ([("kind", "header".to_owned())], get(&stats.header_timeouts)),
            ([("kind", "idle".to_owned())], get(&stats.idle_timeouts)),
        ],
    )?;
    counter(
        enc,
        "switchyard_client_protocol_violations",
        "PostgreSQL clients disconnected for a protocol violation (a message type no client \
         sends, an invalid length); nothing of it reached a server.",
        get(&stats.protocol_violations),
    )
}

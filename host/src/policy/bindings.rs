//! The host side of the `switchyard:policy` world, generated from `wit/`, and the one place where
//! WIT types are mapped to and from the protocol-neutral model.

use crate::model::{
    Action, CacheDirective, Decision, PoolRole, PoolState, Protocol, QueryContext, Route,
    StatementKind,
};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });
}

pub use generated::switchyard::policy::host::{Host as HostImports, Level};
pub use generated::switchyard::policy::types as wit;
pub use generated::{Policy, PolicyPre};

/// Builds the WIT `query` record for one statement. The strings are copied because the generated
/// record owns them; the copy is a few small allocations next to a ~1 µs call.
pub fn query_to_wit(q: &QueryContext) -> wit::Query {
    let c = &q.classification;
    let mut flags = wit::QueryFlags::empty();
    if c.flags.has_where {
        flags |= wit::QueryFlags::HAS_WHERE;
    }
    if c.flags.has_limit {
        flags |= wit::QueryFlags::HAS_LIMIT;
    }
    if c.flags.volatile {
        flags |= wit::QueryFlags::VOLATILE;
    }
    if c.flags.multi_statement {
        flags |= wit::QueryFlags::MULTI_STATEMENT;
    }
    wit::Query {
        protocol: match q.protocol {
            Protocol::Postgres => wit::Protocol::Postgres,
            Protocol::ClickhouseHttp => wit::Protocol::ClickhouseHttp,
            Protocol::Mysql => wit::Protocol::Mysql,
        },
        sql: q.sql.clone(),
        fingerprint: c.fingerprint,
        kind: match c.kind {
            StatementKind::Read => wit::StatementKind::Read,
            StatementKind::Write => wit::StatementKind::Write,
            StatementKind::Ddl => wit::StatementKind::Ddl,
            StatementKind::Transaction => wit::StatementKind::Transaction,
            StatementKind::Session => wit::StatementKind::Session,
            StatementKind::Utility => wit::StatementKind::Utility,
            StatementKind::Unknown => wit::StatementKind::Unknown,
        },
        flags,
        tables_read: c.tables_read.to_vec(),
        tables_written: c.tables_written.to_vec(),
        functions: c.functions.to_vec(),
        user: q.user.clone(),
        database: q.database.clone(),
        client_addr: q.client_addr.clone(),
        in_transaction: q.in_transaction,
        attributes: q.attributes.clone(),
    }
}

/// Maps the guest's decision to the host's.
pub fn decision_from_wit(d: wit::Decision) -> Decision {
    Decision {
        action: match d.action {
            wit::Action::Forward => Action::Forward,
            wit::Action::Block(reason) => Action::Block(reason),
            wit::Action::Rewrite(sql) => Action::Rewrite(sql),
        },
        route: match d.route {
            wit::Route::Default => Route::Default,
            wit::Route::Primary => Route::Primary,
            wit::Route::Replica => Route::Replica,
            wit::Route::Pool(name) => Route::Pool(name),
        },
        cache: d.cache.map(|c| CacheDirective {
            ttl_ms: c.ttl_ms,
            namespace: c.namespace,
            shared: c.shared,
        }),
        affinity_key: d.affinity_key,
        tags: d.tags,
        mirror: d.mirror,
    }
}

pub fn pool_state_to_wit(p: &PoolState) -> wit::PoolState {
    wit::PoolState {
        name: p.name.clone(),
        role: match p.role {
            PoolRole::Primary => wit::PoolRole::Primary,
            PoolRole::Replica => wit::PoolRole::Replica,
            PoolRole::Other => wit::PoolRole::Other,
        },
        healthy_nodes: p.healthy_nodes,
        total_nodes: p.total_nodes,
        replica_lag_ms: p.replica_lag_ms,
        replica_lag_bytes: p.replica_lag_bytes,
    }
}

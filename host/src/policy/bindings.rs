//! The host side of the `switchyard:policy` world, generated from `wit/`, and the one place where
//! WIT types are mapped to and from the protocol-neutral model.

use crate::model::{
    Access, Action, CacheDirective, Decision, ObjectKind, ObjectRef, PoolRole, PoolState, Protocol,
    QueryContext, Route, StatementFacts, StatementKind,
};

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
        // The query record is lowered straight from borrowed strings: no per-call copies.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

mod generated_packed {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy-packed",
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "switchyard:policy/types": super::generated::switchyard::policy::types,
            "switchyard:policy/host": super::generated::switchyard::policy::host,
        },
    });
}

pub use generated::switchyard::policy::host::{Host as HostImports, Level};
pub use generated::switchyard::policy::types as wit;
pub use generated::{Policy, PolicyPre};
pub use generated_packed::{PolicyPacked, PolicyPackedPre};

/// Encodes the query record for `on-query-packed` (the layout is in `wit/policy.wit`).
pub fn pack_query(q: &QueryContext, out: &mut Vec<u8>) {
    out.clear();
    with_wit_query(q, |w| {
        let mut flags = 0u8;
        for (bit, flag) in [
            wit::QueryFlags::HAS_WHERE,
            wit::QueryFlags::HAS_LIMIT,
            wit::QueryFlags::VOLATILE,
            wit::QueryFlags::MULTI_STATEMENT,
        ]
        .into_iter()
        .enumerate()
        {
            if w.flags.contains(flag) {
                flags |= 1 << bit;
            }
        }
        out.extend_from_slice(&[
            w.protocol as u8,
            w.kind as u8,
            flags,
            u8::from(w.in_transaction),
        ]);
        out.extend_from_slice(&w.fingerprint.to_le_bytes());
        for text in [w.sql, w.user, w.database, w.client_addr] {
            put_str(out, text);
        }
        for list in [w.tables_read, w.tables_written, w.functions] {
            put_len(out, list.len());
            for name in list {
                put_str(out, name);
            }
        }
        put_len(out, w.statements.len());
        for st in w.statements {
            put_str(out, st.command);
            out.extend_from_slice(&[st.kind as u8, u8::from(st.parsed), u8::from(st.runs)]);
            out.extend_from_slice(&st.depth.to_le_bytes());
            out.extend_from_slice(&[u8::from(st.has_where), u8::from(st.has_limit)]);
            put_len(out, st.objects.len());
            for o in st.objects {
                out.push(o.kind as u8);
                match o.schema {
                    Some(schema) => {
                        out.push(1);
                        put_str(out, schema);
                    }
                    None => out.push(0),
                }
                put_str(out, o.name);
                out.extend_from_slice(&[o.access as u8, u8::from(o.guessed)]);
            }
        }
        put_len(out, w.attributes.len());
        for (k, v) in w.attributes {
            put_str(out, k);
            put_str(out, v);
        }
    });
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

use smallvec::SmallVec;

/// Builds the WIT `query` record for one statement and hands it to `f`. The record borrows the
/// context's strings (they are copied once, straight into the guest's memory, when the call
/// lowers them); only the lists of names need small arrays of `&str`, kept on the stack.
pub fn with_wit_query<R>(q: &QueryContext, f: impl FnOnce(wit::Query<'_>) -> R) -> R {
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
    let tables_read = names(&c.tables_read);
    let tables_written = names(&c.tables_written);
    let functions = names(&c.functions);
    // Objects of every statement first, then the statements borrowing them.
    let objects: SmallVec<[SmallVec<[wit::ObjectRef<'_>; 4]>; 2]> = c
        .statements
        .iter()
        .map(|st| st.objects.iter().map(object_to_wit).collect())
        .collect();
    let statements: SmallVec<[wit::Statement<'_>; 2]> = c
        .statements
        .iter()
        .zip(&objects)
        .map(|(st, objects)| statement_to_wit(st, objects))
        .collect();
    let attributes: SmallVec<[(&str, &str); 8]> = q
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    f(wit::Query {
        protocol: match q.protocol {
            Protocol::Postgres => wit::Protocol::Postgres,
            Protocol::ClickhouseHttp => wit::Protocol::ClickhouseHttp,
            Protocol::Mysql => wit::Protocol::Mysql,
        },
        sql: &q.sql,
        fingerprint: c.fingerprint,
        kind: kind_to_wit(c.kind),
        flags,
        tables_read: &tables_read,
        tables_written: &tables_written,
        functions: &functions,
        user: &q.user,
        database: &q.database,
        client_addr: &q.client_addr,
        in_transaction: q.in_transaction,
        statements: &statements,
        attributes: &attributes,
    })
}

fn kind_to_wit(kind: StatementKind) -> wit::StatementKind {
    match kind {
        StatementKind::Read => wit::StatementKind::Read,
        StatementKind::Write => wit::StatementKind::Write,
        StatementKind::Ddl => wit::StatementKind::Ddl,
        StatementKind::Transaction => wit::StatementKind::Transaction,
        StatementKind::Session => wit::StatementKind::Session,
        StatementKind::Utility => wit::StatementKind::Utility,
        StatementKind::Unknown => wit::StatementKind::Unknown,
    }
}

fn statement_to_wit<'a>(
    st: &'a StatementFacts,
    objects: &'a [wit::ObjectRef<'a>],
) -> wit::Statement<'a> {
    wit::Statement {
        command: &st.command,
        kind: kind_to_wit(st.kind),
        parsed: st.parsed,
        runs: st.runs,
        depth: st.depth,
        objects,
        has_where: st.has_where,
        has_limit: st.has_limit,
    }
}

fn object_to_wit(o: &ObjectRef) -> wit::ObjectRef<'_> {
    wit::ObjectRef {
        kind: match o.kind {
            ObjectKind::Relation => wit::ObjectKind::Relation,
            ObjectKind::Table => wit::ObjectKind::Table,
            ObjectKind::View => wit::ObjectKind::View,
            ObjectKind::MaterializedView => wit::ObjectKind::MaterializedView,
            ObjectKind::Sequence => wit::ObjectKind::Sequence,
            ObjectKind::Index => wit::ObjectKind::Index,
            ObjectKind::Function => wit::ObjectKind::Function,
            ObjectKind::Procedure => wit::ObjectKind::Procedure,
            ObjectKind::Schema => wit::ObjectKind::Schema,
            ObjectKind::Database => wit::ObjectKind::Database,
            ObjectKind::Role => wit::ObjectKind::Role,
            ObjectKind::Type => wit::ObjectKind::Type,
            ObjectKind::Trigger => wit::ObjectKind::Trigger,
            ObjectKind::Rule => wit::ObjectKind::Rule,
            ObjectKind::Extension => wit::ObjectKind::Extension,
            ObjectKind::Other => wit::ObjectKind::Other,
        },
        schema: o.schema.as_deref(),
        name: &o.name,
        access: match o.access {
            Access::Read => wit::Access::Read,
            Access::Write => wit::Access::Write,
            Access::Define => wit::Access::Define,
            Access::Call => wit::Access::Call,
        },
        guessed: o.guessed,
    }
}

fn names(list: &[String]) -> SmallVec<[&str; 8]> {
    list.iter().map(String::as_str).collect()
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

//! Decodes the query record the host passes to `on-query-packed` (layout in `wit/policy.wit`):
//! one buffer copied into the guest, instead of one host-to-guest allocation per string.

use crate::{Access, ObjectKind, ObjectRef, Protocol, Query, QueryFlags, Statement, StatementKind};

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let end = self.at.saturating_add(n).min(self.bytes.len());
        let out = &self.bytes[self.at..end];
        self.at = end;
        out
    }

    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&pad::<4>(self.take(4)));
        u32::from_le_bytes(b)
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(pad::<8>(self.take(8)))
    }

    fn bool(&mut self) -> bool {
        self.u8() != 0
    }

    fn string(&mut self) -> String {
        let len = self.u32() as usize;
        String::from_utf8_lossy(self.take(len)).into_owned()
    }

    fn strings(&mut self) -> Vec<String> {
        let n = self.u32() as usize;
        (0..n).map(|_| self.string()).collect()
    }
}

fn pad<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(bytes);
    out
}

fn kind(i: u8) -> StatementKind {
    match i {
        0 => StatementKind::Read,
        1 => StatementKind::Write,
        2 => StatementKind::Ddl,
        3 => StatementKind::Transaction,
        4 => StatementKind::Session,
        5 => StatementKind::Utility,
        _ => StatementKind::Unknown,
    }
}

fn object_kind(i: u8) -> ObjectKind {
    use ObjectKind::*;
    const KINDS: [ObjectKind; 16] = [
        Relation,
        Table,
        View,
        MaterializedView,
        Sequence,
        Index,
        Function,
        Procedure,
        Schema,
        Database,
        Role,
        Type,
        Trigger,
        Rule,
        Extension,
        Other,
    ];
    KINDS.get(i as usize).copied().unwrap_or(Other)
}

fn access(i: u8) -> Access {
    match i {
        0 => Access::Read,
        1 => Access::Write,
        2 => Access::Define,
        _ => Access::Call,
    }
}

/// The record the host packed.
pub fn decode(bytes: &[u8]) -> Query {
    let mut r = Reader { bytes, at: 0 };
    let protocol = match r.u8() {
        0 => Protocol::Postgres,
        1 => Protocol::ClickhouseHttp,
        _ => Protocol::Mysql,
    };
    let kind_of_query = kind(r.u8());
    let bits = r.u8();
    let mut flags = QueryFlags::empty();
    for (bit, flag) in [
        QueryFlags::HAS_WHERE,
        QueryFlags::HAS_LIMIT,
        QueryFlags::VOLATILE,
        QueryFlags::MULTI_STATEMENT,
    ]
    .into_iter()
    .enumerate()
    {
        if bits & (1 << bit) != 0 {
            flags |= flag;
        }
    }
    let in_transaction = r.bool();
    let fingerprint = r.u64();
    let sql = r.string();
    let user = r.string();
    let database = r.string();
    let client_addr = r.string();
    let tables_read = r.strings();
    let tables_written = r.strings();
    let functions = r.strings();
    let statements = (0..r.u32())
        .map(|_| {
            let command = r.string();
            let kind = kind(r.u8());
            let parsed = r.bool();
            let runs = r.bool();
            let depth = r.u32();
            let has_where = r.bool();
            let has_limit = r.bool();
            let objects = (0..r.u32())
                .map(|_| {
                    let kind = object_kind(r.u8());
                    let schema = r.bool().then(|| r.string());
                    let name = r.string();
                    ObjectRef {
                        kind,
                        schema,
                        name,
                        access: access(r.u8()),
                        guessed: r.bool(),
                    }
                })
                .collect();
            Statement {
                command,
                kind,
                parsed,
                runs,
                depth,
                objects,
                has_where,
                has_limit,
            }
        })
        .collect();
    let attributes = (0..r.u32()).map(|_| (r.string(), r.string())).collect();
    Query {
        protocol,
        sql,
        fingerprint,
        kind: kind_of_query,
        flags,
        tables_read,
        tables_written,
        functions,
        user,
        database,
        client_addr,
        in_transaction,
        statements,
        attributes,
    }
}

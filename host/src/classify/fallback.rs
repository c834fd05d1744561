//! Classification by first keyword, for single statements sqlparser cannot parse: ClickHouse
//! `SYSTEM`, `EXISTS`, `ALTER TABLE .. DELETE`, PostgreSQL `CHECKPOINT`, `REINDEX`, MySQL
//! `LOAD DATA`, `OPTIMIZE TABLE`, and so on.
//!
//! Only keywords whose kind cannot be wrong are listed; anything else stays `Unknown`. A
//! PostgreSQL or MySQL `SELECT` that does not parse stays `Unknown` on purpose: it may call
//! `nextval()` or lock rows, and only the parser can tell. Tables come from the few tokens after
//! the keyword, functions are not reported (except for ClickHouse reads, see `clickhouse`).

use std::sync::Arc;

use super::clickhouse;
use super::lexer::Token;
use super::tokens::{Depth, name_after, object_after};
use crate::model::{Classification, Protocol, QueryFlags, ResidentEffects, StatementKind};

pub(crate) fn classify(
    protocol: Protocol,
    sql: &str,
    tokens: &[Token<'_>],
    fingerprint: u64,
) -> Option<Classification> {
    let end = tokens
        .iter()
        .rposition(|t| !t.is_punct(b';'))
        .map_or(0, |i| i + 1);
    let tokens = &tokens[..end];
    // A `;` between tokens means several statements, and we would only see the first.
    if tokens.iter().any(|t| t.is_punct(b';')) {
        return None;
    }
    let (first, rest) = tokens.split_first()?;
    let mut out = Fallback::new(fingerprint);
    let keyword = first.text.to_ascii_lowercase();
    match keyword.as_str() {
        "system" | "kill" | "vacuum" | "analyze" | "checkpoint" | "cluster" | "reindex"
        | "flush" => out.kind = StatementKind::Utility,
        "optimize" | "check" | "repair" => {
            out.kind = StatementKind::Utility;
            out.read(name_after(
                protocol,
                rest,
                &["table", "no_write_to_binlog", "local"],
            ));
        }

        "listen" | "unlisten" | "set" | "reset" | "discard" | "use" | "prepare" | "deallocate" => {
            out.kind = StatementKind::Session
        }
        "begin" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" | "xa" => {
            out.kind = StatementKind::Transaction
        }
        "start" if rest.first().is_some_and(|t| t.is_word("transaction")) => {
            out.kind = StatementKind::Transaction
        }

        "show" => out.kind = StatementKind::Read,
        "describe" | "desc" | "table" => {
            out.kind = StatementKind::Read;
            out.read(name_after(protocol, rest, &["table"]));
        }
        "exists" => {
            out.kind = StatementKind::Read;
            let objects = ["table", "view", "dictionary"];
            out.read(object_after(protocol, rest, &["temporary"], &objects, true));
        }
        // A ClickHouse SELECT cannot change data, so an unparsed one is still a read.
        "select" | "with" | "explain" if protocol == Protocol::ClickhouseHttp => {
            let scan = clickhouse::scan_read(sql);
            out.kind = StatementKind::Read;
            out.flags.volatile = scan.volatile;
            out.reads = scan.tables;
            out.functions = scan.functions;
        }

        "insert" | "replace" | "upsert" => {
            out.kind = StatementKind::Write;
            if !rest.iter().take(6).any(|t| t.is_word("function")) {
                let skip = [
                    "into",
                    "table",
                    "ignore",
                    "low_priority",
                    "delayed",
                    "high_priority",
                ];
                out.write(name_after(protocol, rest, &skip));
            }
        }
        "update" => {
            out.kind = StatementKind::Write;
            out.flags.has_where = has_top_level_where(rest);
            // MySQL `UPDATE a, b SET ...` may write every table listed before SET.
            let set = rest
                .iter()
                .position(|t| t.is_word("set"))
                .unwrap_or(rest.len());
            let skip = ["only", "low_priority", "ignore"];
            out.write(name_after(protocol, rest, &skip));
            for (i, token) in rest[..set].iter().enumerate() {
                if token.is_punct(b',') {
                    out.write(name_after(protocol, &rest[i + 1..], &skip));
                }
            }
        }
        "delete" => {
            out.kind = StatementKind::Write;
            out.flags.has_where = has_top_level_where(rest);
            let from = rest
                .iter()
                .position(|t| t.is_word("from"))
                .map_or(0, |i| i + 1);
            let skip = ["only", "low_priority", "ignore", "quick"];
            out.write(name_after(protocol, &rest[from..], &skip));
        }
        "load" => {
            out.kind = StatementKind::Write;
            let into = rest
                .iter()
                .position(|t| t.is_word("into"))
                .map_or(rest.len(), |i| i + 1);
            out.write(name_after(protocol, &rest[into..], &["table"]));
        }
        "refresh" | "merge" => {
            out.kind = StatementKind::Write;
            let skip = ["materialized", "view", "concurrently", "into"];
            out.write(name_after(protocol, rest, &skip));
        }

        "create" | "alter" | "drop" | "truncate" | "attach" | "detach" | "undrop" => {
            out.kind = StatementKind::Ddl;
            let optional = [
                "or",
                "replace",
                "temporary",
                "temp",
                "unlogged",
                "materialized",
                "live",
                "window",
            ];
            let objects = ["table", "view", "dictionary"];
            let object_optional = keyword == "truncate";
            out.write(object_after(
                protocol,
                rest,
                &optional,
                &objects,
                object_optional,
            ));
        }
        "rename" | "exchange" => {
            out.kind = StatementKind::Ddl;
            let skip = ["table", "tables", "to", "and", "dictionary"];
            for (i, token) in rest.iter().enumerate() {
                if skip.iter().any(|w| token.is_word(w)) || i == 0 || rest[i - 1].is_punct(b',') {
                    out.write(name_after(protocol, &rest[i..], &skip));
                }
            }
        }
        "grant" | "revoke" | "comment" => out.kind = StatementKind::Ddl,
        _ => return None,
    }
    Some(out.finish())
}

fn has_top_level_where(tokens: &[Token<'_>]) -> bool {
    let mut depth = Depth::default();
    tokens.iter().any(|t| {
        depth.track(t);
        depth.top() && t.is_word("where")
    })
}

struct Fallback {
    kind: StatementKind,
    flags: QueryFlags,
    fingerprint: u64,
    reads: Vec<String>,
    writes: Vec<String>,
    functions: Vec<String>,
}

impl Fallback {
    fn new(fingerprint: u64) -> Self {
        Fallback {
            kind: StatementKind::Unknown,
            flags: QueryFlags::default(),
            fingerprint,
            reads: Vec::new(),
            writes: Vec::new(),
            functions: Vec::new(),
        }
    }

    fn read(&mut self, name: Option<String>) {
        if let Some(name) = name {
            super::names::push_unique(&mut self.reads, name);
        }
    }

    fn write(&mut self, name: Option<String>) {
        if let Some(name) = name {
            super::names::push_unique(&mut self.writes, name);
        }
    }

    fn finish(self) -> Classification {
        Classification {
            kind: self.kind,
            flags: self.flags,
            fingerprint: self.fingerprint,
            tables_read: Arc::from(self.reads),
            tables_written: Arc::from(self.writes),
            functions: Arc::from(self.functions),
            resident: ResidentEffects::new(),
            statements: Arc::from(Vec::new()),
        }
    }
}

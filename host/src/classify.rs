//! SQL classification: what a statement does, which tables it reads and writes, which functions it
//! calls, and a fingerprint that ignores literals. This is what the policy sees of the SQL.
//!
//! Flow: the fingerprint comes from a hand-written lexer over the raw text (`fingerprint`); a
//! plain SELECT in a small subset is classified from the same lexer's tokens (`fast`); any other
//! text is parsed with sqlparser in the protocol's dialect (`parse`); one visitor walk collects
//! tables, functions and nested effects (`collect`, `statement`); a text that does not parse is
//! tried against a short keyword list (`fallback`) and is otherwise `Unknown`. `Classifier` adds
//! an exact-text cache in front. Classification never fails and never panics: the worst answer is
//! `Unknown`, which the default policy routes to the primary.
//!
//! Rules a policy author can rely on:
//! - Kinds: `read` (SELECT, VALUES, SHOW, DESCRIBE, EXPLAIN without ANALYZE, ClickHouse `EXISTS`,
//!   `COPY ... TO`), `write` (INSERT/UPDATE/DELETE/MERGE/REPLACE, `COPY ... FROM`, `LOAD DATA`,
//!   `SELECT ... FOR UPDATE/SHARE`, writable CTEs, `SELECT ... INTO table`, calls to `nextval`,
//!   `setval`, `pg_advisory*`, `GET_LOCK` and similar, `LOCK TABLE`, `NOTIFY`, `CALL`, `REFRESH
//!   MATERIALIZED VIEW`), `ddl` (CREATE/ALTER/DROP/TRUNCATE/RENAME/GRANT/REVOKE/COMMENT,
//!   ClickHouse ATTACH/DETACH/EXCHANGE and `ALTER TABLE .. DELETE/UPDATE` mutations),
//!   `transaction` (BEGIN/START/COMMIT/ROLLBACK/SAVEPOINT/RELEASE, `SET TRANSACTION`), `session`
//!   (SET/RESET/USE/DISCARD/PREPARE/DEALLOCATE/LISTEN/UNLISTEN, cursors, and reads of
//!   per-connection state: `currval`, `lastval`, `set_config`, `LAST_INSERT_ID()`,
//!   `FOUND_ROWS()`), `utility` (VACUUM, ANALYZE, CHECKPOINT, REINDEX, CLUSTER, OPTIMIZE, KILL,
//!   FLUSH, ClickHouse SYSTEM and CHECK), `unknown` (does not parse, or `EXECUTE` of a statement
//!   prepared earlier, or `DO` blocks).
//! - `EXPLAIN ANALYZE` runs its statement, so it takes that statement's kind and tables;
//!   plain `EXPLAIN` is a read and lists every table it mentions as read.
//! - Several statements in one text: the strongest kind wins (read < session < transaction <
//!   utility < write < ddl < unknown), tables and functions are merged, `has_where` holds only if
//!   every UPDATE/DELETE (nested ones included) has a WHERE, `has_limit` only if every top-level
//!   SELECT/UPDATE/DELETE has a LIMIT / FETCH FIRST / TOP.
//! - `tables_written` are tables whose rows or definition change (DDL targets included);
//!   maintenance statements (VACUUM, OPTIMIZE) list their table as read. CTE names and table
//!   functions (`generate_series(..)`, ClickHouse `numbers(..)`) are not tables; table functions
//!   are listed in `functions`. Name spelling per dialect is described in `names`.
//! - Texts over `MAX_PARSE_LEN` (64 KiB) or nested too deeply are not parsed: they get the
//!   keyword fallback only (a bulk INSERT is still a write to its table; a huge PostgreSQL or
//!   MySQL SELECT is `unknown`).
//! - `volatile` is set by time, random, UUID, sequence, lock and session-identity functions
//!   (`functions`); such results must never be cached.
//! - `resident` lists what each PostgreSQL statement does to resident session state (TEMP
//!   objects, SQL PREPARE, WITH HOLD cursors, LISTEN, advisory locks, SET SESSION AUTHORIZATION,
//!   LOAD, and their releases), in text order (`resident`). A text with any such effect is never
//!   a `read`: it is not cached and not sent to a replica.

mod analyze;
mod builtins;
mod cache;
mod clickhouse;
mod collect;
mod facts;
mod fallback;
mod fast;
mod fingerprint;
mod functions;
mod lexer;
mod mysql_last_counts;
mod mysql_session;
mod names;
mod parse;
mod resident;
mod statement;
mod tokens;

#[cfg(test)]
mod tests;

pub use builtins::only_read_only_builtins;
pub use cache::{Classifier, MAX_CACHED_SQL};
pub use fingerprint::{digest_text, fingerprint};
pub use mysql_last_counts::{LastCounts, substitute_last_counts};
pub use mysql_session::{MysqlSessionEffects, mysql_session_effects};
pub use parse::MAX_PARSE_LEN;

use crate::model::{Classification, Protocol};
use lexer::{Lexer, Token};

/// Classifies one SQL text (possibly several statements) in the dialect of `protocol`.
pub fn classify(protocol: Protocol, sql: &str) -> Classification {
    classify_with_fingerprint(protocol, sql, fingerprint::fingerprint(protocol, sql))
}

/// The statements of a text, each without the whitespace and comments around it and without its
/// `;`; empty statements are left out. Quotes, dollar quotes and comments are lexed, so a `;`
/// inside them splits nothing.
pub fn statement_texts(protocol: Protocol, sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    for token in Lexer::new(protocol, sql) {
        if token.is_punct(b';') {
            if let Some(s) = start.take() {
                out.extend(sql.get(s..end));
            }
            continue;
        }
        if start.is_none() {
            start = Some(token.end - token.text.len());
        }
        end = token.end;
    }
    if let Some(s) = start {
        out.extend(sql.get(s..end));
    }
    out
}

/// [`classify`] with the fingerprint already computed (the classifier's cache computes it on the
/// way).
fn classify_with_fingerprint(protocol: Protocol, sql: &str, fingerprint: u64) -> Classification {
    // ClickHouse `INSERT ... FORMAT CSV <data>`: the data is not SQL and must not be parsed.
    let text = match protocol {
        Protocol::ClickhouseHttp => clickhouse::insert_format_header(sql).unwrap_or(sql),
        _ => sql,
    };
    // Plain SELECTs in a small subset are read from our lexer's tokens (`fast`); the rest, and
    // anything the fast path is not sure of, is parsed.
    let mut classification = fast::classify(protocol, text, fingerprint)
        .unwrap_or_else(|| classify_parsed(protocol, text, fingerprint));
    resident::settle_kind(&mut classification);
    classification
}

/// The full path: sqlparser, the AST walk, and the keyword fallback for what does not parse.
fn classify_parsed(protocol: Protocol, text: &str, fingerprint: u64) -> Classification {
    match parse::statements(protocol, text) {
        Ok(statements) if !statements.is_empty() => {
            let mut classification = analyze::classification(protocol, &statements, fingerprint);
            classification.statements = facts::of_text(protocol, text, Some(&statements)).into();
            classification
        }
        Ok(_) => Classification::unknown(fingerprint),
        // Syntax errors and texts too deep or too long to parse all get the keyword fallback;
        // resident effects are read from the same tokens.
        Err(_) => {
            let tokens: Vec<Token<'_>> = Lexer::new(protocol, text).collect();
            let mut classification = fallback::classify(protocol, text, &tokens, fingerprint)
                .unwrap_or_else(|| Classification::unknown(fingerprint));
            if protocol == Protocol::Postgres {
                classification.resident = resident::scan(&tokens);
            }
            classification.statements = facts::of_text(protocol, text, None).into();
            classification
        }
    }
}

//! ClickHouse-specific handling that sqlparser cannot do for us.
//!
//! `INSERT INTO t FORMAT CSV` is followed by raw data, not SQL: only the header is classified and
//! fingerprinted. And sqlparser's ClickHouse grammar misses much of what analysts write (`GLOBAL
//! ANY JOIN`, `WITH 1 AS x`, `EXPLAIN PIPELINE`, ...); since a ClickHouse `SELECT` cannot change
//! data, an unparsed `SELECT`/`WITH`/`EXPLAIN` is still a read, with tables and functions taken
//! from the tokens.

use super::functions;
use super::lexer::{Lexer, Token, TokenKind};
use super::names::push_unique;
use super::tokens::{self, Depth};
use crate::model::Protocol;

/// For `INSERT ... FORMAT <name> <data>`, the text up to and including the format name.
pub(crate) fn insert_format_header(sql: &str) -> Option<&str> {
    let mut lexer = Lexer::new(Protocol::ClickhouseHttp, sql);
    if !lexer.next()?.is_word("insert") {
        return None;
    }
    let mut depth = Depth::default();
    while let Some(token) = lexer.next() {
        depth.track(&token);
        if !depth.top() {
            continue;
        }
        // The data of `VALUES` and of `SELECT` is SQL; `FORMAT` before them starts raw data.
        if token.is_word("select") || token.is_word("with") || token.is_word("values") {
            return None;
        }
        if token.is_word("format") {
            let name = lexer.next().filter(|t| t.kind == TokenKind::Word)?;
            return sql.get(..name.end);
        }
    }
    None
}

/// What the token scan of an unparsed read found.
#[derive(Debug, Default)]
pub(crate) struct TokenRead {
    pub tables: Vec<String>,
    pub functions: Vec<String>,
    pub volatile: bool,
}

/// Words followed by `(` that are syntax, not function calls.
const NOT_FUNCTIONS: &[&str] = &[
    "in",
    "as",
    "using",
    "over",
    "from",
    "join",
    "on",
    "values",
    "and",
    "or",
    "not",
    "select",
    "where",
    "by",
    "exists",
    "any",
    "all",
    "interval",
    "when",
    "then",
    "else",
    "filter",
    "window",
    "partition",
    "settings",
    "with",
    "union",
    "except",
    "intersect",
    "having",
    "prewhere",
    "array",
];

/// Scans a ClickHouse read for the tables after `FROM`/`JOIN` and the functions it calls.
pub(crate) fn scan_read(sql: &str) -> TokenRead {
    let mut out = TokenRead::default();
    let mut ctes: Vec<String> = Vec::new();
    let tokens: Vec<Token<'_>> = Lexer::new(Protocol::ClickhouseHttp, sql).collect();
    // For each open parenthesis: does it hold a query? `FROM` in `extract(year FROM d)` is not
    // followed by a table.
    let mut parens: Vec<bool> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let after = tokens.get(i + 2);
        if token.is_punct(b'(') {
            parens.push(next.is_some_and(|t| t.is_word("select") || t.is_word("with")));
        } else if token.is_punct(b')') {
            parens.pop();
        }
        if token.kind != TokenKind::Word {
            continue;
        }
        let in_query = parens.last().is_none_or(|&query| query);
        // `WITH name AS (SELECT ...)` or `, name AS (...)`: a CTE, not a table.
        let defines_cte = next.is_some_and(|t| t.is_word("as"))
            && after.is_some_and(|t| t.is_punct(b'('))
            && i.checked_sub(1)
                .and_then(|p| tokens.get(p))
                .is_some_and(|p| p.is_word("with") || p.is_punct(b','));
        if defines_cte {
            ctes.push(token.text.to_owned());
        } else if next.is_some_and(|t| t.is_punct(b'('))
            && !NOT_FUNCTIONS.iter().any(|k| token.is_word(k))
        {
            let name = token.text.to_lowercase();
            out.volatile |= functions::effect(Protocol::ClickhouseHttp, &name).volatile;
            push_unique(&mut out.functions, name);
        } else if in_query && (token.is_word("from") || token.is_word("join")) {
            from_list(&tokens[i + 1..], &mut out);
        }
    }
    out.tables.retain(|t| !ctes.contains(t));
    out
}

/// Reads `name [FINAL] [[AS] alias] [, name ...]` after FROM / JOIN.
fn from_list(rest: &[Token<'_>], out: &mut TokenRead) {
    let mut at = 0;
    loop {
        let Some((name, used)) = rest
            .get(at..)
            .and_then(|tail| tokens::qualified_name(Protocol::ClickhouseHttp, tail))
        else {
            return;
        };
        at += used;
        if rest.get(at).is_some_and(|t| t.is_punct(b'(')) {
            // A table function; the function pass records it.
            return;
        }
        push_unique(&mut out.tables, name);
        if rest.get(at).is_some_and(|t| t.is_word("final")) {
            at += 1;
        }
        if rest.get(at).is_some_and(|t| t.is_word("as")) {
            at += 2;
        } else if rest
            .get(at)
            .is_some_and(|t| t.kind == TokenKind::Word && !tokens::is_clause_keyword(t))
        {
            at += 1;
        }
        if !rest.get(at).is_some_and(|t| t.is_punct(b',')) {
            return;
        }
        at += 1;
    }
}

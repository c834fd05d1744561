//! sqlparser with the dialect of each protocol, bounded so hostile input cannot exhaust the stack.
//!
//! Two bounds are needed. sqlparser's recursion limit stops nesting (`((((..`, subqueries,
//! `NOT NOT ..`). But a long chain of binary or postfix operators (`a OR a OR ..`, `x[1][1]..`,
//! `SELECT 1 UNION SELECT 1 ..`) is parsed in a loop into a left-deep tree, and walking or even
//! dropping that tree recurses once per operator: 20,000 `[1]` overflow a 2 MiB stack in a debug
//! build. So before parsing, one pass of the lexer bounds the tree depth from the tokens, and a
//! text over the bound is not parsed at all (the keyword fallback still sees it).
//!
//! Parsing also costs about half a microsecond per byte (a 120 KiB `INSERT` takes tens of
//! milliseconds), so texts over `MAX_PARSE_LEN` go straight to the fallback, which still gets
//! bulk `INSERT`s right (write, with the table) in a single lexer pass.

use sqlparser::ast::Statement;
use sqlparser::dialect::{ClickHouseDialect, Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Tokenizer;

use super::lexer::Lexer;
use crate::model::Protocol;

/// How deep sqlparser may recurse before it gives up. Real queries stay far below it.
pub(crate) const RECURSION_LIMIT: usize = 48;

/// The most tokens a text may chain together (see `depth_bound`) and still be parsed: five times
/// below where the worst construct we know overflows a 2 MiB stack in a debug build.
pub(crate) const MAX_DEPTH_BOUND: usize = 4096;

/// Longest text handed to sqlparser.
pub const MAX_PARSE_LEN: usize = 64 * 1024;

/// Texts this short cannot reach `MAX_DEPTH_BOUND` (every token is at least one byte).
const SHORT_TEXT: usize = MAX_DEPTH_BOUND;

/// Deepest parenthesis nesting `depth_bound` tracks; sqlparser would refuse deeper input anyway.
const MAX_PARENS: usize = 2 * RECURSION_LIMIT;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    #[error(transparent)]
    Syntax(#[from] ParserError),
    #[error(
        "statement too deeply nested to parse safely (depth bound {bound} > {MAX_DEPTH_BOUND})"
    )]
    TooDeep { bound: usize },
    #[error("statement of {len} bytes is longer than the {MAX_PARSE_LEN} bytes we parse")]
    TooLong { len: usize },
}

pub(crate) fn statements(protocol: Protocol, sql: &str) -> Result<Vec<Statement>, ParseError> {
    if sql.len() > MAX_PARSE_LEN {
        return Err(ParseError::TooLong { len: sql.len() });
    }
    if sql.len() > SHORT_TEXT {
        let bound = depth_bound(protocol, sql);
        if bound > MAX_DEPTH_BOUND {
            return Err(ParseError::TooDeep { bound });
        }
    }
    let statements = match protocol {
        Protocol::Postgres => with_dialect(&PostgreSqlDialect {}, sql),
        Protocol::ClickhouseHttp => with_dialect(&ClickHouseDialect {}, &blank_hash_comments(sql)),
        Protocol::Mysql => with_dialect(&MySqlDialect {}, sql),
    }?;
    Ok(statements)
}

/// ClickHouse's `#` line comments, which sqlparser's ClickHouse dialect does not know, turned
/// into spaces (positions stay the same). Quotes, `--` and `/* */` comments are skipped, so a `#`
/// inside them stays.
fn blank_hash_comments(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('#') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let b = sql.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let skip_to = |from: usize, end: &[u8]| {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |p| from + p + end.len())
    };
    while i < b.len() {
        match b[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() {
                    let escaped = b[i] == b'\\' || (b[i] == quote && b.get(i + 1) == Some(&quote));
                    if escaped {
                        i += 2;
                    } else if b[i] == quote {
                        break;
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_to(i, b"\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_to(i + 2, b"*/"),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Only whole characters inside a comment were replaced (by ASCII spaces): still UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| sql.to_owned()))
}

fn with_dialect(dialect: &dyn Dialect, sql: &str) -> Result<Vec<Statement>, ParserError> {
    // Sized up front: growing the token vector (whitespace is a token too) was a tenth of the
    // time of a whole classification in profiles.
    let mut tokens = Vec::with_capacity((sql.len() / 2 + 8).min(4096));
    Tokenizer::new(dialect, sql).tokenize_with_location_into_buf(&mut tokens)?;
    Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
}

/// An upper bound on the depth of the tree sqlparser would build: the largest number of tokens
/// on any path of parentheses, where a `,` or `;` starts a new sibling at its level (list items
/// are side by side, not nested, so a 10,000-row `VALUES` or `IN` list stays shallow).
pub(crate) fn depth_bound(protocol: Protocol, sql: &str) -> usize {
    let mut counts = [0usize; MAX_PARENS + 1];
    let mut level = 0usize;
    let mut path = 0usize;
    let mut max = 0usize;
    for token in Lexer::new(protocol, sql) {
        if token.is_punct(b')') {
            path -= counts[level];
            level = level.saturating_sub(1);
        } else if token.is_punct(b',') || token.is_punct(b';') {
            path -= counts[level];
            counts[level] = 0;
        } else {
            counts[level] += 1;
            path += 1;
            max = max.max(path);
            if token.is_punct(b'(') {
                level += 1;
                if level > MAX_PARENS {
                    return usize::MAX;
                }
                counts[level] = 0;
            }
        }
    }
    max
}

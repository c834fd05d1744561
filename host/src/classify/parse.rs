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
        Protocol::ClickhouseHttp => with_dialect(&ClickHouseDialect {}, sql),
        Protocol::Mysql => with_dialect(&MySqlDialect {}, sql),
    }?;
    Ok(statements)
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

//! Small helpers for reading structure out of a token slice, shared by the keyword fallback and
//! the ClickHouse read scan. They only ever look at a few tokens; nothing here is a grammar.

use super::lexer::{Token, TokenKind, unquote};
use super::names;
use crate::model::Protocol;

/// Parenthesis depth while walking tokens.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Depth(usize);

impl Depth {
    pub fn track(&mut self, token: &Token<'_>) {
        if token.is_punct(b'(') {
            self.0 += 1;
        } else if token.is_punct(b')') {
            self.0 = self.0.saturating_sub(1);
        }
    }

    /// Outside any parenthesis.
    pub fn top(&self) -> bool {
        self.0 == 0
    }
}

/// Keywords that end a table reference (so they are not mistaken for an alias).
const CLAUSE_KEYWORDS: &[&str] = &[
    "where",
    "prewhere",
    "group",
    "order",
    "limit",
    "having",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "outer",
    "any",
    "all",
    "asof",
    "semi",
    "anti",
    "global",
    "array",
    "on",
    "using",
    "final",
    "sample",
    "settings",
    "format",
    "union",
    "except",
    "intersect",
    "window",
    "qualify",
    "into",
    "values",
    "select",
    "set",
    "partition",
    "paste",
    "natural",
    "straight_join",
    "offset",
    "fetch",
    "for",
    "with",
];

pub(crate) fn is_clause_keyword(token: &Token<'_>) -> bool {
    CLAUSE_KEYWORDS.iter().any(|k| token.is_word(k))
}

/// Reads `ident(.ident)*` at the start of `tokens`: the name as the server resolves it and how
/// many tokens it used. A clause keyword is not a name.
pub(crate) fn qualified_name(protocol: Protocol, tokens: &[Token<'_>]) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut used = 0;
    loop {
        let part = tokens.get(used)?;
        let quoted = match part.kind {
            TokenKind::Word if used > 0 || !is_clause_keyword(part) => false,
            TokenKind::QuotedIdent => true,
            _ => return (used > 0).then_some((name, used.saturating_sub(1))),
        };
        if used > 0 {
            name.push('.');
        }
        let text = if quoted {
            unquote(part.text)
        } else {
            part.text
        };
        name.push_str(&names::ident(protocol, text, quoted));
        used += 1;
        if !tokens.get(used).is_some_and(|t| t.is_punct(b'.')) {
            return Some((name, used));
        }
        used += 1;
    }
}

/// Skips any of `optional` words, then a qualified name.
pub(crate) fn name_after(
    protocol: Protocol,
    tokens: &[Token<'_>],
    optional: &[&str],
) -> Option<String> {
    let start = tokens
        .iter()
        .position(|t| !optional.iter().any(|w| t.is_word(w)))?;
    qualified_name(protocol, &tokens[start..]).map(|(name, _)| name)
}

/// `<optional words> <object word> [IF [NOT] EXISTS] name`, e.g. `OR REPLACE TABLE IF NOT EXISTS
/// db.t`; None unless one of `objects` is there (or `object_optional`).
pub(crate) fn object_after(
    protocol: Protocol,
    tokens: &[Token<'_>],
    optional: &[&str],
    objects: &[&str],
    object_optional: bool,
) -> Option<String> {
    let mut at = tokens
        .iter()
        .position(|t| !optional.iter().any(|w| t.is_word(w)))?;
    if tokens
        .get(at)
        .is_some_and(|t| objects.iter().any(|w| t.is_word(w)))
    {
        at += 1;
    } else if !object_optional {
        return None;
    }
    name_after(
        protocol,
        tokens.get(at..)?,
        &["if", "not", "exists", "only"],
    )
}

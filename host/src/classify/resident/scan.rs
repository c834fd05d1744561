//! Resident effects read from tokens, for PostgreSQL texts sqlparser does not parse: `DO`,
//! `SET SESSION SESSION AUTHORIZATION`, `CREATE TEMP RECURSIVE VIEW`, or any text with one
//! statement it does not know. The same rules as for parsed statements (see `resident`); where the
//! tokens leave a doubt about something created, the answer is `Unknown`.
//!
//! Statements are split at every `;` token (a `;` inside a string, a comment or a dollar quote is
//! part of that token, not a separator).

use super::{ident, lock_effect, relation, temp_object};
use crate::classify::functions::lock_call;
use crate::classify::lexer::{Token, TokenKind, unquote};
use crate::model::{Resident, ResidentEffect, ResidentEffects, ResidentSort};

use ResidentEffect::{Create, Release, ReleaseAll, Unknown};

/// The effects of every statement in `tokens` (one PostgreSQL text), in order.
pub(crate) fn scan(tokens: &[Token<'_>]) -> ResidentEffects {
    let mut out = ResidentEffects::new();
    let mut body = AtomicBody::default();
    for statement in tokens.split(|t| t.is_punct(b';')) {
        if body.open {
            body.follow(statement);
            continue;
        }
        match begin_atomic(statement) {
            Some(at) => {
                self::statement(&statement[..at], &mut out);
                body = AtomicBody {
                    open: true,
                    cases: 0,
                };
                body.follow(&statement[at + 2..]);
            }
            None => self::statement(statement, &mut out),
        }
    }
    out
}

/// Where `CREATE FUNCTION|PROCEDURE .. BEGIN ATOMIC` starts its body, if it has one.
fn begin_atomic(statement: &[Token<'_>]) -> Option<usize> {
    if !statement.first().is_some_and(|t| t.is_word("create")) {
        return None;
    }
    statement
        .windows(2)
        .position(|w| w[0].is_word("begin") && w[1].is_word("atomic"))
}

/// The body of a `BEGIN ATOMIC .. END` is stored, not run, and its `;`s do not end the CREATE:
/// it is skipped up to its END (an END that closes no `CASE`).
#[derive(Debug, Default)]
struct AtomicBody {
    open: bool,
    cases: usize,
}

impl AtomicBody {
    fn follow(&mut self, tokens: &[Token<'_>]) {
        for t in tokens {
            if t.is_word("case") {
                self.cases += 1;
            } else if t.is_word("end") {
                if self.cases == 0 {
                    self.open = false;
                    return;
                }
                self.cases -= 1;
            }
        }
    }
}

fn statement(s: &[Token<'_>], out: &mut ResidentEffects) {
    let Some((first, rest)) = s.split_first() else {
        return;
    };
    let keyword = match first.kind {
        TokenKind::Word => first.text.to_ascii_lowercase(),
        TokenKind::Punct if first.is_punct(b'(') => "select".to_owned(),
        _ => String::new(),
    };
    match keyword.as_str() {
        "create" => {
            create(rest, out);
            calls(rest, false, out);
        }
        "select" | "with" => {
            select_into_temp(s, out);
            calls(s, true, out);
        }
        "values" | "table" | "insert" | "update" | "delete" | "merge" | "copy" => {
            calls(s, true, out)
        }
        "prepare" => prepare(rest, out),
        "declare" => declare(rest, out),
        "listen" => out.push(name(rest).map_or(Unknown, |n| Create(Resident::Channel(n.into())))),
        "unlisten" if rest.first().is_some_and(|t| t.is_punct(b'*')) => {
            out.push(ReleaseAll(ResidentSort::Channels))
        }
        "unlisten" => out.extend(name(rest).map(|n| Release(Resident::Channel(n.into())))),
        "load" => out.push(Create(Resident::Library)),
        "set" => session_authorization(rest, out),
        "reset" if words(rest, &["session", "authorization"]) => {
            out.push(Release(Resident::SessionAuthorization))
        }
        "discard" if words(rest, &["all"]) => out.push(ReleaseAll(ResidentSort::All)),
        "discard" if words(rest, &["temp"]) || words(rest, &["temporary"]) => {
            out.push(ReleaseAll(ResidentSort::TempObjects))
        }
        "deallocate" => {
            let rest = match rest {
                [prepare, tail @ ..] if prepare.is_word("prepare") && !tail.is_empty() => tail,
                _ => rest,
            };
            if words(rest, &["all"]) {
                out.push(ReleaseAll(ResidentSort::Prepared));
            } else {
                out.extend(name(rest).map(|n| Release(Resident::Prepared(n.into()))));
            }
        }
        "close" if words(rest, &["all"]) => out.push(ReleaseAll(ResidentSort::Cursors)),
        "close" => out.extend(name(rest).map(|n| Release(Resident::Cursor(n.into())))),
        "drop" => drop_relations(rest, out),
        // The body is a string literal: what it does is not in the fingerprint.
        "do" => out.push(Unknown),
        "explain" => explain(rest, out),
        // Unknown statements: any lock they may take.
        _ => calls(s, false, out),
    }
}

/// Whether `tokens` start with exactly these words.
fn words(tokens: &[Token<'_>], expected: &[&str]) -> bool {
    tokens.len() >= expected.len() && expected.iter().zip(tokens).all(|(w, t)| t.is_word(w))
}

/// One identifier as PostgreSQL resolves it (a keyword where a name belongs is the server's error).
fn ident_token(token: &Token<'_>) -> Option<String> {
    match token.kind {
        TokenKind::Word => Some(ident(token.text, false)),
        TokenKind::QuotedIdent if token.text.starts_with('"') => {
            Some(ident(&unquote(token.text).replace("\"\"", "\""), true))
        }
        _ => None,
    }
}

/// The unqualified name at the start of `tokens`.
fn name(tokens: &[Token<'_>]) -> Option<String> {
    ident_token(tokens.first()?)
}

/// `ident(.ident)*` at the start of `tokens`: the parts and the number of tokens used.
fn qualified(tokens: &[Token<'_>]) -> Option<(Vec<String>, usize)> {
    let mut parts = vec![ident_token(tokens.first()?)?];
    let mut used = 1;
    while tokens.get(used).is_some_and(|t| t.is_punct(b'.')) {
        let Some(part) = tokens.get(used + 1).and_then(ident_token) else {
            break;
        };
        parts.push(part);
        used += 2;
    }
    Some((parts, used))
}

/// Whether the token names a temporary schema or says TEMP.
fn mentions_temp(tokens: &[Token<'_>]) -> bool {
    tokens.iter().any(|t| {
        t.is_word("temp")
            || t.is_word("temporary")
            || ident_token(t).is_some_and(|n| super::is_temp_schema(&n))
    })
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] [TEMP|TEMPORARY] [UNLOGGED] [RECURSIVE] TABLE|VIEW|SEQUENCE
/// [IF NOT EXISTS] name`, after the CREATE.
fn create(rest: &[Token<'_>], out: &mut ResidentEffects) {
    let mut at = if words(rest, &["or", "replace"]) {
        2
    } else {
        0
    };
    let mut temporary = false;
    let modifiers = [
        "global",
        "local",
        "temp",
        "temporary",
        "unlogged",
        "recursive",
    ];
    while let Some(t) = rest
        .get(at)
        .filter(|t| modifiers.iter().any(|m| t.is_word(m)))
    {
        temporary |= t.is_word("temp") || t.is_word("temporary");
        at += 1;
    }
    let object = rest.get(at);
    let table = object.is_some_and(|t| t.is_word("table"));
    let relation_object =
        table || object.is_some_and(|t| t.is_word("view") || t.is_word("sequence"));
    if !relation_object {
        if temporary || mentions_temp(rest) {
            out.push(Unknown);
        }
        return;
    }
    at += 1;
    if words(&rest[at..], &["if", "not", "exists"]) {
        at += 3;
    }
    let Some((parts, _)) = qualified(&rest[at..]) else {
        if temporary || mentions_temp(rest) {
            out.push(Unknown);
        }
        return;
    };
    let (name, temp_schema) = relation(&parts);
    if (temporary || temp_schema) && !(table && on_commit_drop(rest)) {
        out.push(Create(Resident::TempObject(name)));
    }
}

/// `ON COMMIT DROP` outside parentheses.
fn on_commit_drop(tokens: &[Token<'_>]) -> bool {
    let mut depth = crate::classify::tokens::Depth::default();
    tokens.iter().enumerate().any(|(i, t)| {
        depth.track(t);
        depth.top() && words(&tokens[i..], &["on", "commit", "drop"])
    })
}

/// `SELECT .. INTO [TEMP|TEMPORARY] [UNLOGGED] [TABLE] name` at the top level of a query.
fn select_into_temp(s: &[Token<'_>], out: &mut ResidentEffects) {
    let mut depth = crate::classify::tokens::Depth::default();
    for (i, t) in s.iter().enumerate() {
        depth.track(t);
        if !depth.top() || !t.is_word("into") {
            continue;
        }
        // `WITH .. INSERT INTO`, `WITH .. MERGE INTO` write into an existing table.
        if i > 0 && (s[i - 1].is_word("insert") || s[i - 1].is_word("merge")) {
            return;
        }
        let mut at = i + 1;
        let mut temporary = false;
        while let Some(t) = s.get(at).filter(|t| {
            ["temp", "temporary", "unlogged", "table"]
                .iter()
                .any(|w| t.is_word(w))
        }) {
            temporary |= t.is_word("temp") || t.is_word("temporary");
            at += 1;
        }
        match qualified(&s[at..]) {
            Some((parts, _)) => out.extend(temp_object(&parts, temporary)),
            None if temporary => out.push(Unknown),
            None => {}
        }
        return;
    }
}

/// Calls of the advisory lock functions; `releases_run` as in `resident::runs_calls`.
fn calls(s: &[Token<'_>], releases_run: bool, out: &mut ResidentEffects) {
    for (i, t) in s.iter().enumerate() {
        if !s.get(i + 1).is_some_and(|n| n.is_punct(b'(')) {
            continue;
        }
        let call = match t.kind {
            TokenKind::Word => lock_call(&t.text.to_ascii_lowercase()),
            TokenKind::QuotedIdent if t.text.starts_with('"') => lock_call(unquote(t.text)),
            _ => None,
        };
        out.extend(call.and_then(|call| lock_effect(call, releases_run)));
    }
}

/// `PREPARE name [(types)] AS statement`: the statement runs at each EXECUTE, unseen.
fn prepare(rest: &[Token<'_>], out: &mut ResidentEffects) {
    match name(rest) {
        Some(n) => out.push(Create(Resident::Prepared(n.into()))),
        None => out.push(Unknown),
    }
    let mut depth = crate::classify::tokens::Depth::default();
    let body = rest.iter().position(|t| {
        depth.track(t);
        depth.top() && t.is_word("as")
    });
    if let Some(body) = body {
        let mut inner = ResidentEffects::new();
        statement(&rest[body + 1..], &mut inner);
        if inner.iter().any(ResidentEffect::creates) {
            out.push(Unknown);
        }
    }
}

/// `DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [WITH|WITHOUT HOLD] FOR
/// query`: resident only WITH HOLD.
fn declare(rest: &[Token<'_>], out: &mut ResidentEffects) {
    let query = rest
        .iter()
        .position(|t| t.is_word("for"))
        .unwrap_or(rest.len());
    let header = &rest[..query];
    let hold = header
        .windows(2)
        .any(|w| w[0].is_word("with") && w[1].is_word("hold"));
    if hold {
        out.push(name(rest).map_or(Unknown, |n| Create(Resident::Cursor(n.into()))));
    }
    calls(&rest[query..], false, out);
}

/// `SET [SESSION|LOCAL] SESSION AUTHORIZATION role|DEFAULT`, after the SET.
fn session_authorization(rest: &[Token<'_>], out: &mut ResidentEffects) {
    let (local, rest) = match rest {
        [scope, tail @ ..] if scope.is_word("local") => (true, tail),
        [scope, tail @ ..] if scope.is_word("session") && words(tail, &["session"]) => {
            (false, tail)
        }
        _ => (false, rest),
    };
    if local || !words(rest, &["session", "authorization"]) {
        return;
    }
    if rest.get(2).is_some_and(|t| t.is_word("default")) {
        out.push(Release(Resident::SessionAuthorization));
    } else {
        out.push(Create(Resident::SessionAuthorization));
    }
}

/// `DROP TABLE|VIEW|SEQUENCE [IF EXISTS] name [, ...]`, after the DROP.
fn drop_relations(rest: &[Token<'_>], out: &mut ResidentEffects) {
    let relation_object = rest
        .first()
        .is_some_and(|t| t.is_word("table") || t.is_word("view") || t.is_word("sequence"));
    if !relation_object {
        return;
    }
    let mut at = 1;
    if words(&rest[at..], &["if", "exists"]) {
        at += 2;
    }
    while let Some((parts, used)) = qualified(&rest[at..]) {
        out.push(Release(Resident::TempObject(relation(&parts).0)));
        at += used;
        if !rest.get(at).is_some_and(|t| t.is_punct(b',')) {
            break;
        }
        at += 1;
    }
}

/// `EXPLAIN [ANALYZE] [VERBOSE] [(options)] statement`: the statement's effects if ANALYZE runs
/// it, nothing otherwise.
fn explain(rest: &[Token<'_>], out: &mut ResidentEffects) {
    const STATEMENTS: &[&str] = &[
        "select", "with", "values", "table", "insert", "update", "delete", "merge", "create",
        "declare", "execute",
    ];
    let mut depth = crate::classify::tokens::Depth::default();
    let mut analyze = false;
    for (i, t) in rest.iter().enumerate() {
        depth.track(t);
        if t.is_word("analyze") {
            let off = rest
                .get(i + 1)
                .is_some_and(|n| n.is_word("false") || n.is_word("off") || n.text == "0");
            analyze |= !off;
        }
        if depth.top() && STATEMENTS.iter().any(|k| t.is_word(k)) {
            if analyze {
                statement(&rest[i..], out);
            }
            return;
        }
    }
}

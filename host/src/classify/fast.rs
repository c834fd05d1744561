//! A fast path for the most common statement shape, a plain `SELECT`, read from our own lexer's
//! tokens instead of sqlparser's tokenizer, parser and AST (which cost ~90 % of a cold
//! classification, about 50 µs for a 200-byte join).
//!
//! It is a recogniser for a small, explicitly listed subset of `SELECT`, not a SQL parser:
//!
//! ```text
//! SELECT [DISTINCT] item, ...  [FROM table [alias] {join | , table [alias]}]  [WHERE expr]
//!   [GROUP BY expr, ...] [HAVING expr] [ORDER BY expr [ASC|DESC] [NULLS FIRST|LAST], ...]
//!   [LIMIT n [OFFSET n] | LIMIT n, n (MySQL)] [;]
//! join := [INNER | LEFT [OUTER] | RIGHT [OUTER] | FULL [OUTER]] JOIN table [alias] ON expr
//!       | CROSS JOIN table [alias]
//! expr := operand {op operand | IS [NOT] NULL | [NOT] IN (expr, ...)}
//! operand := {NOT | - | +} (literal | $n | ? | column | a.b.c | f(...) | (expr, ...) | INTERVAL ..)
//! ```
//!
//! For a text in that subset the classification is fully determined by the tokens: a read, its
//! tables are the names after FROM/JOIN, its functions are the names before `(` in text order
//! (the order sqlparser's visitor reports them in), `has_limit` is the LIMIT clause, and
//! `has_where` is false (it only describes UPDATE/DELETE). Anything outside the subset, or
//! anything that sqlparser might read differently (keywords with their own grammar such as
//! `CASE`, `CAST`, `CURRENT_TIMESTAMP`, `EXISTS`; multi-character operators; typed or escaped
//! strings; quoted names with escapes; non-ASCII identifiers; subqueries, CTEs, set operations,
//! `FOR UPDATE`, `INTO`; bare aliases that are sqlparser keywords; nesting deeper than
//! `MAX_DEPTH`) returns None and the text takes the full parse. The differential test in
//! `tests/fast.rs` checks that every statement of the dialect tables this path accepts gets
//! exactly the answer of the full parse.

use std::sync::Arc;

use sqlparser::keywords::ALL_KEYWORDS;

use super::functions;
use super::lexer::{Lexer, Token, TokenKind, unquote};
use super::names::{self, push_unique};
use super::resident;
use crate::model::{Classification, Protocol, QueryFlags, ResidentEffects, StatementKind};

/// Texts longer than this are left to the full parse (the fast path is for typical statements).
const MAX_LEN: usize = 4096;

/// Deepest nesting (expressions, parentheses, calls) plus prefix operators (counted for the whole
/// statement: `1 = NOT 1 = NOT 1 ..` nests once per NOT in sqlparser's tree, which a flat reading
/// cannot see) that the fast path follows. Each level costs sqlparser at most one recursion per
/// precedence level (about 7 in this subset), so 8 stays below its limit
/// (`parse::RECURSION_LIMIT`, 48): both paths agree, and our own recursion stays shallow.
const MAX_DEPTH: usize = 8;

/// Words that sqlparser reads with a grammar of their own where an expression starts (its
/// `parse_expr_prefix_by_reserved_word`, typed literals, subqueries): never a plain column or
/// function name here.
const SPECIAL_PREFIX: &[&str] = &[
    "all",
    "any",
    "array",
    "binary",
    "box",
    "case",
    "cast",
    "ceil",
    "char",
    "character",
    "circle",
    "collate",
    "convert",
    "cube",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "datetime",
    "default",
    "distinct",
    "exists",
    "explain",
    "extract",
    "false",
    "floor",
    "from",
    "grouping",
    "json",
    "lambda",
    "lateral",
    "line",
    "localtime",
    "localtimestamp",
    "lseg",
    "map",
    "match",
    "national",
    "not",
    "null",
    "overlay",
    "path",
    "point",
    "polygon",
    "position",
    "prior",
    "rollup",
    "row",
    "safe_cast",
    "select",
    "session_user",
    "some",
    "struct",
    "substr",
    "substring",
    "system_user",
    "table",
    "time",
    "timestamp",
    "trim",
    "true",
    "try_cast",
    "try_convert",
    "unique",
    "unnest",
    "user",
    "values",
    "with",
    "xml",
    // SELECT modifiers (`SELECT TOP n`, MySQL `SELECT SQL_CALC_FOUND_ROWS ..`).
    "top",
    "distinctrow",
    "high_priority",
    "straight_join",
    "sql_small_result",
    "sql_big_result",
    "sql_buffer_result",
    "sql_no_cache",
    "sql_cache",
    "sql_calc_found_rows",
];

/// Words that sqlparser reads specially where a table name is expected.
const SPECIAL_TABLE: &[&str] = &[
    "json_table",
    "lateral",
    "only",
    "openjson",
    "select",
    "semantic_view",
    "table",
    "unnest",
    "values",
    "with",
    "xmltable",
];

/// Interval units accepted after `INTERVAL <literal>`.
const INTERVAL_UNITS: &[&str] = &["second", "minute", "hour", "day", "week", "month", "year"];

/// The classification of `sql` if it is a SELECT in the subset above; None means "parse it".
pub(crate) fn classify(protocol: Protocol, sql: &str, fingerprint: u64) -> Option<Classification> {
    if sql.len() > MAX_LEN {
        return None;
    }
    let mut lexer = Lexer::new(protocol, sql);
    if !lexer.clone().next()?.is_word("select") {
        return None;
    }
    // MySQL executes `/*! ... */` comments as SQL; our lexer skips them.
    if protocol == Protocol::Mysql && sql.contains("/*!") {
        return None;
    }
    let mut tokens = Vec::with_capacity(sql.len() / 4 + 8);
    tokens.extend(&mut lexer);
    // A block comment left open swallows the rest of the text in our lexer but is an error for
    // sqlparser. Only the text after the last token can hold one (anything before a token was
    // closed); accept a single closed comment there.
    let tail = &sql[tokens.last().map_or(0, |t| t.end)..];
    if let Some(open) = tail.find("/*") {
        let body = &tail[open + 2..];
        let closed = body
            .find("*/")
            .is_some_and(|close| !tail[..open].contains("*/") && !body[..close].contains("/*"));
        if !closed || body.matches("/*").count() > 0 || body.matches("*/").count() > 1 {
            return None;
        }
    }
    // MySQL wants whitespace after `--`; at the very end there is none, so sqlparser sees two
    // minus signs where our lexer sees a comment.
    if protocol == Protocol::Mysql && tail.ends_with("--") {
        return None;
    }
    let mut fast = Fast {
        protocol,
        tokens: &tokens,
        pos: 0,
        depth: 0,
        reads: Vec::new(),
        functions: Vec::new(),
        kind: StatementKind::Read,
        volatile: false,
        limited: false,
        resident: ResidentEffects::new(),
    };
    fast.select()?;
    let mut classification = Classification {
        kind: fast.kind,
        flags: QueryFlags {
            has_where: false,
            has_limit: fast.limited,
            volatile: fast.volatile,
            multi_statement: false,
        },
        fingerprint,
        tables_read: Arc::from(fast.reads),
        tables_written: Arc::from(Vec::<String>::new()),
        functions: Arc::from(fast.functions),
        resident: fast.resident,
        statements: Arc::from(Vec::new()),
    };
    classification.statements = super::facts::of_fast(&classification).into();
    Some(classification)
}

struct Fast<'t, 'a> {
    protocol: Protocol,
    tokens: &'t [Token<'a>],
    pos: usize,
    depth: usize,
    reads: Vec<String>,
    functions: Vec<String>,
    kind: StatementKind,
    volatile: bool,
    limited: bool,
    /// Advisory lock calls (a plain SELECT evaluates its calls, so unlocks release).
    resident: ResidentEffects,
}

/// None: the text is outside the subset.
type Step = Option<()>;

impl<'a> Fast<'_, 'a> {
    fn peek(&self, ahead: usize) -> Option<&Token<'a>> {
        self.tokens.get(self.pos + ahead)
    }

    fn at_word(&self, keyword: &str) -> bool {
        self.peek(0).is_some_and(|t| t.is_word(keyword))
    }

    fn at_punct(&self, c: u8) -> bool {
        self.peek(0).is_some_and(|t| t.is_punct(c))
    }

    fn eat_word(&mut self, keyword: &str) -> bool {
        let at = self.at_word(keyword);
        self.pos += usize::from(at);
        at
    }

    fn eat_punct(&mut self, c: u8) -> bool {
        let at = self.at_punct(c);
        self.pos += usize::from(at);
        at
    }

    fn expect_word(&mut self, keyword: &str) -> Step {
        self.eat_word(keyword).then_some(())
    }

    fn expect_punct(&mut self, c: u8) -> Step {
        self.eat_punct(c).then_some(())
    }

    /// One level deeper; None past `MAX_DEPTH`.
    fn enter(&mut self) -> Step {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let token = self.peek(0).copied();
        self.pos += 1;
        token
    }

    fn select(&mut self) -> Step {
        self.expect_word("select")?;
        if self.eat_word("distinct") && self.at_word("on") {
            return None;
        }
        self.comma_list(Self::select_item)?;
        if self.eat_word("from") {
            self.from()?;
        }
        if self.eat_word("where") {
            self.expr()?;
        }
        if self.eat_word("group") {
            self.expect_word("by")?;
            self.comma_list(Self::expr)?;
        }
        if self.eat_word("having") {
            self.expr()?;
        }
        if self.eat_word("order") {
            self.expect_word("by")?;
            self.comma_list(Self::order_item)?;
        }
        if self.eat_word("limit") {
            self.limit()?;
        }
        self.eat_punct(b';');
        (self.pos == self.tokens.len()).then_some(())
    }

    fn comma_list(&mut self, mut item: impl FnMut(&mut Self) -> Step) -> Step {
        loop {
            item(self)?;
            if !self.eat_punct(b',') {
                return Some(());
            }
        }
    }

    fn select_item(&mut self) -> Step {
        if self.eat_punct(b'*') {
            return Some(());
        }
        // `t.*`
        let qualified_wildcard = self.peek(0).is_some_and(|t| plain_word(t).is_some())
            && self.peek(1).is_some_and(|t| t.is_punct(b'.'))
            && self.peek(2).is_some_and(|t| t.is_punct(b'*'));
        if qualified_wildcard {
            self.pos += 3;
            return Some(());
        }
        self.expr()?;
        self.alias()
    }

    /// `[AS] alias`. A bare alias must not be a keyword of sqlparser's (which decides per dialect
    /// and per keyword whether it is an alias), and after AS we want a plain name too.
    fn alias(&mut self) -> Step {
        let explicit = self.eat_word("as");
        match self.peek(0) {
            Some(t) if t.kind == TokenKind::QuotedIdent => {
                quoted_ident(self.protocol, t)?;
                self.pos += 1;
                Some(())
            }
            Some(t) if t.kind == TokenKind::Word => {
                let word = plain_word(t)?;
                if is_keyword(word) {
                    return if explicit { None } else { Some(()) };
                }
                self.pos += 1;
                Some(())
            }
            _ if explicit => None,
            _ => Some(()),
        }
    }

    fn order_item(&mut self) -> Step {
        self.expr()?;
        let _ = self.eat_word("asc") || self.eat_word("desc");
        if self.eat_word("nulls") && !(self.eat_word("first") || self.eat_word("last")) {
            return None;
        }
        Some(())
    }

    fn limit(&mut self) -> Step {
        self.limit_value()?;
        // MySQL `LIMIT offset, count`, or `LIMIT count OFFSET offset`.
        let second =
            (self.protocol == Protocol::Mysql && self.eat_punct(b',')) || self.eat_word("offset");
        if second {
            self.limit_value()?;
        }
        self.limited = true;
        Some(())
    }

    fn limit_value(&mut self) -> Step {
        let token = self.next()?;
        (is_integer(&token) || is_param(self.protocol, &token)).then_some(())
    }

    fn from(&mut self) -> Step {
        loop {
            self.table()?;
            loop {
                if self.eat_word("cross") {
                    self.expect_word("join")?;
                    self.table()?;
                    continue;
                }
                let start = self.pos;
                if self.eat_word("left") || self.eat_word("right") || self.eat_word("full") {
                    self.eat_word("outer");
                } else {
                    self.eat_word("inner");
                }
                if !self.eat_word("join") {
                    // LEFT/RIGHT/FULL/INNER without JOIN is not ours.
                    if self.pos != start {
                        return None;
                    }
                    break;
                }
                self.table()?;
                self.expect_word("on")?;
                self.expr()?;
            }
            if !self.eat_punct(b',') {
                return Some(());
            }
        }
    }

    fn table(&mut self) -> Step {
        let mut name = String::new();
        loop {
            let token = self.next()?;
            let part = match token.kind {
                TokenKind::Word => {
                    let word = plain_word(&token)?;
                    if name.is_empty() && SPECIAL_TABLE.iter().any(|k| token.is_word(k)) {
                        return None;
                    }
                    names::ident(self.protocol, word, false)
                }
                TokenKind::QuotedIdent => {
                    names::ident(self.protocol, quoted_ident(self.protocol, &token)?, true)
                }
                _ => return None,
            };
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(&part);
            if !self.eat_punct(b'.') {
                break;
            }
        }
        // `FROM f(..)` is a table function.
        if self.at_punct(b'(') {
            return None;
        }
        push_unique(&mut self.reads, name);
        self.alias()
    }

    fn expr(&mut self) -> Step {
        self.enter()?;
        self.operand()?;
        loop {
            if self.eat_word("is") {
                self.eat_word("not");
                self.expect_word("null")?;
                continue;
            }
            let negated = self.at_word("not")
                && self
                    .peek(1)
                    .is_some_and(|t| t.is_word("in") || t.is_word("like") || t.is_word("ilike"));
            self.pos += usize::from(negated);
            if self.eat_word("in") {
                self.expect_punct(b'(')?;
                self.comma_list(Self::expr)?;
                self.expect_punct(b')')?;
                continue;
            }
            if self.eat_word("like")
                || (self.protocol == Protocol::Postgres && self.eat_word("ilike"))
                || self.eat_word("and")
                || self.eat_word("or")
                || self.binary_operator()
            {
                self.operand()?;
                continue;
            }
            if negated {
                return None;
            }
            break;
        }
        self.depth -= 1;
        Some(())
    }

    /// One of `= <> != < > <= >= + - * / %`, written without anything glued after it (sqlparser
    /// would read `=-`, `<=>`, `->`, `||`, `::` as other operators).
    fn binary_operator(&mut self) -> bool {
        let Some(first) = self.peek(0).filter(|t| t.kind == TokenKind::Punct) else {
            return false;
        };
        let glued = |a: &Token<'_>, b: Option<&Token<'_>>| {
            b.is_some_and(|b| b.kind == TokenKind::Punct && b.end - b.text.len() == a.end)
        };
        let second = self.peek(1);
        let len = match first.text.as_bytes()[0] {
            b'<' if glued(first, second)
                && second.is_some_and(|s| s.is_punct(b'=') || s.is_punct(b'>')) =>
            {
                2
            }
            b'>' if glued(first, second) && second.is_some_and(|s| s.is_punct(b'=')) => 2,
            b'!' if glued(first, second) && second.is_some_and(|s| s.is_punct(b'=')) => 2,
            b'=' | b'<' | b'>' | b'+' | b'-' | b'*' | b'/' | b'%' => 1,
            _ => return false,
        };
        let last = self.tokens[self.pos + len - 1];
        let after = self.peek(len);
        // Only `(` may follow glued to an operator.
        if glued(&last, after) && !after.is_some_and(|t| t.is_punct(b'(')) {
            return false;
        }
        self.pos += len;
        true
    }

    fn operand(&mut self) -> Step {
        // Prefix operators; each one nests a level in sqlparser's tree, up to the end of the
        // expression, so they are never given back.
        loop {
            let sign = self
                .peek(0)
                .is_some_and(|t| t.is_punct(b'-') || t.is_punct(b'+'));
            if sign {
                let glued_punct = self.peek(1).is_some_and(|n| {
                    n.kind == TokenKind::Punct && n.end - n.text.len() == self.tokens[self.pos].end
                });
                if glued_punct {
                    return None;
                }
            } else if !self.at_word("not") {
                break;
            }
            self.pos += 1;
            self.enter()?;
        }
        self.primary()
    }

    fn primary(&mut self) -> Step {
        let token = self.next()?;
        match token.kind {
            TokenKind::Number => is_number(token.text).then_some(()),
            TokenKind::String => is_plain_string(&token).then_some(()),
            TokenKind::Param => is_param(self.protocol, &token).then_some(()),
            TokenKind::QuotedIdent => {
                quoted_ident(self.protocol, &token)?;
                self.column_rest()
            }
            TokenKind::Word => self.word_operand(token),
            TokenKind::Punct if token.is_punct(b'(') => {
                self.enter()?;
                self.comma_list(Self::expr)?;
                self.expect_punct(b')')?;
                self.depth -= 1;
                Some(())
            }
            TokenKind::Punct => None,
        }
    }

    fn word_operand(&mut self, token: Token<'a>) -> Step {
        let word = plain_word(&token)?;
        if (token.is_word("true") || token.is_word("false") || token.is_word("null"))
            && !self.at_punct(b'(')
            && !self.at_punct(b'.')
        {
            return Some(());
        }
        if token.is_word("interval") {
            return self.interval();
        }
        if SPECIAL_PREFIX.iter().any(|k| token.is_word(k)) {
            return None;
        }
        // A word glued to a string is a typed or introduced literal (`DATE '..'`, `_utf8'..'`).
        if self.peek(0).is_some_and(|t| t.kind == TokenKind::String) {
            return None;
        }
        if self.at_punct(b'.') {
            let mut name = word.to_lowercase();
            while self.eat_punct(b'.') {
                let part = self.next()?;
                match part.kind {
                    TokenKind::Word => {
                        name.push('.');
                        name.push_str(&plain_word(&part)?.to_lowercase());
                    }
                    TokenKind::QuotedIdent => {
                        quoted_ident(self.protocol, &part)?;
                        // A quoted part of a function name: leave it to the parser.
                        if self.at_punct(b'(') || self.at_punct(b'.') {
                            return None;
                        }
                    }
                    _ => return None,
                }
            }
            if self.at_punct(b'(') {
                return self.call(name);
            }
            return Some(());
        }
        if self.at_punct(b'(') {
            return self.call(word.to_lowercase());
        }
        Some(())
    }

    /// After a quoted identifier: `."b"`, `.c` parts of a column name.
    fn column_rest(&mut self) -> Step {
        while self.eat_punct(b'.') {
            let part = self.next()?;
            match part.kind {
                TokenKind::Word => {
                    plain_word(&part)?;
                }
                TokenKind::QuotedIdent => {
                    quoted_ident(self.protocol, &part)?;
                }
                _ => return None,
            }
        }
        (!self.at_punct(b'(') && !self.at_punct(b'.')).then_some(())
    }

    /// `name(` .. `)`: `()`, `(*)`, `([DISTINCT] expr, ...)`.
    fn call(&mut self, name: String) -> Step {
        self.expect_punct(b'(')?;
        self.enter()?;
        let effect = functions::effect(self.protocol, &name);
        self.volatile |= effect.volatile;
        if let Some(kind) = effect.kind {
            self.kind = self.kind.max(kind);
        }
        if let Some(lock) = effect.lock {
            self.resident.extend(resident::lock_effect(lock, true));
        }
        push_unique(&mut self.functions, name);
        if !self.eat_punct(b')') {
            if self.eat_punct(b'*') {
                self.expect_punct(b')')?;
            } else {
                self.eat_word("distinct");
                self.comma_list(Self::expr)?;
                self.expect_punct(b')')?;
            }
        }
        self.depth -= 1;
        // `quantile(0.5)(x)` (ClickHouse parametric aggregates) and the like.
        (!self.at_punct(b'(') && !self.at_punct(b'.')).then_some(())
    }

    /// `INTERVAL <number | 'string'> [unit]`, PostgreSQL and ClickHouse only.
    fn interval(&mut self) -> Step {
        if self.protocol == Protocol::Mysql {
            return None;
        }
        let value = self.next()?;
        let literal = match value.kind {
            TokenKind::Number => is_number(value.text),
            TokenKind::String => is_plain_string(&value),
            _ => false,
        };
        if !literal {
            return None;
        }
        if INTERVAL_UNITS.iter().any(|u| self.at_word(u)) {
            self.pos += 1;
            // `DAY TO HOUR`, `SECOND (3)`: not ours.
            if self.at_word("to") || self.at_punct(b'(') {
                return None;
            }
        }
        Some(())
    }
}

/// An unquoted ASCII identifier (`[A-Za-z_][A-Za-z0-9_]*`); sqlparser's dialects differ on
/// `$`, `@` and non-ASCII letters, so those are left to it.
fn plain_word<'a>(token: &Token<'a>) -> Option<&'a str> {
    let bytes = token.text.as_bytes();
    let ok = token.kind == TokenKind::Word
        && bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    ok.then_some(token.text)
}

/// The name inside a quoted identifier of the dialect's own quoting, when it has no escapes.
fn quoted_ident<'a>(protocol: Protocol, token: &Token<'a>) -> Option<&'a str> {
    let quote = *token.text.as_bytes().first()?;
    let allowed = match protocol {
        Protocol::Postgres => quote == b'"',
        Protocol::Mysql => quote == b'`',
        Protocol::ClickhouseHttp => quote == b'"' || quote == b'`',
    };
    let inner = unquote(token.text);
    let clean = allowed
        && token.text.len() >= 3
        && token.text.as_bytes().last() == Some(&quote)
        && inner
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != quote && b != b'\\');
    clean.then_some(inner)
}

/// `'...'` with `''` as the only escape, terminated, and no backslash (whose meaning varies).
fn is_plain_string(token: &Token<'_>) -> bool {
    let bytes = token.text.as_bytes();
    if bytes.len() < 2 || bytes[0] != b'\'' || bytes[bytes.len() - 1] != b'\'' {
        return false;
    }
    let inner = &bytes[1..bytes.len() - 1];
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'\\' => return false,
            b'\'' if inner.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return false,
            _ => i += 1,
        }
    }
    true
}

/// `123` or `1.5`.
fn is_number(text: &str) -> bool {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

fn is_integer(token: &Token<'_>) -> bool {
    token.kind == TokenKind::Number && token.text.bytes().all(|b| b.is_ascii_digit())
}

/// `$1` (PostgreSQL) or `?` (MySQL).
fn is_param(protocol: Protocol, token: &Token<'_>) -> bool {
    if token.kind != TokenKind::Param {
        return false;
    }
    match protocol {
        Protocol::Postgres => token
            .text
            .strip_prefix('$')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        Protocol::Mysql => token.text == "?",
        Protocol::ClickhouseHttp => false,
    }
}

/// Whether sqlparser knows `word` as a keyword (in any dialect).
fn is_keyword(word: &str) -> bool {
    let mut upper = [0u8; 64];
    let Some(buf) = upper.get_mut(..word.len()) else {
        return false;
    };
    for (out, b) in buf.iter_mut().zip(word.bytes()) {
        *out = b.to_ascii_uppercase();
    }
    let Ok(upper) = std::str::from_utf8(buf) else {
        return true;
    };
    ALL_KEYWORDS.binary_search(&upper).is_ok()
}

//! The statement fingerprint: a hash of the token stream with literals replaced by a placeholder.
//!
//! Two statements get the same fingerprint when they differ only in literal values (strings,
//! numbers, `true`/`false`, bind parameters), in the number of literals in an `IN (...)` list or of
//! literal rows after `VALUES`, in whitespace, in comments, in keyword or unquoted-identifier case,
//! or in a trailing `;`. Quoted identifiers are hashed verbatim (`"users"` and `users` differ).
//! A sign stays an operator outside those lists (`a = -1` and `a = 1` differ), and `NULL` is not
//! a literal (`IS NULL` is structure). ClickHouse `INSERT ... FORMAT X` hashes the header only,
//! never the data.
//!
//! The hash is xxh3-64 with seed 0 over a private byte encoding of the tokens, so a fingerprint is
//! stable across processes and machines for a given Switchyard version (policies may store them).
//! Nothing here allocates: lower-casing goes through a fixed stack buffer.

use xxhash_rust::xxh3::Xxh3;

use super::clickhouse;
use super::lexer::{Lexer, Token, TokenKind};
use crate::model::Protocol;

/// Fingerprint of `sql` as the given protocol's dialect tokenises it.
pub fn fingerprint(protocol: Protocol, sql: &str) -> u64 {
    shape(protocol, sql, None).0
}

/// The fingerprint and, in the same pass, a 128-bit hash of the same token stream under a secret
/// `seed`: the key of the classifier's shape cache. The public fingerprint is a 64-bit hash with
/// a known seed, so collisions could be searched for; an entry keyed by it could be made to
/// answer for another statement (a write classified as a read). The keyed hash cannot be aimed.
pub fn shape_key(protocol: Protocol, sql: &str, seed: u64) -> ShapeKey {
    let mut sink = Sink::new(Some(seed));
    let inline_literals = walk(protocol, sql, &mut sink);
    let (fingerprint, keyed) = sink.finish();
    ShapeKey {
        fingerprint,
        key: keyed.unwrap_or(0),
        inline_literals,
    }
}

/// A statement's shape, as [`shape_key`] computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeKey {
    pub fingerprint: u64,
    /// 128-bit hash of the shape keyed with the caller's seed.
    pub key: u128,
    /// The text carries literal values (not only `$n` parameters): such a text rarely repeats
    /// exactly, its shape does.
    pub inline_literals: bool,
}

fn shape(protocol: Protocol, sql: &str, seed: Option<u64>) -> (u64, Option<u128>) {
    let mut sink = Sink::new(seed);
    walk(protocol, sql, &mut sink);
    sink.finish()
}

/// The statement as its fingerprint sees it, for people: literals are `?`, `IN (...)` and
/// `VALUES` lists are one `(?)`, whitespace and comments are gone. At most `max_len` bytes (cut
/// at a character boundary). What the admin API's digest table shows instead of one client's
/// literals.
pub fn digest_text(protocol: Protocol, sql: &str, max_len: usize) -> String {
    let mut text = TextSink {
        out: String::with_capacity(sql.len().min(max_len)),
        max_len,
        glue: true,
        after_name: false,
    };
    walk(protocol, sql, &mut text);
    text.out
}

/// What the token walk emits: hashed bytes for the fingerprint, text for the digest table.
trait Shape {
    fn word(&mut self, text: &str);
    fn quoted(&mut self, text: &str);
    fn punct(&mut self, b: u8);
    fn placeholder(&mut self);
}

/// Feeds the statement's shape to `sink`; returns whether it had literal values inline.
fn walk(protocol: Protocol, sql: &str, sink: &mut impl Shape) -> bool {
    let text = match protocol {
        Protocol::ClickhouseHttp => clickhouse::insert_format_header(sql).unwrap_or(sql),
        _ => sql,
    };
    let mut lexer = Lexer::new(protocol, text);
    // A `;` only counts when another statement follows it, so `SELECT 1;` == `SELECT 1`.
    let mut pending_semicolon = false;
    let mut inline_literals = false;
    while let Some(token) = lexer.next() {
        if token.is_punct(b';') {
            pending_semicolon = true;
            continue;
        }
        if pending_semicolon {
            sink.punct(b';');
            pending_semicolon = false;
        }
        if token.is_literal() {
            inline_literals |= token.kind != TokenKind::Param;
            sink.placeholder();
            continue;
        }
        match token.kind {
            TokenKind::Word => {
                sink.word(token.text);
                // A collapsed list may hold only parameters; counting it as inline keeps
                // the answer conservative (the text is then not remembered exactly).
                if token.is_word("in") {
                    inline_literals |= collapse_groups(&mut lexer, sink, false);
                } else if token.is_word("values") {
                    inline_literals |= collapse_groups(&mut lexer, sink, true);
                }
            }
            TokenKind::QuotedIdent => sink.quoted(super::lexer::unquote(token.text)),
            _ => sink.punct(token.text.as_bytes().first().copied().unwrap_or(0)),
        }
    }
    inline_literals
}

/// After `IN` or `VALUES`: replaces `(lit, lit, ...)` (and for `VALUES` any following
/// `, (lit, ...)` rows) with a single `(?)`, so list length does not change the fingerprint.
/// Returns whether it collapsed anything.
fn collapse_groups(lexer: &mut Lexer<'_>, sink: &mut impl Shape, rows: bool) -> bool {
    if !skip_literal_group(lexer) {
        return false;
    }
    if rows {
        loop {
            let mut ahead = lexer.clone();
            let comma = ahead.next().is_some_and(|t| t.is_punct(b','));
            if !comma || !skip_literal_group(&mut ahead) {
                break;
            }
            *lexer = ahead;
        }
    }
    sink.punct(b'(');
    sink.placeholder();
    sink.punct(b')');
    true
}

/// Consumes a parenthesised group if it holds only literals (and commas / signs); otherwise leaves
/// `lexer` untouched and returns false.
fn skip_literal_group(lexer: &mut Lexer<'_>) -> bool {
    let mut ahead = lexer.clone();
    if !ahead.next().is_some_and(|t| t.is_punct(b'(')) {
        return false;
    }
    let mut literals = 0usize;
    loop {
        match ahead.next() {
            Some(t) if t.is_punct(b')') => break,
            Some(t) if t.is_literal() || t.is_word("null") => literals += 1,
            Some(t) if is_separator(&t) => {}
            _ => return false,
        }
    }
    if literals == 0 {
        return false;
    }
    *lexer = ahead;
    true
}

fn is_separator(token: &Token<'_>) -> bool {
    token.is_punct(b',') || token.is_punct(b'-') || token.is_punct(b'+')
}

/// Token tags in the hashed byte stream; 0xFF never occurs in UTF-8, so it ends every token and
/// `ab` + `c` cannot hash like `a` + `bc`.
const TAG_WORD: u8 = b'w';
const TAG_QUOTED: u8 = b'q';
const TAG_PUNCT: u8 = b'p';
const TAG_LITERAL: u8 = b'?';
const END: u8 = 0xFF;

/// Buffers the encoded token stream on the stack and feeds the hasher(s) in blocks.
struct Sink {
    hasher: Xxh3,
    keyed: Option<Xxh3>,
    buf: [u8; 256],
    len: usize,
}

impl Sink {
    fn new(seed: Option<u64>) -> Self {
        Sink {
            hasher: Xxh3::new(),
            keyed: seed.map(Xxh3::with_seed),
            buf: [0; 256],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        if self.len == self.buf.len() {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        if let Some(keyed) = self.keyed.as_mut() {
            keyed.update(&self.buf[..self.len]);
        }
        self.len = 0;
    }

    fn finish(mut self) -> (u64, Option<u128>) {
        self.flush();
        (self.hasher.digest(), self.keyed.map(|k| k.digest128()))
    }
}

impl Shape for Sink {
    fn word(&mut self, text: &str) {
        self.byte(TAG_WORD);
        for b in text.bytes() {
            self.byte(b.to_ascii_lowercase());
        }
        self.byte(END);
    }

    fn quoted(&mut self, text: &str) {
        self.byte(TAG_QUOTED);
        for b in text.bytes() {
            self.byte(b);
        }
        self.byte(END);
    }

    fn punct(&mut self, b: u8) {
        self.byte(TAG_PUNCT);
        self.byte(b);
        self.byte(END);
    }

    fn placeholder(&mut self) {
        self.byte(TAG_LITERAL);
        self.byte(END);
    }
}

/// Builds [`digest_text`]: tokens separated by one space, none after `(` or `.` and none before
/// `)`, `,`, `.` or `;`.
struct TextSink {
    out: String,
    max_len: usize,
    /// The next token attaches to the previous one.
    glue: bool,
    /// The previous token was a word that can name a function: a `(` after it attaches
    /// (`count(?)`, but `IN (?)`).
    after_name: bool,
}

/// Words after which `(` opens a list or a subquery, not a call's arguments.
const SPACED_BEFORE_PAREN: &[&str] = &[
    "in",
    "values",
    "as",
    "on",
    "using",
    "exists",
    "from",
    "join",
    "where",
    "and",
    "or",
    "not",
    "select",
    "set",
    "into",
    "table",
    "by",
    "with",
    "any",
    "all",
    "some",
    "over",
    "filter",
    "then",
    "else",
    "when",
    "returning",
    "lateral",
];

impl TextSink {
    fn push(&mut self, text: &str, attach: bool) {
        let space = !(self.glue || attach) as usize;
        if self.out.len() + space + text.len() > self.max_len {
            let mut end = self.max_len.saturating_sub(self.out.len() + space);
            while end > 0 && !text.is_char_boundary(end) {
                end -= 1;
            }
            if end > 0 {
                if space == 1 {
                    self.out.push(' ');
                }
                self.out.push_str(&text[..end]);
            }
            self.max_len = self.out.len();
            return;
        }
        if space == 1 {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.glue = false;
    }
}

impl Shape for TextSink {
    fn word(&mut self, text: &str) {
        self.push(text, false);
        self.after_name = !SPACED_BEFORE_PAREN
            .iter()
            .any(|k| k.eq_ignore_ascii_case(text));
    }

    fn quoted(&mut self, text: &str) {
        let quoted = format!("\"{text}\"");
        self.push(&quoted, false);
        self.after_name = true;
    }

    fn punct(&mut self, b: u8) {
        let c = char::from(b);
        let mut buf = [0u8; 4];
        let attach = matches!(b, b')' | b',' | b'.' | b';') || (b == b'(' && self.after_name);
        self.push(c.encode_utf8(&mut buf), attach);
        self.glue = matches!(b, b'(' | b'.');
        self.after_name = false;
    }

    fn placeholder(&mut self) {
        self.push("?", false);
        self.after_name = false;
    }
}

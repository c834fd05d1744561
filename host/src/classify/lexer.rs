//! A small, allocation-free SQL lexer over the raw text.
//!
//! It is not a parser and does not try to be one: it only knows where tokens start and end, which is
//! all the fingerprint and the keyword fallback need. Because it never builds strings it is safe to
//! run on every query, including texts sqlparser rejects and multi-megabyte `INSERT`s.
//!
//! Token boundaries always fall on ASCII bytes (every byte >= 0x80 is treated as part of a word), so
//! slicing the `&str` at them is always valid UTF-8.

use crate::model::Protocol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A keyword or an unquoted identifier (also MySQL `@var` / `@@sys.var`).
    Word,
    /// `"ident"` (PostgreSQL, ClickHouse) or `` `ident` `` (MySQL, ClickHouse); `text` keeps the quotes.
    QuotedIdent,
    /// Any string literal: `'..'`, `E'..'`, `X'..'`, `$tag$..$tag$`, MySQL `".."`.
    String,
    Number,
    /// `$1`, `?` (MySQL), `{name:Type}` (ClickHouse).
    Param,
    /// One byte of punctuation or operator.
    Punct,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub kind: TokenKind,
    /// The exact source text of the token, quotes included.
    pub text: &'a str,
    /// Byte offset of the token's end in the source.
    pub end: usize,
}

impl Token<'_> {
    /// A keyword test that ignores case and never allocates.
    pub fn is_word(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == TokenKind::Punct && self.text.as_bytes().first() == Some(&c)
    }

    /// A literal value whose exact spelling does not change the statement's shape.
    pub fn is_literal(&self) -> bool {
        match self.kind {
            TokenKind::String | TokenKind::Number | TokenKind::Param => true,
            TokenKind::Word => self.is_word("true") || self.is_word("false"),
            _ => false,
        }
    }
}

/// An iterator of tokens; `Clone` is a cheap copy, which is how callers look ahead.
#[derive(Debug, Clone)]
pub(crate) struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    protocol: Protocol,
}

impl<'a> Lexer<'a> {
    pub fn new(protocol: Protocol, text: &'a str) -> Self {
        Lexer {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            protocol,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn token(&self, kind: TokenKind, start: usize) -> Token<'a> {
        Token {
            kind,
            text: self.text.get(start..self.pos).unwrap_or(""),
            end: self.pos,
        }
    }

    /// Skips whitespace and comments; returns false at the end of the text.
    fn skip_trivia(&mut self) -> bool {
        while let Some(b) = self.peek(0) {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'-' if self.peek(1) == Some(b'-') && self.dash_comment() => self.skip_line(),
                b'#' if self.protocol != Protocol::Postgres => self.skip_line(),
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                _ => return true,
            }
        }
        false
    }

    /// MySQL needs whitespace after `--` (`1--1` is arithmetic there); the others do not.
    fn dash_comment(&self) -> bool {
        self.protocol != Protocol::Mysql
            || self
                .peek(2)
                .is_none_or(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// PostgreSQL nests block comments; MySQL and ClickHouse end at the first `*/`. An unterminated
    /// comment runs to the end of the text, as the servers treat it (as an error, which is theirs).
    fn skip_block_comment(&mut self) {
        let nests = self.protocol == Protocol::Postgres;
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            if self.peek(0) == Some(b'/') && self.peek(1) == Some(b'*') {
                depth += 1;
                self.pos += 2;
                if !nests && depth > 1 {
                    depth = 1;
                }
            } else if self.peek(0) == Some(b'*') && self.peek(1) == Some(b'/') {
                depth = depth.saturating_sub(1);
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    /// Consumes a quoted run from the opening quote at `pos`; a doubled quote is an escaped quote,
    /// and with `backslash` a backslash escapes the next byte.
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            if backslash && b == b'\\' {
                self.pos += 2;
            } else if b == quote {
                if self.peek(1) == Some(quote) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.pos.min(self.bytes.len());
    }

    /// `$1` parameter or `$tag$ ... $tag$` dollar quote (PostgreSQL). Returns None if `$` starts
    /// neither, in which case it is punctuation.
    fn dollar(&mut self, start: usize) -> Option<Token<'a>> {
        if self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            return Some(self.token(TokenKind::Param, start));
        }
        let mut tag_end = self.pos + 1;
        // A tag is an identifier without `$`; `$$` is the empty tag.
        while self
            .bytes
            .get(tag_end)
            .copied()
            .is_some_and(|b| is_word_start(b) || b.is_ascii_digit())
        {
            tag_end += 1;
        }
        // The cap keeps a hostile `$<huge tag>$` from making the close search quadratic.
        if self.bytes.get(tag_end) != Some(&b'$') || tag_end - self.pos > MAX_TAG {
            return None;
        }
        let tag = &self.bytes[self.pos..=tag_end];
        let body = tag_end + 1;
        let close = find(&self.bytes[body..], tag).map(|i| body + i + tag.len());
        self.pos = close.unwrap_or(self.bytes.len());
        Some(self.token(TokenKind::String, start))
    }

    fn number(&mut self, start: usize) -> Token<'a> {
        let radix_prefix = self.peek(0) == Some(b'0')
            && matches!(self.peek(1), Some(b'x' | b'X' | b'b' | b'B' | b'o' | b'O'));
        if radix_prefix {
            self.pos += 2;
            while self
                .peek(0)
                .is_some_and(|b| b.is_ascii_hexdigit() || b == b'_')
            {
                self.pos += 1;
            }
        } else {
            self.digits();
            if self.peek(0) == Some(b'.') {
                self.pos += 1;
                self.digits();
            }
            let exponent = matches!(self.peek(0), Some(b'e' | b'E'))
                && (self.peek(1).is_some_and(|b| b.is_ascii_digit())
                    || (matches!(self.peek(1), Some(b'+' | b'-'))
                        && self.peek(2).is_some_and(|b| b.is_ascii_digit())));
            if exponent {
                self.pos += 2;
                self.digits();
            }
        }
        // MySQL allows identifiers that start with digits (`1abc`); a number glued to letters is a word.
        if self.peek(0).is_some_and(is_word_byte) {
            while self.peek(0).is_some_and(is_word_byte) {
                self.pos += 1;
            }
            return self.token(TokenKind::Word, start);
        }
        self.token(TokenKind::Number, start)
    }

    fn digits(&mut self) {
        while self
            .peek(0)
            .is_some_and(|b| b.is_ascii_digit() || b == b'_')
        {
            self.pos += 1;
        }
    }

    fn word(&mut self, start: usize) -> Token<'a> {
        while self.peek(0).is_some_and(is_word_byte) {
            self.pos += 1;
        }
        // Prefixed strings: E'..' (escapes), B'..', X'..', N'..', U&'..'.
        if self.peek(0) == Some(b'\'') && self.pos - start == 1 {
            let prefix = self.bytes[start].to_ascii_lowercase();
            if matches!(prefix, b'e' | b'b' | b'x' | b'n') {
                let backslash = prefix == b'e' || self.protocol != Protocol::Postgres;
                self.skip_quoted(b'\'', backslash);
                return self.token(TokenKind::String, start);
            }
        }
        self.token(TokenKind::Word, start)
    }

    /// ClickHouse query parameter `{name:Type}`.
    fn brace_param(&mut self, start: usize) -> Option<Token<'a>> {
        // Bounded look-ahead: `{{{{...` without a close must stay linear.
        let window = &self.bytes[self.pos..self.bytes.len().min(self.pos + MAX_TAG)];
        let close = window.iter().position(|&b| b == b'}')?;
        let inner = &self.bytes[self.pos + 1..self.pos + close];
        if !inner.contains(&b':') || inner.contains(&b'{') {
            return None;
        }
        self.pos += close + 1;
        Some(self.token(TokenKind::Param, start))
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_trivia() {
            return None;
        }
        let start = self.pos;
        let b = self.peek(0)?;
        let protocol = self.protocol;
        let token = match b {
            b'\'' => {
                self.skip_quoted(b'\'', protocol != Protocol::Postgres);
                self.token(TokenKind::String, start)
            }
            // MySQL's default sql_mode reads "..." as a string, not an identifier.
            b'"' if protocol == Protocol::Mysql => {
                self.skip_quoted(b'"', true);
                self.token(TokenKind::String, start)
            }
            b'"' => {
                self.skip_quoted(b'"', protocol == Protocol::ClickhouseHttp);
                self.token(TokenKind::QuotedIdent, start)
            }
            b'`' if protocol != Protocol::Postgres => {
                self.skip_quoted(b'`', protocol == Protocol::ClickhouseHttp);
                self.token(TokenKind::QuotedIdent, start)
            }
            b'$' if protocol == Protocol::Postgres => match self.dollar(start) {
                Some(token) => token,
                None => self.punct(start),
            },
            b'?' if protocol == Protocol::Mysql => {
                self.pos += 1;
                self.token(TokenKind::Param, start)
            }
            b'{' if protocol == Protocol::ClickhouseHttp => match self.brace_param(start) {
                Some(token) => token,
                None => self.punct(start),
            },
            b'@' if protocol == Protocol::Mysql => {
                while self.peek(0) == Some(b'@') {
                    self.pos += 1;
                }
                self.word(start)
            }
            b'0'..=b'9' => self.number(start),
            b'.' if self.peek(1).is_some_and(|b| b.is_ascii_digit()) => self.number(start),
            b if is_word_start(b) => self.word(start),
            _ => self.punct(start),
        };
        Some(token)
    }
}

impl<'a> Lexer<'a> {
    fn punct(&mut self, start: usize) -> Token<'a> {
        self.pos += 1;
        self.token(TokenKind::Punct, start)
    }
}

/// Longest dollar-quote tag or `{name:Type}` parameter we recognise.
const MAX_TAG: usize = 64;

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The raw identifier inside a quoted-identifier token, without its quotes.
pub(crate) fn unquote(text: &str) -> &str {
    let inner = text.get(1..text.len().saturating_sub(1));
    match inner {
        Some(inner) if text.len() >= 2 => inner,
        _ => text,
    }
}

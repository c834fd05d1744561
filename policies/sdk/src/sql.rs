//! A tiny SQL lexer, for policies that rewrite SQL: [`append_limit`] must know where a
//! statement's last token ends (before a trailing `;` or comment, or a ClickHouse `FORMAT`
//! clause). It understands comments, string literals, quoted identifiers and PostgreSQL dollar
//! quoting well enough never to mistake their contents for SQL; it does not parse.
//!
//! It is not for judging statements: a policy decides on the host's facts
//! ([`crate::Query::statements`]), which come from a real parser. Everything here is linear in
//! the length of the text.

use crate::Protocol;

/// The lexical rules that differ between the wire protocols' SQL dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// Backslash escapes the next character inside quotes (ClickHouse, MySQL). In PostgreSQL it
    /// only does in `E'...'` strings.
    pub backslash_escapes: bool,
    /// `$tag$ ... $tag$` strings and `$1` parameters (PostgreSQL).
    pub dollar_quotes: bool,
    /// `/* ... */` comments nest (PostgreSQL).
    pub nested_comments: bool,
    /// `#` starts a comment to the end of the line (ClickHouse, MySQL).
    pub hash_comments: bool,
    /// `/*! ... */` is executable code, not a comment (MySQL).
    pub executable_comments: bool,
    /// Trailing `SETTINGS k = v` and `FORMAT name` clauses follow `LIMIT` (ClickHouse).
    pub clickhouse_tail: bool,
}

impl Dialect {
    pub const POSTGRES: Dialect = Dialect {
        backslash_escapes: false,
        dollar_quotes: true,
        nested_comments: true,
        hash_comments: false,
        executable_comments: false,
        clickhouse_tail: false,
    };
    pub const CLICKHOUSE: Dialect = Dialect {
        backslash_escapes: true,
        dollar_quotes: false,
        nested_comments: false,
        hash_comments: true,
        executable_comments: false,
        clickhouse_tail: true,
    };
    pub const MYSQL: Dialect = Dialect {
        backslash_escapes: true,
        dollar_quotes: false,
        nested_comments: false,
        hash_comments: true,
        executable_comments: true,
        clickhouse_tail: false,
    };

    /// The dialect of a wire protocol.
    pub fn of(protocol: Protocol) -> Dialect {
        match protocol {
            Protocol::Postgres => Dialect::POSTGRES,
            Protocol::ClickhouseHttp => Dialect::CLICKHOUSE,
            Protocol::Mysql => Dialect::MYSQL,
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A keyword or unquoted identifier (`SELECT`, `orders`, `a$b`).
    Word,
    /// `"name"` or `` `name` ``.
    QuotedIdent,
    /// A string literal (`'x'`, `E'x'`, `$$x$$`).
    String,
    /// A number or a `$1` parameter.
    Number,
    /// Any other single character (`(`, `)`, `;`, `=`, `*`, ...).
    Punct,
}

/// One token of a SQL text. Comments and whitespace are not tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    /// The token's text, a slice of the input.
    pub text: &'a str,
    /// Byte offsets of the token in the input.
    pub start: usize,
    pub end: usize,
    /// Parenthesis nesting depth: 0 at the top level (a `(` and its `)` are at the outer depth).
    pub depth: u32,
}

impl Token<'_> {
    /// True for a [`TokenKind::Word`] equal to `keyword`, ignoring ASCII case.
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    /// True for the punctuation character `c`.
    pub fn is_punct(&self, c: char) -> bool {
        self.kind == TokenKind::Punct && self.text.len() == c.len_utf8() && self.text.starts_with(c)
    }
}

/// The tokens of `sql`, in order.
pub fn tokens(sql: &str, dialect: Dialect) -> Tokens<'_> {
    Tokens {
        sql,
        pos: 0,
        depth: 0,
        dialect,
    }
}

/// Iterator returned by [`tokens`].
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
    depth: u32,
    dialect: Dialect,
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8, dialect: Dialect) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || (b == b'$' && dialect.dollar_quotes)
}

impl<'a> Tokens<'a> {
    /// Skips whitespace and comments; returns false at the end of the input.
    fn skip_trivia(&mut self) -> bool {
        let b = self.sql.as_bytes();
        loop {
            let Some(&c) = b.get(self.pos) else {
                return false;
            };
            let next = b.get(self.pos + 1).copied();
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else if (c == b'-' && next == Some(b'-')) || (c == b'#' && self.dialect.hash_comments)
            {
                self.pos = match b[self.pos..].iter().position(|&x| x == b'\n') {
                    Some(n) => self.pos + n + 1,
                    None => b.len(),
                };
            } else if c == b'/' && next == Some(b'*') {
                if self.dialect.executable_comments && b.get(self.pos + 2) == Some(&b'!') {
                    // MySQL runs the contents of `/*!NNNNN ... */`: lex them as SQL.
                    self.pos += 3;
                    while b.get(self.pos).is_some_and(u8::is_ascii_digit) {
                        self.pos += 1;
                    }
                    continue;
                }
                self.pos = self.block_comment_end(self.pos + 2);
            } else if c == b'*' && next == Some(b'/') && self.dialect.executable_comments {
                // The end of a `/*! ... */` section.
                self.pos += 2;
            } else {
                return true;
            }
        }
    }

    /// The offset just past the `*/` closing a comment whose body starts at `from`.
    fn block_comment_end(&self, from: usize) -> usize {
        let b = self.sql.as_bytes();
        let mut i = from;
        let mut level = 1u32;
        while i < b.len() {
            if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                level -= 1;
                i += 2;
                if level == 0 {
                    return i;
                }
            } else if self.dialect.nested_comments && b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                level += 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        b.len()
    }

    /// The offset just past a quoted run opened by `quote` at `open`.
    fn quoted_end(&self, open: usize, quote: u8, backslash: bool) -> usize {
        let b = self.sql.as_bytes();
        let mut i = open + 1;
        while i < b.len() {
            if backslash && b[i] == b'\\' {
                i += 2;
            } else if b[i] == quote {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        b.len()
    }

    /// At a `$` in PostgreSQL: the end of a `$tag$...$tag$` string, if one starts here.
    fn dollar_string_end(&self, open: usize) -> Option<usize> {
        let b = self.sql.as_bytes();
        let mut i = open + 1;
        if b.get(i).is_some_and(|&c| is_word_start(c)) {
            while b
                .get(i)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
            {
                i += 1;
            }
        }
        if b.get(i) != Some(&b'$') {
            return None;
        }
        let tag = &self.sql[open..=i];
        let body = i + 1;
        Some(match self.sql[body..].find(tag) {
            Some(n) => body + n + tag.len(),
            None => b.len(),
        })
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_trivia() {
            return None;
        }
        let b = self.sql.as_bytes();
        let start = self.pos;
        let c = b[start];
        let mut depth = self.depth;
        let (kind, end) = match c {
            b'\'' => (
                TokenKind::String,
                self.quoted_end(start, b'\'', self.dialect.backslash_escapes),
            ),
            b'"' | b'`' => (
                TokenKind::QuotedIdent,
                self.quoted_end(start, c, self.dialect.backslash_escapes),
            ),
            b'$' if self.dialect.dollar_quotes => {
                if b.get(start + 1).is_some_and(u8::is_ascii_digit) {
                    let mut i = start + 1;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    (TokenKind::Number, i)
                } else if let Some(end) = self.dollar_string_end(start) {
                    (TokenKind::String, end)
                } else {
                    (TokenKind::Punct, start + 1)
                }
            }
            _ if is_word_start(c) => {
                // PostgreSQL `E'...'`: a string with backslash escapes.
                if (c == b'e' || c == b'E') && b.get(start + 1) == Some(&b'\'') {
                    (TokenKind::String, self.quoted_end(start + 1, b'\'', true))
                } else {
                    let mut i = start + 1;
                    while b.get(i).is_some_and(|&x| is_word_byte(x, self.dialect)) {
                        i += 1;
                    }
                    (TokenKind::Word, i)
                }
            }
            _ if c.is_ascii_digit()
                || (c == b'.' && b.get(start + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let mut i = start + 1;
                while b
                    .get(i)
                    .is_some_and(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.')
                {
                    i += 1;
                }
                (TokenKind::Number, i)
            }
            b'(' => {
                self.depth += 1;
                (TokenKind::Punct, start + 1)
            }
            b')' => {
                self.depth = self.depth.saturating_sub(1);
                depth = self.depth;
                (TokenKind::Punct, start + 1)
            }
            // Only ASCII reaches here (bytes >= 0x80 start words), so one byte is one char.
            _ => (TokenKind::Punct, start + 1),
        };
        self.pos = end;
        Some(Token {
            kind,
            text: &self.sql[start..end],
            start,
            end,
            depth,
        })
    }
}

/// `sql` (one SELECT) with `LIMIT n` added: after its last token, dropping trailing `;` and
/// comments — or, in ClickHouse, before a trailing `SETTINGS k = v ...` / `FORMAT name` clause,
/// which must follow the LIMIT. `None` when the text is empty or holds more than one statement.
pub fn append_limit(sql: &str, n: u64, dialect: Dialect) -> Option<String> {
    let toks: Vec<Token<'_>> = tokens(sql, dialect).collect();
    let last = toks.iter().rposition(|t| !t.is_punct(';'))?;
    if toks[..last].iter().any(|t| t.is_punct(';')) {
        return None;
    }
    let end = toks[last].end;
    let mut insert_at = end;
    if dialect.clickhouse_tail {
        let ident = |t: &Token<'_>| matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent);
        if last >= 1
            && toks[last - 1].depth == 0
            && toks[last - 1].is_keyword("FORMAT")
            && ident(&toks[last])
        {
            insert_at = toks[last - 1].start;
        }
        if let Some(i) = (1..last.saturating_sub(1)).find(|&i| {
            toks[i].depth == 0
                && toks[i].is_keyword("SETTINGS")
                && ident(&toks[i + 1])
                && toks[i + 2].is_punct('=')
        }) {
            insert_at = insert_at.min(toks[i].start);
        }
    }
    let head = sql[..insert_at].trim_end();
    let tail = &sql[insert_at..end];
    Some(if tail.is_empty() {
        format!("{head} LIMIT {n}")
    } else {
        format!("{head} LIMIT {n} {tail}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: Dialect = Dialect::POSTGRES;
    const CH: Dialect = Dialect::CLICKHOUSE;
    const MY: Dialect = Dialect::MYSQL;

    /// The statements of a text, split at every `;` outside quotes and comments, without the
    /// empty ones: how the tests see where the lexer puts statement boundaries.
    fn statements(sql: &str, dialect: Dialect) -> Vec<&str> {
        let mut out = Vec::new();
        let mut current: Option<(usize, usize)> = None;
        for t in tokens(sql, dialect) {
            if t.is_punct(';') {
                out.extend(current.take().map(|(s, e)| &sql[s..e]));
            } else {
                current = Some((current.map_or(t.start, |(s, _)| s), t.end));
            }
        }
        out.extend(current.map(|(s, e)| &sql[s..e]));
        out
    }

    fn words(sql: &str, d: Dialect) -> Vec<&str> {
        tokens(sql, d)
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| t.text)
            .collect()
    }

    #[test]
    fn comments_strings_and_quotes_hide_their_contents() {
        let sql = "-- DROP x\nSELECT /* DROP /* nested */ still */ 'a;''DROP' AS \"DROP;\" FROM t";
        assert_eq!(words(sql, PG), vec!["SELECT", "AS", "FROM", "t"]);
        assert_eq!(statements(sql, PG).len(), 1);
        // In ClickHouse comments do not nest: " still */" is code.
        assert_eq!(words("/* a /* b */ c */", CH), vec!["c"]);
        assert_eq!(words("# DROP\nSELECT 1", CH), vec!["SELECT"]);
        assert_eq!(words("SELECT 1 # x", PG), vec!["SELECT", "x"]);
    }

    #[test]
    fn backslashes_follow_the_dialect() {
        // PostgreSQL: a backslash is an ordinary character in '...'.
        assert_eq!(statements(r"SELECT 'a\'; DROP TABLE t", PG).len(), 2);
        // ... but escapes in E'...'.
        assert_eq!(statements(r"SELECT E'a\'; DROP TABLE t'", PG).len(), 1);
        // ClickHouse and MySQL: always escapes.
        assert_eq!(statements(r"SELECT 'a\'; DROP TABLE t'", CH).len(), 1);
    }

    #[test]
    fn dollar_quotes() {
        let sql = "SELECT $fn$ ; DROP TABLE t; $fn$, $1, a$b FROM t; DROP TABLE u";
        let s = statements(sql, PG);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1], "DROP TABLE u");
        assert_eq!(words("SELECT $$ DROP $$", PG), vec!["SELECT"]);
    }

    #[test]
    fn mysql_executable_comments_are_code() {
        assert_eq!(
            words("/*!50000 DROP TABLE t */", MY),
            vec!["DROP", "TABLE", "t"]
        );
        assert!(words("/*!50000 DROP TABLE t */", PG).is_empty());
    }

    #[test]
    fn limit_is_appended_after_the_last_token() {
        assert_eq!(
            append_limit("SELECT * FROM t", 10, PG).unwrap(),
            "SELECT * FROM t LIMIT 10"
        );
        assert_eq!(
            append_limit("SELECT * FROM t ;  -- trailing\n", 10, PG).unwrap(),
            "SELECT * FROM t LIMIT 10"
        );
        assert_eq!(
            append_limit("SELECT * FROM t -- no limit here", 5, PG).unwrap(),
            "SELECT * FROM t LIMIT 5"
        );
        assert_eq!(append_limit("SELECT 1; SELECT 2", 5, PG), None);
        assert_eq!(append_limit("  ", 5, PG), None);
    }

    #[test]
    fn clickhouse_limit_goes_before_settings_and_format() {
        assert_eq!(
            append_limit("SELECT * FROM t FORMAT JSONEachRow", 7, CH).unwrap(),
            "SELECT * FROM t LIMIT 7 FORMAT JSONEachRow"
        );
        assert_eq!(
            append_limit(
                "SELECT * FROM t SETTINGS max_threads = 2 FORMAT TSV;",
                7,
                CH
            )
            .unwrap(),
            "SELECT * FROM t LIMIT 7 SETTINGS max_threads = 2 FORMAT TSV"
        );
        // A column named `format` is not a FORMAT clause.
        assert_eq!(
            append_limit("SELECT format, settings FROM t", 7, CH).unwrap(),
            "SELECT format, settings FROM t LIMIT 7"
        );
        // Only ClickHouse has these clauses.
        assert_eq!(
            append_limit("SELECT * FROM t FORMAT x", 7, PG).unwrap(),
            "SELECT * FROM t FORMAT x LIMIT 7"
        );
    }

    #[test]
    fn unterminated_things_run_to_the_end() {
        assert_eq!(statements("SELECT 'abc; DROP", PG).len(), 1);
        assert_eq!(statements("SELECT /* abc; DROP", PG), vec!["SELECT"]);
        assert_eq!(statements("SELECT $x$ abc; DROP", PG).len(), 1);
        assert_eq!(statements("SELECT \"abc; DROP", PG).len(), 1);
    }

    #[test]
    fn depth_tracking() {
        let d: Vec<u32> = tokens("a (b (c) d) e", PG).map(|t| t.depth).collect();
        // a ( b ( c ) d ) e
        assert_eq!(d, vec![0, 0, 1, 1, 2, 1, 1, 0, 0]);
        // Unbalanced closing parentheses do not underflow.
        assert!(tokens(")) a", PG).all(|t| t.depth == 0));
    }
}

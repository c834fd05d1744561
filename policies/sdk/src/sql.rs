//! A tiny SQL lexer for the few facts a policy needs beyond the host's classification: where
//! the statements of a text start and end, their first keyword, whether a top-level keyword
//! occurs. It understands comments, string literals, quoted identifiers and PostgreSQL dollar
//! quoting well enough never to mistake their contents for SQL; it does not parse.
//!
//! Everything here is linear in the length of the text and allocates at most a `Vec` of
//! statement slices.

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

/// The statements of a text, split at every `;` outside quotes and comments, each trimmed to
/// its first and last token (comments around it dropped). Empty statements are skipped:
/// `"SELECT 1; -- x\n ;DROP TABLE t;"` → `["SELECT 1", "DROP TABLE t"]`.
pub fn statements(sql: &str, dialect: Dialect) -> Vec<&str> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for t in tokens(sql, dialect) {
        if t.is_punct(';') {
            if let Some((s, e)) = current.take() {
                out.push(&sql[s..e]);
            }
        } else {
            current = Some((current.map_or(t.start, |(s, _)| s), t.end));
        }
    }
    if let Some((s, e)) = current {
        out.push(&sql[s..e]);
    }
    out
}

/// The first keyword of a statement, skipping comments and opening parentheses:
/// `"/* hi */ (SELECT 1)"` → `Some("SELECT")` (as written; compare ignoring case).
/// `None` when the statement is empty or starts with something else.
pub fn first_keyword(sql: &str, dialect: Dialect) -> Option<&str> {
    tokens(sql, dialect)
        .find(|t| !t.is_punct('('))
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| t.text)
}

/// True when `keyword` occurs as a word at the top level (outside parentheses, quotes and
/// comments) of `sql`: `has_top_level_keyword("DELETE FROM t WHERE id = 1", "WHERE")`.
pub fn has_top_level_keyword(sql: &str, keyword: &str, dialect: Dialect) -> bool {
    tokens(sql, dialect).any(|t| t.depth == 0 && t.is_keyword(keyword))
}

/// The first UPDATE or DELETE in one statement that has no WHERE clause, as written
/// (`Some("DELETE")`), or `None`.
///
/// It looks at every UPDATE/DELETE that starts a statement or a sub-statement: at the start,
/// after `(` (`WITH d AS (DELETE FROM t RETURNING *) ...`), after `)` (`WITH x AS (...) UPDATE
/// ...`) and after `EXPLAIN [ANALYZE] [VERBOSE]`. Inside an `EXPLAIN` without `ANALYZE` (which
/// does not run the statement) nothing counts. Such an UPDATE/DELETE "has a WHERE" when the
/// keyword `WHERE` occurs at its own parenthesis depth before its scope ends (a closing
/// parenthesis of the enclosing level or a `;`); a WHERE inside a subquery does not count.
/// Other uses of the words (`FOR UPDATE`, `ON DELETE CASCADE`, `DO UPDATE SET`, `GRANT
/// UPDATE`, ClickHouse `ALTER TABLE t DELETE WHERE`) are ignored.
pub fn update_or_delete_without_where(stmt: &str, dialect: Dialect) -> Option<&str> {
    // Fast path: most statements contain neither word.
    if !mentions_update_or_delete(stmt) {
        return None;
    }
    let toks: Vec<Token<'_>> = tokens(stmt, dialect).collect();
    let is_analyze = |t: &Token<'_>| t.is_keyword("ANALYZE") || t.is_keyword("ANALYSE");
    let explain = toks
        .iter()
        .find(|t| !t.is_punct('('))
        .is_some_and(|t| t.is_keyword("EXPLAIN"));
    let analyze_at = toks.iter().position(is_analyze);
    for (i, t) in toks.iter().enumerate() {
        if !(t.is_keyword("UPDATE") || t.is_keyword("DELETE")) {
            continue;
        }
        let starts_statement = match i.checked_sub(1).map(|j| &toks[j]) {
            None => true,
            Some(p) => {
                p.is_punct('(')
                    || p.is_punct(')')
                    || is_analyze(p)
                    || p.is_keyword("VERBOSE")
                    || p.is_keyword("EXPLAIN")
            }
        };
        if !starts_statement || (explain && analyze_at.is_none_or(|a| a > i)) {
            continue;
        }
        let has_where = toks[i + 1..]
            .iter()
            .take_while(|x| x.depth >= t.depth && !x.is_punct(';'))
            .any(|x| x.depth == t.depth && x.is_keyword("WHERE"));
        if !has_where {
            return Some(t.text);
        }
    }
    None
}

/// `UPDATE` or `DELETE` occurs anywhere in `text`, ignoring ASCII case (inside strings,
/// comments and longer words too: this is only the filter in front of the lexer).
///
/// It runs for every statement guard sees, most of which contain neither word, and a plain
/// scan comparing at every byte cost about 1 µs per 170-byte statement in Wasm. So it skips
/// ahead like Boyer–Moore–Horspool: it looks at the last byte of a six-byte window, compares
/// the window only when that byte is an `e` (both words end in one), and otherwise moves the
/// window as far as that byte allows — past it entirely when neither word contains it.
fn mentions_update_or_delete(text: &str) -> bool {
    const WORDS: [&[u8; 6]; 2] = [b"update", b"delete"];
    /// How far the window may move when its last byte is `c` (lower-cased): until the
    /// rightmost `c` among the first five letters of either word lines up with it.
    fn shift(c: u8) -> usize {
        match c {
            b't' => 1,        // upda_t_e, dele_t_e
            b'e' | b'a' => 2, // del_e_te, upd_a_te
            b'l' | b'd' => 3, // de_l_ete, up_d_ate
            b'p' => 4,
            b'u' => 5,
            _ => 6,
        }
    }
    let b = text.as_bytes();
    let mut last = 5; // index of the window's last byte
    while let Some(c) = b.get(last) {
        let c = c.to_ascii_lowercase();
        if c == b'e' {
            let window = &b[last - 5..=last];
            if WORDS.iter().any(|w| window.eq_ignore_ascii_case(*w)) {
                return true;
            }
        }
        last += shift(c);
    }
    false
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
        assert_eq!(first_keyword("/*!50000 DROP TABLE t */", MY), Some("DROP"));
        assert_eq!(first_keyword("/*!50000 DROP TABLE t */", PG), None);
    }

    #[test]
    fn splitting_and_first_keywords() {
        let s = statements("  SELECT 1; -- x\n ;delete from t;  ", PG);
        assert_eq!(s, vec!["SELECT 1", "delete from t"]);
        assert_eq!(
            first_keyword("  /* c */ -- d\n (( select 1))", PG),
            Some("select")
        );
        assert_eq!(first_keyword("", PG), None);
        assert_eq!(first_keyword("-- only a comment", PG), None);
        assert_eq!(first_keyword("'str'", PG), None);
        assert!(statements(" ; -- nothing", PG).is_empty());
    }

    #[test]
    fn top_level_keywords() {
        assert!(has_top_level_keyword(
            "DELETE FROM t WHERE a = 1",
            "where",
            PG
        ));
        assert!(!has_top_level_keyword(
            "UPDATE t SET a = (SELECT b FROM u WHERE u.id = 1)",
            "WHERE",
            PG
        ));
        assert!(!has_top_level_keyword(
            "DELETE FROM t -- WHERE a = 1",
            "WHERE",
            PG
        ));
    }

    #[test]
    fn updates_and_deletes_without_where() {
        let f = |s| update_or_delete_without_where(s, PG);
        assert_eq!(f("DELETE FROM t"), Some("DELETE"));
        assert_eq!(f("update t set a = 1 returning *"), Some("update"));
        assert_eq!(f("DELETE FROM t WHERE id = 1"), None);
        assert_eq!(
            f("UPDATE t SET a = (SELECT b FROM u WHERE u.id = t.id)"),
            Some("UPDATE")
        );
        assert_eq!(
            f("UPDATE t SET a = 1 FROM (SELECT 1) s WHERE s.x = t.x"),
            None
        );
        // Writable CTEs, in either position.
        assert_eq!(
            f("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            Some("DELETE")
        );
        assert_eq!(
            f("WITH d AS (DELETE FROM t WHERE a RETURNING *) SELECT * FROM d"),
            None
        );
        assert_eq!(f("WITH x AS (SELECT 1) UPDATE t SET a = 1"), Some("UPDATE"));
        assert_eq!(f("WITH x AS (SELECT 1) UPDATE t SET a = 1 WHERE b"), None);
        // EXPLAIN runs the statement only with ANALYZE.
        assert_eq!(f("EXPLAIN ANALYZE DELETE FROM t"), Some("DELETE"));
        assert_eq!(
            f("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t"),
            Some("DELETE")
        );
        assert_eq!(f("EXPLAIN ANALYZE VERBOSE DELETE FROM t WHERE a"), None);
        assert_eq!(f("EXPLAIN DELETE FROM t"), None);
        assert_eq!(f("EXPLAIN (COSTS off) UPDATE t SET a = 1"), None);
        // Other uses of the words.
        assert_eq!(f("SELECT * FROM t FOR UPDATE"), None);
        assert_eq!(
            f("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2"),
            None
        );
        assert_eq!(
            f("CREATE TABLE t (a int REFERENCES u (id) ON DELETE CASCADE)"),
            None
        );
        assert_eq!(f("GRANT UPDATE, DELETE ON t TO bob"), None);
        assert_eq!(
            update_or_delete_without_where("ALTER TABLE t DELETE WHERE 1", CH),
            None
        );
        assert_eq!(f("SELECT 'DELETE FROM t' -- DELETE FROM t"), None);
    }

    #[test]
    fn update_or_delete_filter_finds_every_occurrence() {
        let f = mentions_update_or_delete;
        assert!(f("UPDATE t SET a = 1"));
        assert!(f("x UpDaTe"));
        assert!(f("with d as (delete from t) select 1"));
        assert!(f("SELECT * FROM t FOR UPDATE"));
        assert!(f("deletedelete"));
        assert!(!f("SELECT upd_ted_at, delet FROM t"));
        assert!(!f("updat"));
        assert!(!f(""));
        assert!(!f("ö üpdate"));
        // Against a plain scan, over texts made of the words' letters (where skipping ahead
        // would go wrong if it did): every position, every overlap.
        let naive = |s: &str| {
            ["update", "delete"].iter().any(|w| {
                s.as_bytes()
                    .windows(6)
                    .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
            })
        };
        let pieces = [
            "up", "UPD", "date", "ate", "de", "DEL", "lete", "ete", "e", "t", "l", "x", " ",
        ];
        let (mut seed, mut found) = (0x2545_f491_4f6c_dd1du64, 0);
        for len in 0..16 {
            for _ in 0..500 {
                let text: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        pieces[(seed % pieces.len() as u64) as usize]
                    })
                    .collect();
                assert_eq!(f(&text), naive(&text), "{text:?}");
                found += usize::from(naive(&text));
            }
        }
        assert!(
            found > 100,
            "the generated texts hold too few matches ({found})"
        );
        for w in ["update", "delete"] {
            for pad in 0..8 {
                let text = format!("{}{w}{}", "d".repeat(pad), "e".repeat(pad));
                assert!(f(&text), "{text:?}");
            }
        }
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

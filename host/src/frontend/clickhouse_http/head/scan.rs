//! Finds where the statement of an `INSERT` ends and its data begins, on possibly truncated text:
//! a small lexer that knows ClickHouse's quotes and comments, nothing more.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `INSERT ... FORMAT <name>`: raw data follows.
    Format,
    /// `INSERT ... VALUES`: tuples follow.
    Values,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub kind: HeadKind,
    /// Byte offset just after `FORMAT <name>` or `VALUES`.
    pub end: usize,
}

/// For a text starting with `INSERT`, the end of its statement head; `None` for anything else,
/// for `INSERT ... SELECT`, and when the head is not complete in `text`.
pub fn insert_head(text: &str) -> Option<Head> {
    let bytes = text.as_bytes();
    let mut i = skip_trivia(bytes, 0)?;
    let (word, end) = word_at(bytes, i)?;
    if !word.eq_ignore_ascii_case("insert") {
        return None;
    }
    i = end;
    let mut depth = 0usize;
    loop {
        i = skip_trivia(bytes, i)?;
        let c = bytes[i];
        match c {
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i)?,
            _ if is_word_byte(c) => {
                let (word, end) = word_at(bytes, i)?;
                if depth == 0 {
                    if word.eq_ignore_ascii_case("select") || word.eq_ignore_ascii_case("with") {
                        return None;
                    }
                    if word.eq_ignore_ascii_case("values") {
                        return Some(Head {
                            kind: HeadKind::Values,
                            end,
                        });
                    }
                    if word.eq_ignore_ascii_case("format") {
                        let name_at = skip_trivia(bytes, end)?;
                        let (_, name_end) = word_at(bytes, name_at)?;
                        // The name must be complete: followed by something, or by the end of
                        // a text that is all there is.
                        return Some(Head {
                            kind: HeadKind::Format,
                            end: name_end,
                        });
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn word_at(bytes: &[u8], start: usize) -> Option<(&str, usize)> {
    let mut end = start;
    while end < bytes.len() && is_word_byte(bytes[end]) {
        end += 1;
    }
    if end == start {
        return None;
    }
    let word = std::str::from_utf8(&bytes[start..end]).ok()?;
    Some((word, end))
}

/// Skips whitespace and comments; `None` at the end of the text.
fn skip_trivia(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let c = *bytes.get(i)?;
        if c.is_ascii_whitespace() {
            i += 1;
        } else if bytes[i..].starts_with(b"--") || c == b'#' {
            while *bytes.get(i)? != b'\n' {
                i += 1;
            }
        } else if bytes[i..].starts_with(b"/*") {
            let close = bytes[i + 2..].windows(2).position(|w| w == b"*/")?;
            i += 2 + close + 2;
        } else {
            return Some(i);
        }
    }
}

/// Skips a quoted string or identifier starting at `i` (backslash escapes and doubled quotes).
fn skip_quoted(bytes: &[u8], i: usize) -> Option<usize> {
    let quote = bytes[i];
    let mut j = i + 1;
    loop {
        let c = *bytes.get(j)?;
        if c == b'\\' {
            j += 2;
        } else if c == quote {
            if bytes.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return Some(j + 1);
            }
        } else {
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Option<(HeadKind, &str)> {
        insert_head(text).map(|h| (h.kind, &text[..h.end]))
    }

    #[test]
    fn finds_the_head_of_inserts_with_data() {
        assert_eq!(
            head("INSERT INTO t FORMAT CSV\n1,2\n"),
            Some((HeadKind::Format, "INSERT INTO t FORMAT CSV"))
        );
        assert_eq!(
            head("/* c */ insert into db.t (a, `b c`) format TabSeparated 1\t2"),
            Some((
                HeadKind::Format,
                "/* c */ insert into db.t (a, `b c`) format TabSeparated"
            ))
        );
        assert_eq!(
            head("INSERT INTO t VALUES (1, 'FORMAT x')"),
            Some((HeadKind::Values, "INSERT INTO t VALUES"))
        );
        assert_eq!(
            head("INSERT INTO t SETTINGS a = 'format' FORMAT JSONEachRow {\"a\":1}"),
            Some((
                HeadKind::Format,
                "INSERT INTO t SETTINGS a = 'format' FORMAT JSONEachRow"
            ))
        );
    }

    #[test]
    fn other_statements_and_incomplete_heads_have_none() {
        assert_eq!(head("SELECT 1 FORMAT CSV"), None);
        assert_eq!(head("INSERT INTO t SELECT * FROM s FORMAT CSV"), None);
        assert_eq!(head("INSERT INTO t FORMAT"), None);
        assert_eq!(head("INSERT INTO t (a, b"), None);
        assert_eq!(head("INSERT INTO 't FORMAT CSV"), None);
        assert_eq!(head(""), None);
    }
}

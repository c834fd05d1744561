//! `ROW_COUNT()` and `FOUND_ROWS()` answer for the statement that ran last on the server
//! connection. In transaction mode that may be another client's statement, or one of the proxy's
//! own (the settings it replays, the GTID it reads after a write), so the proxy keeps each
//! client's values and, when the connection's last statement is not the client's, writes them
//! into the statement as literals. A call that is a whole select-list item keeps its column name
//! (`SELECT ROW_COUNT()` still names its column `ROW_COUNT()`); inside an expression the literal
//! is parenthesised, and the expression's unaliased column name shows the value instead. Only
//! the first statement of a multi-statement text is concerned: the later ones run after it on
//! the same connection.

use super::lexer::{Lexer, Token, TokenKind};
use crate::model::Protocol;

/// What the client's last statement left behind, as the server would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastCounts {
    /// `ROW_COUNT()`: affected rows of an OK, -1 after a result set or an error.
    pub row_count: i64,
    /// `FOUND_ROWS()`: rows of the last result set; `None` after `SQL_CALC_FOUND_ROWS`, whose
    /// count only the server knows (and which pins the client to it).
    pub found_rows: Option<u64>,
}

impl Default for LastCounts {
    fn default() -> Self {
        LastCounts {
            row_count: -1,
            found_rows: Some(0),
        }
    }
}

/// Words after which a select-list item ends.
const ITEM_END: &[&str] = &[
    "from",
    "into",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "union",
    "except",
    "intersect",
    "for",
    "lock",
    "procedure",
];

/// Words that may stand between `SELECT` and the first item.
const SELECT_MODIFIERS: &[&str] = &[
    "select",
    "all",
    "distinct",
    "distinctrow",
    "high_priority",
    "straight_join",
    "sql_small_result",
    "sql_big_result",
    "sql_buffer_result",
    "sql_cache",
    "sql_no_cache",
];

/// `sql` with every `ROW_COUNT()` / `FOUND_ROWS()` call replaced by `counts`, or `None` when
/// there is none to replace (or `FOUND_ROWS()` is called and only the server knows it).
pub fn substitute_last_counts(sql: &str, counts: LastCounts) -> Option<String> {
    let tokens: Vec<Token<'_>> = Lexer::new(Protocol::Mysql, sql).collect();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0;
    let mut depth = 0usize;
    // Paren depths at which a select list is open.
    let mut select_lists: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
            while select_lists.last().is_some_and(|d| *d > depth) {
                select_lists.pop();
            }
        } else if t.is_punct(b';') {
            // Later statements of the same text follow the first one on the same connection:
            // their calls are the server's to answer.
            break;
        } else if t.is_word("select") {
            select_lists.push(depth);
        } else if select_lists.last() == Some(&depth) && ITEM_END.iter().any(|w| t.is_word(w)) {
            select_lists.pop();
        }
        let call = (t.is_word("row_count") || t.is_word("found_rows"))
            && tokens.get(i + 1).is_some_and(|n| n.is_punct(b'('))
            && tokens.get(i + 2).is_some_and(|n| n.is_punct(b')'));
        if !call {
            i += 1;
            continue;
        }
        let value = if t.is_word("row_count") {
            counts.row_count.to_string()
        } else {
            counts.found_rows?.to_string()
        };
        let start = t.end - t.text.len();
        let end = tokens[i + 2].end;
        let before = i.checked_sub(1).map(|p| tokens[p]);
        let after = tokens.get(i + 3);
        let whole_item = select_lists.last() == Some(&depth)
            && before.is_some_and(|p| {
                p.is_punct(b',')
                    || (p.kind == TokenKind::Word && SELECT_MODIFIERS.iter().any(|w| p.is_word(w)))
            })
            && after.is_none_or(|n| {
                n.is_punct(b',')
                    || n.is_punct(b';')
                    || (n.is_punct(b')') && depth > 0)
                    || ITEM_END.iter().any(|w| n.is_word(w))
            });
        out.push_str(&sql[copied..start]);
        if whole_item {
            // The column is named after the call as the client spelt it.
            out.push_str(&value);
            out.push_str(" AS `");
            out.push_str(&sql[start..end].replace('`', "``"));
            out.push('`');
        } else {
            out.push('(');
            out.push_str(&value);
            out.push(')');
        }
        copied = end;
        i += 3;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// Whether `tokens[i]` starts a `ROW_COUNT()` or `FOUND_ROWS()` call.
pub(super) fn calls_last_counts(tokens: &[Token<'_>], i: usize) -> bool {
    (tokens[i].is_word("row_count") || tokens[i].is_word("found_rows"))
        && tokens.get(i + 1).is_some_and(|n| n.is_punct(b'('))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(sql: &str) -> Option<String> {
        substitute_last_counts(
            sql,
            LastCounts {
                row_count: 3,
                found_rows: Some(7),
            },
        )
    }

    #[test]
    fn a_whole_select_item_keeps_its_column_name() {
        assert_eq!(
            sub("SELECT ROW_COUNT()").as_deref(),
            Some("SELECT 3 AS `ROW_COUNT()`")
        );
        assert_eq!(
            sub("select row_count( ), FOUND_ROWS() FROM dual").as_deref(),
            Some("select 3 AS `row_count( )`, 7 AS `FOUND_ROWS()` FROM dual")
        );
        assert_eq!(
            sub("SELECT SQL_NO_CACHE ROW_COUNT();").as_deref(),
            Some("SELECT SQL_NO_CACHE 3 AS `ROW_COUNT()`;")
        );
        assert_eq!(
            sub("SELECT (SELECT ROW_COUNT())").as_deref(),
            Some("SELECT (SELECT 3 AS `ROW_COUNT()`)")
        );
    }

    #[test]
    fn elsewhere_the_value_is_parenthesised() {
        assert_eq!(
            sub("SELECT ROW_COUNT() AS n").as_deref(),
            Some("SELECT (3) AS n")
        );
        assert_eq!(
            sub("SELECT ROW_COUNT() + 1").as_deref(),
            Some("SELECT (3) + 1")
        );
        assert_eq!(
            sub("INSERT INTO log VALUES (1, ROW_COUNT(), 2)").as_deref(),
            Some("INSERT INTO log VALUES (1, (3), 2)")
        );
        assert_eq!(
            sub("SELECT x FROM t WHERE y = ROW_COUNT()").as_deref(),
            Some("SELECT x FROM t WHERE y = (3)")
        );
        assert_eq!(
            sub("SELECT GREATEST(1, ROW_COUNT())").as_deref(),
            Some("SELECT GREATEST(1, (3))")
        );
    }

    #[test]
    fn only_the_first_statement_of_a_text_is_answered_by_the_proxy() {
        assert_eq!(
            sub("SELECT ROW_COUNT(); INSERT INTO t VALUES (1); SELECT ROW_COUNT()").as_deref(),
            Some("SELECT 3 AS `ROW_COUNT()`; INSERT INTO t VALUES (1); SELECT ROW_COUNT()")
        );
        assert_eq!(sub("INSERT INTO t VALUES (1); SELECT ROW_COUNT()"), None);
    }

    #[test]
    fn strings_comments_and_other_words_are_left_alone() {
        assert_eq!(sub("SELECT 'ROW_COUNT()' /* FOUND_ROWS() */"), None);
        assert_eq!(sub("SELECT row_count FROM t"), None);
        assert_eq!(
            substitute_last_counts(
                "SELECT FOUND_ROWS()",
                LastCounts {
                    row_count: -1,
                    found_rows: None
                }
            ),
            None
        );
    }
}

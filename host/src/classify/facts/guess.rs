//! Objects of a statement the parser could not read, guessed from its tokens: every name after
//! FROM, JOIN, INTO, UPDATE or TABLE (and ONLY after those). A policy is told they are guesses;
//! it can still deny a table it sees, but it must not allow because it sees none.

use super::super::lexer::Token;
use super::super::tokens::{is_clause_keyword, qualified_name};
use crate::model::{Access, ObjectKind, ObjectRef, Protocol};

/// The guessed objects of one statement's tokens.
pub(crate) fn objects(protocol: Protocol, tokens: &[Token<'_>]) -> Vec<ObjectRef> {
    let mut out: Vec<ObjectRef> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (access, kind, list) = if token.is_word("from") {
            (Access::Read, ObjectKind::Relation, true)
        } else if token.is_word("join") {
            (Access::Read, ObjectKind::Relation, false)
        } else if token.is_word("into") || token.is_word("update") {
            (Access::Write, ObjectKind::Relation, false)
        } else if token.is_word("table") {
            (Access::Define, ObjectKind::Table, false)
        } else {
            continue;
        };
        let mut at = i + 1;
        loop {
            // `FROM ONLY t`, `FROM LATERAL`, `TABLE IF EXISTS t`, `INTO TABLE t`.
            while tokens.get(at).is_some_and(|t| {
                ["only", "lateral", "if", "not", "exists", "table"]
                    .iter()
                    .any(|w| t.is_word(w))
            }) {
                at += 1;
            }
            if let Some((name, used)) = qualified_name(protocol, &tokens[at.min(tokens.len())..])
                // A name followed by `(` is a function call, not a table.
                && !tokens.get(at + used).is_some_and(|t| t.is_punct(b'('))
            {
                push(&mut out, name, kind, access);
            }
            // A FROM list goes on after each comma at its own depth.
            if !list {
                break;
            }
            match next_item(tokens, at) {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    out
}

/// The token after the next comma of the FROM list item starting at `at`, if the list goes on.
fn next_item(tokens: &[Token<'_>], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(at) {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            if depth == 0 {
                return None;
            }
            depth -= 1;
        } else if depth == 0 {
            if t.is_punct(b',') {
                return Some(j + 1);
            }
            if t.is_punct(b';') || is_clause_keyword(t) && !t.is_word("on") {
                return None;
            }
        }
    }
    None
}

fn push(out: &mut Vec<ObjectRef>, name: String, kind: ObjectKind, access: Access) {
    let (schema, name) = match name.rsplit_once('.') {
        Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
        None => (None, name),
    };
    let object = ObjectRef {
        kind,
        schema,
        name,
        access,
        guessed: true,
    };
    if !out.contains(&object) {
        out.push(object);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::lexer::Lexer;
    use super::*;

    fn guess(sql: &str) -> Vec<(String, Access)> {
        let tokens: Vec<Token<'_>> = Lexer::new(Protocol::Postgres, sql).collect();
        objects(Protocol::Postgres, &tokens)
            .into_iter()
            .map(|o| {
                let name = match o.schema {
                    Some(s) => format!("{s}.{}", o.name),
                    None => o.name,
                };
                (name, o.access)
            })
            .collect()
    }

    #[test]
    fn names_after_the_keywords_that_introduce_tables() {
        // What sqlparser cannot read: the table after the comma is still found (with a false
        // positive, `rows`, which a guess may have).
        assert_eq!(
            guess("SELECT s.* FROM ROWS FROM (generate_series(1,1)) g, secrets s"),
            vec![
                ("rows".to_owned(), Access::Read),
                ("secrets".to_owned(), Access::Read)
            ]
        );
        assert_eq!(
            guess("select * from app.Secrets join \"Keys\" k on true"),
            vec![
                ("app.secrets".to_owned(), Access::Read),
                ("Keys".to_owned(), Access::Read)
            ]
        );
        assert_eq!(
            guess("WITH x AS (DELETE FROM victim RETURNING *) INSERT INTO log SELECT * FROM x"),
            vec![
                ("victim".to_owned(), Access::Read),
                ("log".to_owned(), Access::Write),
                ("x".to_owned(), Access::Read)
            ]
        );
    }
}

//! Command names as PostgreSQL's command tags spell them (`DROP TABLE`, `CREATE FUNCTION`), read
//! from a statement's leading keywords, so that parsed and unparsed statements are named alike.

use sqlparser::ast::{SetExpr, Statement};

use super::super::lexer::{Lexer, TokenKind};
use crate::model::{ObjectKind, Protocol};

/// Words between CREATE and the object type that do not change what is created.
const CREATE_MODIFIERS: &[&str] = &[
    "or",
    "replace",
    "temp",
    "temporary",
    "unlogged",
    "unique",
    "global",
    "local",
    "recursive",
    "trusted",
    "procedural",
    "constraint",
    "default",
    "if",
    "not",
    "exists",
    "secure",
    "external",
];

/// Object types named by two or three words.
const LONG_TYPES: &[&[&str]] = &[
    &["materialized", "view"],
    &["foreign", "table"],
    &["foreign", "data", "wrapper"],
    &["event", "trigger"],
    &["access", "method"],
    &["operator", "class"],
    &["operator", "family"],
    &["user", "mapping"],
    &["text", "search", "configuration"],
    &["text", "search", "dictionary"],
    &["text", "search", "parser"],
    &["text", "search", "template"],
    &["row", "level", "security"],
];

/// Commands named by their first two words.
const TWO_WORD_COMMANDS: &[(&str, &str)] = &[
    ("start", "transaction"),
    ("lock", "table"),
    ("discard", "all"),
    ("discard", "temp"),
    ("discard", "plans"),
    ("discard", "sequences"),
    ("deallocate", "all"),
    ("security", "label"),
    ("import", "foreign"),
    ("reassign", "owned"),
    ("refresh", "materialized"),
    ("kill", "query"),
    ("kill", "mutation"),
    ("optimize", "table"),
    ("check", "table"),
    ("exchange", "tables"),
    ("rename", "table"),
    ("rename", "database"),
];

/// The command of a parsed statement: its AST for the data-changing statements (whose text may
/// start with `WITH` or a parenthesis), its leading keywords otherwise (`text`, or the
/// statement printed back when its own text is not at hand).
pub(crate) fn of_statement(
    protocol: Protocol,
    statement: &Statement,
    text: Option<&str>,
) -> String {
    match statement {
        Statement::Query(query) => match query.body.as_ref() {
            SetExpr::Insert(_) => "INSERT".into(),
            SetExpr::Update(_) => "UPDATE".into(),
            SetExpr::Delete(_) => "DELETE".into(),
            SetExpr::Merge(_) => "MERGE".into(),
            _ => "SELECT".into(),
        },
        Statement::Insert(_) => "INSERT".into(),
        Statement::Update(_) => "UPDATE".into(),
        Statement::Delete(_) => "DELETE".into(),
        Statement::Merge(_) => "MERGE".into(),
        _ => match text {
            Some(text) => of_text(protocol, text),
            None => of_text(protocol, &statement.to_string()),
        },
    }
}

/// The command named by the leading keywords of `text`.
pub(crate) fn of_text(protocol: Protocol, text: &str) -> String {
    let words: Vec<String> = Lexer::new(protocol, text)
        .take_while(|t| t.kind == TokenKind::Word)
        .take(10)
        .map(|t| t.text.to_ascii_lowercase())
        .collect();
    let Some(first) = words.first() else {
        return String::new();
    };
    let tag = match first.as_str() {
        "create" | "drop" | "alter" => {
            let rest = &words[1..];
            let skip = if first == "create" {
                rest.iter()
                    .take_while(|w| CREATE_MODIFIERS.contains(&w.as_str()))
                    .count()
            } else {
                0
            };
            let rest = &rest[skip..];
            match object_type_words(rest) {
                0 => first.clone(),
                n => format!("{first} {}", rest[..n].join(" ")),
            }
        }
        "truncate" => "truncate table".into(),
        "begin" | "end" | "abort" => match first.as_str() {
            "end" => "commit".into(),
            "abort" => "rollback".into(),
            _ => "begin".into(),
        },
        "values" | "table" => "select".into(),
        "refresh" => "refresh materialized view".into(),
        "import" => "import foreign schema".into(),
        "lock" => "lock table".into(),
        _ => match words.get(1) {
            Some(second)
                if TWO_WORD_COMMANDS
                    .iter()
                    .any(|(a, b)| a == first && b == second) =>
            {
                format!("{first} {second}")
            }
            _ => first.clone(),
        },
    };
    tag.to_ascii_uppercase()
}

/// How many of `words` name an object type (0: none known).
fn object_type_words(words: &[String]) -> usize {
    for long in LONG_TYPES {
        if words.len() >= long.len() && words.iter().zip(long.iter()).all(|(w, l)| w == l) {
            return long.len();
        }
    }
    usize::from(!words.is_empty())
}

/// The kind of object a DDL command is about (`DROP VIEW` → view).
pub(crate) fn defined_kind(command: &str) -> ObjectKind {
    let ty = command
        .split_once(' ')
        .map_or("", |(_, rest)| rest)
        .to_ascii_lowercase();
    match ty.as_str() {
        "table" | "foreign table" | "truncate table" => ObjectKind::Table,
        "view" => ObjectKind::View,
        "materialized view" => ObjectKind::MaterializedView,
        "sequence" => ObjectKind::Sequence,
        "index" => ObjectKind::Index,
        "function" | "aggregate" => ObjectKind::Function,
        "procedure" | "routine" => ObjectKind::Procedure,
        "schema" => ObjectKind::Schema,
        "database" => ObjectKind::Database,
        "role" | "user" | "group" => ObjectKind::Role,
        "type" | "domain" => ObjectKind::Type,
        "trigger" | "event trigger" => ObjectKind::Trigger,
        "rule" => ObjectKind::Rule,
        "extension" => ObjectKind::Extension,
        _ if command.eq_ignore_ascii_case("truncate table") => ObjectKind::Table,
        _ => ObjectKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_as_postgres_tags_them() {
        let pg = Protocol::Postgres;
        for (sql, tag) in [
            ("drop table victim", "DROP TABLE"),
            ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE VIEW"),
            ("create unique index i on t (a)", "CREATE INDEX"),
            (
                "CREATE MATERIALIZED VIEW m AS SELECT 1",
                "CREATE MATERIALIZED VIEW",
            ),
            (
                "create or replace function f() returns int",
                "CREATE FUNCTION",
            ),
            ("CREATE CONSTRAINT TRIGGER t AFTER INSERT", "CREATE TRIGGER"),
            ("truncate victim", "TRUNCATE TABLE"),
            ("TRUNCATE TABLE victim", "TRUNCATE TABLE"),
            ("do $$ begin end $$", "DO"),
            ("start transaction", "START TRANSACTION"),
            ("discard all", "DISCARD ALL"),
            ("comment on table t is 'x'", "COMMENT"),
            ("alter table t add column c int", "ALTER TABLE"),
            ("values (1)", "SELECT"),
            (
                "refresh materialized view concurrently m",
                "REFRESH MATERIALIZED VIEW",
            ),
            ("lock t", "LOCK TABLE"),
            ("", ""),
            ("/* only a comment */", ""),
        ] {
            assert_eq!(of_text(pg, sql), tag, "{sql}");
        }
        assert_eq!(defined_kind("DROP TABLE"), ObjectKind::Table);
        assert_eq!(defined_kind("CREATE FUNCTION"), ObjectKind::Function);
        assert_eq!(defined_kind("TRUNCATE TABLE"), ObjectKind::Table);
        assert_eq!(defined_kind("GRANT"), ObjectKind::Other);
    }
}

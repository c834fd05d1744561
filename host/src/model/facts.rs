//! What the parser found in each statement of a text (`Classification::statements`): the facts a
//! policy judges instead of re-reading SQL.

use super::StatementKind;

/// What kind of object a statement names (see `wit/policy.wit`, `object-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    /// A table or view used for its rows: the parser cannot tell which.
    Relation,
    Table,
    View,
    MaterializedView,
    Sequence,
    Index,
    Function,
    Procedure,
    Schema,
    Database,
    Role,
    Type,
    Trigger,
    Rule,
    Extension,
    Other,
}

/// How a statement uses an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    Write,
    Define,
    Call,
}

/// One object a statement names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    pub schema: Option<String>,
    pub name: String,
    pub access: Access,
    /// Found by scanning the tokens of a statement that did not parse.
    pub guessed: bool,
}

/// What the parser found in one statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatementFacts {
    /// The command as PostgreSQL's command tags name it (`DROP TABLE`); empty for an empty
    /// statement.
    pub command: String,
    pub kind: StatementKind,
    pub parsed: bool,
    /// Runs now (not inside EXPLAIN without ANALYZE, nor inside PREPARE ... AS).
    pub runs: bool,
    /// 0 for a statement of the text, its depth + 1 for a statement inside one.
    pub depth: u32,
    pub objects: Vec<ObjectRef>,
    pub has_where: bool,
    pub has_limit: bool,
}

impl StatementFacts {
    /// An empty statement (`;;`): it does nothing.
    pub fn empty() -> StatementFacts {
        StatementFacts {
            command: String::new(),
            kind: StatementKind::Read,
            parsed: true,
            runs: true,
            depth: 0,
            objects: Vec::new(),
            has_where: false,
            has_limit: false,
        }
    }

    /// Adds `object` unless the statement names it already with the same access.
    pub fn add(&mut self, object: ObjectRef) {
        if !self.objects.contains(&object) {
            self.objects.push(object);
        }
    }
}

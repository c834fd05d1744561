//! Helpers on the per-statement facts ([`Statement`], [`ObjectRef`]) and on the list of them a
//! [`Query`] carries: what a policy judges instead of the SQL text.
//!
//! The host splits the text into statements, parses each one and lists the statements nested in
//! it (what `EXPLAIN`, `PREPARE ... AS` and writable CTEs contain) right after it, one level
//! deeper. A policy that looks at every statement it gets cannot be fooled by a leading `;`, a
//! comment or quoting: the host's parser has already read through those.

use crate::query::matches_reversed;
use crate::{Access, ObjectKind, ObjectRef, Query, Statement, StatementKind};

impl Query {
    /// Every statement that runs, now or later: all of [`Query::statements`] except those inside
    /// an `EXPLAIN` without `ANALYZE` (which never run). The body of `PREPARE name AS ...` is
    /// included although it does not run now (`runs` is false): it runs at every `EXECUTE name`,
    /// whose text names only the prepared statement, so it must be judged here.
    pub fn statements_that_run(&self) -> impl Iterator<Item = &Statement> {
        let mut dormant_below: Option<u32> = None;
        let mut parents: Vec<&Statement> = Vec::new();
        self.statements.iter().filter(move |s| {
            // Leaving the EXPLAIN whose contents were skipped.
            if dormant_below.is_some_and(|d| s.depth <= d) {
                dormant_below = None;
            }
            parents.truncate(s.depth as usize);
            let parent = s.depth.checked_sub(1).and_then(|d| parents.get(d as usize));
            let explained = !s.runs && parent.is_some_and(|p| p.is("EXPLAIN"));
            if explained && dormant_below.is_none() {
                dormant_below = parent.map(|p| p.depth);
            }
            parents.push(s);
            dormant_below.is_none()
        })
    }

    /// The statements the host could not parse (their objects are guesses).
    pub fn unparsed_statements(&self) -> impl Iterator<Item = &Statement> {
        self.statements.iter().filter(|s| !s.parsed)
    }

    /// Adds a statement to [`Query::statements`] (for tests; build it with [`Statement::new`]).
    pub fn with_statement(mut self, statement: Statement) -> Query {
        self.statements.push(statement);
        self
    }
}

/// True when `command` (a statement's, e.g. `DROP TABLE`) matches `pattern` from a
/// configuration: equal ignoring ASCII case and surrounding whitespace, or, when the pattern
/// ends in ` *`, starting with the pattern's words (`DROP *` matches `DROP TABLE` and `DROP
/// FUNCTION`, not `DROPX`); `*` alone matches every non-empty command.
pub fn command_matches(command: &str, pattern: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return !command.is_empty();
    }
    match pattern.strip_suffix('*').map(str::trim_end) {
        Some(prefix) => {
            command
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
                && command.as_bytes().get(prefix.len()) == Some(&b' ')
        }
        None => command.eq_ignore_ascii_case(pattern),
    }
}

impl Statement {
    /// A parsed statement that runs now, at depth 0, naming nothing (for tests; chain the
    /// `with_*` methods).
    pub fn new(command: impl Into<String>, kind: StatementKind) -> Statement {
        Statement {
            command: command.into(),
            kind,
            parsed: true,
            runs: true,
            depth: 0,
            objects: Vec::new(),
            has_where: false,
            has_limit: false,
        }
    }
    /// An empty statement (a leading or doubled `;`).
    pub fn empty() -> Statement {
        Statement::new("", StatementKind::Read)
    }
    /// Marks it unparsed: its command and objects come from its tokens (mark the objects
    /// [`ObjectRef::guessed`] too).
    pub fn unparsed(mut self) -> Statement {
        self.parsed = false;
        self.kind = StatementKind::Unknown;
        self
    }
    /// Marks it as not running now (inside `EXPLAIN` without `ANALYZE` or `PREPARE ... AS`).
    pub fn not_running(mut self) -> Statement {
        self.runs = false;
        self
    }
    pub fn at_depth(mut self, depth: u32) -> Statement {
        self.depth = depth;
        self
    }
    pub fn with_object(mut self, object: ObjectRef) -> Statement {
        self.objects.push(object);
        self
    }
    pub fn with_where(mut self) -> Statement {
        self.has_where = true;
        self
    }
    pub fn with_limit(mut self) -> Statement {
        self.has_limit = true;
        self
    }

    /// Its command is `command`, ignoring ASCII case (`s.is("DROP TABLE")`).
    pub fn is(&self, command: &str) -> bool {
        self.command.eq_ignore_ascii_case(command)
    }
    /// Its command matches `pattern` (see [`command_matches`]: `DROP *`).
    pub fn command_matches(&self, pattern: &str) -> bool {
        command_matches(&self.command, pattern)
    }
    /// An empty statement (`;;`), which does nothing.
    pub fn is_empty(&self) -> bool {
        self.command.is_empty()
    }
    /// An UPDATE or DELETE without a WHERE clause: it changes every row.
    pub fn changes_every_row(&self) -> bool {
        (self.is("UPDATE") || self.is("DELETE")) && !self.has_where
    }
    /// The objects it uses with `access`.
    pub fn objects_by_access(&self, access: Access) -> impl Iterator<Item = &ObjectRef> {
        self.objects.iter().filter(move |o| o.access == access)
    }
    /// The tables, views and other relations it names, in any way (read, written, defined).
    pub fn relations(&self) -> impl Iterator<Item = &ObjectRef> {
        self.objects.iter().filter(|o| o.is_relation())
    }
    /// The functions and procedures it names (called or defined).
    pub fn routines(&self) -> impl Iterator<Item = &ObjectRef> {
        self.objects.iter().filter(|o| o.is_routine())
    }
}

impl ObjectRef {
    /// An object named as parsed (for tests; chain [`ObjectRef::in_schema`],
    /// [`ObjectRef::guessed`]).
    pub fn new(kind: ObjectKind, name: impl Into<String>, access: Access) -> ObjectRef {
        ObjectRef {
            kind,
            schema: None,
            name: name.into(),
            access,
            guessed: false,
        }
    }
    /// A relation (table or view) whose rows are read.
    pub fn read(name: impl Into<String>) -> ObjectRef {
        ObjectRef::new(ObjectKind::Relation, name, Access::Read)
    }
    /// A relation whose rows are changed.
    pub fn written(name: impl Into<String>) -> ObjectRef {
        ObjectRef::new(ObjectKind::Relation, name, Access::Write)
    }
    /// A function called.
    pub fn call(name: impl Into<String>) -> ObjectRef {
        ObjectRef::new(ObjectKind::Function, name, Access::Call)
    }
    pub fn in_schema(mut self, schema: impl Into<String>) -> ObjectRef {
        self.schema = Some(schema.into());
        self
    }
    /// Marks it guessed from the tokens of an unparsed statement.
    pub fn guessed(mut self) -> ObjectRef {
        self.guessed = true;
        self
    }

    /// `schema.name`, or `name` when unqualified (as the statement wrote it, lower-cased
    /// unless quoted).
    pub fn qualified_name(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        }
    }
    /// Its qualified name matches `pattern` (see [`crate::name_matches`]: `payroll` matches
    /// `hr.payroll`).
    pub fn matches(&self, pattern: &str) -> bool {
        let schema = self
            .schema
            .iter()
            .flat_map(|s| std::iter::once(b'.').chain(s.bytes().rev()));
        matches_reversed(self.name.bytes().rev().chain(schema), pattern)
    }
    /// A table, view, materialized view or a relation the parser could not tell apart.
    pub fn is_relation(&self) -> bool {
        matches!(
            self.kind,
            ObjectKind::Relation
                | ObjectKind::Table
                | ObjectKind::View
                | ObjectKind::MaterializedView
        )
    }
    /// A function or procedure.
    pub fn is_routine(&self) -> bool {
        matches!(self.kind, ObjectKind::Function | ObjectKind::Procedure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementKind as K;

    #[test]
    fn commands_match_exactly_or_by_leading_words() {
        assert!(command_matches("DROP TABLE", "drop table"));
        assert!(command_matches("DROP TABLE", " DROP * "));
        assert!(command_matches("DROP MATERIALIZED VIEW", "DROP *"));
        assert!(!command_matches("DROPX", "DROP *"));
        assert!(!command_matches("DROP", "DROP *"));
        assert!(command_matches(
            "DROP MATERIALIZED VIEW",
            "DROP MATERIALIZED *"
        ));
        assert!(!command_matches("TRUNCATE TABLE", "DROP *"));
        assert!(command_matches("DO", "*"));
        assert!(!command_matches("", "*"));
        assert!(!command_matches("", "DROP *"));
        assert!(!command_matches("CREATE TABLE", "CREATE"));
    }

    #[test]
    fn qualified_names_match_like_name_matches() {
        let o = ObjectRef::read("payroll").in_schema("hr");
        assert_eq!(o.qualified_name(), "hr.payroll");
        for (pattern, expected) in [
            ("payroll", true),
            ("hr.payroll", true),
            ("HR.Payroll", true),
            ("other.payroll", false),
            ("db.hr.payroll", false),
            ("pay", false),
            ("*", true),
        ] {
            assert_eq!(o.matches(pattern), expected, "{pattern}");
        }
        let three = ObjectRef::read("payroll").in_schema("db.hr");
        assert!(three.matches("hr.payroll") && three.matches("db.hr.payroll"));
        assert!(!three.matches("xdb.hr.payroll"));
        let bare = ObjectRef::read("payroll");
        assert!(bare.matches("payroll") && !bare.matches("hr.payroll"));
    }

    #[test]
    fn statements_inside_explain_do_not_run_but_prepared_ones_will() {
        let q = Query::new("", K::Read)
            .with_statement(Statement::new("EXPLAIN", K::Read))
            .with_statement(Statement::new("SELECT", K::Write).not_running().at_depth(1))
            .with_statement(Statement::new("DELETE", K::Write).not_running().at_depth(2))
            .with_statement(Statement::new("PREPARE", K::Session))
            .with_statement(Statement::new("SELECT", K::Write).not_running().at_depth(1))
            .with_statement(Statement::new("UPDATE", K::Write).not_running().at_depth(2))
            .with_statement(Statement::new("EXPLAIN", K::Write))
            .with_statement(Statement::new("DELETE", K::Write).at_depth(1));
        let run: Vec<(&str, u32)> = q
            .statements_that_run()
            .map(|s| (s.command.as_str(), s.depth))
            .collect();
        assert_eq!(
            run,
            [
                ("EXPLAIN", 0),
                ("PREPARE", 0),
                ("SELECT", 1),
                ("UPDATE", 2),
                ("EXPLAIN", 0),
                ("DELETE", 1)
            ]
        );
    }

    #[test]
    fn statement_predicates() {
        let s = Statement::new("DELETE", K::Write)
            .with_object(ObjectRef::written("t"))
            .with_object(ObjectRef::read("u"))
            .with_object(ObjectRef::call("f"));
        assert!(s.is("delete") && s.changes_every_row() && !s.is_empty());
        assert!(!s.clone().with_where().changes_every_row());
        assert_eq!(s.objects_by_access(Access::Read).count(), 1);
        assert_eq!(s.relations().count(), 2);
        assert_eq!(s.routines().count(), 1);
        assert!(Statement::empty().is_empty());
        assert!(!Statement::new("x", K::Unknown).unparsed().parsed);
    }
}

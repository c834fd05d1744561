//! Per-statement facts for policies (`Classification::statements`): each statement's command,
//! kind and the objects it names, including the statements nested in it (what EXPLAIN, PREPARE
//! ... AS and writable CTEs contain), and for a statement the parser cannot read, names guessed
//! from its tokens. Policies judge these instead of the SQL text, which syntax can always
//! disguise from a policy that re-reads it.

mod command;
mod guess;

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FromTable, ObjectName, ObjectNamePart, Query, Statement, TableFactor, Visit, Visitor,
};

use super::lexer::{Lexer, Token};
use super::names::{self, part_ident};
use super::{analyze, functions, parse, statement};
use crate::model::{
    Access, Classification, ObjectKind, ObjectRef, Protocol, StatementFacts, StatementKind,
};

/// The statements of `text` with their facts: `parsed` is its whole parse, when it parsed.
pub(crate) fn of_text(
    protocol: Protocol,
    text: &str,
    parsed: Option<&[Statement]>,
) -> Vec<StatementFacts> {
    let pieces = pieces(protocol, text);
    let non_empty = pieces.iter().filter(|p| !p.is_empty()).count();
    if let Some(statements) = parsed
        && statements.len() == non_empty
    {
        let mut out = Vec::with_capacity(pieces.len());
        let mut statements = statements.iter();
        for piece in pieces {
            if piece.is_empty() {
                out.push(StatementFacts::empty());
            } else if let Some(statement) = statements.next() {
                walk(protocol, statement, Some(piece), &mut out);
            }
        }
        return out;
    }
    if let Some(statements) = parsed {
        // Statements the lexer splits differently (a `BEGIN ATOMIC ... END` body): as parsed.
        let mut out = Vec::new();
        for statement in statements {
            walk(protocol, statement, None, &mut out);
        }
        return out;
    }
    // The text as a whole did not parse: each statement on its own, guessed where it fails.
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        if piece.is_empty() {
            out.push(StatementFacts::empty());
            continue;
        }
        match parse::statements(protocol, piece) {
            Ok(statements) if statements.len() == 1 => {
                walk(protocol, &statements[0], Some(piece), &mut out)
            }
            _ => out.push(guessed(protocol, piece)),
        }
    }
    out
}

/// The facts of a plain SELECT the fast path classified: its tables and functions.
pub(crate) fn of_fast(classification: &Classification) -> Vec<StatementFacts> {
    let mut facts = StatementFacts {
        command: "SELECT".into(),
        kind: classification.kind,
        parsed: true,
        runs: true,
        depth: 0,
        objects: Vec::new(),
        has_where: false,
        has_limit: classification.flags.has_limit,
    };
    for table in classification.tables_read.iter() {
        facts.add(split(table, ObjectKind::Relation, Access::Read));
    }
    for function in classification.functions.iter() {
        facts.add(split(function, ObjectKind::Function, Access::Call));
    }
    canonical_order(&mut facts.objects);
    vec![facts]
}

/// A statement the parser could not read: named by its leading keywords, its objects guessed.
fn guessed(protocol: Protocol, text: &str) -> StatementFacts {
    let tokens: Vec<Token<'_>> = Lexer::new(protocol, text).collect();
    StatementFacts {
        command: command::of_text(protocol, text),
        kind: StatementKind::Unknown,
        parsed: false,
        runs: true,
        depth: 0,
        objects: guess::objects(protocol, &tokens),
        has_where: tokens.iter().any(|t| t.is_word("where")),
        has_limit: tokens.iter().any(|t| t.is_word("limit")),
    }
}

/// The statements of a text split at its top-level `;`, each without the whitespace and comments
/// around it; an empty string for an empty statement (a leading or doubled `;`, not the last
/// `;` of the text).
fn pieces(protocol: Protocol, text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0;
    for token in Lexer::new(protocol, text) {
        if token.is_punct(b';') {
            out.push(start.take().and_then(|s| text.get(s..end)).unwrap_or(""));
            continue;
        }
        if start.is_none() {
            start = Some(token.end - token.text.len());
        }
        end = token.end;
    }
    if let Some(s) = start {
        out.extend(text.get(s..end));
    }
    out
}

/// Walks one statement of the text and the statements nested in it.
fn walk(
    protocol: Protocol,
    statement: &Statement,
    text: Option<&str>,
    out: &mut Vec<StatementFacts>,
) {
    let mut walker = Walker {
        protocol,
        out,
        open: Vec::new(),
        ctes: Vec::new(),
        cte_marks: Vec::new(),
        only: Vec::new(),
        table_functions: Vec::new(),
        text,
    };
    // The walker never breaks.
    let _ = statement.visit(&mut walker);
}

struct Walker<'o, 't> {
    protocol: Protocol,
    out: &'o mut Vec<StatementFacts>,
    /// The statements being walked, innermost last: (index in `out`, whether statements inside
    /// it run when it runs).
    open: Vec<(usize, bool)>,
    ctes: Vec<String>,
    cte_marks: Vec<usize>,
    /// `FROM ONLY t` targets: (address of the `only` name node, the real table).
    only: Vec<(usize, String)>,
    /// Names of set-returning functions in FROM (`FROM f(...) x`), which the parser gives as
    /// tables with arguments: addresses of the name nodes.
    table_functions: Vec<usize>,
    /// The top-level statement's own text.
    text: Option<&'t str>,
}

impl Walker<'_, '_> {
    fn current(&mut self) -> Option<&mut StatementFacts> {
        let (index, _) = *self.open.last()?;
        self.out.get_mut(index)
    }

    /// PostgreSQL's `FROM ONLY t` reaches us as a table `only` aliased `t` (the parser does not
    /// know ONLY): the table is the alias.
    fn note_only(&mut self, factor: &TableFactor) {
        if self.protocol != Protocol::Postgres {
            return;
        }
        if let TableFactor::Table {
            name,
            alias: Some(alias),
            args: None,
            ..
        } = factor
            && let [ObjectNamePart::Identifier(id)] = name.0.as_slice()
            && id.quote_style.is_none()
            && id.value.eq_ignore_ascii_case("only")
        {
            let table = names::table_ident(self.protocol, &alias.name);
            self.only.push((std::ptr::from_ref(name) as usize, table));
        }
    }

    fn object(&self, name: &ObjectName, kind: ObjectKind, access: Access) -> ObjectRef {
        let at = std::ptr::from_ref(name) as usize;
        if let Some((_, table)) = self.only.iter().find(|(node, _)| *node == at) {
            return ObjectRef {
                kind,
                schema: None,
                name: table.clone(),
                access,
                guessed: false,
            };
        }
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| {
                let id = part_ident(p);
                names::ident(self.protocol, &id.value, id.quote_style.is_some())
            })
            .collect();
        let (schema, name) = match parts.as_slice() {
            [] => (None, String::new()),
            [name] => (None, name.clone()),
            [qualifier @ .., name] => (Some(qualifier.join(".")), name.clone()),
        };
        ObjectRef {
            kind,
            schema,
            name,
            access,
            guessed: false,
        }
    }

    /// Whether the current statement names `object` already, whatever the access.
    fn names(&mut self, object: &ObjectRef) -> bool {
        self.current().is_some_and(|f| {
            f.objects
                .iter()
                .any(|o| o.name == object.name && o.schema == object.schema)
        })
    }
}

impl Visitor for Walker<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        // Write targets are named before the visitor reaches their table factors.
        match statement {
            Statement::Update(update) => self.note_only(&update.table.relation),
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                for table in from {
                    self.note_only(&table.relation);
                }
            }
            _ => {}
        }
        let depth = self.open.len();
        // A statement inside one that does not run now, or inside EXPLAIN without ANALYZE or
        // PREPARE, does not run now.
        let runs = self
            .open
            .last()
            .is_none_or(|&(parent, inner_runs)| inner_runs && self.out[parent].runs);
        let shape = statement::shape(statement);
        let text = if depth == 0 { self.text } else { None };
        let command = command::of_statement(self.protocol, statement, text);
        let kind = shape.kind;
        let mut facts = StatementFacts {
            kind,
            parsed: true,
            runs,
            depth: u32::try_from(depth).unwrap_or(u32::MAX),
            objects: Vec::new(),
            has_where: match statement {
                Statement::Update(update) => update.selection.is_some(),
                Statement::Delete(delete) => delete.selection.is_some(),
                _ => false,
            },
            has_limit: analyze::limited(statement).unwrap_or(false),
            command,
        };
        let defined = command::defined_kind(&facts.command);
        for table in &shape.writes {
            let name = match table {
                statement::TableRef::Object(name) => {
                    self.object(name, ObjectKind::Relation, Access::Write)
                }
                statement::TableRef::Ident(id) => ObjectRef {
                    kind: ObjectKind::Relation,
                    schema: None,
                    name: names::table_ident(self.protocol, id),
                    access: Access::Write,
                    guessed: false,
                },
            };
            let object = if kind == StatementKind::Ddl {
                ObjectRef {
                    kind: if defined == ObjectKind::Other {
                        ObjectKind::Relation
                    } else {
                        defined
                    },
                    access: Access::Define,
                    ..name
                }
            } else {
                name
            };
            facts.add(object);
        }
        for table in &shape.reads {
            if let statement::TableRef::Object(name) = table {
                facts.add(self.object(name, ObjectKind::Relation, Access::Read));
            }
        }
        for object in self.defined(statement) {
            facts.add(object);
        }
        // The parser keeps CALL's procedure out of the expressions the visitor walks.
        if let Statement::Call(procedure) = statement {
            let name = names::function(&procedure.name);
            facts.add(split(&name, ObjectKind::Function, Access::Call));
        }
        let index = self.out.len();
        self.out.push(facts);
        self.open.push((index, !shape.dry));
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        if let Some(current) = self.current() {
            canonical_order(&mut current.objects);
        }
        self.open.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        // FOR UPDATE / FOR SHARE anywhere in the statement takes row locks.
        if !query.locks.is_empty()
            && let Some(current) = self.current()
        {
            current.kind = current.kind.max(StatementKind::Write);
        }
        self.cte_marks.push(self.ctes.len());
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes
                    .push(names::table_ident(self.protocol, &cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        if let Some(mark) = self.cte_marks.pop() {
            self.ctes.truncate(mark);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.note_only(factor);
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => self.table_functions.push(std::ptr::from_ref(name) as usize),
            TableFactor::Function { name, .. } => self.call(&names::function(name)),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let at = std::ptr::from_ref(relation) as usize;
        if self.table_functions.contains(&at) {
            self.call(&names::function(relation));
            return ControlFlow::Continue(());
        }
        let object = self.object(relation, ObjectKind::Relation, Access::Read);
        let is_cte = object.schema.is_none() && self.ctes.contains(&object.name);
        if !is_cte
            && !self.names(&object)
            && let Some(current) = self.current()
        {
            current.add(object);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.call(&names::function(&function.name));
        }
        ControlFlow::Continue(())
    }
}

impl Walker<'_, '_> {
    /// A call of the function `name` in the current statement, with what it does to the
    /// statement's kind.
    fn call(&mut self, name: &str) {
        let effect = functions::effect(self.protocol, name);
        let object = split(name, ObjectKind::Function, Access::Call);
        if let Some(current) = self.current() {
            if let Some(kind) = effect.kind {
                current.kind = current.kind.max(kind);
            }
            current.add(object);
        }
    }

    /// Objects a DDL statement defines that its shape does not report as tables.
    fn defined(&self, statement: &Statement) -> Vec<ObjectRef> {
        let define = |name: &ObjectName, kind| self.object(name, kind, Access::Define);
        match statement {
            Statement::Drop {
                object_type, names, ..
            } => {
                let kind = command::defined_kind(&format!("DROP {object_type}"));
                names.iter().map(|n| define(n, kind)).collect()
            }
            Statement::CreateFunction(f) => vec![define(&f.name, ObjectKind::Function)],
            Statement::DropFunction(f) => f
                .func_desc
                .iter()
                .map(|d| define(&d.name, ObjectKind::Function))
                .collect(),
            Statement::CreateTrigger(t) => vec![
                define(&t.name, ObjectKind::Trigger),
                define(&t.table_name, ObjectKind::Table),
            ],
            Statement::CreateIndex(i) => i
                .name
                .iter()
                .map(|n| define(n, ObjectKind::Index))
                .collect(),
            Statement::CreateSequence { name, .. } => vec![define(name, ObjectKind::Sequence)],
            _ => Vec::new(),
        }
    }
}

/// Objects before the functions called, each in order of first appearance: the fast path and
/// the parser visit them in different orders.
fn canonical_order(objects: &mut [ObjectRef]) {
    objects.sort_by_key(|o| o.kind == ObjectKind::Function);
}

/// An object from a name as a `Classification` spells it (`schema.name`).
fn split(name: &str, kind: ObjectKind, access: Access) -> ObjectRef {
    let (schema, name) = match name.rsplit_once('.') {
        Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
        None => (None, name.to_owned()),
    };
    ObjectRef {
        kind,
        schema,
        name,
        access,
        guessed: false,
    }
}

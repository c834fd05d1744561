//! One walk over the parsed statements with sqlparser's `Visitor`: tables read and written,
//! functions called, and what nested parts do to the kind (writable CTEs, `FOR UPDATE`,
//! `SELECT INTO`, side-effecting functions).
//!
//! Write targets are reported as relations by the visitor too; `shape` hands them over first and
//! the collector skips exactly those AST nodes (by address), so `UPDATE t ... FROM t` still counts
//! the second `t` as read.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, FromTable, JoinOperator, ObjectName, ObjectNamePart, Query, Select, SelectInto,
    Statement, TableFactor, TableObject, Visitor,
};

use super::functions;
use super::names::{self, push_unique};
use super::resident;
use super::statement::{self, TableRef};
use crate::model::{Protocol, ResidentEffect, ResidentEffects, StatementKind};

pub(crate) struct Collector {
    protocol: Protocol,
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    pub functions: Vec<String>,
    /// Strongest kind of any executed statement or side effect met so far.
    pub kind: Option<StatementKind>,
    pub volatile: bool,
    /// UPDATE and DELETE statements seen (nested ones included), and how many had a WHERE.
    pub filterable: usize,
    pub filtered: usize,
    /// Resident effects of executed statements, in order (PostgreSQL only).
    pub resident: ResidentEffects,
    /// The dry part is the statement of a PREPARE: it runs later, at each EXECUTE.
    dry_prepared: bool,
    /// The top-level statement evaluates its function calls when it runs, so an unlock call in
    /// it releases (see `resident::runs_calls`).
    releases_run: bool,
    /// CTE names in scope, innermost last; `cte_marks` remembers where each query's names start.
    ctes: Vec<String>,
    cte_marks: Vec<usize>,
    /// Addresses of relation nodes already accounted for (write targets, table functions).
    skip: Vec<usize>,
    /// PostgreSQL `FROM ONLY t` / `UPDATE ONLY t`, which sqlparser reads as a table named `ONLY`
    /// aliased `t`: the address of that name node and the real table name.
    only: Vec<(usize, String)>,
    depth: usize,
    /// Depth of the statement below which nothing is executed (EXPLAIN without ANALYZE, PREPARE).
    dry_below: Option<usize>,
}

fn address(name: &ObjectName) -> usize {
    std::ptr::from_ref(name) as usize
}

impl Collector {
    pub fn new(protocol: Protocol) -> Self {
        Collector {
            protocol,
            reads: Vec::new(),
            writes: Vec::new(),
            functions: Vec::new(),
            kind: None,
            volatile: false,
            filterable: 0,
            filtered: 0,
            resident: ResidentEffects::new(),
            dry_prepared: false,
            releases_run: false,
            ctes: Vec::new(),
            cte_marks: Vec::new(),
            skip: Vec::new(),
            only: Vec::new(),
            depth: 0,
            dry_below: None,
        }
    }

    fn dry(&self) -> bool {
        self.dry_below.is_some_and(|d| self.depth > d)
    }

    fn raise(&mut self, kind: StatementKind) {
        if !self.dry() {
            self.kind = Some(self.kind.map_or(kind, |k| k.max(kind)));
        }
    }

    fn table_name(&self, table: TableRef<'_>) -> String {
        match table {
            TableRef::Object(name) => self.relation_name(name),
            TableRef::Ident(id) => names::table_ident(self.protocol, id),
        }
    }

    fn relation_name(&self, name: &ObjectName) -> String {
        let at = address(name);
        match self.only.iter().find(|(node, _)| *node == at) {
            Some((_, table)) => table.clone(),
            None => names::object(self.protocol, name),
        }
    }

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
            self.only.push((address(name), table));
        }
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        if name.0.len() != 1 {
            return false;
        }
        let plain = names::object(self.protocol, name);
        self.ctes.contains(&plain)
    }

    fn call(&mut self, name: &ObjectName) {
        let name = names::function(name);
        let effect = functions::effect(self.protocol, &name);
        self.volatile |= effect.volatile;
        if let Some(kind) = effect.kind {
            self.raise(kind);
        }
        if let Some(lock) = effect.lock {
            self.note_resident(resident::lock_effect(lock, self.releases_run));
        }
        push_unique(&mut self.functions, name);
    }

    /// Records an effect of an executed statement. In the statement of a PREPARE anything that
    /// would create resident state becomes one `Unknown`: it happens at EXECUTE, which we see
    /// only by name.
    fn note_resident(&mut self, effect: Option<ResidentEffect>) {
        let Some(effect) = effect.filter(|_| self.protocol == Protocol::Postgres) else {
            return;
        };
        if !self.dry() {
            self.resident.push(effect);
        } else if self.dry_prepared
            && effect.creates()
            && self.resident.last() != Some(&ResidentEffect::Unknown)
        {
            self.resident.push(ResidentEffect::Unknown);
        }
    }

    /// `SELECT ... INTO new_table` creates and fills a table; MySQL `INTO @var` sets a variable.
    fn select_into(&mut self, into: &SelectInto) {
        for target in &into.targets {
            let ids = match target {
                Expr::Identifier(id) if id.value.starts_with('@') => {
                    self.raise(StatementKind::Session);
                    continue;
                }
                Expr::Identifier(id) => std::slice::from_ref(id),
                Expr::CompoundIdentifier(ids) => ids.as_slice(),
                _ => {
                    // `INTO TEMP 'x'`: the server refuses it, but a temporary table whose name we
                    // cannot read must not look harmless.
                    if into.temporary {
                        self.note_resident(Some(ResidentEffect::Unknown));
                    }
                    continue;
                }
            };
            if self.protocol == Protocol::Postgres {
                let effect = match resident::ast_parts(ids) {
                    Some(parts) => resident::temp_object(&parts, into.temporary),
                    None => into.temporary.then_some(ResidentEffect::Unknown),
                };
                self.note_resident(effect);
            }
            let name = ids
                .iter()
                .map(|id| names::table_ident(self.protocol, id))
                .collect::<Vec<_>>()
                .join(".");
            self.raise(StatementKind::Write);
            if self.dry() {
                push_unique(&mut self.reads, name);
            } else {
                push_unique(&mut self.writes, name);
            }
        }
    }
}

impl Visitor for Collector {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        self.depth += 1;
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
        let shape = statement::shape(statement);
        self.raise(shape.kind);
        let dry = self.dry();
        if self.protocol == Protocol::Postgres {
            if self.depth == 1 {
                self.releases_run = resident::runs_calls(statement);
            }
            let mut effects = ResidentEffects::new();
            resident::statement(statement, &mut effects);
            for effect in effects {
                self.note_resident(Some(effect));
            }
        }
        for table in shape.writes {
            if let TableRef::Object(name) = table {
                self.skip.push(address(name));
            }
            let name = self.table_name(table);
            push_unique(
                if dry {
                    &mut self.reads
                } else {
                    &mut self.writes
                },
                name,
            );
        }
        for table in shape.reads {
            let name = self.table_name(table);
            push_unique(&mut self.reads, name);
        }
        if shape.dry && self.dry_below.is_none() {
            self.dry_below = Some(self.depth);
            self.dry_prepared = matches!(statement, Statement::Prepare { .. });
        }
        let selection = match statement {
            Statement::Update(update) => Some(update.selection.is_some()),
            Statement::Delete(delete) => Some(delete.selection.is_some()),
            _ => None,
        };
        if let Some(has_where) = selection.filter(|_| !dry) {
            self.filterable += 1;
            self.filtered += usize::from(has_where);
        }
        if let Statement::Insert(insert) = statement
            && let TableObject::TableFunction(function) = &insert.table
        {
            self.call(&function.name);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _statement: &Statement) -> ControlFlow<()> {
        if self.dry_below == Some(self.depth) {
            self.dry_below = None;
        }
        self.depth = self.depth.saturating_sub(1);
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.cte_marks.push(self.ctes.len());
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = names::table_ident(self.protocol, &cte.alias.name);
                self.ctes.push(name);
            }
        }
        // FOR UPDATE / FOR SHARE take row locks: only the primary can do that.
        if !query.locks.is_empty() {
            self.raise(StatementKind::Write);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        if let Some(mark) = self.cte_marks.pop() {
            self.ctes.truncate(mark);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            self.select_into(into);
        }
        // ClickHouse `ARRAY JOIN arr` unfolds a column; sqlparser stores it as a table.
        let array_joins = select.from.iter().flat_map(|t| &t.joins).filter(|join| {
            matches!(
                join.join_operator,
                JoinOperator::ArrayJoin
                    | JoinOperator::LeftArrayJoin
                    | JoinOperator::InnerArrayJoin
            )
        });
        for join in array_joins {
            if let TableFactor::Table { name, .. } = &join.relation {
                self.skip.push(address(name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.note_only(factor);
        match factor {
            // `FROM generate_series(1, 3)`, ClickHouse `FROM numbers(10)`: a function, not a table.
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => {
                self.skip.push(address(name));
                self.call(name);
            }
            TableFactor::Function { name, .. } => self.call(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if self.skip.contains(&address(relation)) || self.is_cte(relation) {
            return ControlFlow::Continue(());
        }
        let name = self.relation_name(relation);
        push_unique(&mut self.reads, name);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.call(&function.name);
        }
        ControlFlow::Continue(())
    }
}

//! The shape of one parsed statement: its own kind and the tables it names outside of the places
//! the AST visitor reports as relations (write targets, COPY sources, MySQL `LOCK TABLES`).
//!
//! What a statement contains (subqueries, functions, `FOR UPDATE`, writable CTEs) is found by the
//! visitor in `collect`; this file only looks at the statement's own node.

use sqlparser::ast::{
    AssignmentTarget, CommentObject, CopySource, Delete, FromTable, Ident, ObjectName, ObjectType,
    Set, ShowCreateObject, Statement, TableFactor, TableObject, TableWithJoins, Update,
    UtilityOption,
};

use super::names;
use crate::model::StatementKind;

/// A table named by a statement node.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TableRef<'a> {
    Object(&'a ObjectName),
    Ident(&'a Ident),
}

#[derive(Debug)]
pub(crate) struct Shape<'a> {
    pub kind: StatementKind,
    /// Tables whose rows or definition the statement changes.
    pub writes: Vec<TableRef<'a>>,
    /// Tables the statement reads that the visitor does not report as relations.
    pub reads: Vec<TableRef<'a>>,
    /// Statements nested in this one are not executed now (EXPLAIN without ANALYZE, PREPARE).
    pub dry: bool,
}

impl<'a> Shape<'a> {
    fn of(kind: StatementKind) -> Self {
        Shape {
            kind,
            writes: Vec::new(),
            reads: Vec::new(),
            dry: false,
        }
    }

    fn writing(mut self, names: impl IntoIterator<Item = &'a ObjectName>) -> Self {
        self.writes.extend(names.into_iter().map(TableRef::Object));
        self
    }

    fn reading(mut self, names: impl IntoIterator<Item = &'a ObjectName>) -> Self {
        self.reads.extend(names.into_iter().map(TableRef::Object));
        self
    }
}

pub(crate) fn shape(statement: &Statement) -> Shape<'_> {
    use StatementKind::*;
    match statement {
        Statement::Query(_) => Shape::of(Read),
        Statement::Insert(insert) => match &insert.table {
            TableObject::TableName(name) => Shape::of(Write).writing([name]),
            _ => Shape::of(Write),
        },
        Statement::Update(update) => Shape::of(Write).writing(update_targets(update)),
        Statement::Delete(delete) => Shape::of(Write).writing(delete_targets(delete)),
        Statement::Merge(merge) => Shape::of(Write).writing(table_name(&merge.table)),
        Statement::Copy { source, to, .. } => copy_shape(source, *to),
        Statement::LoadData { table_name, .. } => Shape::of(Write).writing([table_name]),
        Statement::Call(_)
        | Statement::NOTIFY { .. }
        | Statement::Lock(_)
        | Statement::UnlockTables
        | Statement::Directory { .. }
        | Statement::ExportData(_)
        | Statement::CopyIntoSnowflake { .. } => Shape::of(Write),
        Statement::LockTables { tables } => {
            let mut shape = Shape::of(Write);
            shape
                .reads
                .extend(tables.iter().map(|t| TableRef::Ident(&t.table)));
            shape
        }

        Statement::Explain {
            analyze, options, ..
        } => Shape {
            dry: !*analyze && !analyze_option(options.as_deref()),
            ..Shape::of(Read)
        },
        Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::Unload { .. } => Shape::of(Read),
        Statement::ShowCreate { obj_type, obj_name } => match obj_type {
            ShowCreateObject::Table | ShowCreateObject::View => Shape::of(Read).reading([obj_name]),
            _ => Shape::of(Read),
        },

        Statement::Set(Set::SetTransaction { .. })
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Shape::of(Transaction),

        Statement::Set(_)
        | Statement::Reset(_)
        | Statement::Use(_)
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Pragma { .. }
        | Statement::AlterSession { .. } => Shape::of(Session),
        Statement::Prepare { .. } => Shape {
            dry: true,
            ..Shape::of(Session)
        },

        Statement::Analyze(_)
        | Statement::Kill { .. }
        | Statement::Flush { .. }
        | Statement::Cache { .. }
        | Statement::UNCache { .. }
        | Statement::Install { .. }
        | Statement::Load { .. }
        | Statement::Msck(_) => Shape::of(Utility),
        Statement::Vacuum(vacuum) => Shape::of(Utility).reading(vacuum.table_name.as_ref()),
        Statement::OptimizeTable { name, .. } => Shape::of(Utility).reading([name]),

        Statement::CreateTable(create) => Shape::of(Ddl).writing([&create.name]),
        Statement::CreateView(view) => Shape::of(Ddl).writing([&view.name]),
        Statement::CreateIndex(index) => Shape::of(Ddl).writing([&index.table_name]),
        Statement::AlterTable(alter) => Shape::of(Ddl).writing([&alter.name]),
        Statement::AlterView { name, .. } => Shape::of(Ddl).writing([name]),
        Statement::Truncate(truncate) => {
            Shape::of(Ddl).writing(truncate.table_names.iter().map(|t| &t.name))
        }
        Statement::RenameTable(renames) => {
            Shape::of(Ddl).writing(renames.iter().flat_map(|r| [&r.old_name, &r.new_name]))
        }
        Statement::Drop {
            object_type, names, ..
        } => match object_type {
            ObjectType::Table | ObjectType::View | ObjectType::MaterializedView => {
                Shape::of(Ddl).writing(names)
            }
            _ => Shape::of(Ddl),
        },
        Statement::Comment {
            object_type,
            object_name,
            ..
        } => match object_type {
            CommentObject::Table | CommentObject::View | CommentObject::MaterializedView => {
                Shape::of(Ddl).writing([object_name])
            }
            _ => Shape::of(Ddl),
        },
        statement if is_ddl(statement) => Shape::of(Ddl),

        // EXECUTE runs a statement prepared earlier: its text is not here to classify.
        _ => Shape::of(Unknown),
    }
}

/// Definitions, permissions and other catalog changes without a table target worth reporting.
fn is_ddl(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateVirtualTable { .. }
            | Statement::CreateRole(_)
            | Statement::CreateSecret { .. }
            | Statement::CreateServer(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateConnector(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterFunction(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterRole { .. }
            | Statement::AlterPolicy(_)
            | Statement::AlterConnector { .. }
            | Statement::AttachDatabase { .. }
            | Statement::AttachDuckDBDatabase { .. }
            | Statement::DetachDuckDBDatabase { .. }
            | Statement::DropFunction(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropSecret { .. }
            | Statement::DropPolicy(_)
            | Statement::DropConnector { .. }
            | Statement::CreateExtension(_)
            | Statement::CreateCollation(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateFunction(_)
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateMacro { .. }
            | Statement::CreateStage { .. }
            | Statement::CreateFileFormat { .. }
            | Statement::CreateWarehouse(_)
            | Statement::Grant(_)
            | Statement::Deny(_)
            | Statement::Revoke(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
    )
}

/// PostgreSQL `EXPLAIN (ANALYZE [true|on|1], BUFFERS) ...` runs the statement too.
fn analyze_option(options: Option<&[UtilityOption]>) -> bool {
    options.unwrap_or_default().iter().any(|option| {
        option.name.value.eq_ignore_ascii_case("analyze")
            && match &option.arg {
                None => true,
                Some(arg) => {
                    let arg = arg.to_string().to_ascii_lowercase();
                    !matches!(arg.trim_matches('\''), "false" | "off" | "0")
                }
            }
    })
}

/// COPY ... FROM loads rows into its table; COPY ... TO only reads them.
fn copy_shape(source: &CopySource, to: bool) -> Shape<'_> {
    match (source, to) {
        (CopySource::Table { table_name, .. }, false) => {
            Shape::of(StatementKind::Write).writing([table_name])
        }
        (CopySource::Table { table_name, .. }, true) => {
            Shape::of(StatementKind::Read).reading([table_name])
        }
        (CopySource::Query(_), true) => Shape::of(StatementKind::Read),
        (CopySource::Query(_), false) => Shape::of(StatementKind::Write),
    }
}

fn table_name(factor: &TableFactor) -> Option<&ObjectName> {
    match factor {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

fn alias(factor: &TableFactor) -> Option<&Ident> {
    match factor {
        TableFactor::Table { alias, .. } => alias.as_ref().map(|a| &a.name),
        _ => None,
    }
}

/// Whether `qualifier` (an alias or a table name used to qualify a column) refers to `factor`.
fn refers_to(factor: &TableFactor, qualifier: &Ident) -> bool {
    let same = |id: &Ident| id.value.eq_ignore_ascii_case(&qualifier.value);
    match alias(factor) {
        Some(alias) => same(alias),
        None => table_name(factor)
            .and_then(names::last_part)
            .is_some_and(same),
    }
}

fn factors(tables: &[TableWithJoins]) -> impl Iterator<Item = &TableFactor> {
    tables
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
}

/// The updated table; for MySQL's multi-table `UPDATE a JOIN b SET a.x = .., b.y = ..`, every
/// joined table whose columns are assigned.
fn update_targets(update: &Update) -> Vec<&ObjectName> {
    let main = &update.table.relation;
    if update.table.joins.is_empty() {
        return table_name(main).into_iter().collect();
    }
    let qualifiers: Vec<&Ident> = update
        .assignments
        .iter()
        .flat_map(|a| match &a.target {
            AssignmentTarget::ColumnName(column) => std::slice::from_ref(column),
            AssignmentTarget::Tuple(columns) => columns.as_slice(),
        })
        .filter_map(|column| {
            let parts = column.0.len();
            (parts >= 2).then(|| column.0.get(parts - 2)).flatten()
        })
        .filter_map(|part| match part {
            sqlparser::ast::ObjectNamePart::Identifier(id) => Some(id),
            _ => None,
        })
        .collect();
    let assigned: Vec<&ObjectName> = factors(std::slice::from_ref(&update.table))
        .filter(|f| qualifiers.iter().any(|q| refers_to(f, q)))
        .filter_map(table_name)
        .collect();
    if assigned.is_empty() {
        table_name(main).into_iter().collect()
    } else {
        assigned
    }
}

/// `DELETE FROM t`, PostgreSQL `DELETE FROM t USING u`, and MySQL `DELETE a, b FROM a JOIN b ...`
/// where the listed names may be aliases of tables in the FROM clause.
fn delete_targets(delete: &Delete) -> Vec<&ObjectName> {
    let from = match &delete.from {
        FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
    };
    if delete.tables.is_empty() {
        return from
            .iter()
            .filter_map(|t| table_name(&t.relation))
            .collect();
    }
    let using = delete.using.as_deref().unwrap_or_default();
    delete
        .tables
        .iter()
        .map(|listed| {
            let Some(last) = names::last_part(listed) else {
                return listed;
            };
            factors(from)
                .chain(factors(using))
                .find(|f| refers_to(f, last))
                .and_then(table_name)
                .unwrap_or(listed)
        })
        .collect()
}

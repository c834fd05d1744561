//! Turns parsed statements into a `Classification`.

use std::sync::Arc;

use sqlparser::ast::{LimitClause, Query, SetExpr, Statement, Visit};

use super::collect::Collector;
use crate::model::{Classification, Protocol, QueryFlags, StatementKind};

pub(crate) fn classification(
    protocol: Protocol,
    statements: &[Statement],
    fingerprint: u64,
) -> Classification {
    let mut collector = Collector::new(protocol);
    for statement in statements {
        // The collector never breaks; the result only says the walk finished.
        let _ = statement.visit(&mut collector);
    }

    // A flag about "the" statement must hold for every statement it applies to, so that a guard
    // checking `has_where` cannot be walked past with `UPDATE .. WHERE ..; DELETE FROM t`.
    let limits: Vec<bool> = statements.iter().filter_map(limited).collect();
    let flags = QueryFlags {
        has_where: collector.filterable > 0 && collector.filtered == collector.filterable,
        has_limit: !limits.is_empty() && limits.iter().all(|&l| l),
        volatile: collector.volatile,
        multi_statement: statements.len() > 1,
    };
    Classification {
        kind: collector.kind.unwrap_or(StatementKind::Unknown),
        flags,
        fingerprint,
        tables_read: Arc::from(collector.reads),
        tables_written: Arc::from(collector.writes),
        functions: Arc::from(collector.functions),
        resident: collector.resident,
        statements: Arc::from(Vec::new()),
    }
}

/// Whether a top-level statement bounds its rows; None for statements where that means nothing.
pub(crate) fn limited(statement: &Statement) -> Option<bool> {
    match statement {
        Statement::Query(query) => Some(query_limited(query)),
        Statement::Update(update) => Some(update.limit.is_some()),
        Statement::Delete(delete) => Some(delete.limit.is_some()),
        _ => None,
    }
}

fn query_limited(query: &Query) -> bool {
    let limit = match &query.limit_clause {
        // ClickHouse `LIMIT n BY x` bounds rows per group, not the result.
        Some(LimitClause::LimitOffset {
            limit, limit_by, ..
        }) => limit.is_some() && limit_by.is_empty(),
        Some(LimitClause::OffsetCommaLimit { .. }) => true,
        None => false,
    };
    limit
        || query.fetch.is_some()
        || match query.body.as_ref() {
            SetExpr::Select(select) => select.top.is_some(),
            SetExpr::Query(inner) => query_limited(inner),
            _ => false,
        }
}

//! The decision used when no policy is configured, and by `fail-open` when the policy fails.

use crate::model::{Action, Decision, QueryContext, Route, StatementKind};

/// Reads outside a transaction go to a replica; everything else (writes, DDL, session and
/// transaction statements, anything unparsed) goes to the primary; nothing is cached.
pub fn builtin_decision(q: &QueryContext) -> Decision {
    let route = if q.classification.kind == StatementKind::Read && !q.in_transaction {
        Route::Replica
    } else {
        Route::Primary
    };
    Decision {
        action: Action::Forward,
        route,
        ..Decision::forward_default()
    }
}

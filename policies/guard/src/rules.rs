//! The refusal rules over the host's statement facts, and the LIMIT rewrite.

use std::collections::BTreeMap;

use switchyard_policy::sql::append_limit;
use switchyard_policy::{ObjectRef, Query, Statement};

use crate::{EVERYONE, Guard};

impl Guard {
    /// Why the query is refused, if it is. Runs for every query: the common case (nothing to
    /// refuse) allocates nothing; a message is only formatted for a refusal.
    pub(crate) fn refusal(&self, q: &Query) -> Option<String> {
        // First, as it names what is refused: the host reads a statement's command from its
        // leading keywords even when it cannot parse the rest (`DO`).
        let denied_commands = self.denied_commands(&q.user);
        for s in q.statements_that_run() {
            if denied_commands.iter().any(|p| s.command_matches(p)) {
                return Some(format!("guard: {} is not allowed", s.command));
            }
        }
        // A text the host classified without statements cannot be judged at all.
        let unparsed =
            q.statements.iter().any(|s| !s.parsed) || (q.statements.is_empty() && q.is_unknown());
        if unparsed && !self.allow_unknown {
            return Some(
                "guard: a statement that could not be parsed is blocked (unknown = \"block\")"
                    .to_string(),
            );
        }
        if let Some(s) = q.statements_that_run().find(|s| s.changes_every_row()) {
            return Some(format!("guard: {} without WHERE is not allowed", s.command));
        }
        if let Some(table) = first_denied(&self.deny_tables, q, Statement::relations) {
            return Some(format!(
                "guard: table {} is denied for user {}",
                table.qualified_name(),
                q.user
            ));
        }
        if let Some(function) = first_denied(&self.deny_functions, q, Statement::routines) {
            return Some(format!(
                "guard: function {} is denied for user {}",
                function.qualified_name(),
                q.user
            ));
        }
        None
    }
}

/// The first object (of the kinds `objects` picks) in any statement of `q` that is on the
/// user's list or everyone's.
fn first_denied<'q, I>(
    lists: &BTreeMap<String, Vec<String>>,
    q: &'q Query,
    objects: fn(&'q Statement) -> I,
) -> Option<&'q ObjectRef>
where
    I: Iterator<Item = &'q ObjectRef>,
{
    let own = lists.get(q.user.as_str());
    let everyone = lists.get(EVERYONE);
    // Most users have no list: skip the walk over the statements.
    if own.is_none() && everyone.is_none() {
        return None;
    }
    q.statements.iter().flat_map(objects).find(|o| {
        own.into_iter()
            .chain(everyone)
            .flatten()
            .any(|p| o.matches(p))
    })
}

/// The query with `LIMIT n` appended, if it is one parsed, running SELECT without a LIMIT.
pub(crate) fn limited(q: &Query, n: u64) -> Option<String> {
    let [s] = q.statements.as_slice() else {
        return None;
    };
    if !q.is_read() || !s.is("SELECT") || !s.parsed || !s.runs || s.has_limit {
        return None;
    }
    append_limit(&q.sql, n, q.dialect())
}

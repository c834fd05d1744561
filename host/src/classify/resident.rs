//! What a PostgreSQL statement does to *resident* session state: server-side state that lives on
//! the client's server connection and cannot be re-created on another one (ARCHITECTURE.md, "One
//! session-state model for every frontend"). In transaction pooling the session pins a client to
//! its connection while any of it exists; it keeps the books, this module only reports, for every
//! statement of a text and in text order, what each one creates and releases.
//!
//! Parsed statements are read from sqlparser's AST: the statement's own node here, `SELECT ..
//! INTO` and function calls in `collect`. Texts sqlparser rejects are read from our lexer's tokens
//! (`scan`), where string literals, comments and dollar quotes are single tokens, so
//! `SELECT 'LISTEN x'` does nothing.
//!
//! Rules a session can rely on:
//! - Names are spelled as PostgreSQL resolves them: unquoted identifiers fold to lower case (ASCII
//!   letters only, as in a UTF-8 database), quotes are removed, identifiers are cut to 63 bytes
//!   (NAMEDATALEN - 1). A temporary object's name
//!   drops its `pg_temp` (or `pg_temp_N`) schema: the temporary schema comes first in
//!   `search_path` for relations, so `t` and `pg_temp.t` name the same object, while a name in any
//!   other schema (`public.t`) keeps its schema and can never be a temporary object. A `DROP` of
//!   `public.t` therefore never matches a temporary `t`.
//! - Effects depend on keywords and identifiers only, never on literal values, so statements that
//!   share a fingerprint share their effects (the classifier's shape cache relies on this). So the
//!   key of an advisory lock and the file of a `LOAD` are not reported, and a `DO` block (whose body
//!   is a string literal) is `Unknown`.
//! - What is not executed now creates nothing: the statement inside `EXPLAIN` without ANALYZE, a
//!   temporary table `ON COMMIT DROP` (gone with its transaction, during which the client is on
//!   its connection anyway), a cursor without HOLD, `SET LOCAL SESSION AUTHORIZATION`. The
//!   statement of a `PREPARE` runs at every `EXECUTE`, which names it but does not show it, so a
//!   prepared statement that would create resident state adds `Unknown` to the `PREPARE`.
//! - Creating is reported wherever it may happen (a `pg_try_advisory_lock` that fails, a lock call
//!   in a `CASE` branch or a column default). A function call releases only in a statement that
//!   evaluates its expressions when it runs (a query, INSERT/UPDATE/DELETE/MERGE, `COPY (query)`,
//!   `CREATE TABLE .. AS`, `EXPLAIN ANALYZE` of one of those); even then a `pg_advisory_unlock` of
//!   a lock not held releases nothing (it returns false), which only its result tells.
//! - A statement whose effect cannot be told reports `Unknown`, which pins: a `DO` block, a
//!   `CREATE` that does not parse and mentions TEMP, TEMPORARY or `pg_temp`, a temporary function,
//!   type or domain (`CREATE FUNCTION pg_temp.f`), a `LISTEN` or `PREPARE` whose name we cannot
//!   read.
//! - Only PostgreSQL texts have effects. MySQL's (user variables, `GET_LOCK`, temporary tables,
//!   `LOCK TABLES`) are not reported yet; ClickHouse HTTP has no pooled server sessions.

mod scan;

use std::sync::Arc;

use sqlparser::ast::{
    CloseCursor, ContextModifier, CopySource, DeclareType, DiscardObject, Ident, ObjectName,
    ObjectType, OnCommit, Reset, Set, SetSessionAuthorizationParamKind, Statement,
};

pub(crate) use scan::scan;

use super::functions::LockCall;
use super::names;
use crate::model::{
    Classification, Resident, ResidentEffect, ResidentEffects, ResidentSort, StatementKind,
};

/// PostgreSQL's longest identifier in bytes (NAMEDATALEN - 1); longer ones are cut.
const MAX_IDENT: usize = 63;

/// A statement with resident effects must not look like a plain read: a read may be cached or
/// sent to a replica, and resident state only exists on the connection that made it.
pub(crate) fn settle_kind(classification: &mut Classification) {
    if !classification.resident.is_empty() && classification.kind == StatementKind::Read {
        classification.kind = StatementKind::Session;
    }
}

/// One identifier as PostgreSQL resolves it: unquoted, its ASCII letters fold to lower case (as
/// in a UTF-8 database); either way it is cut to 63 bytes.
pub(super) fn ident(value: &str, quoted: bool) -> String {
    let mut name = if quoted {
        value.to_owned()
    } else {
        value.to_ascii_lowercase()
    };
    if name.len() > MAX_IDENT {
        let mut end = MAX_IDENT;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// An identifier of the AST as PostgreSQL resolves it; None for a string literal where a name
/// belongs (sqlparser accepts `LISTEN 'x'`, PostgreSQL does not), whose value the fingerprint
/// does not keep.
fn ast_ident(id: &Ident) -> Option<String> {
    match id.quote_style {
        None => Some(ident(&id.value, false)),
        Some('"') => Some(ident(&id.value, true)),
        Some(_) => None,
    }
}

/// A resident name, or `Unknown` when it cannot be read.
fn create_named(id: &Ident, resident: fn(Arc<str>) -> Resident) -> ResidentEffect {
    ast_ident(id).map_or(ResidentEffect::Unknown, |name| {
        ResidentEffect::Create(resident(name.into()))
    })
}

/// The release of a resident name; nothing when it cannot be read (it cannot have been created).
fn release_named(id: &Ident, resident: fn(Arc<str>) -> Resident, out: &mut ResidentEffects) {
    if let Some(name) = ast_ident(id) {
        out.push(ResidentEffect::Release(resident(name.into())));
    }
}

/// `pg_temp`, or the numbered `pg_temp_3` it stands for.
fn is_temp_schema(part: &str) -> bool {
    part == "pg_temp"
        || part
            .strip_prefix("pg_temp_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A relation's name from its spelled parts, without a temporary schema, and whether it had one.
fn relation(parts: &[String]) -> (Arc<str>, bool) {
    match parts {
        [.., schema, name] if is_temp_schema(schema) => (name.as_str().into(), true),
        _ => (parts.join(".").into(), false),
    }
}

pub(super) fn ast_parts<'a>(ids: impl IntoIterator<Item = &'a Ident>) -> Option<Vec<String>> {
    ids.into_iter().map(ast_ident).collect()
}

fn object_parts(name: &ObjectName) -> Option<Vec<String>> {
    ast_parts(name.0.iter().map(names::part_ident))
}

/// `CREATE [TEMP] TABLE/VIEW/SEQUENCE name`: a temporary object if TEMP or in `pg_temp`.
fn temp_relation(name: &ObjectName, temporary: bool, out: &mut ResidentEffects) {
    match object_parts(name) {
        Some(parts) => out.extend(temp_object(&parts, temporary)),
        None if temporary => out.push(ResidentEffect::Unknown),
        None => {}
    }
}

/// A function, type or domain in `pg_temp`: resident, but outside the relation names a `DROP
/// TABLE` could release, so it is reported as `Unknown`.
fn temp_other(name: &ObjectName, out: &mut ResidentEffects) {
    if object_parts(name).is_none_or(|parts| relation(&parts).1) {
        out.push(ResidentEffect::Unknown);
    }
}

/// The effect of a session-level advisory lock function.
pub(super) fn lock_effect(call: LockCall, releases_run: bool) -> Option<ResidentEffect> {
    match call {
        LockCall::Lock => Some(ResidentEffect::Create(Resident::AdvisoryLock)),
        LockCall::Unlock if releases_run => Some(ResidentEffect::Release(Resident::AdvisoryLock)),
        LockCall::UnlockAll if releases_run => {
            Some(ResidentEffect::ReleaseAll(ResidentSort::AdvisoryLocks))
        }
        LockCall::Unlock | LockCall::UnlockAll => None,
    }
}

/// Whether a top-level statement evaluates the function calls it contains when it runs (a view's
/// query, a column default, a cursor's query before it is fetched do not).
pub(crate) fn runs_calls(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Copy {
            source: CopySource::Query(_),
            ..
        } => true,
        Statement::CreateTable(create) => create.query.is_some(),
        Statement::Explain { statement, .. } => runs_calls(statement),
        _ => false,
    }
}

/// `SELECT .. INTO [TEMP] name`, `CREATE [TEMP] TABLE name`: a temporary object if TEMP or in
/// `pg_temp`.
pub(super) fn temp_object(parts: &[String], temporary: bool) -> Option<ResidentEffect> {
    let (name, temp_schema) = relation(parts);
    (temporary || temp_schema).then_some(ResidentEffect::Create(Resident::TempObject(name)))
}

/// The effects of one parsed statement's own node; what it contains (`SELECT .. INTO`, function
/// calls) is the collector's.
pub(crate) fn statement(statement: &Statement, out: &mut ResidentEffects) {
    use ResidentEffect::{Create, Release, ReleaseAll};
    match statement {
        Statement::CreateTable(create) if create.on_commit != Some(OnCommit::Drop) => {
            temp_relation(&create.name, create.temporary, out)
        }
        Statement::CreateView(view) if !view.materialized => {
            temp_relation(&view.name, view.temporary, out)
        }
        Statement::CreateSequence {
            temporary, name, ..
        } => temp_relation(name, *temporary, out),
        Statement::CreateFunction(function) => temp_other(&function.name, out),
        Statement::CreateType { name, .. } => temp_other(name, out),
        Statement::CreateDomain(domain) => temp_other(&domain.name, out),

        Statement::Prepare { name, .. } => out.push(create_named(name, Resident::Prepared)),
        Statement::Declare { stmts } => {
            let held = stmts.iter().filter(|declare| {
                declare.hold == Some(true)
                    && matches!(declare.declare_type, Some(DeclareType::Cursor))
            });
            for name in held.flat_map(|declare| &declare.names) {
                out.push(create_named(name, Resident::Cursor));
            }
        }
        Statement::LISTEN { channel } => out.push(create_named(channel, Resident::Channel)),
        Statement::UNLISTEN { channel }
            if channel.quote_style.is_none() && channel.value == "*" =>
        {
            out.push(ReleaseAll(ResidentSort::Channels))
        }
        Statement::UNLISTEN { channel } => release_named(channel, Resident::Channel, out),
        Statement::Set(Set::SetSessionAuthorization(param)) => match (&param.scope, &param.kind) {
            (ContextModifier::Local, _) => {}
            (_, SetSessionAuthorizationParamKind::Default) => {
                out.push(Release(Resident::SessionAuthorization))
            }
            (_, SetSessionAuthorizationParamKind::User(_)) => {
                out.push(Create(Resident::SessionAuthorization))
            }
        },
        Statement::Reset(reset) if matches!(reset.reset, Reset::SessionAuthorization) => {
            out.push(Release(Resident::SessionAuthorization))
        }
        Statement::Load { .. } => out.push(Create(Resident::Library)),

        Statement::Discard { object_type } => match object_type {
            DiscardObject::ALL => out.push(ReleaseAll(ResidentSort::All)),
            DiscardObject::TEMP => out.push(ReleaseAll(ResidentSort::TempObjects)),
            DiscardObject::PLANS | DiscardObject::SEQUENCES => {}
        },
        Statement::Deallocate { name, .. }
            if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
        {
            out.push(ReleaseAll(ResidentSort::Prepared))
        }
        Statement::Deallocate { name, .. } => release_named(name, Resident::Prepared, out),
        Statement::Close { cursor } => match cursor {
            CloseCursor::All => out.push(ReleaseAll(ResidentSort::Cursors)),
            CloseCursor::Specific { name } => release_named(name, Resident::Cursor, out),
        },
        Statement::Drop {
            object_type: ObjectType::Table | ObjectType::View | ObjectType::Sequence,
            names,
            ..
        } => {
            for parts in names.iter().filter_map(object_parts) {
                out.push(Release(Resident::TempObject(relation(&parts).0)));
            }
        }
        _ => {}
    }
}

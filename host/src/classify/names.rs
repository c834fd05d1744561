//! How table and function names are spelled in a `Classification`.
//!
//! Table names follow the server's own rules so a policy compares them with what the server
//! resolves: PostgreSQL folds unquoted identifiers to lower case and keeps quoted ones verbatim;
//! ClickHouse is case-sensitive and quoting does not change a name, so names are kept as written;
//! MySQL table-name case sensitivity depends on the server's file system and
//! `lower_case_table_names`, so names are folded to lower case, quoted or not, which means a deny
//! list in lower case cannot be sidestepped by changing case. Qualified names keep their parts,
//! joined by `.`, without quotes. Function names are always lower case.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::model::Protocol;

/// One identifier as the server resolves it.
pub(crate) fn ident(protocol: Protocol, value: &str, quoted: bool) -> String {
    match protocol {
        Protocol::Postgres if !quoted => value.to_lowercase(),
        Protocol::Mysql => value.to_lowercase(),
        _ => value.to_owned(),
    }
}

fn ast_ident(protocol: Protocol, id: &Ident) -> String {
    ident(protocol, &id.value, id.quote_style.is_some())
}

pub(crate) fn part_ident(part: &ObjectNamePart) -> &Ident {
    match part {
        ObjectNamePart::Identifier(id) => id,
        ObjectNamePart::Function(func) => &func.name,
    }
}

/// A (possibly qualified) table name.
pub(crate) fn object(protocol: Protocol, name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&ast_ident(protocol, part_ident(part)));
    }
    out
}

/// A single identifier used as a table name (MySQL `LOCK TABLES`, CTE names).
pub(crate) fn table_ident(protocol: Protocol, id: &Ident) -> String {
    ast_ident(protocol, id)
}

/// A function name: lower case, qualified parts joined by `.`.
pub(crate) fn function(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&part_ident(part).value.to_lowercase());
    }
    out
}

/// The last part of a name, the one that identifies a table within its schema; used to match an
/// alias or a qualifier against a table.
pub(crate) fn last_part(name: &ObjectName) -> Option<&Ident> {
    name.0.last().map(part_ident)
}

/// Pushes `name` unless already present: lists keep the order of first appearance.
pub(crate) fn push_unique(list: &mut Vec<String>, name: String) {
    if !list.contains(&name) {
        list.push(name);
    }
}

//! Classification tests: one table of real statements per dialect, plus fingerprint, robustness
//! and cache tests. Every table row asserts kind, tables read, tables written and all four flags.

mod cache;
mod clickhouse;
mod facts;
mod fast;
mod fingerprint;
mod mysql;
mod postgres;
mod resident;
mod robust;

use super::classify;
use crate::model::{Protocol, StatementKind};

pub(super) const W: u8 = 1; // has_where
pub(super) const L: u8 = 2; // has_limit
pub(super) const V: u8 = 4; // volatile
pub(super) const M: u8 = 8; // multi_statement

pub(super) struct Case {
    pub sql: &'static str,
    pub kind: StatementKind,
    pub read: &'static [&'static str],
    pub written: &'static [&'static str],
    pub flags: u8,
    pub functions: Option<&'static [&'static str]>,
}

pub(super) const fn case(
    sql: &'static str,
    kind: StatementKind,
    read: &'static [&'static str],
    written: &'static [&'static str],
) -> Case {
    Case {
        sql,
        kind,
        read,
        written,
        flags: 0,
        functions: None,
    }
}

impl Case {
    pub const fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    pub const fn functions(mut self, functions: &'static [&'static str]) -> Self {
        self.functions = Some(functions);
        self
    }
}

fn flag_bits(flags: crate::model::QueryFlags) -> u8 {
    [
        (flags.has_where, W),
        (flags.has_limit, L),
        (flags.volatile, V),
        (flags.multi_statement, M),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .fold(0, |bits, (_, bit)| bits | bit)
}

/// Checks every row and reports all mismatches at once.
pub(super) fn check(protocol: Protocol, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let got = classify(protocol, case.sql);
        let mut wrong = Vec::new();
        if got.kind != case.kind {
            wrong.push(format!("kind {:?} (want {:?})", got.kind, case.kind));
        }
        if *got.tables_read != *case.read {
            wrong.push(format!("read {:?} (want {:?})", got.tables_read, case.read));
        }
        if *got.tables_written != *case.written {
            wrong.push(format!(
                "written {:?} (want {:?})",
                got.tables_written, case.written
            ));
        }
        if flag_bits(got.flags) != case.flags {
            wrong.push(format!(
                "flags {:?} (want bits {:#06b})",
                got.flags, case.flags
            ));
        }
        if let Some(functions) = case.functions
            && *got.functions != *functions
        {
            wrong.push(format!(
                "functions {:?} (want {functions:?})",
                got.functions
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!("{:?}\n    {}", case.sql, wrong.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        protocol.as_str(),
        failures.join("\n")
    );
}

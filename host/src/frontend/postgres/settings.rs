//! Session settings in transaction pooling. A client's `SET` outside a transaction, and the
//! run-time parameters of its startup packet, belong to the client, not to whichever server
//! connection ran them: they are recorded here and re-applied on the server connection its next
//! transaction runs on, when that connection carries different settings. Settings are compared
//! by a hash, so clients with equal settings (every pgbench client) share connections freely.
//!
//! A `SET` counts once it is committed: alone, in a multi-statement text (an implicit
//! transaction) that succeeds, or in an explicit transaction that commits; the session holds
//! those of an open transaction until it ends. Not tracked (documented): `SET` hidden in a
//! function, `set_config()` calls, and a `SET` undone by `ROLLBACK TO SAVEPOINT`.

use xxhash_rust::xxh3::xxh3_64;

/// Startup parameters that are applied as settings; others (`options`, replication, protocol
/// extensions) are ignored, as PgBouncer's `ignore_startup_parameters` does.
const STARTUP_SETTINGS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "search_path",
    "extra_float_digits",
    "intervalstyle",
    "client_encoding",
    "standard_conforming_strings",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
];

/// What a statement does to the session's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set { name: String, sql: String },
    Reset(String),
    ResetAll,
}

/// A client's settings in the order they were made.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    list: Vec<(String, String)>,
    hash: u64,
    /// The startup packet's settings: what `RESET` restores, as on a server (they are the
    /// session's defaults there).
    startup: Vec<(String, String)>,
}

impl Settings {
    /// Settings from the startup packet's parameters.
    pub fn from_startup(params: &[(String, String)]) -> Settings {
        let mut s = Settings::default();
        for (name, value) in params {
            let lower = name.to_ascii_lowercase();
            if STARTUP_SETTINGS.contains(&lower.as_str()) && !value.is_empty() {
                let sql = format!("SET {} = {}", quote_ident(&lower), quote_literal(value));
                s.apply(&Change::Set { name: lower, sql });
            }
        }
        s.startup = s.list.clone();
        s
    }

    /// Records a change the client made on a server connection that carried these settings.
    /// Returns the hash of what that connection carries now: a `RESET` there restores the
    /// connection's own startup values, while the client's come back to its startup packet's,
    /// which the connection then lacks until they are re-applied.
    pub fn apply(&mut self, change: &Change) -> u64 {
        let server = match change {
            Change::Set { name, sql } => {
                self.list.retain(|(n, _)| n != name);
                self.list.push((name.clone(), sql.clone()));
                None
            }
            Change::Reset(name) => {
                self.list.retain(|(n, _)| n != name);
                let server = hash_of(&self.list);
                if let Some(startup) = self.startup.iter().find(|(n, _)| n == name) {
                    self.list.push(startup.clone());
                }
                Some(server)
            }
            Change::ResetAll => {
                self.list = self.startup.clone();
                Some(0)
            }
        };
        self.hash = hash_of(&self.list);
        server.unwrap_or(self.hash)
    }

    /// 0 when nothing is set.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The SQL that turns a server connection carrying settings `from` into this.
    pub fn replay_sql(&self, from: u64) -> Option<String> {
        if from == self.hash {
            return None;
        }
        let mut sql = String::new();
        if from != 0 {
            sql.push_str("RESET ALL;");
        }
        for (_, set) in &self.list {
            sql.push_str(set);
            sql.push(';');
        }
        Some(sql)
    }

    /// How the client's `client_encoding` (or `SET NAMES`) was set, `None` when it never set
    /// one: what servers decode the client's text with.
    pub fn encoding(&self) -> Option<&str> {
        self.list
            .iter()
            .rev()
            .find(|(n, _)| n == "client_encoding" || n == "names")
            .map(|(_, sql)| sql.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(n, s)| (n.as_str(), s.as_str()))
    }
}

fn hash_of(list: &[(String, String)]) -> u64 {
    if list.is_empty() {
        return 0;
    }
    let mut all = String::new();
    for (_, sql) in list {
        all.push_str(sql);
        all.push(';');
    }
    // Never 0: 0 means "as after login".
    xxh3_64(all.as_bytes()) | 1
}

/// The changes of every statement of `sql`, in order (`multi`: the text holds several).
pub fn parse_changes(sql: &str, multi: bool) -> Vec<Change> {
    if !multi {
        return parse_change(sql).into_iter().collect();
    }
    crate::classify::statement_texts(crate::model::Protocol::Postgres, sql)
        .into_iter()
        .filter_map(parse_change)
        .collect()
}

/// Reads `SET [SESSION] name {TO|=} value`, `RESET name`, `RESET ALL` and `DISCARD ALL` from
/// one statement. `SET LOCAL` and anything else: `None`.
pub fn parse_change(sql: &str) -> Option<Change> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let mut words = trimmed.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    match first.as_str() {
        "set" => {
            let mut name = words.next()?.to_ascii_lowercase();
            if name == "local" {
                return None;
            }
            if name == "session" {
                name = words.next()?.to_ascii_lowercase();
                if name == "authorization" || name == "characteristics" {
                    return None;
                }
            }
            if name == "transaction" {
                return None;
            }
            let name = name.split('=').next()?.trim_matches('"').to_owned();
            if name.is_empty() {
                return None;
            }
            Some(Change::Set {
                name,
                sql: trimmed.to_owned(),
            })
        }
        "reset" => {
            let name = words.next()?.to_ascii_lowercase();
            if name == "all" {
                Some(Change::ResetAll)
            } else {
                Some(Change::Reset(name.trim_matches('"').to_owned()))
            }
        }
        "discard" if words.next()?.eq_ignore_ascii_case("all") => Some(Change::ResetAll),
        _ => None,
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_session_changes() {
        assert_eq!(
            parse_change("SET search_path TO app, public;"),
            Some(Change::Set {
                name: "search_path".into(),
                sql: "SET search_path TO app, public".into()
            })
        );
        assert_eq!(
            parse_change("set SESSION TimeZone='UTC'"),
            Some(Change::Set {
                name: "timezone".into(),
                sql: "set SESSION TimeZone='UTC'".into()
            })
        );
        assert_eq!(parse_change("SET LOCAL work_mem = '1MB'"), None);
        assert_eq!(parse_change("SET TRANSACTION READ ONLY"), None);
        assert_eq!(parse_change("RESET ALL"), Some(Change::ResetAll));
        assert_eq!(parse_change("discard all"), Some(Change::ResetAll));
        assert_eq!(
            parse_change("RESET work_mem"),
            Some(Change::Reset("work_mem".into()))
        );
        assert_eq!(parse_change("SELECT 1"), None);
    }

    #[test]
    fn every_statement_of_a_text_counts() {
        let changes = parse_changes("SET search_path TO f1; SELECT 1; /* x */ RESET ALL;", true);
        assert_eq!(
            changes,
            vec![
                Change::Set {
                    name: "search_path".into(),
                    sql: "SET search_path TO f1".into()
                },
                Change::ResetAll
            ]
        );
        assert!(parse_changes("SELECT 1", false).is_empty());
    }

    #[test]
    fn replay_only_when_different() {
        let mut a = Settings::from_startup(&[
            ("application_name".into(), "pgbench".into()),
            ("user".into(), "app".into()),
            ("options".into(), "-c x=y".into()),
        ]);
        let b = a.clone();
        assert_eq!(a.replay_sql(b.hash()), None);
        assert_eq!(
            a.replay_sql(0).as_deref(),
            Some("SET \"application_name\" = 'pgbench';")
        );
        a.apply(&parse_change("SET work_mem = '8MB'").expect("a SET"));
        assert_ne!(a.hash(), b.hash());
        let sql = a.replay_sql(b.hash()).expect("differs");
        assert!(sql.starts_with("RESET ALL;"), "{sql}");
        // RESET ALL brings back the startup packet's settings; the server connection it ran
        // on is as after login (0) and needs them again.
        assert_eq!(a.apply(&Change::ResetAll), 0);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(
            a.replay_sql(0).as_deref(),
            Some("SET \"application_name\" = 'pgbench';")
        );
        let mut none = Settings::from_startup(&[]);
        none.apply(&parse_change("SET work_mem = '8MB'").expect("a SET"));
        assert_eq!(none.apply(&Change::ResetAll), 0);
        assert_eq!(none.hash(), 0);
        assert_eq!(none.replay_sql(0), None);
        assert_eq!(none.replay_sql(b.hash()).as_deref(), Some("RESET ALL;"));
    }

    #[test]
    fn encoding_is_the_last_one_set() {
        let mut a = Settings::from_startup(&[("client_encoding".into(), "LATIN1".into())]);
        assert_eq!(a.encoding(), Some("SET \"client_encoding\" = 'LATIN1'"));
        a.apply(&parse_change("SET NAMES 'EUC_JP'").expect("a SET"));
        assert_eq!(a.encoding(), Some("SET NAMES 'EUC_JP'"));
        assert_eq!(Settings::from_startup(&[]).encoding(), None);
    }

    #[test]
    fn reset_of_a_startup_setting_restores_it() {
        let mut a = Settings::from_startup(&[("application_name".into(), "app".into())]);
        let startup = a.hash();
        a.apply(&parse_change("SET application_name = 'x'").expect("a SET"));
        a.apply(&parse_change("SET work_mem = '8MB'").expect("a SET"));
        let server = a.apply(&parse_change("RESET application_name").expect("a RESET"));
        assert_ne!(
            server,
            a.hash(),
            "the connection lacks the startup value now"
        );
        let sql = a.replay_sql(server).expect("differs");
        assert!(sql.ends_with("SET \"application_name\" = 'app';"), "{sql}");
        assert_eq!(
            a.apply(&parse_change("RESET work_mem").expect("a RESET")),
            startup
        );
        assert_eq!(a.hash(), startup);
    }
}

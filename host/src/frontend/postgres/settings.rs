//! Session settings in transaction pooling. A client's `SET` outside a transaction, and the
//! run-time parameters of its startup packet, belong to the client, not to whichever server
//! connection ran them: they are recorded here and re-applied on the server connection its next
//! transaction runs on, when that connection carries different settings. Settings are compared
//! by a hash, so clients with equal settings (every pgbench client) share connections freely.
//!
//! Not tracked (documented): `SET` inside a transaction that then commits, `SET` hidden in a
//! function or a multi-statement string, and `set_config()` calls.

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
        s
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Set { name, sql } => {
                self.list.retain(|(n, _)| n != name);
                self.list.push((name.clone(), sql.clone()));
            }
            Change::Reset(name) => self.list.retain(|(n, _)| n != name),
            Change::ResetAll => self.list.clear(),
        }
        self.hash = if self.list.is_empty() {
            0
        } else {
            let mut all = String::new();
            for (_, sql) in &self.list {
                all.push_str(sql);
                all.push(';');
            }
            // Never 0: 0 means "as after login".
            xxh3_64(all.as_bytes()) | 1
        };
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

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(n, s)| (n.as_str(), s.as_str()))
    }
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
        a.apply(&Change::ResetAll);
        assert_eq!(a.hash(), 0);
        assert_eq!(a.replay_sql(0), None);
        assert_eq!(a.replay_sql(b.hash()).as_deref(), Some("RESET ALL;"));
    }
}

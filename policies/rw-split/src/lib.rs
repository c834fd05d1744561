//! `rw-split`: Switchyard's built-in default policy as a module.
//!
//! Reads outside a transaction go to the replica pool (volatile reads too: they are still
//! reads); everything else — writes, DDL, transaction control, session and utility statements,
//! statements the host could not parse, anything inside a transaction — goes to the primary.
//! Nothing is cached.
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `read_only_transactions` | `"replica"` / `"primary"` (default) | where `BEGIN READ ONLY` / `START TRANSACTION READ ONLY` goes; the host keeps every statement of the transaction on that connection |
//!
//! Other keys are ignored.

use switchyard_policy::{Config, Decision, Policy, Query, Route, StatementKind};

pub struct RwSplit {
    read_only_to_replica: bool,
}

impl Policy for RwSplit {
    fn init(config: Config) -> Result<Self, String> {
        let read_only_to_replica = match config.get("read_only_transactions").map(str::trim) {
            None | Some("primary") => false,
            Some("replica") => true,
            Some(other) => {
                return Err(format!(
                    "read_only_transactions: expected \"replica\" or \"primary\", got \"{other}\""
                ));
            }
        };
        Ok(RwSplit {
            read_only_to_replica,
        })
    }

    fn on_query(&self, q: &Query) -> Decision {
        if self.read_only_to_replica && !q.in_transaction && begins_read_only(q) {
            return Decision::forward().route(Route::Replica);
        }
        Decision::forward().read_write_split(q)
    }
}

/// `BEGIN ... READ ONLY` or `START TRANSACTION ... READ ONLY` (and not also `READ WRITE`).
fn begins_read_only(q: &Query) -> bool {
    if q.kind != StatementKind::Transaction {
        return false;
    }
    let sql = q.sql.to_ascii_lowercase();
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let starts =
        matches!(words.first(), Some(&"begin")) || words.starts_with(&["start", "transaction"]);
    let read_only = words.windows(2).any(|w| w == ["read", "only"]);
    let read_write = words.windows(2).any(|w| w == ["read", "write"]);
    starts && read_only && !read_write
}

switchyard_policy::export!(RwSplit);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy::testing::init;
    use switchyard_policy::{Action, QueryFlags, Route, StatementKind as K};

    fn route(q: Query) -> Route {
        route_with(&[], q)
    }

    fn route_with(config: &[(&str, &str)], q: Query) -> Route {
        let d = init::<RwSplit>(config).on_query(&q);
        assert_eq!(d.action, Action::Forward);
        assert_eq!(d.cache, None);
        assert!(d.tags.is_empty() && d.affinity_key.is_none() && d.mirror.is_none());
        d.route
    }

    #[test]
    fn reads_go_to_the_replica() {
        assert_eq!(route(Query::new("SELECT 1", K::Read)), Route::Replica);
        let volatile = Query::new("SELECT now()", K::Read).with_flags(QueryFlags::VOLATILE);
        assert_eq!(route(volatile), Route::Replica);
    }

    #[test]
    fn everything_else_goes_to_the_primary() {
        for kind in [
            K::Write,
            K::Ddl,
            K::Transaction,
            K::Session,
            K::Utility,
            K::Unknown,
        ] {
            assert_eq!(route(Query::new("x", kind)), Route::Primary, "{kind:?}");
        }
    }

    #[test]
    fn reads_in_a_transaction_go_to_the_primary() {
        let q = Query::new("SELECT 1", K::Read).inside_transaction();
        assert_eq!(route(q), Route::Primary);
    }

    #[test]
    fn unknown_config_is_ignored() {
        assert!(RwSplit::init(Config::from_pairs([("anything", "x")])).is_ok());
        assert!(RwSplit::init(Config::from_pairs([("read_only_transactions", "x")])).is_err());
    }

    #[test]
    fn read_only_transactions_go_to_the_replica_when_configured() {
        let replica = [("read_only_transactions", "replica")];
        let begin = || Query::new("BEGIN READ ONLY", K::Transaction);
        assert_eq!(route(begin()), Route::Primary, "off by default");
        assert_eq!(route_with(&replica, begin()), Route::Replica);
        let start = Query::new(
            "start transaction isolation level repeatable read, read only",
            K::Transaction,
        );
        assert_eq!(route_with(&replica, start), Route::Replica);
        for sql in [
            "BEGIN",
            "BEGIN READ WRITE",
            "COMMIT",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert_eq!(
                route_with(&replica, Query::new(sql, K::Transaction)),
                Route::Primary,
                "{sql}"
            );
        }
    }
}

//! `guard`: refuses dangerous statements, enforces per-user denylists and bounds unbounded
//! SELECTs. Everything it lets through is routed like `rw-split`.
//!
//! Rules, in order (the first that applies wins):
//!
//! 1. **DROP / TRUNCATE** — a statement whose first keyword is `DROP` or `TRUNCATE` (after
//!    comments, whitespace and opening parentheses) in a text the host classified `ddl` (or
//!    could not parse: `unknown`) is blocked: `guard: DROP is not allowed`.
//! 2. **UPDATE / DELETE without WHERE** — blocked: `guard: DELETE without WHERE is not
//!    allowed`. Two checks, either one blocks:
//!    * the host's verdict: a single parsed statement of kind `write` whose first keyword is
//!      `UPDATE`/`DELETE` and whose `has-where` flag is unset;
//!    * the text, statement by statement (`switchyard_policy::sql::update_or_delete_without_where`):
//!      an UPDATE/DELETE that starts a statement or sub-statement (writable CTE, `EXPLAIN
//!      ANALYZE`) with no `WHERE` at its own parenthesis level. This covers multi-statement and
//!      unparsed texts, where the host's flag describes nothing reliable.
//! 3. **Denied tables** — `deny_tables.<user>` (and `deny_tables.*` for every user) lists
//!    tables the user may neither read nor write: `guard: table payroll is denied for user
//!    alice`.
//! 4. **Denied functions** — `deny_functions.<user>` / `deny_functions.*` likewise for
//!    functions: `guard: function pg_sleep is denied for user alice`.
//! 5. **LIMIT** — with `limit.<user> = "n"` (or `limit.*`), a single-statement read whose first
//!    keyword is SELECT or WITH and that has no LIMIT (host flag `has-limit` unset) is rewritten
//!    to `<sql without trailing ; and comments> LIMIT n` (ClickHouse: before a trailing
//!    `SETTINGS`/`FORMAT` clause) and tagged `guard=limit`.
//!
//! Names match as `switchyard_policy::name_matches` says: ignoring case and quotes, and an
//! unqualified name also matches qualified ones (`payroll` denies `hr.payroll`).
//!
//! Config keys (anything else is refused, so a typo cannot silently disable a rule):
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `deny_tables.<user>` | `"payroll,secrets.keys"` | tables `<user>` may not touch; `<user>` = `*`: everyone |
//! | `deny_functions.<user>` | `"pg_read_file,pg_sleep"` | functions `<user>` may not call; `*`: everyone |
//! | `limit.<user>` | `"1000"` | add `LIMIT 1000` to `<user>`'s unbounded SELECTs; `*`: everyone; `0`: never (overrides `*`) |

use std::collections::BTreeMap;

use switchyard_policy::sql::{self, Dialect};
use switchyard_policy::{Config, Decision, Policy, Query, StatementKind, name_matches, split_list};

/// Per-user rules; the `*` entry applies to everyone.
#[derive(Debug, Default)]
pub struct Guard {
    deny_tables: BTreeMap<String, Vec<String>>,
    deny_functions: BTreeMap<String, Vec<String>>,
    limits: BTreeMap<String, u64>,
}

const EVERYONE: &str = "*";

impl Policy for Guard {
    fn init(config: Config) -> Result<Self, String> {
        config.ensure_known_keys(&["deny_tables.*", "deny_functions.*", "limit.*"])?;
        let lists = |prefix: &str| -> BTreeMap<String, Vec<String>> {
            config
                .entries_with_prefix(prefix)
                .map(|(user, v)| {
                    (
                        user.to_string(),
                        split_list(v).into_iter().map(str::to_string).collect(),
                    )
                })
                .collect()
        };
        let mut limits = BTreeMap::new();
        for (user, _) in config.entries_with_prefix("limit.") {
            let key = format!("limit.{user}");
            let n = config.get_u64(&key)?.unwrap_or(0);
            limits.insert(user.to_string(), n);
        }
        Ok(Guard {
            deny_tables: lists("deny_tables."),
            deny_functions: lists("deny_functions."),
            limits,
        })
    }

    fn on_query(&self, q: &Query) -> Decision {
        let decision = Decision::forward().read_write_split(q);
        if let Some(reason) = self.refusal(q) {
            return decision.block(reason);
        }
        if let Some(n) = self.limit_for(&q.user)
            && let Some(sql) = limited(q, n)
        {
            return decision.rewrite(sql).tag("guard", "limit");
        }
        decision
    }
}

impl Guard {
    /// Why the statement is refused, if it is.
    ///
    /// This runs for every statement, so the common case (nothing to refuse) allocates
    /// nothing: keywords are compared ignoring case instead of upper-casing copies, and a
    /// message is only formatted for a statement that is actually refused.
    fn refusal(&self, q: &Query) -> Option<String> {
        let dialect = q.dialect();
        // One statement the host parsed: its flags describe it. Otherwise look at each
        // statement of the text ourselves.
        let parsed_single = !q.is_multi_statement() && !q.is_unknown();
        let whole = q.sql.as_str();
        let split;
        let statements: &[&str] = if parsed_single {
            std::slice::from_ref(&whole)
        } else {
            split = q.statements();
            &split
        };
        for &stmt in statements {
            let keyword = sql::first_keyword(stmt, dialect).unwrap_or_default();
            let is = |k: &str| keyword.eq_ignore_ascii_case(k);
            if (is("DROP") || is("TRUNCATE"))
                && matches!(q.kind, StatementKind::Ddl | StatementKind::Unknown)
            {
                return Some(format!(
                    "guard: {} is not allowed",
                    keyword.to_ascii_uppercase()
                ));
            }
            let without_where = if (is("UPDATE") || is("DELETE"))
                && parsed_single
                && q.is_write()
                && !q.has_where()
            {
                Some(keyword)
            } else {
                sql::update_or_delete_without_where(stmt, dialect)
            };
            if let Some(keyword) = without_where {
                return Some(format!(
                    "guard: {} without WHERE is not allowed",
                    keyword.to_ascii_uppercase()
                ));
            }
        }
        for table in q.tables() {
            if denied(&self.deny_tables, &q.user, table) {
                return Some(format!(
                    "guard: table {table} is denied for user {}",
                    q.user
                ));
            }
        }
        for function in &q.functions {
            if denied(&self.deny_functions, &q.user, function) {
                return Some(format!(
                    "guard: function {function} is denied for user {}",
                    q.user
                ));
            }
        }
        None
    }

    /// The LIMIT to add to `user`'s unbounded SELECTs: the user's own `limit.<user>`, else
    /// `limit.*`; none when unset or 0.
    fn limit_for(&self, user: &str) -> Option<u64> {
        self.limits
            .get(user)
            .or_else(|| self.limits.get(EVERYONE))
            .copied()
            .filter(|n| *n > 0)
    }
}

/// `name` (a table or function of the query) is on `user`'s list or everyone's.
fn denied(lists: &BTreeMap<String, Vec<String>>, user: &str, name: &str) -> bool {
    [user, EVERYONE]
        .iter()
        .filter_map(|u| lists.get(*u))
        .flatten()
        .any(|pattern| name_matches(name, pattern))
}

/// The query with `LIMIT n` added, if it is a single unbounded SELECT.
fn limited(q: &Query, n: u64) -> Option<String> {
    // The flags first: they are free, the keyword needs the lexer.
    if !q.is_read() || q.has_limit() || q.is_multi_statement() {
        return None;
    }
    let select = q
        .first_keyword()
        .is_some_and(|k| k.eq_ignore_ascii_case("SELECT") || k.eq_ignore_ascii_case("WITH"));
    if !select {
        return None;
    }
    sql::append_limit(&q.sql, n, Dialect::of(q.protocol))
}

switchyard_policy::export!(Guard);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy::testing::{init, init_err};
    use switchyard_policy::{Action, Protocol, QueryFlags as F, Route, StatementKind as K};

    fn guard() -> Guard {
        init(&[
            ("deny_tables.alice", "payroll, secrets.keys"),
            ("deny_tables.*", "audit_log"),
            ("deny_functions.alice", "pg_read_file,pg_sleep"),
            ("deny_functions.*", "pg_terminate_backend"),
            ("limit.alice", "100"),
            ("limit.*", "1000"),
            ("limit.etl", "0"),
        ])
    }

    fn blocked(q: Query) -> String {
        match guard().on_query(&q).action {
            Action::Block(r) => r,
            other => panic!("expected a block for {:?}, got {other:?}", q.sql),
        }
    }

    fn allowed(q: Query) -> Decision {
        let d = guard().on_query(&q);
        assert!(
            !d.is_blocked(),
            "unexpected block for {:?}: {:?}",
            q.sql,
            d.action
        );
        d
    }

    #[test]
    fn drop_and_truncate_are_blocked() {
        assert_eq!(
            blocked(Query::new("DROP TABLE users", K::Ddl)),
            "guard: DROP is not allowed"
        );
        assert_eq!(
            blocked(Query::new("  -- cleanup\n/* x */ truncate users;", K::Ddl)),
            "guard: TRUNCATE is not allowed"
        );
        // Unparsed text that starts with DROP is refused too.
        assert_eq!(
            blocked(Query::new("DROP TABLE x WITH SOME NONSENSE", K::Unknown)),
            "guard: DROP is not allowed"
        );
        // Other DDL passes, to the primary.
        let d = allowed(Query::new("CREATE TABLE t (a int)", K::Ddl));
        assert_eq!(d.route, Route::Primary);
        allowed(Query::new("ALTER TABLE t DROP COLUMN a", K::Ddl));
    }

    #[test]
    fn a_drop_hidden_after_another_statement_is_blocked() {
        let q = Query::new("SELECT 1; DROP TABLE users", K::Ddl).with_flags(F::MULTI_STATEMENT);
        assert_eq!(blocked(q), "guard: DROP is not allowed");
        // Keywords inside strings and comments do not count.
        allowed(Query::new(
            "SELECT 'x; DROP TABLE users' -- ; DROP",
            K::Read,
        ));
    }

    #[test]
    fn update_and_delete_without_where_are_blocked() {
        assert_eq!(
            blocked(Query::new("UPDATE accounts SET balance = 0", K::Write)),
            "guard: UPDATE without WHERE is not allowed"
        );
        assert_eq!(
            blocked(Query::new("delete from accounts", K::Write)),
            "guard: DELETE without WHERE is not allowed"
        );
        let d = allowed(
            Query::new("DELETE FROM accounts WHERE id = 1", K::Write).with_flags(F::HAS_WHERE),
        );
        assert_eq!(d.route, Route::Primary);
        assert_eq!(d.action, Action::Forward);
        // INSERT never has a WHERE and is fine.
        allowed(Query::new("INSERT INTO accounts VALUES (1)", K::Write));
    }

    #[test]
    fn update_without_where_in_a_multi_statement_text_is_blocked() {
        // The host's has-where flag covers the whole text: look at each statement.
        let q = Query::new("UPDATE a SET x = 1 WHERE id = 2; DELETE FROM b", K::Write)
            .with_flags(F::MULTI_STATEMENT | F::HAS_WHERE);
        assert_eq!(blocked(q), "guard: DELETE without WHERE is not allowed");
        // A WHERE only inside a subquery does not count.
        let q = Query::new(
            "SELECT 1; UPDATE a SET x = (SELECT y FROM c WHERE c.id = 1)",
            K::Write,
        )
        .with_flags(F::MULTI_STATEMENT);
        assert_eq!(blocked(q), "guard: UPDATE without WHERE is not allowed");
        let q = Query::new("UPDATE a SET x = 1 WHERE id = 2; SELECT 1", K::Write)
            .with_flags(F::MULTI_STATEMENT | F::HAS_WHERE);
        allowed(q);
    }

    #[test]
    fn hidden_updates_and_deletes_without_where_are_blocked() {
        let q = Query::new("EXPLAIN ANALYZE DELETE FROM accounts", K::Write);
        assert_eq!(blocked(q), "guard: DELETE without WHERE is not allowed");
        // The host's has-where may describe the outer statement only.
        let q = Query::new(
            "WITH d AS (DELETE FROM accounts RETURNING *) SELECT * FROM d WHERE id = 1",
            K::Write,
        )
        .with_flags(F::HAS_WHERE);
        assert_eq!(blocked(q), "guard: DELETE without WHERE is not allowed");
        allowed(Query::new("EXPLAIN DELETE FROM accounts", K::Read).with_flags(F::HAS_LIMIT));
    }

    #[test]
    fn unparsed_update_is_judged_by_its_text() {
        assert_eq!(
            blocked(Query::new("UPDATE t SET a = 1 WEIRD SYNTAX", K::Unknown)),
            "guard: UPDATE without WHERE is not allowed"
        );
        allowed(Query::new(
            "UPDATE t SET a = 1 WHERE b = 2 WEIRD",
            K::Unknown,
        ));
    }

    #[test]
    fn denied_tables() {
        let q = Query::new("SELECT * FROM payroll", K::Read)
            .with_user("alice")
            .with_tables_read(["payroll"]);
        assert_eq!(blocked(q), "guard: table payroll is denied for user alice");
        // Qualified names in the query match unqualified patterns; writes count too.
        let q = Query::new("INSERT INTO hr.payroll VALUES (1)", K::Write)
            .with_user("alice")
            .with_tables_written(["hr.payroll"]);
        assert_eq!(
            blocked(q),
            "guard: table hr.payroll is denied for user alice"
        );
        let q = Query::new("SELECT * FROM secrets.keys", K::Read)
            .with_user("alice")
            .with_tables_read(["secrets.keys"]);
        assert_eq!(
            blocked(q),
            "guard: table secrets.keys is denied for user alice"
        );
        // `keys` in another schema is not `secrets.keys`.
        allowed(
            Query::new("SELECT * FROM public.keys", K::Read)
                .with_user("alice")
                .with_tables_read(["public.keys"]),
        );
        // Other users may read payroll...
        allowed(
            Query::new("SELECT * FROM payroll", K::Read)
                .with_user("bob")
                .with_tables_read(["payroll"]),
        );
        // ...but nobody touches audit_log (`*`).
        let q = Query::new("DELETE FROM audit_log WHERE id = 1", K::Write)
            .with_user("bob")
            .with_flags(F::HAS_WHERE)
            .with_tables_written(["audit_log"]);
        assert_eq!(blocked(q), "guard: table audit_log is denied for user bob");
    }

    #[test]
    fn denied_functions() {
        let q = Query::new("SELECT pg_sleep(10)", K::Read)
            .with_user("alice")
            .with_functions(["pg_sleep"]);
        assert_eq!(
            blocked(q),
            "guard: function pg_sleep is denied for user alice"
        );
        let q = Query::new("SELECT pg_terminate_backend(1)", K::Write)
            .with_user("bob")
            .with_functions(["pg_terminate_backend"]);
        assert_eq!(
            blocked(q),
            "guard: function pg_terminate_backend is denied for user bob"
        );
        allowed(
            Query::new("SELECT pg_sleep(1)", K::Read)
                .with_user("bob")
                .with_functions(["pg_sleep"])
                .with_flags(F::HAS_LIMIT),
        );
    }

    #[test]
    fn selects_without_limit_get_one() {
        let d = allowed(Query::new("SELECT * FROM t;", K::Read).with_user("alice"));
        assert_eq!(d.rewritten_sql(), Some("SELECT * FROM t LIMIT 100"));
        assert_eq!(d.route, Route::Replica);
        assert_eq!(d.tag_value("guard"), Some("limit"));
        // Everyone else gets limit.*.
        let d = allowed(
            Query::new("WITH x AS (SELECT 1) SELECT * FROM x -- hi", K::Read).with_user("carol"),
        );
        assert_eq!(
            d.rewritten_sql(),
            Some("WITH x AS (SELECT 1) SELECT * FROM x LIMIT 1000")
        );
        // limit.etl = 0 switches it off for etl.
        let d = allowed(Query::new("SELECT * FROM t", K::Read).with_user("etl"));
        assert_eq!(d.action, Action::Forward);
    }

    #[test]
    fn limit_is_not_added_where_it_does_not_belong() {
        for q in [
            Query::new("SELECT * FROM t LIMIT 5", K::Read).with_flags(F::HAS_LIMIT),
            Query::new("SELECT 1; SELECT 2", K::Read).with_flags(F::MULTI_STATEMENT),
            Query::new("SHOW search_path", K::Read),
            Query::new("EXPLAIN SELECT * FROM t", K::Read),
            Query::new("SELECT * FROM t FOR UPDATE", K::Write),
            Query::new("INSERT INTO t SELECT * FROM u", K::Write),
        ] {
            let d = allowed(q.with_user("alice"));
            assert_eq!(d.action, Action::Forward);
        }
    }

    #[test]
    fn clickhouse_limit_goes_before_format() {
        let q = Query::new("SELECT * FROM events FORMAT JSONEachRow", K::Read)
            .with_protocol(Protocol::ClickhouseHttp)
            .with_user("alice");
        assert_eq!(
            allowed(q).rewritten_sql(),
            Some("SELECT * FROM events LIMIT 100 FORMAT JSONEachRow")
        );
    }

    #[test]
    fn no_config_means_only_the_fixed_rules() {
        let g = init::<Guard>(&[]);
        let d =
            g.on_query(&Query::new("SELECT * FROM payroll", K::Read).with_tables_read(["payroll"]));
        assert_eq!(d.action, Action::Forward);
        assert_eq!(d.route, Route::Replica);
        assert!(g.on_query(&Query::new("DROP TABLE t", K::Ddl)).is_blocked());
    }

    #[test]
    fn bad_config_is_refused() {
        assert_eq!(
            init_err::<Guard>(&[("limit.alice", "lots")]),
            "config key `limit.alice`: expected a whole number, got `lots`"
        );
        assert!(init_err::<Guard>(&[("deny_table.alice", "payroll")]).contains("unknown key"));
    }
}

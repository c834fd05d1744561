//! The rules on hand-built facts. The shared case file (`policies/cases/guard.toml`) runs the
//! same rules on what the host's classifier really reports.

use switchyard_policy::testing::{init, init_err};
use switchyard_policy::{
    Access, Action, Decision, ObjectKind, ObjectRef, Policy, Protocol, Query, Route, Statement,
    StatementKind as K,
};

use crate::Guard;

fn guard() -> Guard {
    init(&[
        ("deny_tables.alice", "payroll, secrets.keys"),
        ("deny_tables.*", "audit_log"),
        ("deny_functions.alice", "pg_read_file,pg_sleep"),
        ("deny_functions.*", "pg_terminate_backend"),
        ("deny_commands.migrator", "TRUNCATE TABLE"),
        ("limit.alice", "100"),
        ("limit.*", "1000"),
        ("limit.etl", "0"),
    ])
}

/// A query of one statement.
fn one(sql: &str, s: Statement) -> Query {
    Query::new(sql, s.kind).with_statement(s)
}

fn blocked_by(g: &Guard, q: Query) -> String {
    match g.on_query(&q).action {
        Action::Block(r) => r,
        other => panic!("expected a block for {:?}, got {other:?}", q.sql),
    }
}

fn blocked(q: Query) -> String {
    blocked_by(&guard(), q)
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

fn table(name: &str, access: Access) -> ObjectRef {
    ObjectRef::new(ObjectKind::Table, name, access)
}

#[test]
fn denied_commands_at_any_position() {
    let drop = Statement::new("DROP TABLE", K::Ddl).with_object(table("users", Access::Define));
    assert_eq!(
        blocked(one("DROP TABLE users", drop.clone())),
        "guard: DROP TABLE is not allowed"
    );
    // `;DROP TABLE users`: an empty statement first changes nothing.
    let q = Query::new(";DROP TABLE users", K::Ddl)
        .with_statement(Statement::empty())
        .with_statement(drop.clone());
    assert_eq!(blocked(q), "guard: DROP TABLE is not allowed");
    assert_eq!(
        blocked(one("TRUNCATE t", Statement::new("TRUNCATE TABLE", K::Ddl))),
        "guard: TRUNCATE TABLE is not allowed"
    );
    assert_eq!(
        blocked(one("DO $$ $$", Statement::new("DO", K::Write))),
        "guard: DO is not allowed"
    );
    allowed(one(
        "ALTER TABLE t DROP COLUMN a",
        Statement::new("ALTER TABLE", K::Ddl),
    ));
}

#[test]
fn deny_commands_per_user_replace_the_default() {
    let g: Guard = init(&[
        ("deny_commands.*", "DROP *, CREATE FUNCTION"),
        ("deny_commands.admin", ""),
    ]);
    let create = one(
        "CREATE FUNCTION f() ...",
        Statement::new("CREATE FUNCTION", K::Ddl),
    );
    assert_eq!(
        blocked_by(&g, create.clone()),
        "guard: CREATE FUNCTION is not allowed"
    );
    // `*`'s list replaced the default: TRUNCATE passes.
    assert!(
        !g.on_query(&one("TRUNCATE t", Statement::new("TRUNCATE TABLE", K::Ddl)))
            .is_blocked()
    );
    assert!(!g.on_query(&create.with_user("admin")).is_blocked());
    // A user's own list replaces the default too.
    let q = one("DROP TABLE t", Statement::new("DROP TABLE", K::Ddl)).with_user("migrator");
    allowed(q);
}

#[test]
fn a_prepared_statement_is_judged_at_prepare_and_explain_runs_nothing() {
    let prepare = Query::new("PREPARE p AS DELETE FROM t", K::Session)
        .with_statement(Statement::new("PREPARE", K::Session))
        .with_statement(Statement::new("DELETE", K::Write).not_running().at_depth(1));
    assert_eq!(
        blocked(prepare),
        "guard: DELETE without WHERE is not allowed"
    );
    let explain = Query::new("EXPLAIN DELETE FROM t", K::Read)
        .with_statement(Statement::new("EXPLAIN", K::Read))
        .with_statement(Statement::new("DELETE", K::Write).not_running().at_depth(1))
        .with_user("etl");
    allowed(explain);
    let analyze = Query::new("EXPLAIN ANALYZE DELETE FROM t", K::Write)
        .with_statement(Statement::new("EXPLAIN", K::Write))
        .with_statement(Statement::new("DELETE", K::Write).at_depth(1));
    assert_eq!(
        blocked(analyze),
        "guard: DELETE without WHERE is not allowed"
    );
    // EXECUTE names a statement judged when it was prepared.
    allowed(one("EXECUTE p", Statement::new("EXECUTE", K::Write)));
}

#[test]
fn update_and_delete_without_where() {
    assert_eq!(
        blocked(one(
            "UPDATE a SET x = 1",
            Statement::new("UPDATE", K::Write)
        )),
        "guard: UPDATE without WHERE is not allowed"
    );
    let d = allowed(one(
        "DELETE FROM a WHERE id = 1",
        Statement::new("DELETE", K::Write).with_where(),
    ));
    assert_eq!(d.route, Route::Primary);
    // A writable CTE's DELETE follows its SELECT.
    let q = Query::new(
        "WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d",
        K::Write,
    )
    .with_statement(Statement::new("SELECT", K::Write))
    .with_statement(Statement::new("DELETE", K::Write).at_depth(1));
    assert_eq!(blocked(q), "guard: DELETE without WHERE is not allowed");
    allowed(one(
        "INSERT INTO a VALUES (1)",
        Statement::new("INSERT", K::Write),
    ));
}

#[test]
fn unparsed_statements_are_blocked_unless_allowed() {
    let guess = Statement::new("SELECT", K::Unknown)
        .unparsed()
        .with_object(ObjectRef::read("payroll").guessed());
    let q = one("SELECT s.* FROM ROWS FROM (f()) g, payroll s", guess).with_user("alice");
    assert_eq!(
        blocked(q.clone()),
        "guard: a statement that could not be parsed is blocked (unknown = \"block\")"
    );
    // Allowed: judged on the guesses, which name a denied table.
    let g: Guard = init(&[("unknown", "allow"), ("deny_tables.alice", "payroll")]);
    assert_eq!(
        blocked_by(&g, q.clone()),
        "guard: table payroll is denied for user alice"
    );
    assert!(!g.on_query(&q.with_user("bob")).is_blocked());
    // No statements at all and unknown: nothing to judge.
    assert!(blocked(Query::new("??", K::Unknown)).contains("could not be parsed"));
}

#[test]
fn denied_tables_and_functions_in_any_statement() {
    let q = one(
        "SELECT * FROM payroll",
        Statement::new("SELECT", K::Read).with_object(ObjectRef::read("payroll")),
    )
    .with_user("alice");
    assert_eq!(blocked(q), "guard: table payroll is denied for user alice");
    let q = one(
        "SELECT * FROM \"Secrets\".keys",
        Statement::new("SELECT", K::Read)
            .with_object(ObjectRef::read("keys").in_schema("\"Secrets\"")),
    )
    .with_user("alice");
    assert_eq!(
        blocked(q),
        "guard: table \"Secrets\".keys is denied for user alice"
    );
    allowed(
        one(
            "SELECT * FROM public.keys LIMIT 1",
            Statement::new("SELECT", K::Read)
                .with_limit()
                .with_object(ObjectRef::read("keys").in_schema("public")),
        )
        .with_user("alice"),
    );
    // Even where it does not run: a plain EXPLAIN names the table.
    let q = Query::new("EXPLAIN DELETE FROM audit_log WHERE id = 1", K::Read)
        .with_statement(Statement::new("EXPLAIN", K::Read))
        .with_statement(
            Statement::new("DELETE", K::Write)
                .not_running()
                .at_depth(1)
                .with_where()
                .with_object(ObjectRef::written("audit_log")),
        )
        .with_user("bob");
    assert_eq!(blocked(q), "guard: table audit_log is denied for user bob");
    let q = one(
        "CALL pg_catalog.pg_sleep(1)",
        Statement::new("CALL", K::Write).with_object(
            ObjectRef::new(ObjectKind::Procedure, "pg_sleep", Access::Call).in_schema("pg_catalog"),
        ),
    )
    .with_user("alice");
    assert_eq!(
        blocked(q),
        "guard: function pg_catalog.pg_sleep is denied for user alice"
    );
}

#[test]
fn one_unbounded_select_gets_a_limit() {
    let select = || Statement::new("SELECT", K::Read).with_object(ObjectRef::read("t"));
    let d = allowed(one("SELECT * FROM t;", select()).with_user("alice"));
    assert_eq!(d.rewritten_sql(), Some("SELECT * FROM t LIMIT 100"));
    assert_eq!(d.route, Route::Replica);
    assert_eq!(d.tag_value("guard"), Some("limit"));
    let d = allowed(one("SELECT * FROM t", select()).with_user("etl"));
    assert_eq!(d.action, Action::Forward);
    let q = one("SELECT * FROM events FORMAT JSON", select())
        .with_protocol(Protocol::ClickhouseHttp)
        .with_user("carol");
    assert_eq!(
        allowed(q).rewritten_sql(),
        Some("SELECT * FROM events LIMIT 1000 FORMAT JSON")
    );
    for q in [
        one("SELECT * FROM t LIMIT 5", select().with_limit()),
        Query::new("SELECT 1; SELECT 2", K::Read)
            .with_statement(select())
            .with_statement(select()),
        one("SHOW search_path", Statement::new("SHOW", K::Read)),
        one(
            "SELECT * FROM t FOR UPDATE",
            Statement::new("SELECT", K::Write),
        ),
    ] {
        assert_eq!(allowed(q.with_user("alice")).action, Action::Forward);
    }
}

#[test]
fn bad_config_is_refused() {
    assert_eq!(
        init_err::<Guard>(&[("limit.alice", "lots")]),
        "config key `limit.alice`: expected a whole number, got `lots`"
    );
    assert_eq!(
        init_err::<Guard>(&[("unknown", "maybe")]),
        "config key `unknown`: expected `block` or `allow`, got `maybe`"
    );
    assert!(init_err::<Guard>(&[("deny_table.alice", "payroll")]).contains("unknown key"));
}

//! Per-statement facts: what a policy judges instead of the SQL text.

use crate::classify::classify;
use crate::model::{Access, ObjectKind, Protocol, StatementKind};

const PG: Protocol = Protocol::Postgres;

/// `(depth, command, runs, parsed)` of every statement, and `kind:schema.name:access` of its
/// objects.
fn facts(sql: &str) -> Vec<(u32, String, bool, bool, Vec<String>)> {
    classify(PG, sql)
        .statements
        .iter()
        .map(|s| {
            let objects = s
                .objects
                .iter()
                .map(|o| {
                    let name = match &o.schema {
                        Some(schema) => format!("{schema}.{}", o.name),
                        None => o.name.clone(),
                    };
                    format!(
                        "{:?}:{name}:{:?}{}",
                        o.kind,
                        o.access,
                        if o.guessed { "?" } else { "" }
                    )
                })
                .collect();
            (s.depth, s.command.clone(), s.runs, s.parsed, objects)
        })
        .collect()
}

fn f(
    depth: u32,
    command: &str,
    runs: bool,
    parsed: bool,
    objects: &[&str],
) -> (u32, String, bool, bool, Vec<String>) {
    (
        depth,
        command.to_owned(),
        runs,
        parsed,
        objects.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn leading_and_doubled_semicolons_hide_nothing() {
    assert_eq!(
        facts(";DROP TABLE victim"),
        vec![
            f(0, "", true, true, &[]),
            f(0, "DROP TABLE", true, true, &["Table:victim:Define"])
        ]
    );
    assert_eq!(
        facts("/**/;;TRUNCATE victim"),
        vec![
            f(0, "", true, true, &[]),
            f(0, "", true, true, &[]),
            f(0, "TRUNCATE TABLE", true, true, &["Table:victim:Define"])
        ]
    );
    assert_eq!(
        facts("SELECT 1; DELETE FROM app.victim WHERE id = 1;"),
        vec![
            f(0, "SELECT", true, true, &[]),
            f(0, "DELETE", true, true, &["Relation:app.victim:Write"])
        ]
    );
}

#[test]
fn nested_statements_are_listed_after_their_parent() {
    assert_eq!(
        facts("EXPLAIN ANALYZE DELETE FROM victim"),
        vec![
            f(0, "EXPLAIN", true, true, &[]),
            f(1, "DELETE", true, true, &["Relation:victim:Write"])
        ]
    );
    assert_eq!(
        facts("EXPLAIN DELETE FROM victim"),
        vec![
            f(0, "EXPLAIN", true, true, &[]),
            f(1, "DELETE", false, true, &["Relation:victim:Write"])
        ]
    );
    assert_eq!(
        facts("PREPARE p AS DELETE FROM victim"),
        vec![
            f(0, "PREPARE", true, true, &[]),
            f(1, "DELETE", false, true, &["Relation:victim:Write"])
        ]
    );
    let cte = facts("WITH gone AS (DELETE FROM victim RETURNING *) SELECT count(*) FROM gone");
    assert_eq!(cte[0].1, "SELECT");
    assert!(
        cte[0].4.contains(&"Function:count:Call".to_owned()),
        "{cte:?}"
    );
    assert!(
        !cte[0].4.iter().any(|o| o.contains("gone")),
        "a CTE is not a table: {cte:?}"
    );
    assert!(
        cte.iter()
            .any(|s| s.0 == 1 && s.1 == "DELETE" && s.4 == ["Relation:victim:Write"]),
        "{cte:?}"
    );
}

#[test]
fn definitions_name_their_objects_with_their_kind() {
    assert_eq!(
        facts("create or replace function app.f() returns int language sql as 'select 1'"),
        vec![f(
            0,
            "CREATE FUNCTION",
            true,
            true,
            &["Function:app.f:Define"]
        )]
    );
    assert_eq!(
        facts("DROP VIEW IF EXISTS v1, s.v2"),
        vec![f(
            0,
            "DROP VIEW",
            true,
            true,
            &["View:v1:Define", "View:s.v2:Define"]
        )]
    );
    let c = classify(
        PG,
        "SELECT * FROM \"Secrets\" s JOIN keys USING (id) LIMIT 1",
    );
    let st = &c.statements[0];
    assert_eq!(st.kind, StatementKind::Read);
    assert!(st.has_limit);
    let names: Vec<(&str, ObjectKind, Access)> = st
        .objects
        .iter()
        .map(|o| (o.name.as_str(), o.kind, o.access))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Secrets", ObjectKind::Relation, Access::Read),
            ("keys", ObjectKind::Relation, Access::Read)
        ]
    );
}

#[test]
fn call_names_its_procedure_and_the_functions_in_its_arguments() {
    assert_eq!(
        facts("CALL app.archive(pg_terminate_backend(1))"),
        vec![f(
            0,
            "CALL",
            true,
            true,
            &[
                "Function:app.archive:Call",
                "Function:pg_terminate_backend:Call"
            ]
        )]
    );
}

#[test]
fn a_function_in_from_is_a_call_not_a_table() {
    assert_eq!(
        facts("SELECT * FROM query_to_xml('delete from victim', true, false, '') x, t"),
        vec![f(
            0,
            "SELECT",
            true,
            true,
            &["Relation:t:Read", "Function:query_to_xml:Call"]
        )]
    );
}

#[test]
fn what_does_not_parse_is_guessed_and_says_so() {
    let got = facts("SELECT s.* FROM ROWS FROM (generate_series(1,1)) g, secrets s");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "SELECT");
    assert!(!got[0].3, "not parsed: {got:?}");
    assert!(
        got[0].4.contains(&"Relation:secrets:Read?".to_owned()),
        "{got:?}"
    );
    let got = facts("DO $$ BEGIN DELETE FROM victim; END $$; SELECT 1");
    assert_eq!(got[0].1, "DO");
    assert_eq!(got[1].1, "SELECT");
    assert!(got[1].3, "the other statement still parses: {got:?}");
}

#[test]
fn only_names_the_table_not_the_keyword() {
    assert_eq!(
        facts("DELETE FROM ONLY victim WHERE true"),
        vec![f(0, "DELETE", true, true, &["Relation:victim:Write"])]
    );
    assert_eq!(
        facts("SELECT * FROM ONLY secrets"),
        vec![f(0, "SELECT", true, true, &["Relation:secrets:Read"])]
    );
}

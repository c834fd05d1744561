//! Resident effects (`Classification::resident`): every statement form, multi-statement texts,
//! strings and comments that must not count, quoting and case, the conservative `Unknown`, the
//! kinds these statements get, and what the cache may share.

use std::sync::Arc;

use crate::classify::lexer::Lexer;
use crate::classify::{Classifier, classify, fast, fingerprint, parse, resident};
use crate::model::{
    Classification, Protocol, QueryFlags, Resident, ResidentEffect, ResidentSort, StatementKind,
};

use ResidentEffect::{Create, Release, ReleaseAll, Unknown};

const PG: Protocol = Protocol::Postgres;

fn name(name: &str) -> Arc<str> {
    name.into()
}

fn temp(n: &str) -> ResidentEffect {
    Create(Resident::TempObject(name(n)))
}

fn drop(n: &str) -> ResidentEffect {
    Release(Resident::TempObject(name(n)))
}

fn prepared(n: &str) -> ResidentEffect {
    Create(Resident::Prepared(name(n)))
}

fn cursor(n: &str) -> ResidentEffect {
    Create(Resident::Cursor(name(n)))
}

fn listen(n: &str) -> ResidentEffect {
    Create(Resident::Channel(name(n)))
}

const LOCK: ResidentEffect = Create(Resident::AdvisoryLock);
const UNLOCK: ResidentEffect = Release(Resident::AdvisoryLock);
const AUTH: ResidentEffect = Create(Resident::SessionAuthorization);
const UNAUTH: ResidentEffect = Release(Resident::SessionAuthorization);

/// Every form: the text and its effects in order.
fn cases() -> Vec<(&'static str, Vec<ResidentEffect>)> {
    vec![
        // Temporary tables, views and sequences.
        ("CREATE TEMP TABLE t (a int)", vec![temp("t")]),
        (
            "CREATE TEMPORARY TABLE IF NOT EXISTS T (a int)",
            vec![temp("t")],
        ),
        ("CREATE LOCAL TEMP TABLE t (a int)", vec![temp("t")]),
        ("CREATE GLOBAL TEMPORARY TABLE t (a int)", vec![temp("t")]),
        ("create temp table \"Tmp\" (a int)", vec![temp("Tmp")]),
        (
            "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS",
            vec![temp("t")],
        ),
        ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", vec![]),
        ("CREATE TEMP TABLE t AS SELECT * FROM x", vec![temp("t")]),
        ("CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", vec![]),
        ("CREATE TABLE pg_temp.t (a int)", vec![temp("t")]),
        ("CREATE TABLE PG_TEMP.T (a int)", vec![temp("t")]),
        ("CREATE TABLE pg_temp_3.t (a int)", vec![temp("t")]),
        ("CREATE TABLE \"PG_TEMP\".t (a int)", vec![]),
        ("CREATE TABLE public.t (a int)", vec![]),
        ("CREATE UNLOGGED TABLE t (a int)", vec![]),
        ("CREATE TABLE t (temp int)", vec![]),
        ("CREATE TEMPORARY VIEW v AS SELECT 1", vec![temp("v")]),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", vec![temp("v")]),
        ("CREATE VIEW pg_temp.v AS SELECT 1", vec![temp("v")]),
        ("CREATE VIEW v AS SELECT 1", vec![]),
        ("CREATE TEMP SEQUENCE s", vec![temp("s")]),
        ("CREATE TEMPORARY SEQUENCE IF NOT EXISTS s", vec![temp("s")]),
        ("CREATE SEQUENCE pg_temp.\"S\"", vec![temp("S")]),
        ("SELECT * INTO TEMP t FROM x", vec![temp("t")]),
        ("SELECT * INTO TEMPORARY TABLE t FROM x", vec![temp("t")]),
        (
            "SELECT a INTO TEMP TABLE \"Tmp\" FROM x WHERE a > 1",
            vec![temp("Tmp")],
        ),
        ("SELECT * INTO pg_temp.t FROM x", vec![temp("t")]),
        ("SELECT * INTO t FROM x", vec![]),
        // Prepared statements.
        ("PREPARE p AS SELECT 1", vec![prepared("p")]),
        (
            "PREPARE MyPlan (int) AS SELECT $1",
            vec![prepared("myplan")],
        ),
        ("PREPARE \"MyPlan\" AS SELECT 1", vec![prepared("MyPlan")]),
        (
            "PREPARE p AS SELECT pg_advisory_lock(1)",
            vec![prepared("p"), Unknown],
        ),
        (
            "PREPARE p AS SELECT pg_advisory_unlock(1)",
            vec![prepared("p")],
        ),
        // Cursors: only WITH HOLD outlives its transaction.
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", vec![cursor("c")]),
        (
            "DECLARE C NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t",
            vec![cursor("c")],
        ),
        (
            "DECLARE \"C\" BINARY INSENSITIVE SCROLL CURSOR WITH HOLD FOR SELECT 1",
            vec![cursor("C")],
        ),
        ("DECLARE c CURSOR FOR SELECT 1", vec![]),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", vec![]),
        // LISTEN.
        ("LISTEN chan", vec![listen("chan")]),
        ("LISTEN Chan", vec![listen("chan")]),
        ("LISTEN \"Chan\"", vec![listen("Chan")]),
        ("LISTEN Ärger", vec![listen("Ärger")]),
        // Session-level advisory locks, wherever the call is.
        ("SELECT pg_advisory_lock(1)", vec![LOCK]),
        ("SELECT pg_advisory_lock_shared(1, 2)", vec![LOCK]),
        ("SELECT pg_try_advisory_lock($1)", vec![LOCK]),
        ("SELECT pg_try_advisory_lock_shared(1)", vec![LOCK]),
        ("SELECT pg_catalog.pg_advisory_lock(1)", vec![LOCK]),
        ("SELECT PG_ADVISORY_LOCK(hashtext('job'))", vec![LOCK]),
        (
            "SELECT pg_advisory_lock(1), pg_advisory_lock(2)",
            vec![LOCK, LOCK],
        ),
        (
            "SELECT id FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1",
            vec![LOCK],
        ),
        ("SELECT * FROM (SELECT pg_advisory_lock(1)) s", vec![LOCK]),
        (
            "WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l",
            vec![LOCK],
        ),
        (
            "SELECT CASE WHEN $1 THEN pg_advisory_lock(1) END",
            vec![LOCK],
        ),
        (
            "UPDATE t SET a = 1 WHERE pg_try_advisory_lock(id)",
            vec![LOCK],
        ),
        ("SELECT pg_advisory_xact_lock(1)", vec![]),
        ("SELECT pg_try_advisory_xact_lock(1)", vec![]),
        ("SELECT pg_advisory_xact_lock_shared(1)", vec![]),
        // SET SESSION AUTHORIZATION and LOAD.
        ("SET SESSION AUTHORIZATION bob", vec![AUTH]),
        ("SET SESSION AUTHORIZATION 'bob'", vec![AUTH]),
        ("SET SESSION SESSION AUTHORIZATION bob", vec![AUTH]),
        ("SET LOCAL SESSION AUTHORIZATION bob", vec![]),
        ("LOAD 'auto_explain'", vec![Create(Resident::Library)]),
        // Releases.
        ("DISCARD ALL", vec![ReleaseAll(ResidentSort::All)]),
        ("DISCARD TEMP", vec![ReleaseAll(ResidentSort::TempObjects)]),
        (
            "DISCARD TEMPORARY",
            vec![ReleaseAll(ResidentSort::TempObjects)],
        ),
        ("DISCARD PLANS", vec![]),
        ("DISCARD SEQUENCES", vec![]),
        ("DEALLOCATE p", vec![Release(Resident::Prepared(name("p")))]),
        (
            "DEALLOCATE PREPARE P",
            vec![Release(Resident::Prepared(name("p")))],
        ),
        ("DEALLOCATE ALL", vec![ReleaseAll(ResidentSort::Prepared)]),
        (
            "DEALLOCATE PREPARE all",
            vec![ReleaseAll(ResidentSort::Prepared)],
        ),
        (
            "DEALLOCATE \"ALL\"",
            vec![Release(Resident::Prepared(name("ALL")))],
        ),
        ("CLOSE c", vec![Release(Resident::Cursor(name("c")))]),
        ("CLOSE ALL", vec![ReleaseAll(ResidentSort::Cursors)]),
        (
            "UNLISTEN Chan",
            vec![Release(Resident::Channel(name("chan")))],
        ),
        ("UNLISTEN *", vec![ReleaseAll(ResidentSort::Channels)]),
        ("SELECT pg_advisory_unlock(1)", vec![UNLOCK]),
        ("SELECT pg_advisory_unlock_shared(1)", vec![UNLOCK]),
        (
            "SELECT pg_advisory_unlock_all()",
            vec![ReleaseAll(ResidentSort::AdvisoryLocks)],
        ),
        ("RESET SESSION AUTHORIZATION", vec![UNAUTH]),
        ("SET SESSION AUTHORIZATION DEFAULT", vec![UNAUTH]),
        ("DROP TABLE a, b", vec![drop("a"), drop("b")]),
        (
            "DROP TABLE IF EXISTS pg_temp.A, \"B\", public.c CASCADE",
            vec![drop("a"), drop("B"), drop("public.c")],
        ),
        ("DROP VIEW v", vec![drop("v")]),
        ("DROP SEQUENCE IF EXISTS s", vec![drop("s")]),
        ("DROP MATERIALIZED VIEW m", vec![]),
        ("DROP INDEX i", vec![]),
        ("RESET ALL", vec![]),
        // Nothing: no resident state, or the words are inside strings and comments.
        ("SELECT * FROM t", vec![]),
        ("INSERT INTO t VALUES (1)", vec![]),
        ("SET search_path TO app", vec![]),
        ("BEGIN", vec![]),
        ("EXECUTE p", vec![]),
        ("SELECT 'LISTEN x'", vec![]),
        ("SELECT 'pg_advisory_lock(1)'", vec![]),
        ("SELECT 1 -- LISTEN x", vec![]),
        ("SELECT /* pg_advisory_lock(1) */ 1", vec![]),
        ("SELECT $$ CREATE TEMP TABLE t $$", vec![]),
        ("COMMENT ON TABLE t IS 'CREATE TEMP TABLE x'", vec![]),
        ("SELECT \"pg_advisory_lock\" FROM t", vec![]),
        // Not executed now.
        ("EXPLAIN SELECT pg_advisory_lock(1)", vec![]),
        ("EXPLAIN SELECT * INTO TEMP t FROM x", vec![]),
        ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", vec![LOCK]),
        (
            "EXPLAIN ANALYZE SELECT pg_advisory_unlock_all()",
            vec![ReleaseAll(ResidentSort::AdvisoryLocks)],
        ),
        ("CREATE VIEW v AS SELECT pg_advisory_unlock_all()", vec![]),
        ("DECLARE c CURSOR FOR SELECT pg_advisory_unlock(1)", vec![]),
        // Uncertain: pin.
        (
            "DO $$ BEGIN CREATE TEMP TABLE x (a int); END $$",
            vec![Unknown],
        ),
        ("DO $$ BEGIN PERFORM 1; END $$", vec![Unknown]),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$",
            vec![Unknown],
        ),
        ("CREATE TEMP", vec![Unknown]),
        ("CREATE TEMP TABLE", vec![Unknown]),
        ("CREATE TEMP FOO bar", vec![Unknown]),
        ("CREATE STATISTICS st ON a, b FROM pg_temp.t", vec![Unknown]),
        // sqlparser reads a string where PostgreSQL wants a name (and refuses the statement).
        ("LISTEN 'chan'", vec![Unknown]),
        ("PREPARE 'p' AS SELECT 1", vec![Unknown]),
        ("DECLARE 'c' CURSOR WITH HOLD FOR SELECT 1", vec![Unknown]),
        ("CREATE TEMP TABLE 'x' (a int)", vec![Unknown]),
        ("SELECT 1 INTO TEMP 'x'", vec![Unknown]),
        ("CLOSE 'c'", vec![]),
        ("DROP TABLE 'a'", vec![]),
        // Unparsed but clear from the tokens.
        (
            "CREATE TEMP RECURSIVE VIEW v (n) AS VALUES (1)",
            vec![temp("v")],
        ),
        ("CREATE TEMP TABLE t (a int", vec![temp("t")]),
        ("CREATE TEMP TABLE t (a int) ON COMMIT DROP xyz", vec![]),
    ]
}

fn effects(sql: &str) -> Vec<ResidentEffect> {
    classify(PG, sql).resident.to_vec()
}

#[test]
fn every_form_reports_its_effects() {
    let failures: Vec<String> = cases()
        .into_iter()
        .filter_map(|(sql, want)| {
            let got = effects(sql);
            (got != want).then(|| format!("{sql:?}\n    got  {got:?}\n    want {want:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn multi_statement_texts_report_every_statement_in_order() {
    let cases: &[(&str, Vec<ResidentEffect>)] = &[
        (
            "CREATE TEMP TABLE t (a int); INSERT INTO t VALUES (1); SELECT * FROM t; DROP TABLE t",
            vec![temp("t"), drop("t")],
        ),
        (
            "PREPARE a AS SELECT 1; PREPARE b AS SELECT 2; DEALLOCATE a",
            vec![
                prepared("a"),
                prepared("b"),
                Release(Resident::Prepared(name("a"))),
            ],
        ),
        (
            "LISTEN a; UNLISTEN *; SELECT pg_advisory_lock(1); SELECT pg_advisory_unlock_all()",
            vec![
                listen("a"),
                ReleaseAll(ResidentSort::Channels),
                LOCK,
                ReleaseAll(ResidentSort::AdvisoryLocks),
            ],
        ),
        (
            "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT; CLOSE c",
            vec![cursor("c"), Release(Resident::Cursor(name("c")))],
        ),
        // One statement sqlparser does not know: the whole text is read from tokens.
        (
            "LISTEN a; DO $$ BEGIN END $$; CREATE TEMP TABLE t (a int); \
             SELECT pg_advisory_unlock_all(); SELECT 'LISTEN b; LOAD ''x''' /* ; LISTEN c */",
            vec![
                listen("a"),
                Unknown,
                temp("t"),
                ReleaseAll(ResidentSort::AdvisoryLocks),
            ],
        ),
        (
            "SELECT 1; SET SESSION SESSION AUTHORIZATION bob; SELECT * INTO TEMP u FROM x; \
             DISCARD ALL",
            vec![AUTH, temp("u"), ReleaseAll(ResidentSort::All)],
        ),
        // A function body is stored, not run; its `;`s do not end the CREATE.
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC SELECT 1; \
             SELECT pg_advisory_unlock_all(); END; LISTEN x",
            vec![listen("x")],
        ),
        (
            "CREATE PROCEDURE p() BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; \
             SELECT pg_advisory_lock(1); END; CLOSE ALL",
            vec![ReleaseAll(ResidentSort::Cursors)],
        ),
        (
            "CREATE PROCEDURE p() BEGIN ATOMIC END; SELECT pg_advisory_unlock(1) ; \
             CREATE TEMP TABLE t (a int)",
            vec![UNLOCK, temp("t")],
        ),
        (
            "PREPARE p AS SELECT pg_advisory_lock(1); EXECUTE p; SET SESSION SESSION AUTHORIZATION DEFAULT",
            vec![prepared("p"), Unknown, UNAUTH],
        ),
    ];
    for (sql, want) in cases {
        let got = classify(PG, sql);
        assert_eq!(got.resident.to_vec(), *want, "{sql:?}");
        assert!(
            got.flags.multi_statement || got.kind == StatementKind::Unknown,
            "{sql:?}"
        );
    }
}

/// The token scanner (texts sqlparser rejects) agrees with the AST on every text both can read.
#[test]
fn token_scan_agrees_with_the_parser() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for (sql, _) in cases() {
        if parse::statements(PG, sql).is_err() {
            continue;
        }
        compared += 1;
        let tokens: Vec<_> = Lexer::new(PG, sql).collect();
        let scanned = resident::scan(&tokens).to_vec();
        let parsed = effects(sql);
        if scanned != parsed {
            failures.push(format!(
                "{sql:?}\n    scan  {scanned:?}\n    parse {parsed:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compared > 80, "only {compared} texts parsed");
}

/// Everything with an effect goes to the primary and is never cached: never a plain read.
#[test]
fn statements_with_effects_are_never_reads() {
    for (sql, want) in cases() {
        let got = classify(PG, sql);
        if !want.is_empty() {
            assert_ne!(got.kind, StatementKind::Read, "{sql:?}");
        }
    }
    use StatementKind::*;
    for (sql, kind) in [
        ("CREATE TEMP TABLE t (a int)", Ddl),
        ("SELECT * INTO TEMP t FROM x", Write),
        ("PREPARE p AS SELECT 1", Session),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Session),
        ("LISTEN chan", Session),
        ("SELECT pg_advisory_lock(1)", Write),
        ("SELECT pg_advisory_unlock_all()", Write),
        ("SET SESSION AUTHORIZATION bob", Session),
        ("SET SESSION SESSION AUTHORIZATION bob", Session),
        ("LOAD 'auto_explain'", Utility),
        ("DISCARD TEMP", Session),
        ("DO $$ BEGIN END $$", Unknown),
    ] {
        assert_eq!(classify(PG, sql).kind, kind, "{sql:?}");
    }
}

#[test]
fn a_read_with_effects_becomes_a_session_statement() {
    // An unparsed DESCRIBE is a read by its keyword; a lock call in it must still not be cached.
    let got = classify(PG, "DESCRIBE pg_advisory_lock(1)");
    assert_eq!(got.resident.to_vec(), vec![LOCK]);
    assert_eq!(got.kind, StatementKind::Session);

    let mut read = Classification {
        kind: StatementKind::Read,
        flags: QueryFlags::default(),
        ..Classification::unknown(0)
    };
    resident::settle_kind(&mut read);
    assert_eq!(read.kind, StatementKind::Read);
    read.resident.push(LOCK);
    resident::settle_kind(&mut read);
    assert_eq!(read.kind, StatementKind::Session);
}

#[test]
fn plain_selects_keep_the_fast_path_and_report_locks_there() {
    for sql in [
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT id FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1",
        "SELECT id FROM users WHERE id = $1",
    ] {
        let fast = fast::classify(PG, sql, fingerprint(PG, sql)).expect("fast path");
        assert_eq!(fast, classify(PG, sql), "{sql:?}");
    }
    let plain = classify(PG, "SELECT id FROM users WHERE id = $1");
    assert!(plain.resident.is_empty() && !plain.resident.spilled());
}

#[test]
fn other_protocols_report_nothing() {
    for protocol in [Protocol::Mysql, Protocol::ClickhouseHttp] {
        for sql in [
            "CREATE TEMPORARY TABLE t (a int)",
            "SELECT GET_LOCK('x', 1)",
            "DROP TABLE t",
        ] {
            assert!(
                classify(protocol, sql).resident.is_empty(),
                "{protocol:?} {sql:?}"
            );
        }
    }
}

/// Names are identifiers, which the fingerprint keeps: statements differing only in a name never
/// share a cache entry, and statements differing only in literals share effects safely.
#[test]
fn the_cache_never_shares_effects_across_names() {
    assert_ne!(
        fingerprint(PG, "PREPARE a AS SELECT 1"),
        fingerprint(PG, "PREPARE b AS SELECT 1")
    );
    assert_ne!(fingerprint(PG, "LISTEN a"), fingerprint(PG, "LISTEN \"A\""));
    assert_eq!(fingerprint(PG, "LISTEN A"), fingerprint(PG, "LISTEN a"));

    let classifier = Classifier::new(64);
    for round in 0..3 {
        for (sql, want) in [
            ("PREPARE a AS SELECT 1", vec![prepared("a")]),
            ("PREPARE b AS SELECT 1", vec![prepared("b")]),
            ("PREPARE b AS SELECT 2", vec![prepared("b")]),
            ("LISTEN \"A\"", vec![listen("A")]),
            ("LISTEN A", vec![listen("a")]),
            ("SELECT pg_advisory_lock(1)", vec![LOCK]),
            ("SELECT pg_advisory_lock(2)", vec![LOCK]),
            ("SELECT pg_advisory_unlock(2)", vec![UNLOCK]),
            ("LOAD 'a'", vec![Create(Resident::Library)]),
            ("LOAD 'b'", vec![Create(Resident::Library)]),
            ("DO $$ BEGIN PERFORM 1; END $$", vec![Unknown]),
            (
                "DO $$ BEGIN CREATE TEMP TABLE x (a int); END $$",
                vec![Unknown],
            ),
            ("DROP TABLE a", vec![drop("a")]),
            ("DROP TABLE b", vec![drop("b")]),
        ] {
            let got = classifier.classify(PG, sql);
            assert_eq!(got.resident.to_vec(), want, "round {round}: {sql:?}");
            assert_eq!(got, classify(PG, sql), "round {round}: {sql:?}");
        }
    }
}

/// Effects depend on keywords and identifiers only: every case keeps its effects when its
/// literals change (what lets the shape cache share them).
#[test]
fn effects_do_not_depend_on_literals() {
    for (sql, want) in cases() {
        let changed = sql
            .replace("'", "'x")
            .replace('1', "7")
            .replace("$$ ", "$$ /**/ 1; ");
        if fingerprint(PG, &changed) == fingerprint(PG, sql) {
            assert_eq!(effects(&changed), want, "{sql:?} vs {changed:?}");
        }
    }
}

#[test]
fn long_names_are_cut_like_postgres_does() {
    let long = "c".repeat(70);
    let got = effects(&format!("LISTEN {long}"));
    assert_eq!(got, vec![listen(&long[..63])]);
}

//! The bypass attempts: statements that try to get a DROP, TRUNCATE, an UPDATE/DELETE of every
//! row, opaque code or a read of a denied table past `guard`.
//!
//! Each one either must be refused by guard, or is out of a proxy's reach and listed in
//! `policies/README.md` (the phrase given must appear there) with the database-side control to
//! use instead; the test sets those controls up, so the attempt is harmless here.

/// What must become of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// guard refuses it: SQLSTATE 42501 / HTTP 403 with a `guard:` reason.
    Blocked,
    /// It reaches the server; `policies/README.md` lists it under this phrase.
    OutOfReach(&'static str),
}

use Expect::{Blocked, OutOfReach};

/// The guard configuration under test: `policies/README.md`'s recommendation for application
/// users, verbatim.
pub const GUARD_CONFIG: &str = r#"
"deny_commands.*" = "DROP *, TRUNCATE TABLE, DO, CREATE FUNCTION, CREATE PROCEDURE, CREATE TRIGGER, CREATE EVENT TRIGGER, CREATE RULE, ALTER TABLE, ALTER FUNCTION, ALTER PROCEDURE, RENAME *, EXCHANGE *"
"deny_tables.*" = "secrets"
"deny_functions.*" = "query_to_xml, query_to_xmlschema, query_to_xml_and_xmlschema, cursor_to_xml, dblink, dblink_exec, pg_read_file, pg_read_binary_file, lo_import, lo_export"
"#;

/// Set up as the superuser before the attempts: the victim, a denied table, and code that
/// already exists in the database (what a proxy cannot see into), guarded the database's way.
pub const PG_SETUP: &str = "
CREATE TABLE victim (id int PRIMARY KEY, x int);
INSERT INTO victim SELECT i, i FROM generate_series(1, 5) i;
CREATE TABLE secrets (k text);
INSERT INTO secrets VALUES ('s3cr3t');
CREATE FUNCTION purge_victim() RETURNS void LANGUAGE sql AS 'DELETE FROM victim';
REVOKE EXECUTE ON FUNCTION purge_victim() FROM PUBLIC;
CREATE PROCEDURE purge_victim_proc() LANGUAGE sql AS $$ DELETE FROM victim $$;
REVOKE EXECUTE ON PROCEDURE purge_victim_proc() FROM PUBLIC;
";

/// What the victim holds before and (it must) after the corpus: `count|sum(x)`.
pub const PG_VICTIM: &str = "5|15";

/// Existing code the proxy sees only by name.
const EXISTING_CODE: Expect = OutOfReach("Code that already exists in the database");
/// `EXECUTE name` runs what `PREPARE name` held, judged there.
const EXECUTE: Expect = OutOfReach("`EXECUTE name`");

/// PostgreSQL attempts, each sent in the simple and in the extended protocol.
pub const PG_ATTEMPTS: &[(&str, Expect)] = &[
    // Leading, doubled and trailing semicolons.
    (";DROP TABLE victim", Blocked),
    (";;TRUNCATE victim", Blocked),
    ("/**/;DELETE FROM victim", Blocked),
    (";\nUPDATE victim SET x=0", Blocked),
    ("SELECT 1;DROP TABLE victim", Blocked),
    ("SELECT 1;;DROP TABLE victim;", Blocked),
    (" ; ; DELETE FROM victim ;", Blocked),
    ("SELECT 1; SELECT 2; UPDATE victim SET x = 0", Blocked),
    ("BEGIN; DELETE FROM victim; COMMIT", Blocked),
    (
        "INSERT INTO victim VALUES (99, 99); DELETE FROM victim",
        Blocked,
    ),
    // Comments anywhere.
    ("/* x */DROP TABLE victim", Blocked),
    ("--\nDROP TABLE victim", Blocked),
    ("-- c\n;DELETE FROM victim", Blocked),
    ("/* /* nested */ */ DROP TABLE victim", Blocked),
    (
        "/* /* nested */ still a comment */ DELETE FROM victim",
        Blocked,
    ),
    ("SELECT 1 /* ; */ ; DELETE FROM victim", Blocked),
    ("DELETE/**/FROM/**/victim", Blocked),
    ("DELETE FROM victim --WHERE id = 1", Blocked),
    ("DELETE FROM victim /* WHERE id = 1 */", Blocked),
    ("SELECT 1 --\n; TRUNCATE victim", Blocked),
    // Case and quoting.
    ("DrOp TaBlE victim", Blocked),
    ("drop table \"victim\"", Blocked),
    ("DROP TABLE public.\"victim\"", Blocked),
    ("TRUNCATE TABLE ONLY victim", Blocked),
    ("tRuNcAtE \"victim\" CASCADE", Blocked),
    ("UPDATE \"victim\" SET x = 0", Blocked),
    ("delete from public.victim", Blocked),
    ("DELETE FROM ONLY victim", Blocked),
    // Strings, quoted identifiers and dollar quotes that end where a naive reader does not
    // expect (PostgreSQL: a backslash is an ordinary character in '...', an escape in E'...').
    ("SELECT 'a\\'; DROP TABLE victim; --'", Blocked),
    ("SELECT E'\\\\'; DROP TABLE victim; --'", Blocked),
    ("SELECT 'it''s'; DROP TABLE victim", Blocked),
    (
        "SELECT \"a;\" FROM (SELECT 1 AS \"a;\") s; DROP TABLE victim",
        Blocked,
    ),
    ("SELECT $$;$$; DROP TABLE victim", Blocked),
    ("SELECT $a$ $$ $a$; DELETE FROM victim", Blocked),
    (
        "SELECT 1 AS a$b$; DROP TABLE victim; SELECT $b$x$b$",
        Blocked,
    ),
    ("SELECT U&'a'; DELETE FROM victim", Blocked),
    // Statements nested in others.
    ("EXPLAIN ANALYZE DELETE FROM victim", Blocked),
    ("EXPLAIN (ANALYZE) DELETE FROM victim", Blocked),
    (
        "EXPLAIN (ANALYZE true, COSTS off) UPDATE victim SET x = 0",
        Blocked,
    ),
    (
        "WITH d AS (DELETE FROM victim RETURNING *) SELECT count(*) FROM d",
        Blocked,
    ),
    (
        "WITH u AS (UPDATE victim SET x = 0 RETURNING 1) SELECT 1",
        Blocked,
    ),
    (
        "WITH a AS (SELECT 1), d AS (DELETE FROM victim RETURNING 1) SELECT * FROM a",
        Blocked,
    ),
    ("WITH x AS (SELECT 1) DELETE FROM victim", Blocked),
    (
        "WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d WHERE id = 1",
        Blocked,
    ),
    // PREPARE is judged for what it will run; EXECUTE only names it.
    ("PREPARE p1 AS DELETE FROM victim", Blocked),
    (
        "PREPARE p2 AS WITH d AS (DELETE FROM victim RETURNING 1) SELECT 1",
        Blocked,
    ),
    ("PREPARE p3 (int) AS UPDATE victim SET x = $1", Blocked),
    ("PREPARE p4 AS TRUNCATE victim", Blocked),
    ("EXECUTE p1", EXECUTE),
    // Opaque code: DO blocks, functions, procedures, rules and triggers that would delete later.
    ("DO $$ BEGIN DELETE FROM victim; END $$", Blocked),
    (
        "DO LANGUAGE plpgsql $$ BEGIN EXECUTE 'TRUNCATE victim'; END $$",
        Blocked,
    ),
    ("do $x$ begin execute 'drop table victim'; end $x$", Blocked),
    (
        "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM victim'",
        Blocked,
    ),
    (
        "CREATE OR REPLACE FUNCTION pg_temp.wipe() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM victim; END $$",
        Blocked,
    ),
    (
        "CREATE PROCEDURE wipe_p() LANGUAGE sql AS $$ DELETE FROM victim $$",
        Blocked,
    ),
    (
        "CREATE FUNCTION wipe2() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM victim; END",
        Blocked,
    ),
    (
        "CREATE RULE r AS ON INSERT TO victim DO ALSO DELETE FROM victim",
        Blocked,
    ),
    (
        "CREATE TRIGGER t AFTER INSERT ON victim FOR EACH STATEMENT EXECUTE FUNCTION purge_victim()",
        Blocked,
    ),
    (
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION purge_victim()",
        Blocked,
    ),
    ("ALTER TABLE victim RENAME TO gone", Blocked),
    (
        "SELECT query_to_xml('DELETE FROM victim', true, false, '')",
        Blocked,
    ),
    (
        "SELECT * FROM query_to_xml('delete from victim', true, false, '') x",
        Blocked,
    ),
    (
        "SELECT pg_catalog.query_to_xml('TRUNCATE victim', true, false, '')",
        Blocked,
    ),
    ("SELECT purge_victim()", EXISTING_CODE),
    ("CALL purge_victim_proc()", EXISTING_CODE),
    // Whitespace PostgreSQL does not accept as whitespace (only ASCII is): a syntax error there,
    // which must not be forwarded as something else.
    ("DROP\u{a0}TABLE victim", Blocked),
    ("SELECT 1;\u{a0}DROP TABLE victim", Blocked),
    ("\u{2028}DELETE FROM victim", Blocked),
    ("DELETE\u{3000}FROM victim", Blocked),
    ("\u{feff}DROP TABLE victim", Blocked),
    ("TRUNCATE\u{85}victim", Blocked),
    // A denied table, however it is named, also where the parser gives up.
    (
        "SELECT s.* FROM ROWS FROM (generate_series(1,1)) g, secrets s",
        Blocked,
    ),
    ("SELECT * FROM secrets", Blocked),
    ("SELECT * FROM \"secrets\"", Blocked),
    ("SELECT * FROM public.SECRETS", Blocked),
    ("TABLE secrets", Blocked),
    ("SELECT (SELECT k FROM secrets LIMIT 1)", Blocked),
    ("SELECT * FROM ONLY secrets", Blocked),
    ("COPY secrets TO STDOUT", Blocked),
    ("COPY (SELECT * FROM secrets) TO STDOUT", Blocked),
    ("SELECT 1; SELECT * FROM secrets", Blocked),
];

/// ClickHouse: set up on the node before the attempts.
pub const CH_SETUP: &[&str] = &[
    "CREATE TABLE default.victim (id UInt32, x UInt32) ENGINE = MergeTree ORDER BY id",
    "INSERT INTO default.victim SELECT number, number FROM numbers(5)",
    "CREATE TABLE default.notes (s String) ENGINE = Memory",
];

/// `count()` and `sum(x)` of the ClickHouse victim, before and after.
pub const CH_VICTIM: &str = "5\t10\n";

/// INSERT data is data: ClickHouse never runs it as SQL, and the policy sees only the INSERT.
const DATA: Expect = OutOfReach("data of `INSERT ... FORMAT`");

/// ClickHouse HTTP attempts: the `query` parameter (none: the whole statement in the body),
/// the POST body.
pub const CH_ATTEMPTS: &[(Option<&str>, &str, Expect)] = &[
    (None, "SELECT 1; DROP TABLE victim", Blocked),
    (None, ";DROP TABLE victim", Blocked),
    (None, "/**/;TRUNCATE TABLE victim", Blocked),
    (None, "SELECT 1 FORMAT TSV; DROP TABLE victim", Blocked),
    (None, "SELECT * FROM victim; TRUNCATE TABLE victim", Blocked),
    (None, "DROP TABLE victim -- x", Blocked),
    (None, "# c\nDROP TABLE victim", Blocked),
    (None, "drop table default.victim", Blocked),
    (None, "DrOp TaBlE `victim`", Blocked),
    (None, "TRUNCATE victim", Blocked),
    (None, "DELETE FROM victim", Blocked),
    (None, "ALTER TABLE victim DELETE WHERE 1", Blocked),
    (None, "ALTER TABLE victim UPDATE x = 0 WHERE 1", Blocked),
    (None, "RENAME TABLE victim TO gone", Blocked),
    (None, "EXCHANGE TABLES victim AND notes", Blocked),
    (None, "SELECT * FROM secrets", Blocked),
    // The `query` parameter and the body are one text to ClickHouse.
    (Some("SELECT 1"), "; DROP TABLE victim", Blocked),
    (Some("SELECT 1;"), "DROP TABLE victim", Blocked),
    (Some("DROP"), "TABLE victim", Blocked),
    // Data that looks like SQL.
    (
        Some("INSERT INTO notes FORMAT TSV"),
        "DROP TABLE victim\n",
        DATA,
    ),
    (
        Some("INSERT INTO notes FORMAT Values"),
        "('x'); DROP TABLE victim",
        DATA,
    ),
    (
        None,
        "INSERT INTO notes FORMAT TSV\nTRUNCATE TABLE victim\n",
        DATA,
    ),
    // ClickHouse would take what follows VALUES as data, but the host reads a second statement
    // after the `;` and guard refuses it: stricter than needed, never a bypass.
    (
        None,
        "INSERT INTO notes VALUES ('a'); DROP TABLE victim",
        Blocked,
    ),
];

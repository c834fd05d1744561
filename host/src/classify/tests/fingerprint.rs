use crate::classify::fingerprint;
use crate::model::Protocol::{self, ClickhouseHttp, Mysql, Postgres};

/// Pairs that differ only in literals, whitespace, comments, keyword case or list length.
const SAME: &[(Protocol, &str, &str)] = &[
    (
        Postgres,
        "SELECT * FROM t WHERE id = 1",
        "select *\n  from T where ID=42 -- note",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE name = 'bob'",
        "SELECT * FROM t WHERE name = 'o''brien'",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE name = 'bob'",
        "SELECT * FROM t WHERE name = E'it\\'s'",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE name = 'bob'",
        "SELECT * FROM t WHERE name = $$a ' b$$",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE name = 'bob'",
        "SELECT * FROM t WHERE name = $x$ $$ ; $x$",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE name = 'bob'",
        "SELECT * FROM t WHERE name = $1",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE id IN (1, 2, 3)",
        "SELECT * FROM t WHERE id IN (7)",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE id IN (1, 2, 3)",
        "SELECT * FROM t WHERE id IN ($1, $2)",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE id IN ('a', 'b')",
        "SELECT * FROM t WHERE id IN (-1, +2)",
    ),
    (Postgres, "SELECT 1.5e3, 0x1F, .5", "SELECT 2, 3, 4"),
    (Postgres, "SELECT /* a /* nested */ b */ 1", "SELECT 2"),
    (Postgres, "SELECT 1;", "SELECT 1"),
    (
        Postgres,
        "SELECT a FROM t WHERE flag = true",
        "SELECT a FROM t WHERE flag = FALSE",
    ),
    (
        Postgres,
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO t VALUES (9, 'z')",
    ),
    (
        Postgres,
        "SELECT \"Col\" FROM \"T\" LIMIT 10",
        "SELECT \"Col\"   FROM \"T\" LIMIT 99",
    ),
    (
        Mysql,
        "SELECT * FROM t WHERE a = 'x' # note",
        "SELECT * FROM t WHERE a = 'it\\'s'",
    ),
    (
        Mysql,
        "SELECT * FROM t WHERE a = \"x\"",
        "SELECT * FROM t WHERE a = ?",
    ),
    (
        Mysql,
        "SELECT * FROM `t` WHERE a IN (?, ?, ?)",
        "select * from `t` where a in (1)",
    ),
    (Mysql, "SELECT 1 -- note\n", "SELECT 2"),
    (
        ClickhouseHttp,
        "INSERT INTO t FORMAT CSV\n1,2\n3,4",
        "INSERT INTO t FORMAT CSV\n5,6",
    ),
    (
        ClickhouseHttp,
        "INSERT INTO t FORMAT JSONEachRow {\"a\":1}",
        "insert into t format JSONEachRow\n",
    ),
    (
        ClickhouseHttp,
        "SELECT * FROM t WHERE id = {id:UInt64}",
        "SELECT * FROM t WHERE id = 5",
    ),
    (
        ClickhouseHttp,
        "SELECT * FROM t # c\nLIMIT 1",
        "SELECT * FROM t LIMIT 2",
    ),
];

/// Pairs that differ in tables, columns, operators or structure.
const DIFFERENT: &[(Protocol, &str, &str)] = &[
    (
        Postgres,
        "SELECT * FROM t WHERE id = 1",
        "SELECT * FROM u WHERE id = 1",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE a = 1",
        "SELECT * FROM t WHERE b = 1",
    ),
    (
        Postgres,
        "SELECT * FROM t WHERE a = 1",
        "SELECT * FROM t WHERE a > 1",
    ),
    (Postgres, "SELECT * FROM t", "SELECT * FROM t LIMIT 1"),
    (
        Postgres,
        "SELECT * FROM \"Users\"",
        "SELECT * FROM \"users\"",
    ),
    (Postgres, "SELECT * FROM \"users\"", "SELECT * FROM users"),
    (
        Postgres,
        "SELECT * FROM t WHERE a IN (1, 2)",
        "SELECT * FROM t WHERE a IN (b, c)",
    ),
    (Postgres, "SELECT abc FROM t", "SELECT ab c FROM t"),
    (Postgres, "SELECT 1; SELECT 2", "SELECT 1"),
    (Postgres, "SELECT a, b FROM t", "SELECT a FROM t"),
    (
        Postgres,
        "SELECT * FROM t WHERE id = 1",
        "DELETE FROM t WHERE id = 1",
    ),
    (
        Postgres,
        "SELECT * FROM t a JOIN u b ON a.id = b.id",
        "SELECT * FROM t a LEFT JOIN u b ON a.id = b.id",
    ),
    (Mysql, "SELECT 1--1", "SELECT 1"),
    (Mysql, "SELECT * FROM `Tab`", "SELECT * FROM `tab`"),
    (
        ClickhouseHttp,
        "INSERT INTO t FORMAT CSV\n1",
        "INSERT INTO u FORMAT CSV\n1",
    ),
    (
        ClickhouseHttp,
        "INSERT INTO t FORMAT CSV\n1",
        "INSERT INTO t FORMAT TSV\n1",
    ),
];

#[test]
fn equal_when_only_literals_whitespace_comments_or_case_differ() {
    for (protocol, a, b) in SAME {
        assert_eq!(
            fingerprint(*protocol, a),
            fingerprint(*protocol, b),
            "{protocol:?}: {a:?} vs {b:?}"
        );
    }
}

#[test]
fn different_when_structure_differs() {
    for (protocol, a, b) in DIFFERENT {
        assert_ne!(
            fingerprint(*protocol, a),
            fingerprint(*protocol, b),
            "{protocol:?}: {a:?} vs {b:?}"
        );
    }
}

#[test]
fn classification_carries_the_fingerprint_even_when_unparsed() {
    let sql = "SELEC * FROM t WHERE id = 1";
    let got = crate::classify::classify(Postgres, sql);
    assert_eq!(got.fingerprint, fingerprint(Postgres, sql));
    assert_eq!(
        got.fingerprint,
        fingerprint(Postgres, "selec * from t where id = 2")
    );
}

#[test]
fn stable_across_runs() {
    // Policies may store fingerprints: the value must not depend on the process or the machine.
    // If the encoding changes on purpose, say so in the release notes and update this value.
    assert_eq!(
        fingerprint(Postgres, "SELECT 1"),
        17_113_741_614_049_731_586
    );
}

#[test]
fn digest_text_replaces_literals_and_normalises_spacing() {
    use crate::classify::digest_text;
    let pg = Protocol::Postgres;
    for (sql, expect) in [
        (
            "SELECT * FROM t WHERE id = 42",
            "SELECT * FROM t WHERE id = ?",
        ),
        (
            "select  count(*) from t where a in (1, 2, 3) -- c\n and b = 'x'",
            "select count(*) from t where a in (?) and b = ?",
        ),
        ("SELECT pg_sleep(0.01)", "SELECT pg_sleep(?)"),
        (
            "INSERT INTO s.t (a, b) VALUES (1, 'a'), (2, 'b')",
            "INSERT INTO s.t(a, b) VALUES (?)",
        ),
        ("SELECT \"Col\" FROM \"T\"", "SELECT \"Col\" FROM \"T\""),
    ] {
        assert_eq!(digest_text(pg, sql, 512), expect, "{sql}");
    }
    assert_eq!(digest_text(pg, "SELECT 1, 2, 3", 8), "SELECT ?");
}

#[test]
fn shape_key_tells_inline_literals_from_parameters() {
    use crate::classify::fingerprint::shape_key;
    let pg = Protocol::Postgres;
    let inline = |sql: &str| shape_key(pg, sql, 7).inline_literals;
    assert!(inline("SELECT * FROM t WHERE id = 1"));
    assert!(inline("SELECT * FROM t WHERE name = 'x'"));
    assert!(inline("SELECT * FROM t WHERE ok = true"));
    assert!(inline("INSERT INTO t VALUES (1, 2), (3, 4)"));
    assert!(!inline("SELECT * FROM t WHERE id = $1"));
    assert!(!inline("SELECT a, b FROM t"));
    // Literals and parameters hash alike: one shape.
    assert_eq!(
        shape_key(pg, "SELECT * FROM t WHERE id = $1", 7).key,
        shape_key(pg, "SELECT * FROM t WHERE id = 42", 7).key
    );
}

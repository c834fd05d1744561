//! The SELECT fast path (`classify::fast`) against the full parse: whatever the fast path accepts
//! must get exactly the answer sqlparser's path gives, field for field.

use super::{clickhouse, mysql, postgres};
use crate::classify::{classify_parsed, fast, fingerprint};
use crate::model::Protocol;

const PROTOCOLS: [Protocol; 3] = [
    Protocol::Postgres,
    Protocol::ClickhouseHttp,
    Protocol::Mysql,
];

/// The classify bench's SELECTs: the fast path must take them (that is what it is for).
const BENCH: &[(Protocol, &str)] = &[
    (
        Protocol::Postgres,
        "SELECT u.id, u.email, o.id AS order_id, o.total FROM users u \
         JOIN orders o ON o.user_id = u.id LEFT JOIN payments p ON p.order_id = o.id \
         WHERE u.tenant_id = $1 AND o.status IN ('paid', 'shipped') ORDER BY o.created_at DESC LIMIT 50",
    ),
    (
        Protocol::Postgres,
        "SELECT id, name FROM users WHERE id = $1",
    ),
    (
        Protocol::ClickhouseHttp,
        "SELECT toStartOfHour(ts) AS h, country, uniqExact(user_id) AS users, count() AS hits \
         FROM events WHERE ts >= now() - INTERVAL 1 DAY AND site_id = 42 \
         GROUP BY h, country ORDER BY h, hits DESC LIMIT 100",
    ),
    (
        Protocol::Mysql,
        "SELECT c.id, c.name, SUM(oi.qty * oi.price) AS revenue FROM customers c \
         JOIN orders o ON o.customer_id = c.id JOIN order_items oi ON oi.order_id = o.id \
         WHERE o.created_at >= ? GROUP BY c.id, c.name ORDER BY revenue DESC LIMIT 20",
    ),
];

/// Statements near the edge of the subset, in every dialect.
const EDGES: &[&str] = &[
    "SELECT 1",
    // Resident effects (advisory locks) must come out the same on both paths.
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock(1), pg_advisory_unlock(2), pg_advisory_unlock_all()",
    "SELECT id FROM jobs WHERE pg_try_advisory_lock_shared(id) LIMIT 1",
    "SELECT pg_catalog.pg_advisory_lock(1), pg_advisory_xact_lock(2)",
    "SELECT 1;",
    "SELECT 1;;",
    "SELECT 1; SELECT 2",
    "SELECT",
    "SELECT FROM t",
    "SELECT * FROM t",
    "SELECT t.* FROM t",
    "SELECT a FROM t WHERE",
    "SELECT a FROM t WHERE a =",
    "SELECT a FROM t WHERE a = = 1",
    "SELECT a FROM t WHERE a <> 1 AND b != 2 OR c <= 3 AND d >= 4 AND e < 5 AND f > 6",
    "SELECT a FROM t WHERE a < = 1",
    "SELECT a FROM t WHERE a <=> 1",
    "SELECT a FROM t WHERE a=-1",
    "SELECT a FROM t WHERE a = - 1",
    "SELECT a FROM t WHERE a -> 'x' = 1",
    "SELECT a FROM t WHERE a || b = 'x'",
    "SELECT a::int FROM t",
    "SELECT a FROM t WHERE a IS NULL AND b IS NOT NULL",
    "SELECT a FROM t WHERE a IS TRUE",
    "SELECT a FROM t WHERE a IN (1, 2, 3) AND b NOT IN ('x') AND c LIKE 'a%' AND d NOT LIKE 'b'",
    "SELECT a FROM t WHERE a IN ()",
    "SELECT a FROM t WHERE a IN (SELECT b FROM u)",
    "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u)",
    "SELECT a FROM t WHERE a ILIKE 'x'",
    "SELECT a FROM t WHERE a BETWEEN 1 AND 2",
    "SELECT a FROM t WHERE NOT a = 1 AND NOT (b = 2 OR c = 3)",
    "SELECT (a, b) FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
    "SELECT count(*), count(DISTINCT a), max(b) FROM t",
    "SELECT count(*) OVER () FROM t",
    "SELECT count(*) FILTER (WHERE a) FROM t",
    "SELECT f(g(h(1)), k()) FROM t",
    "SELECT pg_catalog.nextval('s')",
    "SELECT nextval('s')",
    "SELECT currval('s')",
    "SELECT now(), random()",
    "SELECT last_insert_id()",
    "SELECT get_lock('x', 1)",
    "SELECT quantile(0.5)(x) FROM t",
    "SELECT CURRENT_TIMESTAMP",
    "SELECT current_date, localtime FROM t",
    "SELECT CAST(a AS int) FROM t",
    "SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t",
    "SELECT DATE '2020-01-01'",
    "SELECT date FROM t",
    "SELECT interval FROM t",
    "SELECT a FROM t WHERE ts > now() - INTERVAL '1 day'",
    "SELECT a FROM t WHERE ts > now() - INTERVAL '1' DAY",
    "SELECT a FROM t WHERE ts > now() - INTERVAL 1 DAY",
    "SELECT a FROM t WHERE ts > now() - INTERVAL 1 DAY TO HOUR",
    "SELECT a FROM t WHERE ts > now() - INTERVAL 1",
    "SELECT a b, c AS d, e \"f\", g `h` FROM t",
    "SELECT a AS select FROM t",
    "SELECT a id FROM t",
    "SELECT a 'x' FROM t",
    "SELECT 'a' 'b'",
    "SELECT 'it''s', 'a\\'b' FROM t",
    "SELECT 'unterminated",
    "SELECT 'x''",
    "SELECT E'x'",
    "SELECT \"Col\" FROM \"Tab\"",
    "SELECT \"a\"\"b\" FROM t",
    "SELECT `a` FROM `db`.`Tab`",
    "SELECT a FROM \"Sch\".\"Tab\" x, Other.Tab2",
    "SELECT a FROM db.sch.tab",
    "SELECT a FROM t1 JOIN t2 ON t1.a = t2.a JOIN t3 ON t3.b = t2.b",
    "SELECT a FROM t1 INNER JOIN t2 ON t1.a = t2.a",
    "SELECT a FROM t1 LEFT OUTER JOIN t2 ON t1.a = t2.a RIGHT JOIN t3 ON 1 = 1",
    "SELECT a FROM t1 FULL JOIN t2 ON t1.a = t2.a",
    "SELECT a FROM t1 CROSS JOIN t2",
    "SELECT a FROM t1 JOIN t2",
    "SELECT a FROM t1 JOIN t2 USING (a)",
    "SELECT a FROM t1 NATURAL JOIN t2",
    "SELECT a FROM t1 LEFT t2",
    "SELECT a FROM t1 AS x JOIN t2 AS y ON x.a = y.a",
    "SELECT a FROM t1 x(a)",
    "SELECT a FROM ONLY t",
    "SELECT a FROM t FINAL",
    "SELECT a FROM t SAMPLE 0.1",
    "SELECT a FROM t FOR UPDATE",
    "SELECT a FROM t LIMIT 10 FOR UPDATE",
    "SELECT a FROM generate_series(1, 3)",
    "SELECT a FROM numbers(10)",
    "SELECT a FROM (SELECT 1) s",
    "SELECT a FROM t GROUP BY a HAVING count(*) > 1 ORDER BY a DESC NULLS LAST, b ASC LIMIT 5 OFFSET 10",
    "SELECT a FROM t GROUP BY ROLLUP (a)",
    "SELECT a FROM t GROUP BY a WITH TOTALS",
    "SELECT a FROM t ORDER BY a NULLS",
    "SELECT a FROM t LIMIT 5, 10",
    "SELECT a FROM t LIMIT ALL",
    "SELECT a FROM t LIMIT $1",
    "SELECT a FROM t LIMIT ?",
    "SELECT a FROM t LIMIT 10 BY a",
    "SELECT a FROM t OFFSET 5",
    "SELECT a FROM t WHERE id = $1 AND b = ?",
    "SELECT a FROM t WHERE id = {id:UInt32}",
    "SELECT DISTINCT a FROM t",
    "SELECT DISTINCT ON (a) a FROM t",
    "SELECT ALL a FROM t",
    "SELECT a FROM t UNION SELECT b FROM u",
    "SELECT a INTO b FROM t",
    "/* c */ SELECT a -- x\n FROM t # y\n",
    "/*! SELECT */ SELECT a FROM t",
    "SELECT a FROM t /*/",
    "SELECT a FROM t /* x */",
    "SELECT a FROM t /* x */ /* y */",
    "SELECT a FROM t /* /* x */ */",
    "SELECT a FROM t -- x /* y",
    "SELECT a /* x */ FROM /* y */ t",
    "SELECT a FROM t /*! WHERE 1 = 0 */",
    "SELECT café FROM t",
    "SELECT a$b FROM t",
    "SELECT @a FROM t",
    "SELECT 1.5, 1e5, .5, 0x1F, 1_000 FROM t",
    "SELECT a.b.c, a.\"B\" FROM t",
    "SELECT \"f\"(1)",
    "SELECT a.\"f\"(1)",
    "SELECT a FROM t WHERE a = ANY(b)",
    "SELECT ARRAY[1]",
    "SELECT a[1] FROM t",
    "SELECT -a, +b, - -c FROM t",
    "SELECT a FROM t WHERE (((a = 1)))",
    "SELECT lower(name) FROM users WHERE upper(email) = 'X' ORDER BY length(name)",
    "SELECT a FROM t WHERE b = (1)",
    "SELECT a FROM t WHERE b =(1)",
    "SELECT coalesce(a, 0) + 1 AS x FROM t",
    "SELECT user FROM t",
    "SELECT status, id, name FROM t",
    "select id, name from Users where id = 42",
    "SELECT a FROM T WHERE A = 1",
    "SELECT a FROM `T`",
    "SELECT sum(x) FROM t WHERE d >= now() - INTERVAL 7 DAY GROUP BY y",
    "SELECT sleep(1)",
    "SELECT a FROM t WHERE b = true AND c = false AND d = NULL",
    "SELECT null(1)",
];

fn compare(protocol: Protocol, sql: &str, failures: &mut Vec<String>) -> bool {
    let fp = fingerprint(protocol, sql);
    let Some(got) = fast::classify(protocol, sql, fp) else {
        return false;
    };
    let mut want = classify_parsed(protocol, sql, fp);
    // A text the full parse rejects (the keyword fallback classified it) has only guessed
    // statement facts there; the fast path, which read it, has real ones.
    if want.statements.iter().any(|s| !s.parsed) {
        want.statements = got.statements.clone();
    }
    if got != want {
        failures.push(format!(
            "{protocol:?} {sql:?}\n  fast {got:?}\n  full {want:?}"
        ));
    }
    true
}

fn all_statements() -> Vec<(Protocol, String)> {
    let mut out = Vec::new();
    for (protocol, sql) in BENCH {
        out.push((*protocol, (*sql).to_owned()));
    }
    for sql in postgres::sql() {
        out.push((Protocol::Postgres, sql.to_owned()));
    }
    for sql in clickhouse::sql() {
        out.push((Protocol::ClickhouseHttp, sql.to_owned()));
    }
    for sql in mysql::sql() {
        out.push((Protocol::Mysql, sql.to_owned()));
    }
    // Every statement in every dialect: a text written for one is an edge case for the others.
    let texts: Vec<String> = out.iter().map(|(_, s)| s.clone()).collect();
    for sql in texts
        .iter()
        .map(String::as_str)
        .chain(EDGES.iter().copied())
    {
        for protocol in PROTOCOLS {
            out.push((protocol, sql.to_owned()));
        }
    }
    out
}

#[test]
fn fast_path_agrees_with_the_full_parse() {
    let mut failures = Vec::new();
    let mut accepted = 0;
    let statements = all_statements();
    for (protocol, sql) in &statements {
        accepted += usize::from(compare(*protocol, sql, &mut failures));
    }
    assert!(
        failures.is_empty(),
        "{} of {accepted} fast-path answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The path must not silently have become dead code.
    assert!(
        accepted >= 100,
        "only {accepted} statements took the fast path"
    );
}

#[test]
fn fast_path_agrees_on_every_prefix() {
    // Truncated statements are the easiest way to find texts the subset accepts but sqlparser
    // rejects (`SELECT a FROM t WHERE`).
    let mut failures = Vec::new();
    for (protocol, sql) in all_statements() {
        for (end, _) in sql.char_indices() {
            compare(protocol, &sql[..end], &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fast_path_agrees_on_random_selects() {
    const VOCAB: &[&str] = &[
        "a", "b", "t", "u", "x", ".", ",", "(", ")", "*", "=", "<", ">", "!", "-", "+", "/", "%",
        "1", "2.5", "'s'", "$1", "?", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "IS", "NULL",
        "LIKE", "JOIN", "LEFT", "ON", "AS", "GROUP BY", "ORDER BY", "HAVING", "LIMIT", "OFFSET",
        "DESC", "count", "now", "nextval", "INTERVAL", "DAY", ";", "DISTINCT", "id", "true",
        "\"q\"", "`q`", "CROSS", "JOIN", "SELECT",
    ];
    // Calls with resident effects, which both paths must report alike.
    let vocab = [VOCAB, &["pg_advisory_lock", "pg_advisory_unlock_all"]].concat();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut failures = Vec::new();
    let mut accepted = 0;
    for _ in 0..20_000 {
        let len = 1 + next(24);
        let mut sql = String::from("SELECT");
        for _ in 0..len {
            if next(4) != 0 {
                sql.push(' ');
            }
            sql.push_str(vocab[next(vocab.len())]);
        }
        for protocol in PROTOCOLS {
            accepted += usize::from(compare(protocol, &sql, &mut failures));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        accepted > 100,
        "only {accepted} random texts took the fast path"
    );
}

#[test]
fn bench_selects_take_the_fast_path() {
    for (protocol, sql) in BENCH {
        assert!(
            fast::classify(*protocol, sql, 0).is_some(),
            "{protocol:?} {sql:?}"
        );
    }
}

#[test]
fn deep_nesting_leaves_the_fast_path() {
    for protocol in PROTOCOLS {
        for n in [40, 5_000] {
            let parens = format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
            let calls = format!("SELECT {}1{}", "f(".repeat(n), ")".repeat(n));
            assert!(fast::classify(protocol, &parens, 0).is_none());
            assert!(fast::classify(protocol, &calls, 0).is_none());
        }
    }
}

#[test]
fn fast_path_agrees_around_the_depth_limits() {
    // sqlparser gives up at its recursion limit; the fast path must give up first.
    let mut failures = Vec::new();
    for n in 1..80 {
        let texts = [
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
            format!("SELECT {}1{}", "f(".repeat(n), ")".repeat(n)),
            format!("SELECT {}true", "NOT ".repeat(n)),
            format!("SELECT {}1", "- ".repeat(n)),
            format!(
                "SELECT a FROM t WHERE {}a = 1{}",
                "(".repeat(n),
                ")".repeat(n)
            ),
            format!(
                "SELECT a FROM t WHERE a IN {}1{}",
                "(".repeat(n),
                ")".repeat(n)
            ),
            format!("SELECT 1{}", " + 1".repeat(n)),
            format!("SELECT 1{}", " = NOT 1".repeat(n)),
            format!("SELECT 1{}", " AND 1 = 1 * - 1".repeat(n)),
            format!(
                "SELECT {}1{}",
                "(a OR b AND c LIKE d = e + f * ".repeat(n),
                ")".repeat(n)
            ),
            format!(
                "SELECT {}1{}",
                "NOT a OR NOT b AND NOT c IS NULL = - e + - f * f(".repeat(n),
                ")".repeat(n)
            ),
        ];
        for sql in &texts {
            for protocol in PROTOCOLS {
                compare(protocol, sql, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

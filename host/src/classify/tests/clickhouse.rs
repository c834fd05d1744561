use super::{Case, L, M, V, W, case, check};
use crate::model::Protocol;
use crate::model::StatementKind::*;

const CASES: &[Case] = &[
    // Reads (ClickHouse names are case-sensitive: kept as written)
    case("SELECT 1", Read, &[], &[]),
    case("SELECT count() FROM events", Read, &["events"], &[]).functions(&["count"]),
    case(
        "SELECT * FROM default.events WHERE date = today() LIMIT 100",
        Read,
        &["default.events"],
        &[],
    )
    .flags(L | V),
    case(
        "SELECT user_id, uniqExact(session) FROM events WHERE ts >= now() - INTERVAL 1 DAY \
         GROUP BY user_id ORDER BY 2 DESC LIMIT 10",
        Read,
        &["events"],
        &[],
    )
    .flags(L | V)
    .functions(&["uniqexact", "now"]),
    case("SELECT * FROM Events", Read, &["Events"], &[]),
    case("SELECT * FROM `Events`", Read, &["Events"], &[]),
    case("SELECT * FROM \"db\".\"Events\"", Read, &["db.Events"], &[]),
    case("SELECT * FROM numbers(10)", Read, &[], &[]).functions(&["numbers"]),
    case("SELECT * FROM remote('host:9000', db.t)", Read, &[], &[]).functions(&["remote"]),
    case(
        "SELECT * FROM system.numbers LIMIT 5",
        Read,
        &["system.numbers"],
        &[],
    )
    .flags(L),
    case(
        "SELECT * FROM t FINAL PREWHERE a = 1 WHERE b = 2 SETTINGS max_threads = 4",
        Read,
        &["t"],
        &[],
    ),
    case("SELECT * FROM t FORMAT JSONEachRow", Read, &["t"], &[]),
    case("SELECT count() FROM t SAMPLE 0.1", Read, &["t"], &[]),
    case("SELECT * FROM a ARRAY JOIN arr", Read, &["a"], &[]),
    case("SELECT * FROM t WHERE id IN (1, 2, 3)", Read, &["t"], &[]),
    case("SELECT 1 UNION ALL SELECT 2", Read, &[], &[]),
    case(
        "SELECT sum(x) FROM (SELECT x FROM t1 UNION ALL SELECT x FROM t2)",
        Read,
        &["t1", "t2"],
        &[],
    ),
    case(
        "SELECT * FROM t1 INNER JOIN t2 ON t1.id = t2.id",
        Read,
        &["t1", "t2"],
        &[],
    ),
    case("SELECT * FROM t LIMIT 10 OFFSET 5", Read, &["t"], &[]).flags(L),
    // `#` comments (ClickHouse's, unknown to sqlparser's dialect) do not hide the statement.
    case("SELECT 1 FROM t LIMIT 1 # comment", Read, &["t"], &[]).flags(L),
    case(
        "SELECT '#not a comment' AS x FROM t -- # also not\nLIMIT 2 #! shebang-style",
        Read,
        &["t"],
        &[],
    )
    .flags(L),
    case(
        "WITH top AS (SELECT id FROM users ORDER BY score DESC LIMIT 10) \
         SELECT * FROM orders WHERE user_id IN (SELECT id FROM top)",
        Read,
        &["users", "orders"],
        &[],
    ),
    case(
        "SELECT toStartOfHour(ts) AS h, count() FROM ev GROUP BY h ORDER BY h WITH FILL",
        Read,
        &["ev"],
        &[],
    ),
    // LIMIT n BY x limits rows per group, not the result.
    case(
        "SELECT * FROM events ORDER BY ts LIMIT 5 BY user_id",
        Read,
        &["events"],
        &[],
    ),
    case(
        "SELECT rand(), generateUUIDv4(), randConstant()",
        Read,
        &[],
        &[],
    )
    .flags(V),
    case("SELECT currentUser()", Read, &[], &[]).flags(V),
    case("SELECT now64(3)", Read, &[], &[]).flags(V),
    case("SELECT arrayMap(x -> x * 2, [1, 2]) AS a", Read, &[], &[]).functions(&["arraymap"]),
    case("/* dashboard */ SELECT 1 -- x", Read, &[], &[]),
    case("# comment\nSELECT 1", Read, &[], &[]),
    case("SELECT * FROM t WHERE id = {id:UInt64}", Read, &["t"], &[]),
    // Reads sqlparser does not know; a ClickHouse SELECT cannot write, so tokens decide.
    case(
        "SELECT * FROM a GLOBAL ANY LEFT JOIN b USING id",
        Read,
        &["a", "b"],
        &[],
    ),
    case("WITH 1 AS x SELECT x FROM t", Read, &["t"], &[]),
    case(
        "WITH 10 AS n, c AS (SELECT * FROM src) SELECT * FROM c, other o WHERE ts > now()",
        Read,
        &["src", "other"],
        &[],
    )
    .flags(V),
    case("EXPLAIN PIPELINE SELECT * FROM t", Read, &["t"], &[]),
    case(
        "SELECT extract(year FROM d) FROM t GLOBAL ANY JOIN u USING id",
        Read,
        &["t", "u"],
        &[],
    ),
    case("EXPLAIN SELECT * FROM t", Read, &["t"], &[]),
    case("EXISTS TABLE db.t", Read, &["db.t"], &[]),
    case("EXISTS t", Read, &["t"], &[]),
    case("DESCRIBE TABLE events", Read, &["events"], &[]),
    case("DESC events", Read, &["events"], &[]),
    case("SHOW TABLES", Read, &[], &[]),
    case("SHOW CREATE TABLE events", Read, &["events"], &[]),
    case("SHOW DATABASES", Read, &[], &[]),
    case("SHOW PROCESSLIST", Read, &[], &[]),
    // Writes
    case(
        "INSERT INTO events (a, b) VALUES (1, 'x'), (2, 'y')",
        Write,
        &[],
        &["events"],
    ),
    case(
        "INSERT INTO events FORMAT CSV\n1,2\n3,4\n",
        Write,
        &[],
        &["events"],
    ),
    case(
        "INSERT INTO db.events (a, b) FORMAT JSONEachRow\n{\"a\":1,\"b\":\"; DROP TABLE x\"}",
        Write,
        &[],
        &["db.events"],
    ),
    case(
        "INSERT INTO events SETTINGS async_insert=1 FORMAT TabSeparated\n1\t2",
        Write,
        &[],
        &["events"],
    ),
    case(
        "INSERT INTO events FORMAT Values (1, 'a')",
        Write,
        &[],
        &["events"],
    ),
    case(
        "insert into Events format RowBinary \u{1}\u{2}garbage(((",
        Write,
        &[],
        &["Events"],
    ),
    case(
        "INSERT INTO t SELECT * FROM s WHERE x > 1",
        Write,
        &["s"],
        &["t"],
    ),
    case(
        "INSERT INTO FUNCTION remote('h', db.t) SELECT 1",
        Write,
        &[],
        &[],
    )
    .functions(&["remote"]),
    case("DELETE FROM events WHERE a = 1", Write, &[], &["events"]).flags(W),
    // DDL, mutations included
    case(
        "ALTER TABLE events DELETE WHERE ts < now() - INTERVAL 30 DAY",
        Ddl,
        &[],
        &["events"],
    ),
    case(
        "ALTER TABLE events UPDATE a = 1 WHERE b = 2",
        Ddl,
        &[],
        &["events"],
    ),
    case(
        "ALTER TABLE events ADD COLUMN c String",
        Ddl,
        &[],
        &["events"],
    ),
    case(
        "CREATE TABLE t (a UInt64) ENGINE = MergeTree ORDER BY a",
        Ddl,
        &[],
        &["t"],
    ),
    case(
        "CREATE MATERIALIZED VIEW mv TO dst AS SELECT * FROM src",
        Ddl,
        &["src"],
        &["mv"],
    ),
    case("DROP TABLE IF EXISTS db.t", Ddl, &[], &["db.t"]),
    case("TRUNCATE TABLE t", Ddl, &[], &["t"]),
    case("RENAME TABLE a TO b", Ddl, &[], &["a", "b"]),
    case("EXCHANGE TABLES a AND b", Ddl, &[], &["a", "b"]),
    case("DETACH TABLE t", Ddl, &[], &["t"]),
    case("ATTACH TABLE t", Ddl, &[], &["t"]),
    case("GRANT SELECT ON db.t TO u", Ddl, &[], &[]),
    // Utility
    case("SYSTEM FLUSH LOGS", Utility, &[], &[]),
    case("SYSTEM RELOAD DICTIONARY d", Utility, &[], &[]),
    case("OPTIMIZE TABLE t FINAL", Utility, &["t"], &[]),
    case(
        "OPTIMIZE TABLE db.t PARTITION 202401 FINAL DEDUPLICATE",
        Utility,
        &["db.t"],
        &[],
    ),
    case("KILL QUERY WHERE query_id = 'abc'", Utility, &[], &[]),
    case("CHECK TABLE t", Utility, &["t"], &[]),
    // Session and transactions
    case("SET max_threads = 4", Session, &[], &[]),
    case("USE analytics", Session, &[], &[]),
    case("BEGIN TRANSACTION", Transaction, &[], &[]),
    case("COMMIT", Transaction, &[], &[]),
    case("ROLLBACK", Transaction, &[], &[]),
    // Unknown and several statements
    case("WATCH lv", Unknown, &[], &[]),
    case("SELECT * FROM t; SELECT 2", Read, &["t"], &[]).flags(M),
    case("SELECT (* FROM t; DROP TABLE x", Unknown, &[], &[]),
];

#[test]
fn clickhouse_statements() {
    assert!(CASES.len() >= 60);
    check(Protocol::ClickhouseHttp, CASES);
}

pub(super) fn sql() -> impl Iterator<Item = &'static str> {
    CASES.iter().map(|c| c.sql)
}

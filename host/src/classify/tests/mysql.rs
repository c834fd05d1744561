use super::{Case, L, M, V, W, case, check};
use crate::model::Protocol;
use crate::model::StatementKind::*;

const CASES: &[Case] = &[
    // Reads (MySQL table names are folded to lower case, quoted or not)
    case("SELECT 1", Read, &[], &[]),
    case("SELECT * FROM users WHERE id = 1", Read, &["users"], &[]),
    case("SELECT * FROM Users", Read, &["users"], &[]),
    case(
        "SELECT o.id FROM `Shop`.`Orders` o JOIN `Items` i ON i.order_id = o.id",
        Read,
        &["shop.orders", "items"],
        &[],
    ),
    case(
        "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10",
        Read,
        &["t"],
        &[],
    )
    .flags(L),
    case("SELECT * FROM t LIMIT 5, 10", Read, &["t"], &[]).flags(L),
    case(
        "SELECT * FROM t ORDER BY id DESC LIMIT 1",
        Read,
        &["t"],
        &[],
    )
    .flags(L),
    case(
        "SELECT COUNT(*) FROM orders GROUP BY status HAVING COUNT(*) > 1",
        Read,
        &["orders"],
        &[],
    )
    .functions(&["count"]),
    case(
        "SELECT * FROM t1 STRAIGHT_JOIN t2",
        Read,
        &["t1", "t2"],
        &[],
    ),
    case("SELECT * FROM t WHERE a IN (?, ?, ?)", Read, &["t"], &[]),
    case("SELECT * FROM t WHERE name = \"bob\"", Read, &["t"], &[]),
    case("SELECT @@version", Read, &[], &[]),
    case(
        "SELECT 1 -- comment\n, 2 # another\nFROM t",
        Read,
        &["t"],
        &[],
    ),
    case(
        "SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t",
        Read,
        &["t"],
        &[],
    ),
    case("SELECT 'it\\'s' FROM t", Read, &["t"], &[]),
    case("SELECT NOW()", Read, &[], &[])
        .flags(V)
        .functions(&["now"]),
    case("SELECT RAND()", Read, &[], &[]).flags(V),
    case("SELECT UUID()", Read, &[], &[]).flags(V),
    case("SELECT CURDATE()", Read, &[], &[]).flags(V),
    case("SELECT UNIX_TIMESTAMP()", Read, &[], &[]).flags(V),
    case("SELECT SYSDATE()", Read, &[], &[]).flags(V),
    case("SELECT CURRENT_TIMESTAMP", Read, &[], &[]).flags(V),
    case("SHOW VARIABLES LIKE 'max%'", Read, &[], &[]),
    case("SHOW FULL PROCESSLIST", Read, &[], &[]),
    case("SHOW CREATE TABLE t", Read, &["t"], &[]),
    case("SHOW WARNINGS", Read, &[], &[]),
    case("DESCRIBE t", Read, &["t"], &[]),
    case("EXPLAIN SELECT * FROM t", Read, &["t"], &[]),
    case("EXPLAIN ANALYZE SELECT * FROM t", Read, &["t"], &[]),
    // Per-connection state: must run where the write ran.
    case("SELECT FOUND_ROWS()", Session, &[], &[]).flags(V),
    case("SELECT LAST_INSERT_ID()", Session, &[], &[]).flags(V),
    case("SELECT COUNT(*) INTO @n FROM t", Session, &["t"], &[]),
    // Reads that must go to the primary
    case("SELECT GET_LOCK('job', 10)", Write, &[], &[]).flags(V),
    case("SELECT RELEASE_LOCK('job')", Write, &[], &[]).flags(V),
    case("SELECT * FROM t FOR UPDATE", Write, &["t"], &[]),
    case("SELECT * FROM t WHERE id = 1 FOR SHARE", Write, &["t"], &[]),
    // sqlparser does not know LOCK IN SHARE MODE: unknown, so still the primary.
    case(
        "SELECT * FROM t WHERE id = 1 LOCK IN SHARE MODE",
        Unknown,
        &[],
        &[],
    ),
    // Writes
    case(
        "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)",
        Write,
        &[],
        &["t"],
    ),
    case("INSERT IGNORE INTO t VALUES (1)", Write, &[], &["t"]),
    case("REPLACE INTO t VALUES (1)", Write, &[], &["t"]),
    case("INSERT INTO t SELECT * FROM s", Write, &["s"], &["t"]),
    case("UPDATE t SET a = 1 WHERE id = 2", Write, &[], &["t"]).flags(W),
    case("UPDATE t SET a = 1 LIMIT 5", Write, &[], &["t"]).flags(L),
    case(
        "UPDATE a JOIN b ON a.id = b.id SET a.x = b.y WHERE b.z = 1",
        Write,
        &["b"],
        &["a"],
    )
    .flags(W),
    case(
        "UPDATE a JOIN b ON a.id = b.id SET a.x = 1, b.y = 2",
        Write,
        &[],
        &["a", "b"],
    ),
    case("DELETE FROM t WHERE id = 1", Write, &[], &["t"]).flags(W),
    case("DELETE FROM t ORDER BY id LIMIT 10", Write, &[], &["t"]).flags(L),
    case(
        "DELETE a FROM a JOIN b ON a.id = b.id WHERE b.x = 1",
        Write,
        &["b"],
        &["a"],
    )
    .flags(W),
    case(
        "DELETE t1 FROM tbl AS t1 JOIN b ON t1.id = b.id WHERE b.x = 1",
        Write,
        &["b"],
        &["tbl"],
    )
    .flags(W),
    case(
        "LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t",
        Write,
        &[],
        &["t"],
    ),
    case("LOCK TABLES t READ, u WRITE", Write, &["t", "u"], &[]),
    case("UNLOCK TABLES", Write, &[], &[]),
    case("CALL p(1)", Write, &[], &[]),
    // DDL
    case(
        "CREATE TABLE `T` (id INT PRIMARY KEY) ENGINE=InnoDB",
        Ddl,
        &[],
        &["t"],
    ),
    case("CREATE TABLE t2 AS SELECT * FROM t", Ddl, &["t"], &["t2"]),
    case("ALTER TABLE t ADD INDEX i (a)", Ddl, &[], &["t"]),
    case(
        "RENAME TABLE a TO b, c TO d",
        Ddl,
        &[],
        &["a", "b", "c", "d"],
    ),
    case("TRUNCATE t", Ddl, &[], &["t"]),
    case("DROP TABLE IF EXISTS a, b", Ddl, &[], &["a", "b"]),
    case("GRANT SELECT ON db.* TO 'u'@'%'", Ddl, &[], &[]),
    case("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", Ddl, &[], &[]),
    // Transactions
    case("START TRANSACTION", Transaction, &[], &[]),
    case("BEGIN", Transaction, &[], &[]),
    case("BEGIN WORK", Transaction, &[], &[]),
    case("COMMIT", Transaction, &[], &[]),
    case("ROLLBACK", Transaction, &[], &[]),
    case("SAVEPOINT a", Transaction, &[], &[]),
    case("ROLLBACK TO SAVEPOINT a", Transaction, &[], &[]),
    case("RELEASE SAVEPOINT a", Transaction, &[], &[]),
    case("XA START 'x'", Transaction, &[], &[]),
    case(
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        Transaction,
        &[],
        &[],
    ),
    // Session
    case("SET autocommit = 0", Session, &[], &[]),
    case("SET NAMES utf8mb4", Session, &[], &[]),
    case("SET @x = 1", Session, &[], &[]),
    case(
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES'",
        Session,
        &[],
        &[],
    ),
    case("USE shop", Session, &[], &[]),
    case("PREPARE s FROM 'SELECT 1'", Session, &[], &[]),
    case("DEALLOCATE PREPARE s", Session, &[], &[]),
    // Utility
    case("OPTIMIZE TABLE t", Utility, &["t"], &[]),
    case("ANALYZE TABLE t", Utility, &["t"], &[]),
    case("FLUSH PRIVILEGES", Utility, &[], &[]),
    case("KILL 123", Utility, &[], &[]),
    case("KILL QUERY 123", Utility, &[], &[]),
    case("CHECK TABLE t", Utility, &["t"], &[]),
    case("REPAIR TABLE t", Utility, &["t"], &[]),
    // Unknown and several statements
    case("EXECUTE s USING @a", Unknown, &[], &[]),
    case("DO SLEEP(1)", Unknown, &[], &[]),
    case("HANDLER t OPEN", Unknown, &[], &[]),
    case("SELECT 1; SELECT 2", Read, &[], &[]).flags(M),
    case(
        "INSERT INTO t VALUES (1); SELECT LAST_INSERT_ID()",
        Write,
        &[],
        &["t"],
    )
    .flags(V | M),
];

#[test]
fn mysql_statements() {
    assert!(CASES.len() >= 60);
    check(Protocol::Mysql, CASES);
}

pub(super) fn sql() -> impl Iterator<Item = &'static str> {
    CASES.iter().map(|c| c.sql)
}

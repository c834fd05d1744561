use super::{Case, L, M, V, W, case, check};
use crate::model::Protocol;
use crate::model::StatementKind::*;

const CASES: &[Case] = &[
    // Reads
    case("SELECT 1", Read, &[], &[]),
    case("select id, name from users where id = 42", Read, &["users"], &[]),
    case(
        "SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id \
         WHERE o.total > 100 ORDER BY o.total DESC LIMIT 10",
        Read,
        &["users", "orders"],
        &[],
    )
    .flags(L),
    case("SELECT * FROM public.users OFFSET 10 FETCH FIRST 5 ROWS ONLY", Read, &["public.users"], &[]).flags(L),
    case("SELECT * FROM \"Users\" WHERE \"Id\" = 1", Read, &["Users"], &[]),
    case("SELECT * FROM \"MySchema\".\"Orders\" o, Public.Items", Read, &["MySchema.Orders", "public.items"], &[]),
    case("/* app:web */ SELECT count(*) FROM events -- trailing", Read, &["events"], &[]).functions(&["count"]),
    case("SELECT * FROM t WHERE id IN (SELECT user_id FROM bans)", Read, &["t", "bans"], &[]),
    case("SELECT * FROM a UNION ALL SELECT * FROM b ORDER BY 1 LIMIT 3", Read, &["a", "b"], &[]).flags(L),
    case(
        "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
         SELECT * FROM recent JOIN users ON users.id = recent.user_id",
        Read,
        &["orders", "users"],
        &[],
    )
    .flags(V)
    .functions(&["now"]),
    case(
        "WITH RECURSIVE tree AS (SELECT id FROM nodes WHERE parent IS NULL UNION ALL \
         SELECT n.id FROM nodes n JOIN tree t ON n.parent = t.id) SELECT * FROM tree",
        Read,
        &["nodes"],
        &[],
    ),
    case("SELECT * FROM generate_series(1, 10) g", Read, &[], &[]).functions(&["generate_series"]),
    case("SELECT now()", Read, &[], &[]).flags(V),
    case("SELECT CURRENT_TIMESTAMP", Read, &[], &[]).flags(V).functions(&["current_timestamp"]),
    case("SELECT random() FROM t", Read, &["t"], &[]).flags(V),
    case("SELECT gen_random_uuid()", Read, &[], &[]).flags(V),
    case("SELECT pg_sleep(1)", Read, &[], &[]).flags(V),
    case("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b", Read, &["t"], &[]),
    case("SELECT a FROM t WHERE b @> '{1}'::int[]", Read, &["t"], &[]),
    case(
        "SELECT * FROM t1 LEFT JOIN LATERAL (SELECT * FROM t2 WHERE t2.a = t1.a LIMIT 1) x ON true",
        Read,
        &["t1", "t2"],
        &[],
    ),
    case("SELECT * FROM t WHERE a = ANY($1)", Read, &["t"], &[]),
    case("VALUES (1, 'a'), (2, 'b')", Read, &[], &[]),
    case("SELECT $1::int, $2", Read, &[], &[]),
    case("SELECT 'it''s', E'a\\'b', $tag$ x; y $tag$ FROM t", Read, &["t"], &[]),
    case("SELECT * FROM café WHERE nom = 'été'", Read, &["café"], &[]),
    case("TABLE users", Read, &["users"], &[]),
    case("SHOW search_path", Read, &[], &[]),
    case("EXPLAIN SELECT * FROM t", Read, &["t"], &[]),
    // Plain EXPLAIN does not run the DELETE: a read that mentions t.
    case("EXPLAIN DELETE FROM t", Read, &["t"], &[]),
    case("COPY users (id, name) TO STDOUT", Read, &["users"], &[]),
    case("COPY (SELECT * FROM orders WHERE total > 10) TO STDOUT WITH CSV HEADER", Read, &["orders"], &[]),
    // Reads that must go to the primary
    case("SELECT * FROM t FOR UPDATE", Write, &["t"], &[]),
    case(
        "SELECT * FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        Write,
        &["jobs"],
        &[],
    )
    .flags(L),
    case("SELECT * FROM t FOR SHARE", Write, &["t"], &[]),
    case("SELECT nextval('orders_id_seq')", Write, &[], &[]).flags(V).functions(&["nextval"]),
    case("SELECT setval('s', 10)", Write, &[], &[]).flags(V),
    case("SELECT pg_advisory_lock(42)", Write, &[], &[]).flags(V),
    case("SELECT pg_try_advisory_xact_lock(1, 2)", Write, &[], &[]).flags(V),
    case("SELECT pg_catalog.nextval('s')", Write, &[], &[]).flags(V).functions(&["pg_catalog.nextval"]),
    case("SELECT currval('s')", Session, &[], &[]).flags(V),
    case("SELECT lastval()", Session, &[], &[]).flags(V),
    case("SELECT * INTO TEMP new_t FROM t", Write, &["t"], &["new_t"]),
    // Writes
    case(
        "WITH moved AS (DELETE FROM queue WHERE id < 10 RETURNING *) INSERT INTO archive SELECT * FROM moved",
        Write,
        &[],
        &["queue", "archive"],
    )
    .flags(W),
    case("WITH d AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM d", Write, &[], &["sessions"]),
    case("INSERT INTO users (name) VALUES ('a'), ('b')", Write, &[], &["users"]),
    case(
        "INSERT INTO t SELECT * FROM s ON CONFLICT (id) DO UPDATE SET v = excluded.v",
        Write,
        &["s"],
        &["t"],
    ),
    case("INSERT INTO t (id) VALUES (1) RETURNING id", Write, &[], &["t"]),
    case("INSERT INTO audit SELECT now(), txid_current()", Write, &[], &["audit"]).flags(V),
    case("UPDATE accounts SET balance = balance - 10 WHERE id = 1", Write, &[], &["accounts"]).flags(W),
    case("UPDATE accounts SET flagged = true", Write, &[], &["accounts"]),
    case("UPDATE t SET v = s.v FROM s WHERE t.id = s.id", Write, &["s"], &["t"]).flags(W),
    case("UPDATE t SET v = (SELECT max(v) FROM t) WHERE id = 1", Write, &["t"], &["t"]).flags(W),
    case("DELETE FROM sessions WHERE expires_at < now()", Write, &[], &["sessions"]).flags(W | V),
    case("DELETE FROM t USING u WHERE t.id = u.id", Write, &["u"], &["t"]).flags(W),
    case("DELETE FROM logs", Write, &[], &["logs"]),
    // sqlparser reads `ONLY t` as table ONLY aliased t; the classifier undoes that.
    case("DELETE FROM ONLY logs WHERE id = 1", Write, &[], &["logs"]).flags(W),
    case("UPDATE ONLY parent SET a = 1 WHERE b = 2", Write, &[], &["parent"]).flags(W),
    case("SELECT * FROM ONLY parent", Read, &["parent"], &[]),
    case(
        "MERGE INTO stock s USING deliveries d ON s.item = d.item \
         WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty \
         WHEN NOT MATCHED THEN INSERT (item, qty) VALUES (d.item, d.qty)",
        Write,
        &["deliveries"],
        &["stock"],
    ),
    case("COPY users FROM STDIN WITH (FORMAT csv)", Write, &[], &["users"]),
    case("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", Write, &[], &["t"]).flags(W),
    case("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", Write, &[], &["t"]),
    case("EXPLAIN (ANALYZE false) UPDATE t SET a = 1", Read, &["t"], &[]),
    case("LOCK TABLE accounts IN SHARE MODE", Write, &["accounts"], &[]),
    case("NOTIFY jobs, 'x'", Write, &[], &[]),
    case("CALL refresh_totals()", Write, &[], &[]),
    case("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", Write, &[], &["mv"]),
    // DDL
    case("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL)", Ddl, &[], &["users"]),
    case("CREATE TABLE IF NOT EXISTS archive AS SELECT * FROM orders", Ddl, &["orders"], &["archive"]),
    case("CREATE INDEX CONCURRENTLY idx_users_name ON users (name)", Ddl, &[], &["users"]),
    case("ALTER TABLE users ADD COLUMN email text", Ddl, &[], &["users"]),
    case("ALTER TABLE \"Orders\" RENAME TO \"OrdersOld\"", Ddl, &[], &["Orders"]),
    case("DROP TABLE IF EXISTS a, b CASCADE", Ddl, &[], &["a", "b"]),
    case("TRUNCATE TABLE logs, events", Ddl, &[], &["logs", "events"]),
    case("CREATE VIEW active AS SELECT * FROM users WHERE active", Ddl, &["users"], &["active"]),
    case("GRANT SELECT ON users TO reader", Ddl, &[], &[]),
    case("COMMENT ON TABLE users IS 'people'", Ddl, &[], &["users"]),
    case("DROP FUNCTION f(int)", Ddl, &[], &[]),
    case("CREATE SEQUENCE s", Ddl, &[], &[]),
    // Transactions
    case("BEGIN", Transaction, &[], &[]),
    case("BEGIN ISOLATION LEVEL SERIALIZABLE", Transaction, &[], &[]),
    case("START TRANSACTION READ ONLY", Transaction, &[], &[]),
    case("COMMIT", Transaction, &[], &[]),
    case("ROLLBACK", Transaction, &[], &[]),
    case("END", Transaction, &[], &[]),
    case("SAVEPOINT s1", Transaction, &[], &[]),
    case("RELEASE SAVEPOINT s1", Transaction, &[], &[]),
    case("ROLLBACK TO SAVEPOINT s1", Transaction, &[], &[]),
    case("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", Transaction, &[], &[]),
    // Session
    case("SET search_path TO app, public", Session, &[], &[]),
    case("SET LOCAL statement_timeout = '5s'", Session, &[], &[]),
    case("RESET ALL", Session, &[], &[]),
    case("DISCARD ALL", Session, &[], &[]),
    case("LISTEN jobs", Session, &[], &[]),
    case("UNLISTEN *", Session, &[], &[]),
    case("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", Session, &["t"], &[]),
    case("DEALLOCATE q", Session, &[], &[]),
    case("DECLARE c CURSOR FOR SELECT * FROM big", Session, &["big"], &[]),
    case("FETCH 100 FROM c", Session, &[], &[]),
    // Utility
    case("VACUUM users", Utility, &["users"], &[]),
    case("ANALYZE users", Utility, &["users"], &[]),
    case("CHECKPOINT", Utility, &[], &[]),
    case("REINDEX TABLE users", Utility, &[], &[]),
    // Unknown
    case("EXECUTE q(1)", Unknown, &[], &[]),
    case("DO $$ BEGIN PERFORM 1; END $$", Unknown, &[], &[]),
    case("SELEC * FROM t", Unknown, &[], &[]),
    case("", Unknown, &[], &[]),
    // Several statements
    case("SELECT 1; SELECT 2", Read, &[], &[]).flags(M),
    case("BEGIN; UPDATE t SET a = 1 WHERE id = 2; COMMIT", Write, &[], &["t"]).flags(W | M),
    case("UPDATE t SET a = 1 WHERE id = 1; DELETE FROM t", Write, &[], &["t"]).flags(M),
    case("SELECT * FROM a LIMIT 1; SELECT * FROM b", Read, &["a", "b"], &[]).flags(M),
    case("SELECT 1;", Read, &[], &[]),
];

#[test]
fn postgres_statements() {
    assert!(CASES.len() >= 60);
    check(Protocol::Postgres, CASES);
}

pub(super) fn sql() -> impl Iterator<Item = &'static str> {
    CASES.iter().map(|c| c.sql)
}

#[test]
fn statement_texts_split_at_top_level_semicolons_only() {
    let sql = "  SET search_path TO a; /* c; */ SET x = 'a;b' ;; \
               SELECT $q$;$q$, E'\\';' -- ;\n; RESET ALL";
    assert_eq!(
        crate::classify::statement_texts(Protocol::Postgres, sql),
        vec![
            "SET search_path TO a",
            "SET x = 'a;b'",
            "SELECT $q$;$q$, E'\\';'",
            "RESET ALL"
        ]
    );
    assert!(crate::classify::statement_texts(Protocol::Postgres, " ; -- x").is_empty());
}

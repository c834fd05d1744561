"""Session state through psycopg 3: a temp table, server-side prepared statements reused across
transactions, SQL PREPARE/EXECUTE, and reads that must see the session's own writes.

Usage: python psycopg_session.py HOST PORT USER PASSWORD DBNAME NAME (NAME: a table of its own).
Prints one line per check; exits 1 at the first mismatch."""
import sys

import psycopg

host, port, user, password, dbname, name = sys.argv[1:7]
dsn = f"host={host} port={port} user={user} password={password} dbname={dbname} connect_timeout=10"
table = f"drv_psycopg_{name}"


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}: {got!r}", flush=True)


with psycopg.connect(dsn, autocommit=True) as conn:
    # A temp table over several statements and transactions.
    conn.execute("CREATE TEMP TABLE scratch (x int)")
    for i in range(1, 4):
        conn.execute("INSERT INTO scratch VALUES (%s)", (i,))
    with conn.transaction():
        conn.execute("INSERT INTO scratch SELECT generate_series(4, 10)")
        check("temp rows inside a transaction", conn.execute("SELECT count(*) FROM scratch").fetchone(), (10,))
    check("temp rows after commit", conn.execute("SELECT count(*) FROM scratch").fetchone(), (10,))
    check("temp sum", conn.execute("SELECT sum(x)::int FROM scratch").fetchone(), (55,))

    # Server-side prepared statements (prepare=True: named at once), reused across transactions.
    for i in range(5):
        with conn.transaction():
            row = conn.execute("SELECT count(*)::int FROM scratch WHERE x > %s", (i,), prepare=True).fetchone()
            check(f"prepared read of the temp table, round {i}", row, (10 - i,))
        row = conn.execute("SELECT %s::int * 2", (i,), prepare=True).fetchone()
        check(f"prepared statement outside a transaction, round {i}", row, (i * 2,))

    # SQL PREPARE / EXECUTE / DEALLOCATE.
    conn.execute("PREPARE triple(int) AS SELECT $1 * 3")
    for i in range(3):
        check(f"EXECUTE triple({i})", conn.execute(f"EXECUTE triple({i})").fetchone(), (i * 3,))
    with conn.transaction():
        check("EXECUTE in a transaction", conn.execute("EXECUTE triple(7)").fetchone(), (21,))
    conn.execute("DEALLOCATE triple")

    # The temp table gone, the session shares server connections again: the statements prepared
    # so far are reused on whichever connection serves the next transaction.
    conn.execute("DROP TABLE scratch")
    for i in range(5):
        with conn.transaction():
            row = conn.execute("SELECT %s::int * 2", (i + 10,), prepare=True).fetchone()
            check(f"prepared statement after the temp table is gone, round {i}", row, ((i + 10) * 2,))
        row = conn.execute("SELECT %s::int * 2", (i + 20,), prepare=True).fetchone()
        check(f"again outside a transaction, round {i}", row, ((i + 20) * 2,))

    # Writes read back at once.
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL)")
    conn.execute(f"INSERT INTO {table} VALUES (1, 0)")
    check("read of a new table", conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone(), (0,))
    for i in range(1, 11):
        conn.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (i,))
        check(f"read after write {i}", conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone(), (i,))

    # Every statement prepared (prepare_threshold=0).
    with psycopg.connect(dsn, autocommit=True, prepare_threshold=0) as every:
        for i in range(1, 6):
            every.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (100 + i,))
            check(f"threshold 0: read after write {i}",
                  every.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone(), (100 + i,))
        with every.transaction():
            every.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
            check("threshold 0: read in the writing transaction",
                  every.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone(), (106,))
        check("threshold 0: read after commit", every.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone(), (106,))

    # Causal reads are per session (consistency = "session"): the first connection reads the
    # second's write only once it writes on top of it.
    conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1", prepare=True)
    check("the first connection's write on top of the second's",
          conn.execute(f"SELECT v FROM {table} WHERE id = 1", prepare=True).fetchone(), (107,))
    conn.execute(f"DROP TABLE {table}")
print("PSYCOPG DONE")

"""Session state through PyMySQL (text protocol): a temporary table, user variables, session
settings, transactions committed and rolled back, LAST_INSERT_ID() and affected rows, errors with
their codes, and reads that must see the session's own writes.

Usage: python pymysql_session.py HOST PORT USER PASSWORD DBNAME NAME (NAME: a table of its own).
Prints one line per check; exits 1 at the first mismatch."""
import sys

import pymysql

host, port, user, password, dbname, name = sys.argv[1:7]
table = f"drv_pymysql_{name}"


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}: {got!r}", flush=True)


conn = pymysql.connect(host=host, port=int(port), user=user, password=password, database=dbname,
                       autocommit=True, connect_timeout=10)
cur = conn.cursor()


def one(sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()


# A temporary table over several statements and transactions.
cur.execute("CREATE TEMPORARY TABLE scratch (x int)")
for i in range(1, 4):
    cur.execute("INSERT INTO scratch VALUES (%s)", (i,))
conn.begin()
cur.execute("INSERT INTO scratch VALUES (4), (5)")
check("temp rows inside a transaction", one("SELECT count(*) FROM scratch"), (5,))
conn.commit()
check("temp sum after commit", one("SELECT CAST(sum(x) AS SIGNED) FROM scratch"), (15,))
cur.execute("DROP TEMPORARY TABLE scratch")

# User variables live on the connection.
cur.execute("SET @greeting = 'hello'")
check("user variable", one("SELECT @greeting"), ("hello",))
check("user variable again", one("SELECT concat(@greeting, ' world')"), ("hello world",))

# Session settings follow the session.
cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
for i in range(3):
    check(f"sql_mode kept, round {i}", one("SELECT @@SESSION.sql_mode"), ("ANSI_QUOTES",))
cur.execute("SET SESSION sql_mode = DEFAULT")

# Writes read back at once, LAST_INSERT_ID() and affected rows.
cur.execute(f"DROP TABLE IF EXISTS {table}")
cur.execute(f"CREATE TABLE {table} (id int AUTO_INCREMENT PRIMARY KEY, v varchar(20))")
for i in range(1, 6):
    cur.execute(f"INSERT INTO {table} (v) VALUES (%s)", (f"v{i}",))
    check(f"lastrowid after insert {i}", cur.lastrowid, i)
    check(f"LAST_INSERT_ID() after insert {i}", one("SELECT LAST_INSERT_ID()"), (i,))
    check(f"read back after insert {i}", one(f"SELECT count(*) FROM {table}"), (i,))
cur.execute(f"UPDATE {table} SET v = 'same' WHERE id <= 2")
check("affected rows of an update", cur.rowcount, 2)

# A rolled-back transaction leaves nothing behind.
conn.begin()
cur.execute(f"INSERT INTO {table} (v) VALUES ('gone')")
check("row seen inside its transaction", one(f"SELECT count(*) FROM {table}"), (6,))
conn.rollback()
check("rolled back", one(f"SELECT count(*) FROM {table}"), (5,))

# Errors keep their codes and SQL states, and the session goes on.
try:
    cur.execute("SELECT * FROM no_such_table_here")
    check("missing table", "no error", "error")
except pymysql.err.ProgrammingError as e:
    check("missing table error code", e.args[0], 1146)
try:
    cur.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'dup')")
    check("duplicate key", "no error", "error")
except pymysql.err.IntegrityError as e:
    check("duplicate key error code", e.args[0], 1062)
check("session goes on after errors", one("SELECT 40 + 2"), (42,))

cur.execute(f"DROP TABLE {table}")
conn.close()
print("done", flush=True)

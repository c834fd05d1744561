"""ROW_COUNT() and FOUND_ROWS() stay each client's own: two PyMySQL connections interleave
statements, and each reads back the counts of its own last statement (and the column names the
server gives them), whether the two share a server connection or not.

Usage: python mysql_last_counts.py HOST PORT USER PASSWORD DBNAME NAME (NAME: tables of its own).
Prints one line per check; exits 1 at the first mismatch."""
import sys

import pymysql
from pymysql.constants import CLIENT

host, port, user, password, dbname, name = sys.argv[1:7]


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}: {got!r}", flush=True)


def connect():
    conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=dbname, autocommit=True, connect_timeout=10)
    return conn, conn.cursor()


a_conn, a = connect()
b_conn, b = connect()
mine, theirs = f"lc_{name}_a", f"lc_{name}_b"
for cur, table in ((a, mine), (b, theirs)):
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} (x int)")


def one(cur, sql):
    cur.execute(sql)
    return cur.fetchone()


def names(cur):
    return [d[0] for d in cur.description]


a.execute(f"INSERT INTO {mine} VALUES (1), (2), (3)")
b.execute(f"INSERT INTO {theirs} VALUES (1), (2), (3), (4), (5)")
check("ROW_COUNT() after my insert", one(a, "SELECT ROW_COUNT()"), (3,))
check("its column name", names(a), ["ROW_COUNT()"])
check("ROW_COUNT() after a SELECT", one(a, "select row_count()"), (-1,))
check("spelt as written", names(a), ["row_count()"])

a.execute(f"SELECT * FROM {mine}")
check("rows of my select", len(a.fetchall()), 3)
b.execute(f"SELECT * FROM {theirs}")
check("rows of theirs", len(b.fetchall()), 5)
check("FOUND_ROWS() after my select", one(a, "SELECT FOUND_ROWS()"), (3,))
check("FOUND_ROWS() after theirs", one(b, "SELECT FOUND_ROWS()"), (5,))

a.execute(f"UPDATE {mine} SET x = x + 10 WHERE x > 1")
b.execute(f"DELETE FROM {theirs} WHERE x > 1")
check("aliased and in an expression",
      one(a, "SELECT ROW_COUNT() AS n, ROW_COUNT() + 1 AS m"), (2, 3))
check("aliased names", names(a), ["n", "m"])
check("their delete", one(b, "SELECT ROW_COUNT() AS n"), (4,))

try:
    a.execute("SELECT * FROM no_such_table_here")
except pymysql.err.ProgrammingError as e:
    check("the error", e.args[0], 1146)
b.execute(f"INSERT INTO {theirs} VALUES (9)")
check("ROW_COUNT() after my error", one(a, "SELECT ROW_COUNT()"), (-1,))

a.execute(f"INSERT INTO {mine} SELECT x FROM {mine}")
b.execute(f"SELECT x FROM {theirs}")
b.fetchall()
a.execute(f"INSERT INTO {mine} (x) SELECT ROW_COUNT()")
check("ROW_COUNT() inside an INSERT", one(a, f"SELECT max(x) FROM {mine}"), (13,))
check("…and the rows it inserted", one(a, f"SELECT count(*) FROM {mine} WHERE x = 3"), (1,))

# In one text of several statements, the later ones see the earlier ones' counts.
multi_conn = pymysql.connect(host=host, port=int(port), user=user, password=password,
                             database=dbname, autocommit=True, connect_timeout=10,
                             client_flag=CLIENT.MULTI_STATEMENTS)
multi = multi_conn.cursor()
b.execute(f"DELETE FROM {theirs}")
multi.execute(f"INSERT INTO {mine} VALUES (7), (8); SELECT ROW_COUNT()")
multi.nextset()
check("ROW_COUNT() after an insert of the same text", multi.fetchone(), (2,))
multi_conn.close()

for cur, table in ((a, mine), (b, theirs)):
    cur.execute(f"DROP TABLE {table}")
print("done", flush=True)

"""Server-side prepared statements through MySQL Connector/Python (pure Python): the same
statements executed many times, inside and outside transactions, with NULLs and several types,
while the client shares server connections with others; then COM_CHANGE_USER.

Usage: python connector_session.py HOST PORT USER PASSWORD DBNAME NAME (NAME: a table of its own).
Prints one line per check; exits 1 at the first mismatch."""
import sys

import mysql.connector

host, port, user, password, dbname, name = sys.argv[1:7]
table = f"drv_connector_{name}"


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}: {got!r}", flush=True)


conn = mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                               database=dbname, use_pure=True, autocommit=True,
                               connection_timeout=10)
text = conn.cursor()
text.execute(f"DROP TABLE IF EXISTS {table}")
text.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20) NULL, score DOUBLE)")
ps = conn.cursor(prepared=True)
for i in range(1, 11):
    ps.execute(f"INSERT INTO {table} (id, name, score) VALUES (?, ?, ?)",
               (i, None if i % 3 == 0 else f"n{i}", i * 1.5))
    check(f"prepared insert {i}", ps.rowcount, 1)
for round in range(4):
    ps.execute(f"SELECT count(*), CAST(sum(score) AS DECIMAL(10,1)) FROM {table} WHERE id <= ?", (round + 5,))
    got = ps.fetchall()
    check(f"prepared aggregate, round {round}", [(int(a), str(b)) for a, b in got],
          [(round + 5, str(sum((i * 1.5) for i in range(1, round + 6))))])
conn.start_transaction()
ps.execute(f"UPDATE {table} SET name = ? WHERE id = ?", ("changed", 3))
ps.execute(f"SELECT name FROM {table} WHERE id = ?", (3,))
check("prepared read inside a transaction", ps.fetchall(), [("changed",)])
conn.rollback()
ps.execute(f"SELECT name FROM {table} WHERE id = ?", (3,))
check("rolled back", ps.fetchall(), [(None,)])
ps.execute(f"SELECT id FROM {table} WHERE name IS NULL ORDER BY id")
check("NULLs", ps.fetchall(), [(3,), (6,), (9,)])
text.execute(f"DROP TABLE {table}")

# COM_CHANGE_USER starts the session over: variables and settings are gone.
text.execute("SET @left_behind = 1")
text.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
conn.cmd_change_user(username=user, password=password, database=dbname)
text = conn.cursor()
text.execute("SELECT @left_behind IS NULL, @@SESSION.sql_mode = @@GLOBAL.sql_mode, DATABASE()")
check("after COM_CHANGE_USER", text.fetchall(), [(1, 1, dbname)])
conn.close()
print("done", flush=True)

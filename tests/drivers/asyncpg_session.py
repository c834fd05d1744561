"""Session state through asyncpg: it names a server-side prepared statement for every query and
keeps its own statement cache; a temp table, conn.prepare() reused across transactions, and
reads that must see the session's own writes.

Usage: python asyncpg_session.py HOST PORT USER PASSWORD DBNAME NAME. Prints one line per check;
exits 1 at the first mismatch."""
import asyncio
import sys

import asyncpg

host, port, user, password, dbname, name = sys.argv[1:7]
table = f"drv_asyncpg_{name}"


def check(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    print(f"ok {what}: {got!r}", flush=True)


async def main():
    conn = await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                                 database=dbname, timeout=10)
    # A temp table over several statements and transactions.
    await conn.execute("CREATE TEMP TABLE scratch (x int)")
    for i in range(1, 4):
        await conn.execute("INSERT INTO scratch VALUES ($1)", i)
    async with conn.transaction():
        await conn.execute("INSERT INTO scratch SELECT generate_series(4, 10)")
        check("temp rows inside a transaction", await conn.fetchval("SELECT count(*) FROM scratch"), 10)
    check("temp rows after commit", await conn.fetchval("SELECT count(*) FROM scratch"), 10)
    check("temp sum", await conn.fetchval("SELECT sum(x)::int FROM scratch"), 55)

    # The statement cache: the same query text again reuses asyncpg's named statement.
    for i in range(5):
        check(f"cached statement, round {i}",
              await conn.fetchval("SELECT count(*)::int FROM scratch WHERE x > $1", i), 10 - i)

    # conn.prepare() reused across transactions and outside them.
    stmt = await conn.prepare("SELECT count(*)::int FROM scratch WHERE x <= $1")
    for i in range(5):
        async with conn.transaction():
            check(f"prepared statement in transaction {i}", await stmt.fetchval(i), i)
        check(f"prepared statement outside a transaction {i}", await stmt.fetchval(i + 5), i + 5)

    # SQL PREPARE / EXECUTE.
    await conn.execute("PREPARE triple(int) AS SELECT $1 * 3")
    for i in range(3):
        check(f"EXECUTE triple({i})", await conn.fetchval(f"EXECUTE triple({i})"), i * 3)
    await conn.execute("DEALLOCATE triple")

    # The temp table gone, the session shares server connections again: statements prepared so
    # far (asyncpg's cache and conn.prepare()) are reused on whichever connection serves it.
    twice = await conn.prepare("SELECT $1::int * 2")
    check("prepared while pinned", await twice.fetchval(1), 2)
    await conn.execute("DROP TABLE scratch")
    for i in range(5):
        async with conn.transaction():
            check(f"prepared statement after the temp table is gone, round {i}", await twice.fetchval(i), i * 2)
        check(f"cached statement after the temp table is gone, round {i}",
              await conn.fetchval("SELECT $1::int + 1", i), i + 1)

    # Writes read back at once.
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL)")
    await conn.execute(f"INSERT INTO {table} VALUES (1, 0)")
    check("read of a new table", await conn.fetchval(f"SELECT v FROM {table} WHERE id = 1"), 0)
    # Let the replicas replay the writes above, so that the prepare of a read may go to one:
    # asyncpg prepares with Parse + Describe + Flush and sends no Sync until the next query, so
    # the write that follows must still reach the primary.
    await asyncio.sleep(0.5)
    read = await conn.prepare(f"SELECT v FROM {table} WHERE id = $1")
    for i in range(1, 11):
        await conn.execute(f"UPDATE {table} SET v = $1 WHERE id = 1", i)
        check(f"read after write {i}", await conn.fetchval(f"SELECT v FROM {table} WHERE id = 1"), i)
        check(f"prepared read after write {i}", await read.fetchval(1), i)
    async with conn.transaction():
        await conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        check("read in the writing transaction", await read.fetchval(1), 11)
    check("read after commit", await read.fetchval(1), 11)

    # A second connection sees the first's write at once.
    other = await asyncpg.connect(host=host, port=int(port), user=user, password=password,
                                  database=dbname, timeout=10)
    await other.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
    check("the second connection's write", await other.fetchval(f"SELECT v FROM {table} WHERE id = 1"), 12)
    await other.close()

    await conn.execute(f"DROP TABLE {table}")
    await conn.close()
    print("ASYNCPG DONE")


asyncio.run(main())

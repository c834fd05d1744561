"""Runs one read as a server-side prepared statement (binary protocol) through MySQL
Connector/Python, twice on one connection for each parameter given (the second execution does
not send the parameter types again), and prints the rows of each execution, one line each.

Usage: python mysql_prepared_read.py HOST PORT USER PASSWORD DBNAME SQL PARAM [PARAM ...]"""
import sys

import mysql.connector

host, port, user, password, dbname, sql = sys.argv[1:7]
conn = mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                               database=dbname, use_pure=True, autocommit=True,
                               connection_timeout=10)
cur = conn.cursor(prepared=True)
for param in sys.argv[7:]:
    for _ in range(2):
        cur.execute(sql, (int(param),))
        print(repr([tuple(r) for r in cur.fetchall()]), flush=True)
conn.close()

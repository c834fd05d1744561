"""Bad input after login, each on a connection of its own, through PyMySQL's socket: what the
proxy answers (the error code, and whether the connection stays usable).

Usage: python mysql_bad_input.py HOST PORT USER PASSWORD DBNAME
Prints one line per case."""
import socket
import struct
import sys

import pymysql

host, port, user, password, dbname = sys.argv[1:6]


def connect():
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=dbname, autocommit=True, connect_timeout=10, read_timeout=10)


def answer(sock):
    """The first packet back: ('ERR', code) / ('OK',) / ('closed',)."""
    try:
        header = b""
        while len(header) < 4:
            chunk = sock.recv(4 - len(header))
            if not chunk:
                return ("closed",)
            header += chunk
        length = header[0] | header[1] << 8 | header[2] << 16
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                return ("closed",)
            body += chunk
    except (socket.timeout, ConnectionResetError):
        return ("closed",)
    if body[:1] == b"\xff":
        return ("ERR", struct.unpack("<H", body[1:3])[0])
    return ("OK",) if body[:1] == b"\x00" else ("other",)


def usable(conn):
    try:
        conn.ping(reconnect=False)
        return "usable"
    except Exception:
        return "closed"


def case(name, raw):
    conn = connect()
    sock = conn._sock
    sock.sendall(raw)
    got = answer(sock)
    print(f"{name}: {got} then {usable(conn)}", flush=True)


case("wrong sequence id", b"\x09\x00\x00\x05\x03SELECT 1")
# A whole 16 MiB frame and the header of a next one: over max_allowed_packet.
case("oversized command", b"\xff\xff\xff\x00\x03" + b"x" * (0xFFFFFF - 1) + b"\x10\x00\x00\x01")
case("unknown command", b"\x01\x00\x00\x00\x99")
case("binlog dump", b"\x0b\x00\x00\x00\x12" + b"\x00" * 10)
case("shutdown", b"\x01\x00\x00\x00\x08")
case("statement of an unknown id", b"\x0a\x00\x00\x00\x17\x63\x00\x00\x00\x00\x01\x00\x00\x00")
# KILL of a server connection id: it could belong to anyone.
conn = connect()
try:
    with conn.cursor() as cur:
        cur.execute("KILL QUERY 1")
    print("kill: allowed", flush=True)
except pymysql.err.MySQLError as e:
    print(f"kill: ('ERR', {e.args[0]}) then {usable(conn)}", flush=True)
# A truncated packet, then the client leaves.
conn = connect()
conn._sock.sendall(b"\x64\x00\x00\x00\x03SELECT")
conn._sock.close()
# Everyone else is served.
other = connect()
with other.cursor() as cur:
    cur.execute("SELECT 6 * 7")
    print(f"another client: {cur.fetchone()[0]}", flush=True)

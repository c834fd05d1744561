// Session state through MariaDB Connector/J with server-side prepared statements
// (useServerPrepStmts=true: COM_STMT_PREPARE / COM_STMT_EXECUTE) next to Statement (text)
// queries: a temp table over transactions, a user variable, a session time zone, commit and
// rollback, generated keys, LAST_INSERT_ID() and affected rows, a batch of prepared inserts,
// streamed parameters, errors with their codes and SQL states, and reads that must see the
// session's own writes.
//
// Usage: java -cp /usr/share/java/mariadb-java-client.jar MariadbJdbcSession.java HOST PORT USER PASSWORD DBNAME NAME
// Prints one line per check; exits 1 at the first mismatch.
import java.io.ByteArrayInputStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

public class MariadbJdbcSession {
    static void check(String what, Object got, Object want) {
        if (!Objects.equals(got, want)) {
            System.out.println("FAIL " + what + ": got " + got + ", want " + want);
            System.exit(1);
        }
        System.out.println("ok " + what + ": " + got);
    }

    /** The first column of every row, as strings (NULL as "null"). */
    static List<String> rows(ResultSet rs) throws SQLException {
        List<String> out = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                out.add(String.valueOf(rs.getString(1)));
            }
        }
        return out;
    }

    /** The first column of the only row. */
    static String one(ResultSet rs) throws SQLException {
        List<String> all = rows(rs);
        if (all.size() != 1) {
            System.out.println("FAIL expected one row, got " + all);
            System.exit(1);
        }
        return all.get(0);
    }

    static String one(Statement st, String sql) throws SQLException {
        return one(st.executeQuery(sql));
    }

    static String one(PreparedStatement ps) throws SQLException {
        return one(ps.executeQuery());
    }

    /** "code/SQLState" of the error `sql` raises, or "no error". */
    static String error(Statement st, String sql) {
        try {
            st.execute(sql);
            return "no error";
        } catch (SQLException e) {
            return e.getErrorCode() + "/" + e.getSQLState();
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://" + args[0] + ":" + args[1] + "/" + args[4]
            + "?user=" + args[2] + "&password=" + args[3]
            + "&useServerPrepStmts=true&connectTimeout=10000";
        String table = "drv_connectorj_" + args[5];
        try (Connection conn = DriverManager.getConnection(url);
             Statement st = conn.createStatement()) {
            check("connection valid (COM_PING)", conn.isValid(5), true);

            // A temporary table over several statements and a transaction.
            st.execute("CREATE TEMPORARY TABLE scratch (x int)");
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO scratch VALUES (?)")) {
                for (int i = 1; i <= 3; i++) {
                    ins.setInt(1, i);
                    check("prepared temp insert " + i, ins.executeUpdate(), 1);
                }
                conn.setAutoCommit(false);
                st.execute("INSERT INTO scratch VALUES (4), (5)");
                ins.setInt(1, 6);
                ins.executeUpdate();
                check("temp rows inside a transaction", one(st, "SELECT count(*) FROM scratch"), "6");
                conn.commit();
                conn.setAutoCommit(true);
            }
            check("temp sum after commit", one(st, "SELECT CAST(sum(x) AS SIGNED) FROM scratch"), "21");
            try (PreparedStatement above = conn.prepareStatement("SELECT count(*) FROM scratch WHERE x > ?")) {
                for (int i = 0; i < 3; i++) {
                    above.setInt(1, i);
                    check("prepared temp read " + i, one(above), String.valueOf(6 - i));
                }
            }
            st.execute("DROP TEMPORARY TABLE scratch");

            // A user variable lives on the connection; prepared statements see it.
            st.execute("SET @greeting = 'hello'");
            check("user variable", one(st, "SELECT @greeting"), "hello");
            try (PreparedStatement greet = conn.prepareStatement("SELECT concat(@greeting, ?)")) {
                for (int i = 0; i < 3; i++) {
                    greet.setString(1, " world " + i);
                    check("user variable in a prepared statement " + i, one(greet), "hello world " + i);
                }
            }

            // A session setting follows the session.
            st.execute("SET SESSION time_zone = '+03:00'");
            try (PreparedStatement tz = conn.prepareStatement(
                    "SELECT concat(@@SESSION.time_zone, ' ', CAST(FROM_UNIXTIME(?) AS CHAR))")) {
                for (int i = 0; i < 3; i++) {
                    check("time_zone kept, round " + i, one(st, "SELECT @@SESSION.time_zone"), "+03:00");
                    tz.setInt(1, i * 3600);
                    check("time_zone in a prepared statement, round " + i, one(tz),
                        "+03:00 1970-01-01 0" + (3 + i) + ":00:00");
                }
            }
            st.execute("SET SESSION time_zone = DEFAULT");
            check("time_zone back to the default",
                one(st, "SELECT @@SESSION.time_zone = @@GLOBAL.time_zone"), "1");

            // The isolation level (SET SESSION TRANSACTION ISOLATION LEVEL) and the current
            // database (USE, COM_INIT_DB) follow the session too (only DBNAME: the proxy refuses
            // databases its cluster does not list).
            conn.setTransactionIsolation(Connection.TRANSACTION_READ_COMMITTED);
            for (int i = 0; i < 3; i++) {
                check("isolation level kept, round " + i, one(st, "SELECT @@SESSION.tx_isolation"), "READ-COMMITTED");
            }
            conn.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
            check("isolation level back", one(st, "SELECT @@SESSION.tx_isolation"), "REPEATABLE-READ");
            st.execute("USE " + args[4]);
            check("USE", one(st, "SELECT DATABASE() = '" + args[4] + "'"), "1");
            conn.setCatalog(args[4]);
            check("setCatalog (COM_INIT_DB)", one(st, "SELECT DATABASE() = '" + args[4] + "'"), "1");

            // Writes read back at once: generated keys, LAST_INSERT_ID() and affected rows.
            st.execute("DROP TABLE IF EXISTS " + table);
            st.execute("CREATE TABLE " + table + " (id int AUTO_INCREMENT PRIMARY KEY, "
                + "v varchar(20) NULL, score double, note text NULL, data mediumblob NULL)");
            try (PreparedStatement ins = conn.prepareStatement(
                     "INSERT INTO " + table + " (v, score) VALUES (?, ?)", Statement.RETURN_GENERATED_KEYS);
                 PreparedStatement count = conn.prepareStatement(
                     "SELECT count(*) FROM " + table + " WHERE id <= ?")) {
                for (int i = 1; i <= 5; i++) {
                    if (i % 3 == 0) {
                        ins.setNull(1, Types.VARCHAR);
                    } else {
                        ins.setString(1, "v" + i);
                    }
                    ins.setDouble(2, i * 1.5);
                    check("prepared insert " + i + " affected", ins.executeUpdate(), 1);
                    check("generated key of insert " + i, one(ins.getGeneratedKeys()), String.valueOf(i));
                    check("LAST_INSERT_ID() after insert " + i, one(st, "SELECT LAST_INSERT_ID()"), String.valueOf(i));
                    count.setInt(1, 100);
                    check("prepared read back after insert " + i, one(count), String.valueOf(i));
                }
            }
            check("text insert", st.executeUpdate(
                "INSERT INTO " + table + " (v, score) VALUES ('t6', 9.0)", Statement.RETURN_GENERATED_KEYS), 1);
            check("generated key of the text insert", one(st.getGeneratedKeys()), "6");
            check("affected rows of a text update",
                st.executeUpdate("UPDATE " + table + " SET v = 'same' WHERE id <= 2"), 2);
            check("matched rows of an update that changes nothing (CLIENT_FOUND_ROWS)",
                st.executeUpdate("UPDATE " + table + " SET v = 'same' WHERE id <= 2"), 2);
            try (Connection changed = DriverManager.getConnection(url + "&useAffectedRows=true");
                 Statement st2 = changed.createStatement()) {
                check("changed rows of an update that changes nothing (useAffectedRows)",
                    st2.executeUpdate("UPDATE " + table + " SET v = 'same' WHERE id <= 2"), 0);
                check("changed rows of an update that changes one (useAffectedRows)",
                    st2.executeUpdate("UPDATE " + table + " SET v = 'same' WHERE id <= 3"), 1);
                st2.executeUpdate("UPDATE " + table + " SET v = NULL WHERE id = 3");
            }
            try (PreparedStatement upd = conn.prepareStatement("UPDATE " + table + " SET score = ? WHERE id >= ?")) {
                upd.setDouble(1, 0.5);
                upd.setInt(2, 4);
                check("affected rows of a prepared update", upd.executeUpdate(), 3);
            }
            check("NULLs", rows(st.executeQuery("SELECT id FROM " + table + " WHERE v IS NULL ORDER BY id")),
                List.of("3"));
            check("aggregate", one(st, "SELECT CAST(sum(score) AS DECIMAL(10,1)) FROM " + table),
                "10.5");

            // A batch of prepared inserts.
            try (PreparedStatement batch = conn.prepareStatement(
                     "INSERT INTO " + table + " (id, v, score) VALUES (?, ?, ?)")) {
                for (int i = 101; i <= 110; i++) {
                    batch.setInt(1, i);
                    batch.setString(2, "b" + i);
                    batch.setDouble(3, i);
                    batch.addBatch();
                }
                int[] counts = batch.executeBatch();
                check("batch update counts", Arrays.toString(counts),
                    Arrays.toString(new int[] {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
            }
            check("batch rows read back", one(st, "SELECT count(*) FROM " + table + " WHERE id > 100"), "10");
            st.addBatch("UPDATE " + table + " SET score = score + 1 WHERE id > 105");
            st.addBatch("SET @batched = 7");
            st.addBatch("UPDATE " + table + " SET score = score - 1 WHERE id > 105");
            check("statement batch update counts", Arrays.toString(st.executeBatch()), "[5, 0, 5]");
            check("statement batch reads back",
                one(st, "SELECT concat(@batched, ' ', CAST(sum(score) AS SIGNED)) FROM " + table + " WHERE id > 100"),
                "7 1055");

            // A result read a few rows at a time (streamed), then the session goes on.
            try (PreparedStatement all = conn.prepareStatement("SELECT id FROM " + table + " WHERE id > ? ORDER BY id")) {
                all.setFetchSize(3);
                all.setInt(1, 0);
                check("streamed rows", rows(all.executeQuery()).size(), 16);
                check("after the streamed rows", one(st, "SELECT 1 + 1"), "2");
            }

            // Streamed parameters (COM_STMT_SEND_LONG_DATA where the driver sends them so).
            try (PreparedStatement stream = conn.prepareStatement(
                     "UPDATE " + table + " SET note = ?, data = ? WHERE id = ?");
                 PreparedStatement read = conn.prepareStatement(
                     "SELECT concat(note, ' ', length(data), ' ', hex(substr(data, 1, 4))) FROM " + table + " WHERE id = ?")) {
                String note = "x".repeat(5000);
                byte[] data = new byte[70000];
                for (int i = 0; i < data.length; i++) {
                    data[i] = (byte) i;
                }
                for (int i = 1; i <= 3; i++) {
                    stream.setCharacterStream(1, new StringReader(note.substring(0, 10 * i)));
                    stream.setBinaryStream(2, new ByteArrayInputStream(data, i, data.length - i));
                    stream.setInt(3, i);
                    check("streamed parameters " + i, stream.executeUpdate(), 1);
                    read.setInt(1, i);
                    byte[] head = Arrays.copyOfRange(data, i, i + 4);
                    StringBuilder hex = new StringBuilder();
                    for (byte b : head) {
                        hex.append(String.format("%02X", b));
                    }
                    check("streamed parameters read back " + i, one(read),
                        note.substring(0, 10 * i) + " " + (data.length - i) + " " + hex);
                }
                try (PreparedStatement bytes = conn.prepareStatement("SELECT data FROM " + table + " WHERE id = ?")) {
                    bytes.setInt(1, 2);
                    try (ResultSet rs = bytes.executeQuery()) {
                        rs.next();
                        check("blob round trip", Arrays.equals(rs.getBytes(1),
                            Arrays.copyOfRange(data, 2, data.length)), true);
                    }
                }
            }

            // Commit and rollback, read through a prepared statement inside and after.
            try (PreparedStatement name = conn.prepareStatement("SELECT v FROM " + table + " WHERE id = ?");
                 PreparedStatement rename = conn.prepareStatement("UPDATE " + table + " SET v = ? WHERE id = ?")) {
                name.setInt(1, 1);
                for (int round = 0; round < 3; round++) {
                    conn.setAutoCommit(false);
                    rename.setString(1, "r" + round);
                    rename.setInt(2, 1);
                    rename.executeUpdate();
                    check("read inside transaction " + round, one(name), "r" + round);
                    if (round == 1) {
                        conn.rollback();
                    } else {
                        conn.commit();
                    }
                    conn.setAutoCommit(true);
                    check("read after transaction " + round, one(name), round == 1 ? "r0" : "r" + round);
                }
                conn.setAutoCommit(false);
                st.execute("INSERT INTO " + table + " (v) VALUES ('gone')");
                check("row seen inside its transaction", one(st, "SELECT count(*) FROM " + table), "17");
                conn.rollback();
                conn.setAutoCommit(true);
                check("rolled back", one(st, "SELECT count(*) FROM " + table), "16");
            }

            // Errors keep their codes and SQL states, and the session goes on.
            check("missing table", error(st, "SELECT * FROM no_such_table_here"), "1146/42S02");
            check("duplicate key (text)",
                error(st, "INSERT INTO " + table + " (id, v) VALUES (1, 'dup')"), "1062/23000");
            try (PreparedStatement dup = conn.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, ?)")) {
                dup.setInt(1, 2);
                dup.setString(2, "dup");
                String got;
                try {
                    dup.executeUpdate();
                    got = "no error";
                } catch (SQLException e) {
                    got = e.getErrorCode() + "/" + e.getSQLState();
                }
                check("duplicate key (prepared)", got, "1062/23000");
            }
            String missing;
            try (PreparedStatement bad = conn.prepareStatement("SELECT * FROM no_such_table_here WHERE id = ?")) {
                bad.setInt(1, 1);
                bad.executeQuery().close();
                missing = "no error";
            } catch (SQLException e) {
                missing = e.getErrorCode() + "/" + e.getSQLState();
            }
            check("missing table (prepared)", missing, "1146/42S02");
            check("syntax error", error(st, "SELEC 1"), "1064/42000");
            conn.setAutoCommit(false);
            check("error inside a transaction",
                error(st, "INSERT INTO " + table + " (id, v) VALUES (3, 'dup')"), "1062/23000");
            st.execute("UPDATE " + table + " SET v = 'after error' WHERE id = 3");
            check("transaction goes on after an error",
                one(st, "SELECT v FROM " + table + " WHERE id = 3"), "after error");
            conn.commit();
            conn.setAutoCommit(true);
            check("session goes on after errors", one(st, "SELECT 40 + 2"), "42");
            try (PreparedStatement v = conn.prepareStatement("SELECT v FROM " + table + " WHERE id = ?")) {
                v.setInt(1, 3);
                check("committed after the error", one(v), "after error");
            }

            st.execute("DROP TABLE " + table);
        }
        System.out.println("done");
    }
}

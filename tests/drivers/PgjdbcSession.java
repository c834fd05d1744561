// Session state through pgjdbc: a temp table, PreparedStatements reused past prepareThreshold
// (server-side named statements; the URL sets prepareThreshold=1), a transaction, and reads that
// must see the session's own writes.
//
// Usage: java -cp /usr/share/java/postgresql.jar PgjdbcSession.java HOST PORT USER PASSWORD DBNAME NAME
// Prints one line per check; exits 1 at the first mismatch.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class PgjdbcSession {
    static void check(String what, long got, long want) {
        if (got != want) {
            System.out.println("FAIL " + what + ": got " + got + ", want " + want);
            System.exit(1);
        }
        System.out.println("ok " + what + ": " + got);
    }

    static long one(Statement st, String sql) throws SQLException {
        try (ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static long one(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            return rs.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4]
            + "?prepareThreshold=1&connectTimeout=10";
        String table = "drv_jdbc_" + args[5];
        try (Connection conn = DriverManager.getConnection(url, args[2], args[3]);
             Statement st = conn.createStatement()) {
            // A temp table over several statements and a transaction.
            st.execute("CREATE TEMP TABLE scratch (x int)");
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO scratch VALUES (?)")) {
                for (int i = 1; i <= 3; i++) {
                    ins.setInt(1, i);
                    ins.executeUpdate();
                }
            }
            conn.setAutoCommit(false);
            st.execute("INSERT INTO scratch SELECT generate_series(4, 10)");
            check("temp rows inside a transaction", one(st, "SELECT count(*) FROM scratch"), 10);
            conn.commit();
            conn.setAutoCommit(true);
            check("temp rows after commit", one(st, "SELECT count(*) FROM scratch"), 10);

            // One PreparedStatement reused: server-side (named) from its first execution on.
            PreparedStatement twice = conn.prepareStatement("SELECT ? * 2");
            twice.setInt(1, 1);
            check("prepared while pinned", one(twice), 2);
            try (PreparedStatement above = conn.prepareStatement("SELECT count(*) FROM scratch WHERE x > ?")) {
                for (int i = 0; i < 5; i++) {
                    conn.setAutoCommit(false);
                    above.setInt(1, i);
                    check("prepared statement in transaction " + i, one(above), 10 - i);
                    conn.commit();
                    conn.setAutoCommit(true);
                    above.setInt(1, i + 5);
                    check("prepared statement outside a transaction " + i, one(above), 5 - i);
                }
            }

            // SQL PREPARE / EXECUTE.
            st.execute("PREPARE triple(int) AS SELECT $1 * 3");
            for (int i = 0; i < 3; i++) {
                check("EXECUTE triple(" + i + ")", one(st, "EXECUTE triple(" + i + ")"), i * 3);
            }
            st.execute("DEALLOCATE triple");

            // The temp table gone, the session shares server connections again: the server-side
            // statement prepared so far is used on whichever connection serves the next one.
            st.execute("DROP TABLE scratch");
            for (int i = 0; i < 5; i++) {
                conn.setAutoCommit(false);
                twice.setInt(1, i + 10);
                check("prepared statement after the temp table is gone " + i, one(twice), (i + 10) * 2);
                conn.commit();
                conn.setAutoCommit(true);
                twice.setInt(1, i + 20);
                check("again outside a transaction " + i, one(twice), (i + 20) * 2);
            }
            twice.close();

            // Writes read back at once.
            st.execute("DROP TABLE IF EXISTS " + table);
            st.execute("CREATE TABLE " + table + " (id int PRIMARY KEY, v int NOT NULL)");
            st.execute("INSERT INTO " + table + " VALUES (1, 0)");
            check("read of a new table", one(st, "SELECT v FROM " + table + " WHERE id = 1"), 0);
            try (PreparedStatement write = conn.prepareStatement("UPDATE " + table + " SET v = ? WHERE id = 1");
                 PreparedStatement read = conn.prepareStatement("SELECT v FROM " + table + " WHERE id = ?")) {
                read.setInt(1, 1);
                for (int i = 1; i <= 10; i++) {
                    write.setInt(1, i);
                    write.executeUpdate();
                    check("read after write " + i, one(read), i);
                }
                conn.setAutoCommit(false);
                st.execute("UPDATE " + table + " SET v = v + 1 WHERE id = 1");
                check("read in the writing transaction", one(read), 11);
                conn.commit();
                conn.setAutoCommit(true);
                check("read after commit", one(read), 11);
            }
            st.execute("DROP TABLE " + table);
        }
        System.out.println("PGJDBC DONE");
    }
}

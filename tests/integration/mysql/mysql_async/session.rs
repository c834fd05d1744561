//! One whole session through `mysql_async`: prepared statements (binary protocol) across
//! transactions, session state, errors, types, resets and a change of user.

use mysql_async::prelude::Queryable;
use mysql_async::{
    ChangeUserOpts, Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, TxOpts, Value,
};
use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE};

use super::{Out, opts, server_error, show_row};

/// One session through `mysql_async` against `port`, with tables named after `name`: its
/// lines, or the transcript with the mismatches or the driver error.
pub(super) async fn session(port: u16, name: &str) -> Result<Vec<String>, String> {
    let mut out = Out::default();
    macro_rules! t {
        ($what:expr, $e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err(out.fail($what, e)),
            }
        };
    }
    let table = format!("drv_mysql_async_{name}");
    let mut conn = t!("connect", Conn::new(opts(port)).await);
    out.note("server version", format!("{:?}", conn.server_version()));

    // Session state set by prepared statements, as code that runs everything through `exec`
    // does: a user variable and a setting, read back by prepared and text statements. First
    // in the session, before it writes anything, so that its reads are free to go anywhere.
    t!(
        "prepared SET of a user variable",
        conn.exec_drop("SET @prepared_var = ?", ("kept",)).await
    );
    t!(
        "prepared SET of time_zone",
        conn.exec_drop("SET SESSION time_zone = ?", ("+01:00",))
            .await
    );
    // Read back by prepared statements first: a text read naming a user variable would keep
    // the session on the connection it lands on.
    for round in 0..3 {
        let var: Option<Option<String>> = t!(
            "binary read of a user variable set by a prepared statement",
            conn.exec_first("SELECT @prepared_var", ()).await
        );
        out.check(
            &format!("user variable set by a prepared statement (binary), round {round}"),
            var,
            Some(Some("kept".into())),
        );
        let zone: Option<(String, String)> = t!(
            "binary read of time_zone set by a prepared statement",
            conn.exec_first(
                "SELECT @@SESSION.time_zone, CAST(FROM_UNIXTIME(?) AS CHAR)",
                (0,)
            )
            .await
        );
        out.check(
            &format!("time_zone set by a prepared statement (binary), round {round}"),
            zone,
            Some(("+01:00".into(), "1970-01-01 01:00:00".into())),
        );
    }
    let zone: Option<String> = t!(
        "text read of time_zone set by a prepared statement",
        conn.query_first("SELECT @@SESSION.time_zone").await
    );
    out.check(
        "time_zone set by a prepared statement (text)",
        zone,
        Some("+01:00".into()),
    );
    let var: Option<Option<String>> = t!(
        "text read of a user variable set by a prepared statement",
        conn.query_first("SELECT @prepared_var").await
    );
    out.check(
        "user variable set by a prepared statement (text)",
        var,
        Some(Some("kept".into())),
    );

    // COM_RESET_CONNECTION starts the session over, free to move again.
    let supported = t!("COM_RESET_CONNECTION", conn.reset().await);
    out.check("COM_RESET_CONNECTION supported", supported, true);
    let zone: Option<i64> = t!(
        "read after reset",
        conn.query_first("SELECT @@SESSION.time_zone = @@GLOBAL.time_zone")
            .await
    );
    out.check(
        "after COM_RESET_CONNECTION: time_zone default",
        zone,
        Some(1),
    );

    // What lets the session move between server connections: a replayable setting, prepared
    // statements, transactions, errors.
    t!(
        "set time_zone",
        conn.query_drop("SET SESSION time_zone = '+05:30'").await
    );
    for round in 0..3 {
        let text: Option<String> = t!(
            "text read of time_zone",
            conn.query_first("SELECT @@SESSION.time_zone").await
        );
        out.check(
            &format!("time_zone (text), round {round}"),
            text,
            Some("+05:30".into()),
        );
        let binary: Option<(String, String)> = t!(
            "binary read of time_zone",
            conn.exec_first(
                "SELECT @@SESSION.time_zone, CAST(FROM_UNIXTIME(?) AS CHAR)",
                (0,)
            )
            .await
        );
        out.check(
            &format!("time_zone (binary), round {round}"),
            binary,
            Some(("+05:30".into(), "1970-01-01 05:30:00".into())),
        );
    }

    // A table of its own: prepared inserts, LAST_INSERT_ID() and affected rows, reads of the
    // session's own writes.
    t!(
        "drop table",
        conn.query_drop(format!("DROP TABLE IF EXISTS {table}"))
            .await
    );
    t!(
        "create table",
        conn.query_drop(format!(
            "CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20) NOT NULL, \
             amount DECIMAL(10,2) NULL, at DATETIME NULL, n BIGINT UNSIGNED NULL)"
        ))
        .await
    );
    let insert = format!("INSERT INTO {table} (v, amount, at, n) VALUES (?, ?, ?, ?)");
    for i in 1..=5u64 {
        t!(
            "prepared insert",
            conn.exec_drop(
                &insert,
                (
                    format!("v{i}"),
                    format!("{i}.25"),
                    Value::Date(2024, 2, 29, 12, 34, 56, 0),
                    if i % 2 == 0 { None } else { Some(i * 1000) },
                ),
            )
            .await
        );
        out.check(
            &format!("last_insert_id() after insert {i}"),
            conn.last_insert_id(),
            Some(i),
        );
        out.check(
            &format!("affected_rows() after insert {i}"),
            conn.affected_rows(),
            1,
        );
        let n: Option<u64> = t!(
            "read back",
            conn.exec_first(format!("SELECT count(*) FROM {table}"), ())
                .await
        );
        out.check(&format!("read back after insert {i}"), n, Some(i));
        let text: Option<u64> = t!(
            "LAST_INSERT_ID() (text)",
            conn.query_first("SELECT LAST_INSERT_ID()").await
        );
        out.check(
            &format!("LAST_INSERT_ID() (text) after insert {i}"),
            text,
            Some(i),
        );
        let binary: Option<u64> = t!(
            "LAST_INSERT_ID() (binary)",
            conn.exec_first("SELECT LAST_INSERT_ID()", ()).await
        );
        out.check(
            &format!("LAST_INSERT_ID() (binary) after insert {i}"),
            binary,
            Some(i),
        );
    }
    t!(
        "prepared update",
        conn.exec_drop(
            format!("UPDATE {table} SET v = ? WHERE id <= ?"),
            ("same", 2)
        )
        .await
    );
    out.check("affected rows of an update", conn.affected_rows(), 2);
    out.note("info of an update", conn.info());

    // exec_batch: one statement, several parameter sets.
    t!(
        "exec_batch",
        conn.exec_batch(
            &insert,
            (6..=8).map(|i| (format!("b{i}"), None::<String>, None::<Value>, Some(i))),
        )
        .await
    );
    out.check(
        "last_insert_id() after exec_batch",
        conn.last_insert_id(),
        Some(8),
    );
    let batch: Vec<(u32, String)> = t!(
        "read the batch back",
        conn.exec(
            format!("SELECT id, v FROM {table} WHERE id > ? ORDER BY id"),
            (5,)
        )
        .await
    );
    out.check(
        "exec_batch rows read back",
        batch,
        vec![(6, "b6".into()), (7, "b7".into()), (8, "b8".into())],
    );

    // Several types in binary rows, from the table and from literals.
    let rows: Vec<Row> = t!(
        "binary rows",
        conn.exec(
            format!("SELECT id, v, amount, at, n FROM {table} WHERE id IN (?, ?, ?) ORDER BY id"),
            (1, 2, 7),
        )
        .await
    );
    for (i, row) in rows.into_iter().enumerate() {
        out.note(&format!("binary row {i}"), show_row(row));
    }
    let literal: Option<Row> = t!(
        "binary literals",
        conn.exec_first(
            "SELECT CAST(? AS SIGNED) AS i, CAST(? AS DECIMAL(6,3)) AS d, ? AS s, \
             TIMESTAMP '2024-02-29 12:34:56.789' AS ts, TIME '-01:02:03' AS tm, NULL AS nothing, \
             ? AS f, ? AS u",
            (-42, "3.14159", "text é", 2.5f64, u64::MAX),
        )
        .await
    );
    out.note(
        "binary literals",
        literal.map(show_row).unwrap_or_else(|| "no row".into()),
    );
    let stmt = t!(
        "prepare",
        conn.prep(format!(
            "SELECT id, v, amount FROM {table} WHERE id = ? AND v <> ?"
        ))
        .await
    );
    out.check(
        "prepared statement params and columns",
        (stmt.num_params(), stmt.num_columns()),
        (2, 3),
    );

    // Commit and rollback, reading the writes inside the transaction.
    {
        let mut tx = t!(
            "start transaction",
            conn.start_transaction(TxOpts::default()).await
        );
        t!(
            "update in a transaction",
            tx.exec_drop(
                format!("UPDATE {table} SET v = ? WHERE id = ?"),
                ("gone", 3)
            )
            .await
        );
        let v: Option<String> = t!(
            "read inside a transaction",
            tx.exec_first(format!("SELECT v FROM {table} WHERE id = ?"), (3,))
                .await
        );
        out.check("write read inside its transaction", v, Some("gone".into()));
        t!("rollback", tx.rollback().await);
    }
    let v: Option<String> = t!(
        "read after rollback",
        conn.exec_first(format!("SELECT v FROM {table} WHERE id = ?"), (3,))
            .await
    );
    out.check("rolled back", v, Some("v3".into()));
    {
        let mut tx = t!(
            "start transaction",
            conn.start_transaction(TxOpts::default()).await
        );
        t!(
            "delete in a transaction",
            tx.exec_drop(format!("DELETE FROM {table} WHERE id > ?"), (6,))
                .await
        );
        out.check("deleted rows", tx.affected_rows(), 2);
        t!("commit", tx.commit().await);
    }
    let n: Option<u64> = t!(
        "read after commit",
        conn.query_first(format!("SELECT count(*) FROM {table}"))
            .await
    );
    out.check("committed", n, Some(6));

    // Errors keep their codes and SQL states, and the session goes on.
    let dup = server_error(
        conn.exec_drop(
            format!("INSERT INTO {table} (id, v) VALUES (?, ?)"),
            (1, "dup"),
        )
        .await,
    );
    out.check("duplicate key (binary)", dup.as_str(), "1062 23000");
    let dup = server_error(
        conn.query_drop(format!("INSERT INTO {table} (id, v) VALUES (2, 'dup')"))
            .await,
    );
    out.check("duplicate key (text)", dup.as_str(), "1062 23000");
    let missing = server_error(conn.prep("SELECT * FROM no_such_table_here").await);
    out.check("missing table at prepare", missing.as_str(), "1146 42S02");
    let syntax = server_error(conn.query_drop("SELEKT 1").await);
    out.check("syntax error", syntax.as_str(), "1064 42000");
    let answer: Option<i64> = t!("after errors", conn.exec_first("SELECT ? + 2", (40,)).await);
    out.check("session goes on after errors", answer, Some(42));

    // State that keeps the session on its server connection: a temporary table over prepared
    // inserts and two transactions, one committed, one rolled back; a user variable.
    t!(
        "create temporary table",
        conn.query_drop("CREATE TEMPORARY TABLE scratch (x INT)")
            .await
    );
    for i in 1..=3 {
        t!(
            "prepared insert into the temporary table",
            conn.exec_drop("INSERT INTO scratch VALUES (?)", (i,)).await
        );
        out.check("temp insert affected rows", conn.affected_rows(), 1);
    }
    {
        let mut tx = t!(
            "start transaction",
            conn.start_transaction(TxOpts::default()).await
        );
        t!(
            "insert inside a transaction",
            tx.exec_drop("INSERT INTO scratch VALUES (?), (?)", (4, 5))
                .await
        );
        out.check("temp rows inserted in a transaction", tx.affected_rows(), 2);
        let n: Option<i64> = t!(
            "count inside a transaction",
            tx.exec_first("SELECT count(*) FROM scratch", ()).await
        );
        out.check("temp rows inside a transaction", n, Some(5));
        t!("commit", tx.commit().await);
    }
    {
        let mut tx = t!(
            "start transaction",
            conn.start_transaction(TxOpts::default()).await
        );
        t!(
            "insert to roll back",
            tx.exec_drop("INSERT INTO scratch VALUES (?)", (6,)).await
        );
        t!("rollback", tx.rollback().await);
    }
    let sum: Option<i64> = t!(
        "sum after commit and rollback",
        conn.exec_first("SELECT CAST(sum(x) AS SIGNED) FROM scratch", ())
            .await
    );
    out.check("temp sum after commit and rollback", sum, Some(15));
    t!(
        "set a user variable",
        conn.query_drop("SET @greeting = 'hello'").await
    );
    for round in 0..2 {
        let text: Option<String> = t!(
            "text read of a user variable",
            conn.query_first("SELECT @greeting").await
        );
        out.check(
            &format!("user variable (text), round {round}"),
            text,
            Some("hello".into()),
        );
        let binary: Option<String> = t!(
            "binary read of a user variable",
            conn.exec_first("SELECT concat(@greeting, ?)", (" world",))
                .await
        );
        out.check(
            &format!("user variable (binary), round {round}"),
            binary,
            Some("hello world".into()),
        );
    }

    // COM_RESET_CONNECTION: variables, settings and temporary tables are gone; statements are
    // prepared again.
    let supported = t!("COM_RESET_CONNECTION", conn.reset().await);
    out.check("COM_RESET_CONNECTION supported", supported, true);
    let after: Option<(Option<String>, i64)> = t!(
        "read after reset",
        conn.query_first("SELECT @greeting, @@SESSION.time_zone = @@GLOBAL.time_zone")
            .await
    );
    out.check(
        "after COM_RESET_CONNECTION: variable NULL, time_zone default",
        after,
        Some((None, 1)),
    );
    let scratch = server_error(conn.query_drop("SELECT * FROM scratch").await);
    out.check(
        "after COM_RESET_CONNECTION: temporary table gone",
        scratch.as_str(),
        "1146 42S02",
    );
    let v: Option<String> = t!(
        "prepared after reset",
        conn.exec_first(format!("SELECT v FROM {table} WHERE id = ?"), (4,))
            .await
    );
    out.check("prepared statement after reset", v, Some("v4".into()));

    // COM_CHANGE_USER, to the same user, and then naming user, password and database.
    t!(
        "set before change user",
        conn.query_drop("SET @left_behind = 1, SESSION sql_mode = 'ANSI_QUOTES'")
            .await
    );
    t!(
        "COM_CHANGE_USER",
        conn.change_user(ChangeUserOpts::default()).await
    );
    let after: Option<(i64, i64, i64, String)> = t!(
        "read after change user",
        conn.query_first(
            "SELECT @left_behind IS NULL, @@SESSION.sql_mode = @@GLOBAL.sql_mode, \
             @@SESSION.time_zone = @@GLOBAL.time_zone, DATABASE()"
        )
        .await
    );
    out.check(
        "after COM_CHANGE_USER",
        after,
        Some((1, 1, 1, DATABASE.into())),
    );
    t!(
        "set before change user with options",
        conn.query_drop("SET @left_behind = 2").await
    );
    t!(
        "COM_CHANGE_USER with options",
        conn.change_user(
            ChangeUserOpts::default()
                .with_user(Some(APP_USER.into()))
                .with_pass(Some(APP_PASSWORD.into()))
                .with_db_name(Some(DATABASE.into())),
        )
        .await
    );
    let after: Option<(i64, String, String)> = t!(
        "read after change user with options",
        conn.exec_first(
            format!(
                "SELECT @left_behind IS NULL, DATABASE(), \
                 (SELECT v FROM {table} WHERE id = ?)"
            ),
            (5,)
        )
        .await
    );
    out.check(
        "after COM_CHANGE_USER with options",
        after,
        Some((1, DATABASE.into(), "v5".into())),
    );
    t!(
        "drop table",
        conn.query_drop(format!("DROP TABLE {table}")).await
    );
    t!("disconnect", conn.disconnect().await);

    // A pool of one connection: what a client leaves behind is reset before the next.
    let pool = Pool::new(OptsBuilder::from_opts(opts(port)).pool_opts(
        PoolOpts::default().with_constraints(PoolConstraints::new(1, 1).expect("1..=1")),
    ));
    {
        let mut c = t!("pool get", pool.get_conn().await);
        t!("pool set", c.query_drop("SET @pooled = 'left'").await);
        let v: Option<String> = t!("pool read", c.query_first("SELECT @pooled").await);
        out.check("pooled connection variable", v, Some("left".into()));
    }
    {
        let mut c = t!("pool get again", pool.get_conn().await);
        let v: Option<Option<String>> =
            t!("pool read again", c.exec_first("SELECT @pooled", ()).await);
        out.check("pooled connection reset on return", v, Some(None));
    }
    t!("pool disconnect", pool.disconnect().await);
    out.lines.push("done".into());
    if out.failed {
        Err(out.lines.join("\n"))
    } else {
        Ok(out.lines)
    }
}

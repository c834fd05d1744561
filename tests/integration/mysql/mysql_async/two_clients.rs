//! Two `mysql_async` clients taking turns on one server connection per node.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};

use super::{Out, opts};

/// Two clients taking turns on one server connection per node: what one client's prepared
/// statements leave on a connection (LAST_INSERT_ID(), a user variable, a setting) is neither
/// read by the other client nor lost to the first.
pub(super) async fn two_clients(port: u16, name: &str) -> Result<Vec<String>, String> {
    let mut out = Out::default();
    macro_rules! t {
        ($what:expr, $e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err(out.fail($what, e)),
            }
        };
    }
    let table = format!("drv_mysql_async_pair_{name}");
    let mut a = t!("connect a", Conn::new(opts(port)).await);
    let mut b = t!("connect b", Conn::new(opts(port)).await);
    t!(
        "drop table",
        a.query_drop(format!("DROP TABLE IF EXISTS {table}")).await
    );
    t!(
        "create table",
        a.query_drop(format!(
            "CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(1))"
        ))
        .await
    );
    let insert = format!("INSERT INTO {table} (who) VALUES (?)");
    t!("a inserts", a.exec_drop(&insert, ("a",)).await);
    out.check("a's last_insert_id()", a.last_insert_id(), Some(1));
    t!("b inserts", b.exec_drop(&insert, ("b",)).await);
    out.check("b's last_insert_id()", b.last_insert_id(), Some(2));
    for (who, conn, want) in [("a", &mut a, 1u64), ("b", &mut b, 2)] {
        let binary: Option<u64> = t!(
            "LAST_INSERT_ID() (binary)",
            conn.exec_first("SELECT LAST_INSERT_ID()", ()).await
        );
        out.check(
            &format!("{who}'s LAST_INSERT_ID() (binary)"),
            binary,
            Some(want),
        );
        let text: Option<u64> = t!(
            "LAST_INSERT_ID() (text)",
            conn.query_first("SELECT LAST_INSERT_ID()").await
        );
        out.check(
            &format!("{who}'s LAST_INSERT_ID() (text)"),
            text,
            Some(want),
        );
    }

    t!(
        "a's prepared SET of a user variable",
        a.exec_drop("SET @left_by_a = ?", ("a",)).await
    );
    t!(
        "a's prepared SET of time_zone",
        a.exec_drop("SET SESSION time_zone = ?", ("+01:00",)).await
    );
    t!("a leaves", a.disconnect().await);
    {
        // In a transaction: on the primary, where a's statements ran.
        let mut tx = t!(
            "b starts a transaction",
            b.start_transaction(TxOpts::default()).await
        );
        let seen: Option<(Option<String>, i64)> = t!(
            "b reads",
            tx.exec_first(
                "SELECT @left_by_a, @@SESSION.time_zone = @@GLOBAL.time_zone",
                ()
            )
            .await
        );
        out.check(
            "b does not see a's variable and time_zone",
            seen,
            Some((None, 1)),
        );
        t!("b commits", tx.commit().await);
    }
    t!(
        "drop table",
        b.query_drop(format!("DROP TABLE {table}")).await
    );
    t!("b leaves", b.disconnect().await);
    out.lines.push("done".into());
    if out.failed {
        Err(out.lines.join("\n"))
    } else {
        Ok(out.lines)
    }
}

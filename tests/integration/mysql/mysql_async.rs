//! A Rust driver, `mysql_async`, prints through transaction pooling what it prints against the
//! primary: its statement cache keeps server-side prepared statements (binary protocol) across
//! transactions while the client shares server connections with others; a user variable and
//! `time_zone` set by prepared statements, a temporary table, a user variable and `time_zone`
//! set in text follow the session; commit, rollback, `exec_batch`, `LAST_INSERT_ID()` and
//! affected rows, errors with their code and SQL state, several column types in binary rows,
//! reads of the session's own writes; `COM_RESET_CONNECTION` and `COM_CHANGE_USER` start the
//! session over, and a pooled connection comes back reset. Two clients taking turns on one
//! server connection neither read nor lose each other's prepared-statement state.

use mysql_async::{Opts, OptsBuilder, Row, Value};
use switchyard_tests::mariadb::{APP_PASSWORD, APP_USER, DATABASE, MariaCluster};
use switchyard_tests::proxy::Proxy;

use super::{RUN_TIMEOUT, config};

mod session;
mod two_clients;

use session::session;
use two_clients::two_clients;

/// Connection options for `port`: TCP only (no reconnect to `@@socket`, which would bypass the
/// proxy), and the statement cache on so that `exec*` prepares once and executes many times.
fn opts(port: u16) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .db_name(Some(DATABASE))
        .prefer_socket(false)
        .stmt_cache_size(32)
        .into()
}

/// A value as the driver decoded it, its variant included (`Int` and `UInt` differ by the
/// column's UNSIGNED flag, `Bytes` is what DECIMAL and strings arrive as).
fn show(v: &Value) -> String {
    match v {
        Value::Bytes(b) => format!("Bytes({:?})", String::from_utf8_lossy(b)),
        other => format!("{other:?}"),
    }
}

/// A row: the column's name, type and flags, then the value.
fn show_row(row: Row) -> String {
    let columns: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| {
            format!(
                "{} {:?} {:?} decimals {}",
                c.name_str(),
                c.column_type(),
                c.flags(),
                c.decimals()
            )
        })
        .collect();
    let values: Vec<String> = row.unwrap().iter().map(show).collect();
    columns
        .iter()
        .zip(&values)
        .map(|(c, v)| format!("[{c}] {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checks' output: `ok <what>: <value>` per check, `FAIL <what>: …` for a mismatch (the
/// session goes on, so that every difference shows).
#[derive(Default)]
struct Out {
    lines: Vec<String>,
    failed: bool,
}

impl Out {
    fn check<T: std::fmt::Debug + PartialEq>(&mut self, what: &str, got: T, want: T) {
        if got == want {
            self.lines.push(format!("ok {what}: {got:?}"));
        } else {
            self.failed = true;
            self.lines
                .push(format!("FAIL {what}: got {got:?}, want {want:?}"));
        }
    }

    /// Records a value that is compared only with the run against the primary.
    fn note(&mut self, what: &str, value: impl std::fmt::Display) {
        self.lines.push(format!("ok {what}: {value}"));
    }

    /// The transcript so far, ended by the driver error that stopped the session.
    fn fail(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("{}\nERROR {what}: {e}", self.lines.join("\n"))
    }
}

/// The server error of `result`, as `code state`, or a description of what came instead.
fn server_error<T: std::fmt::Debug>(result: mysql_async::Result<T>) -> String {
    match result {
        Err(mysql_async::Error::Server(e)) => format!("{} {}", e.code, e.state),
        Err(e) => format!("not a server error: {e}"),
        Ok(v) => format!("no error: {v:?}"),
    }
}

/// Runs `program` against the primary and then `copies` times at once through a proxy with
/// `size` server connections per node, and asserts that every copy printed the same.
async fn compare<F, Fut>(program: F, size: u32, copies: usize)
where
    F: Fn(u16, String) -> Fut,
    Fut: Future<Output = Result<Vec<String>, String>>,
{
    let db = MariaCluster::start(1);
    let proxy = Proxy::start(&config(&db, size, "")).await;
    let run = |port: u16, name: String| {
        let done = program(port, name.clone());
        async move {
            tokio::time::timeout(RUN_TIMEOUT, done)
                .await
                .unwrap_or_else(|_| panic!("{name} did not finish within {RUN_TIMEOUT:?}"))
        }
    };
    let direct = run(db.primary_port(), "direct".into())
        .await
        .unwrap_or_else(|e| panic!("mysql_async against the primary:\n{e}"));
    let runs = (0..copies).map(|i| run(proxy.addr().port(), format!("p{i}")));
    let results = futures_util::future::join_all(runs).await;
    proxy.stop().await;
    let mut failures = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(through) if through == direct => {}
            Ok(through) => failures.push(format!(
                "copy {i} through the proxy printed\n{}\n--- against the primary ---\n{}",
                through.join("\n"),
                direct.join("\n")
            )),
            Err(e) => failures.push(format!("copy {i} through the proxy:\n{e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "mysql_async:\n{}",
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_prints_through_the_proxy_what_it_prints_against_the_primary() {
    // Two server connections per node for three clients at once: they must share.
    compare(|port, name| async move { session(port, &name).await }, 2, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_clients_taking_turns_on_one_connection_keep_their_prepared_state_apart() {
    compare(
        |port, name| async move { two_clients(port, &name).await },
        1,
        1,
    )
    .await;
}

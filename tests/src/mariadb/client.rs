//! The `mariadb` command-line client, the harness's only way of talking to the servers (so the
//! harness does not depend on the MySQL protocol code it is there to test).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::DATABASE;
use super::scratch::Env;

/// Where and as whom a statement runs.
pub(super) enum Target<'a> {
    /// The admin account over a node's unix socket (`unix_socket` authentication: no password).
    Socket { path: PathBuf, user: &'a str },
    /// A password account over TCP to 127.0.0.1, as an application connects.
    Tcp {
        port: u16,
        user: &'a str,
        password: &'a str,
    },
}

impl Target<'_> {
    /// Runs `sql` in `appdb`: rows tab-separated without column names, trailing newlines
    /// removed (not other whitespace: a leading empty column is a leading tab). `Err` holds the
    /// client's stderr.
    pub fn run(&self, sql: &str) -> Result<String, String> {
        self.exec(Some(DATABASE), false, sql)
    }

    /// [`run`](Self::run) in `database`, or in none (before `appdb` exists).
    pub fn run_in(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        self.exec(database, false, sql)
    }

    /// [`run`](Self::run) with a first line of column names (`\G` is no help: without
    /// column names its lines are bare values).
    pub fn run_with_names(&self, sql: &str) -> Result<String, String> {
        self.exec(Some(DATABASE), true, sql)
    }

    fn exec(&self, database: Option<&str>, names: bool, sql: &str) -> Result<String, String> {
        let mut command = Command::new(&Env::get().client);
        // No option files: the machine's my.cnf must not change what the tests see.
        command.args(["--no-defaults", "--batch", "--connect-timeout=10"]);
        if !names {
            command.arg("--skip-column-names");
        }
        match self {
            Target::Socket { path, user } => {
                command
                    .arg("--protocol=socket")
                    .arg(format!("--socket={}", path.display()))
                    .arg(format!("--user={user}"));
            }
            Target::Tcp {
                port,
                user,
                password,
            } => {
                command
                    .args(["--protocol=tcp", "--host=127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .arg(format!("--user={user}"))
                    .arg(format!("--password={password}"));
            }
        }
        if let Some(database) = database {
            command.arg(format!("--database={database}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run mariadb: {e}"))?;
        let mut stdin = child.stdin.take().expect("the client's stdin");
        let sql = sql.to_owned();
        // A separate writer: the client may fill its output pipe before it has read its input.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
            let _ = stdin.write_all(b"\n");
        });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("mariadb: {e}"))?;
        let _ = writer.join();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout)
                .trim_end_matches(['\n', '\r'])
                .to_owned())
        } else {
            Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

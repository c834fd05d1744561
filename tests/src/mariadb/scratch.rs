//! The machine-wide facts the clusters share: where MariaDB's programs are, which OS user runs
//! the servers, which account administers them, where clusters live, and the cleanup of those
//! a killed test process left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::INSTALL_COMMAND;

/// The OS user `mariadbd` runs as when the tests run as root (it refuses to run as root).
const OS_USER: &str = "mysql";
/// Where programs are looked for besides `$PATH` (`mariadbd` is in sbin, often not on a
/// non-root user's path).
const EXTRA_BIN_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"];
/// Every cluster's and template's directory name starts with this.
pub(super) const PREFIX: &str = "switchyard-maria-";

#[derive(Debug)]
pub(super) struct Env {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    pub client: PathBuf,
    /// `Some("mysql")` when we are root: `mariadbd --user`, and the owner of its files.
    pub run_as: Option<String>,
    /// The account the harness administers the servers with: `mariadb-install-db` creates it
    /// with `unix_socket` authentication, which matches the connecting process's OS user.
    pub admin: String,
    /// The directory clusters and templates are created in.
    pub root: PathBuf,
}

impl Env {
    pub fn get() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(|| {
            let me = current_user();
            let run_as = (me == "root").then(|| ensure_os_user(OS_USER));
            Env {
                mariadbd: program("mariadbd"),
                install_db: program("mariadb-install-db"),
                client: program("mariadb"),
                run_as,
                admin: me,
                root: scratch_root(),
            }
        })
    }

    /// Gives `path` (not recursively) to the servers' OS user, so that they can create their
    /// sockets, pid files and logs in it.
    pub fn chown(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", path.display());
        }
    }
}

fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found: install MariaDB with `{INSTALL_COMMAND}`"))
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    assert!(out.status.success(), "id -un failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ensure_os_user(user: &str) -> String {
    let exists = || {
        Command::new("id")
            .args(["-u", user])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                user,
            ])
            .status();
        assert!(
            exists(),
            "could not create the `{user}` OS user with useradd"
        );
    }
    user.to_owned()
}

/// `$SWITCHYARD_MARIADB_TMPDIR`, else `/dev/shm` when it is a tmpfs with room (InnoDB's file
/// creation and fsyncs cost next to nothing there), else the system's temporary directory.
fn scratch_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_MARIADB_TMPDIR") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    let avail_kib = Command::new("df")
        .args(["-Pk", "--"])
        .arg(shm)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    if avail_kib >= 1024 * 1024 {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Kills the servers of, and removes, the clusters and template builds of test processes that no
/// longer exist (killed before their `Drop` could run). Once per test process.
pub(super) fn reap_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let root = &Env::get().root;
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `switchyard-maria-<pid>-<n>` and `switchyard-maria-build-<pid>`; templates stay.
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let rest = rest.strip_prefix("build-").unwrap_or(rest);
            let Ok(pid) = rest.split('-').next().unwrap_or("").parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let dir = entry.path();
            let nodes = std::fs::read_dir(&dir).into_iter().flatten().flatten();
            for pid_file in std::iter::once(dir.join("mysqld.pid"))
                .chain(nodes.map(|n| n.path().join("mysqld.pid")))
            {
                kill_server(&pid_file);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

/// SIGKILL to the `mariadbd` named in `pid_file`, if it still runs (a pid can be reused).
fn kill_server(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "mariadbd" {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

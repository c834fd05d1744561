//! The template data directory every node starts as a copy of: mariadb-install-db, then the
//! database and accounts, then a clean shutdown. Built once per machine and harness version
//! (mariadb-install-db alone takes most of a second; a copy takes milliseconds).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use super::client::Target;
use super::scratch::{Env, PREFIX};
use super::server::{self, BASE_CONF, Role, Server};
use super::{
    APP_PASSWORD, APP_USER, DATABASE, READONLY_PASSWORD, READONLY_USER, REPLICATION_PASSWORD,
    REPLICATION_USER, tail,
};

/// mariadb-install-db's options besides the paths and the user. Socket authentication for the
/// admin: the harness has no password to keep, and no test can log in as it over TCP.
const INSTALL_ARGS: [&str; 2] = ["--auth-root-authentication-method=socket", "--skip-test-db"];

/// Every account exists for each of these hosts: `'%'` for TCP from anywhere, `'localhost'` for
/// the unix socket, and `'127.0.0.1'` spelled out because clients and proxies differ in which
/// one they end up matching.
const HOSTS: [&str; 3] = ["%", "localhost", "127.0.0.1"];

/// The template's data directory, built by the first caller (of this process, or of any
/// process on this machine: it is renamed into place only once complete).
pub(super) fn path(env: &Env) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let template = env.root.join(format!(
        "{PREFIX}template-{:016x}-{}",
        contents_hash(env),
        env.run_as.as_deref().unwrap_or(&env.admin)
    ));
    if template.is_dir() {
        return template;
    }
    let build = env
        .root
        .join(format!("{PREFIX}build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).expect("create the template's build directory");
    env.chown(&build);
    let mut servers = [Server::new(&build, Role::Template)];
    let result = initialise(env, &mut servers);
    server::stop(&mut servers);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&build);
        panic!("could not build the MariaDB template: {e}");
    }
    // Another test process may have won the race: then use its template.
    if let Err(e) = std::fs::rename(servers[0].data(), &template) {
        assert!(
            template.is_dir(),
            "could not move the template into place: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(&build);
    template
}

/// mariadb-install-db, start, database and accounts (the caller stops the server).
fn initialise(env: &Env, servers: &mut [Server; 1]) -> Result<(), String> {
    let server = &servers[0];
    server.write_config();
    let mut install = Command::new(&env.install_db);
    install
        .arg(format!("--defaults-file={}", server.cnf().display()))
        .arg(format!("--datadir={}", server.data().display()))
        .args(INSTALL_ARGS);
    match &env.run_as {
        Some(user) => install.arg(format!("--user={user}")),
        // Otherwise the socket account would be named after `$USER`, which may be unset.
        None => install.arg(format!("--auth-root-socket-user={}", env.admin)),
    };
    let out = install
        .output()
        .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mariadb-install-db: {} {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(
                &std::fs::read_to_string(server.log()).unwrap_or_default(),
                20
            )
        ));
    }
    server::launch(servers, &[0])?;
    let server = &servers[0];
    Target::Socket {
        path: server.socket(),
        user: &env.admin,
    }
    .run_in(None, &accounts_sql())
    .map(drop)
    .map_err(|e| format!("creating the database and accounts: {e}"))
}

fn accounts_sql() -> String {
    let mut sql = format!("CREATE DATABASE {DATABASE};\n");
    for host in HOSTS {
        let create = |user: &str, password: &str| {
            format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED VIA mysql_native_password \
                 USING PASSWORD('{password}');\n"
            )
        };
        sql += &create(APP_USER, APP_PASSWORD);
        sql += &format!("GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{APP_USER}'@'{host}';\n");
        // For @@gtid_binlog_pos/SHOW MASTER STATUS and SHOW SLAVE STATUS: since 10.5 these are
        // split out of SUPER, and REPLICATION CLIENT is only an alias of BINLOG MONITOR.
        sql += &format!("GRANT BINLOG MONITOR, SLAVE MONITOR ON *.* TO '{APP_USER}'@'{host}';\n");
        sql += &create(READONLY_USER, READONLY_PASSWORD);
        sql += &format!("GRANT SELECT ON {DATABASE}.* TO '{READONLY_USER}'@'{host}';\n");
        sql += &create(REPLICATION_USER, REPLICATION_PASSWORD);
        sql += &format!("GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'{host}';\n");
    }
    sql
}

/// Identifies what goes into the template, so that a changed harness or an upgraded MariaDB
/// never reuses an old one. The programs are identified by size and modification time:
/// asking `mariadbd --version` costs a tenth of a cluster's start.
fn contents_hash(env: &Env) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (INSTALL_ARGS, BASE_CONF, accounts_sql()).hash(&mut hasher);
    for program in [&env.mariadbd, &env.install_db] {
        let meta = std::fs::metadata(program).ok();
        (
            program,
            meta.as_ref().map(|m| m.len()),
            meta.and_then(|m| m.modified().ok()),
        )
            .hash(&mut hasher);
    }
    hasher.finish()
}

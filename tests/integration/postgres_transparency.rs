//! Client features a proxy easily gets wrong, each checked through the proxy (transaction
//! pooling with replicas; session mode where it matters) and straight against PostgreSQL:
//! fast-path function calls (libpq's large objects) and client encodings other than UTF-8.
//! Wire-level corners (malformed text, startup negotiation) are in `postgres_wire`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use switchyard_tests::pg::PgConfig;
use switchyard_tests::postgres::{APP_PASSWORD, APP_USER, PgCluster};
use switchyard_tests::proxy::Proxy;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What one psql run printed.
struct Psql {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// psql as `app` against 127.0.0.1:`port` (the proxy or a server) with `-X -At`, the given
/// environment and arguments (raw bytes: statements in the client's encoding). Killed after
/// 20 s: a client hanging on an answer that never comes is the failure some tests pin.
async fn psql(port: u16, env: &[(&str, &str)], args: &[&[u8]]) -> Psql {
    let mut command = tokio::process::Command::new("psql");
    command
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(["-U", APP_USER, "-d", "appdb"])
        .args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGCLIENTENCODING", "UTF8")
        .env_remove("PGOPTIONS")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .unwrap_or_else(|_| {
            let args: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
            panic!("psql {args:?} on port {port} hung for 20 s")
        })
        .expect("run psql");
    Psql {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// psql that must succeed; its stdout without the trailing newline.
async fn psql_ok(port: u16, env: &[(&str, &str)], args: &[&[u8]]) -> Vec<u8> {
    let run = psql(port, env, args).await;
    assert!(
        run.ok,
        "psql {:?} on port {port} failed: {}",
        args.iter()
            .map(|a| String::from_utf8_lossy(a))
            .collect::<Vec<_>>(),
        run.stderr
    );
    let mut out = run.stdout;
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fast-path FunctionCall: libpq's large objects
// ---------------------------------------------------------------------------------------------

/// `\lo_import` of `source` and `\lo_export` of the new object to `target` through `port`;
/// returns the object's OID.
async fn lo_round_trip(port: u16, source: &Path, target: &Path) -> u32 {
    let import = format!("\\lo_import {}", source.display());
    let out = psql_ok(port, &[], &[b"-c", import.as_bytes()]).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let oid: u32 = out
        .strip_prefix("lo_import ")
        .and_then(|o| o.trim().parse().ok())
        .unwrap_or_else(|| panic!("\\lo_import printed `{out}`"));
    let export = format!("\\lo_export {oid} {}", target.display());
    let out = psql_ok(port, &[], &[b"-c", export.as_bytes()]).await;
    assert_eq!(String::from_utf8_lossy(&out), "lo_export");
    oid
}

fn open_transactions(pg: &PgCluster) -> String {
    pg.psql(
        pg.primary_port(),
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' \
         AND usename = 'app'",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_function_calls_relay_large_objects() {
    let pg = PgCluster::start(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source.bin");
    // Every byte value, in an order that is not a pattern, over several lo_write chunks.
    let mut seed: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..150_000u32)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            if i < 256 { i as u8 } else { (seed >> 8) as u8 }
        })
        .collect();
    std::fs::write(&source, &data).expect("write the source file");

    // The reference: PostgreSQL itself.
    let direct = dir.path().join("direct.bin");
    lo_round_trip(pg.primary_port(), &source, &direct).await;
    assert!(
        std::fs::read(&direct).expect("exported") == data,
        "the direct round trip changed the file"
    );

    for mode in ["transaction", "session"] {
        let proxy = Proxy::start(
            &PgConfig::new(&pg)
                .defaults(&format!("mode = \"{mode}\""))
                .build(),
        )
        .await;
        let port = proxy.addr().port();
        let target = dir.path().join(format!("{mode}.bin"));
        let oid = lo_round_trip(port, &source, &target).await;
        let exported = std::fs::read(&target).expect("exported through the proxy");
        assert!(
            exported == data,
            "{mode} mode: the exported object differs from the file imported \
             ({} bytes instead of {})",
            exported.len(),
            data.len()
        );
        // Written on the primary, whole.
        assert_eq!(
            pg.psql(
                pg.primary_port(),
                &format!("SELECT sum(length(data)) FROM pg_largeobject WHERE loid = {oid}")
            ),
            data.len().to_string(),
            "{mode} mode"
        );
        // And exported directly, the same bytes.
        let again = dir.path().join(format!("{mode}-direct.bin"));
        let export = format!("\\lo_export {oid} {}", again.display());
        psql_ok(pg.primary_port(), &[], &[b"-c", export.as_bytes()]).await;
        assert!(std::fs::read(&again).expect("exported") == data, "{mode}");
        // No server connection was left inside the transaction psql opened.
        assert_eq!(open_transactions(&pg), "0", "{mode} mode");
        proxy.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Client encodings
// ---------------------------------------------------------------------------------------------

/// "été café über" in LATIN1.
const LATIN1_TEXT: &[u8] = b"\xe9t\xe9 caf\xe9 \xfcber";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_client_encoding_passes_through_simple_protocol() {
    let pg = PgCluster::start(1);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE latin (id int PRIMARY KEY, t text)",
    );
    let proxy = Proxy::start(&PgConfig::new(&pg).build()).await;
    let port = proxy.addr().port();
    let primary = pg.primary_port();
    let latin1 = [("PGCLIENTENCODING", "LATIN1")];

    let mut insert = b"INSERT INTO latin VALUES (1, '".to_vec();
    insert.extend_from_slice(LATIN1_TEXT);
    insert.extend_from_slice(b"')");
    psql_ok(port, &latin1, &[b"-c", &insert]).await;
    block(|| pg.wait_replicated());

    // Stored as the right characters (read back in UTF-8 on the server itself).
    assert_eq!(
        pg.psql(primary, "SELECT t FROM latin WHERE id = 1"),
        "été café über"
    );
    // Read back in LATIN1 (on the replica) and in UTF-8, byte for byte as PostgreSQL answers.
    let mut literal = b"SELECT '".to_vec();
    literal.extend_from_slice(LATIN1_TEXT);
    literal.extend_from_slice(b"', upper('caf\xe9'), length('\xe9\xe9')");
    for (env, sql) in [
        (&latin1[..], &b"SELECT t FROM latin WHERE id = 1"[..]),
        (&latin1[..], &literal[..]),
        (&[][..], &b"SELECT t FROM latin WHERE id = 1"[..]),
    ] {
        let direct = psql_ok(primary, env, &[b"-c", sql]).await;
        let proxied = psql_ok(port, env, &[b"-c", sql]).await;
        assert_eq!(proxied, direct, "{env:?} {}", String::from_utf8_lossy(sql));
    }
    assert_eq!(
        psql_ok(port, &latin1, &[b"-c", b"SELECT t FROM latin WHERE id = 1"]).await,
        LATIN1_TEXT
    );
    proxy.stop().await;
}

/// Through psycopg with `client_encoding=LATIN1`: a named prepared statement (run on both
/// replicas, so prepared again by the proxy on the second one, from the client's bytes), an
/// unnamed one and an INSERT. Prints one `repr` line per result and the number of servers the
/// named statement ran on; the test compares the proxy's results with PostgreSQL's.
const PSYCOPG_LATIN1: &str = r#"
import sys, psycopg
dsn, row_id = sys.argv[1], int(sys.argv[2])
with psycopg.connect(dsn, autocommit=True, client_encoding="LATIN1", prepare_threshold=0) as conn:
    print(repr(conn.info.encoding))
    ports = set()
    for _ in range(4):
        row = conn.execute(
            "SELECT %s::text || ' café', 'déjà vu', inet_server_port()", ["été"]
        ).fetchone()
        print(repr(row[:2]))
        ports.add(row[2])
    print("servers", len(ports))
    print(repr(conn.execute("SELECT t FROM latin WHERE id = %s", [1], prepare=False).fetchone()))
    conn.execute("INSERT INTO latin VALUES (%s, %s)", [row_id, "naïve é"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_client_encoding_passes_through_extended_protocol() {
    let python = pyenv_python();
    let pg = PgCluster::start(2);
    pg.psql(
        pg.primary_port(),
        "CREATE TABLE latin (id int PRIMARY KEY, t text); \
         INSERT INTO latin VALUES (1, 'été café über')",
    );
    block(|| pg.wait_replicated());
    let proxy = Proxy::start(&PgConfig::new(&pg).build()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("latin1.py");
    std::fs::write(&script, PSYCOPG_LATIN1).expect("write the script");
    let run = async |port: u16, row_id: &str| {
        let dsn = format!(
            "host=127.0.0.1 port={port} user={APP_USER} password={APP_PASSWORD} dbname=appdb"
        );
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&python)
                .arg(&script)
                .arg(&dsn)
                .arg(row_id)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("psycopg finishes within 30 s")
        .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "psycopg on port {port}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let direct = run(pg.primary_port(), "2").await;
    assert!(direct.contains("'été café'"), "{direct}");
    let proxied = run(proxy.addr().port(), "3").await;
    let results = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| !l.starts_with("servers"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(results(&proxied), results(&direct));
    assert!(proxied.contains("servers 2"), "{proxied}");
    assert_eq!(
        pg.psql(
            pg.primary_port(),
            "SELECT string_agg(t, ',' ORDER BY id) FROM latin WHERE id > 1"
        ),
        "naïve é,naïve é"
    );
    proxy.stop().await;
}

fn pyenv_python() -> std::path::PathBuf {
    let dir = std::env::var_os("SWITCHYARD_PYENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv"));
    let python = dir.join("bin/python");
    assert!(
        python.exists(),
        "psycopg's virtualenv is missing at {}: run tests/run.sh",
        dir.display()
    );
    python
}

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    switchyard_tests::pg::query_one_text(client, &format!("SHOW {name}")).await
}

/// `SET` as clients really send it — in a text of several statements, through the extended
/// protocol, inside a transaction that commits or rolls back — follows the client to its next
/// transaction on whatever connection, and never reaches another client. One server connection
/// and two clients taking turns on it, so any leak shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client_however_they_were_made() {
    let pg = PgCluster::start(1);
    let config = PgConfig::new(&pg).defaults("size = 1").build();
    let proxy = Proxy::start(&config).await;
    let a = switchyard_tests::pg::connect(proxy.addr()).await;
    let b = switchyard_tests::pg::connect(proxy.addr()).await;
    let default_mem = show(&b, "work_mem").await;
    let default_app = show(&b, "application_name").await;

    // Several statements in one text: an implicit transaction that succeeds.
    a.batch_execute("SET work_mem = '3MB'; SELECT 1")
        .await
        .expect("multi-statement SET");
    assert_eq!(show(&b, "work_mem").await, default_mem, "leaked to b");
    assert_eq!(show(&a, "work_mem").await, "3MB", "lost by a");

    // The extended protocol (what pgjdbc's Statement.execute sends).
    a.execute("SET application_name = 'a_ext'", &[])
        .await
        .expect("extended SET");
    assert_eq!(show(&b, "application_name").await, default_app);
    assert_eq!(show(&a, "application_name").await, "a_ext");

    // Inside a transaction that commits: kept; one that rolls back: undone, as on a server.
    a.batch_execute("BEGIN").await.expect("begin");
    a.batch_execute("SET work_mem = '5MB'").await.expect("set");
    a.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(show(&b, "work_mem").await, default_mem);
    assert_eq!(show(&a, "work_mem").await, "5MB");
    a.batch_execute("BEGIN; SET work_mem = '7MB'")
        .await
        .expect("set");
    a.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(show(&b, "work_mem").await, default_mem);
    assert_eq!(show(&a, "work_mem").await, "5MB");
    // A text of several statements that fails is rolled back with its SETs.
    a.batch_execute("SET work_mem = '9MB'; SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(show(&a, "work_mem").await, "5MB");
    assert_eq!(show(&b, "work_mem").await, default_mem);
}

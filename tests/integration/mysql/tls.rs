//! TLS from MySQL clients: a listener with `tls` offers `CLIENT_SSL`, the `mariadb` CLI upgrades
//! with an SSLRequest and verifies the certificate; with `required = true` a client in clear
//! text gets MySQL's insecure-transport error.

use switchyard_tests::mariadb::MariaCluster;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::tls::TestCa;

use super::{config, mariadb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_upgrade_to_tls_and_a_required_listener_refuses_clear_text() {
    let db = MariaCluster::start(1);
    let ca = TestCa::new();
    let listener_tls = |required: bool| {
        config(&db, 2, "").replacen(
            "login_timeout = \"2s\"\n",
            &format!(
                "login_timeout = \"2s\"\ntls = {{ cert = \"{}\", key = \"{}\", required = {required} }}\n",
                ca.server_cert.display(),
                ca.server_key.display()
            ),
            1,
        )
    };
    let ca_arg = format!("--ssl-ca={}", ca.ca_cert.display());
    let verified = ["--ssl", ca_arg.as_str(), "--ssl-verify-server-cert"];

    let proxy = Proxy::start(&listener_tls(false)).await;
    let port = proxy.addr().port();
    let status = mariadb(port, &verified, "status").expect("a verified TLS login");
    assert!(
        status.contains("Cipher in use is TLS"),
        "the session is encrypted:\n{status}"
    );
    assert_eq!(
        mariadb(port, &verified, "SELECT 6 * 7").expect("a query over TLS"),
        "42\n"
    );
    assert_eq!(
        mariadb(port, &["--skip-ssl"], "SELECT 1").expect("clear text is allowed"),
        "1\n"
    );
    proxy.stop().await;

    let proxy = Proxy::start(&listener_tls(true)).await;
    let port = proxy.addr().port();
    let refused = mariadb(port, &["--skip-ssl"], "SELECT 1").expect_err("clear text is refused");
    assert!(refused.contains("ERROR 3159"), "{refused}");
    assert_eq!(
        mariadb(port, &verified, "SELECT 1").expect("TLS is served"),
        "1\n"
    );
    proxy.stop().await;
}

/// The test CA's server certificate and key copied where the MariaDB servers' OS user can read
/// them (the CA's own directory is private to the test).
fn readable_copy(ca: &TestCa) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::copy(&ca.server_cert, &cert).expect("copy the certificate");
    std::fs::copy(&ca.server_key, &key).expect("copy the key");
    for f in [&cert, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let extra = format!(
        "ssl-cert = {}\nssl-key = {}\n",
        cert.display(),
        key.display()
    );
    (dir, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_use_tls_and_verify_the_servers_certificate() {
    let ca = TestCa::new();
    let (_files, extra) = readable_copy(&ca);
    let db = MariaCluster::start_with(1, &extra);
    let with_ca = |ca_file: &std::path::Path| {
        config(&db, 2, "").replacen(
            "checkout_timeout = \"20s\"\n",
            &format!(
                "checkout_timeout = \"20s\"\ntls = \"verify-full\"\ntls_ca_file = \"{}\"\n",
                ca_file.display()
            ),
            1,
        )
    };
    let proxy = Proxy::start(&with_ca(&ca.ca_cert)).await;
    let port = proxy.addr().port();
    // What the server says about the connection the statement ran on: the proxy's, encrypted.
    let cipher = mariadb(port, &[], "SHOW SESSION STATUS LIKE 'Ssl_cipher'").expect("a query");
    assert!(
        cipher.starts_with("Ssl_cipher\tTLS") || cipher.contains("AES"),
        "the server connection is encrypted: {cipher:?}"
    );
    proxy.stop().await;

    // Servers whose certificate does not chain to the configured authority are refused.
    let other = TestCa::new();
    let proxy = Proxy::start(&with_ca(&other.ca_cert)).await;
    let err = mariadb(proxy.addr().port(), &[], "SELECT 1").expect_err("an unverifiable server");
    assert!(err.contains("TLS"), "{err}");
    proxy.stop().await;
}
